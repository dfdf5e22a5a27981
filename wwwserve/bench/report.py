"""Summaries, tables, CSV and plots of benchmark records."""

from __future__ import annotations

import bisect
import csv
import statistics
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rich.table import Table

from wwwserve.bench.runner import Record
from wwwserve.bench.scenario import Workload


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; NaN for none."""
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def meets_slo(r: Record, w: Workload) -> bool:
    """A request attains its SLO when it succeeded and met every SLO the scenario gives."""
    if r.error or r.e2e_ms is None or r.ttft_ms is None:
        return False
    if w.slo_ttft_ms is not None and r.ttft_ms > w.slo_ttft_ms:
        return False
    if w.slo_e2e_ms is not None and r.e2e_ms > w.slo_e2e_ms:
        return False
    if w.slo_tpot_ms is not None and r.output_tokens > 1:
        if (r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1) > w.slo_tpot_ms:
            return False
    return True


def slo_thresholds(w: Workload, points: int = 40) -> list[float]:
    """The e2e thresholds of the SLO-attainment sweep: geometric from 250 ms to the deadline."""
    lo, hi = 250.0, w.timeout_s * 1000.0
    return [round(lo * (hi / lo) ** (i / (points - 1)), 1) for i in range(points)]


def e2e_slo_curve(records: list[Record], thresholds: list[float]) -> list[list[float]]:
    """The reference implementation's "global SLO attainment": share of requests with e2e <= T, per T."""
    lat = sorted(r.e2e_ms for r in records if not r.error and r.e2e_ms is not None)
    n = len(records)
    return [[t, round(bisect.bisect_right(lat, t) / n, 4) if n else 0.0] for t in thresholds]


def curve_ratios(ours: list[list[float]], base: list[list[float]]) -> dict[str, float | None]:
    """Best and worst ratio of two e2e SLO curves over the thresholds where the base attains something."""
    ratios = [(a[1] / b[1], a[0]) for a, b in zip(ours, base, strict=True) if b[1] > 0]
    if not ratios:
        return {"best": None, "best_at_ms": None, "worst": None, "worst_at_ms": None}
    best, worst = max(ratios), min(ratios)
    return {
        "best": round(best[0], 3),
        "best_at_ms": best[1],
        "worst": round(worst[0], 3),
        "worst_at_ms": worst[1],
    }


def _forwarded(r: Record, w: Workload) -> bool:
    """Served by another provider than the one its user sent it to (hub entry: than the first agent)."""
    return r.hops > 0 if w.entry == "hub" else r.provider != r.origin


def summarize(records: list[Record], w: Workload) -> dict[str, Any]:
    """The per-policy figures of `wwwserve bench --json`."""
    ok = [r for r in records if not r.error and r.e2e_ms is not None]
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    lat = [r.e2e_ms for r in ok if r.e2e_ms is not None]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    n = len(records)
    return {
        "requests": n,
        "slo_attainment": round(sum(meets_slo(r, w) for r in records) / n, 4) if n else 0.0,
        "mean_latency_ms": round(statistics.fmean(lat), 1) if lat else None,
        "p50_latency_ms": round(percentile(lat, 50), 1) if lat else None,
        "p99_latency_ms": round(percentile(lat, 99), 1) if lat else None,
        "mean_ttft_ms": round(statistics.fmean(ttft), 1) if ttft else None,
        "p99_ttft_ms": round(percentile(ttft, 99), 1) if ttft else None,
        "served_by_provider": dict(sorted(Counter(r.provider for r in ok).items())),
        "forwarded_share": round(sum(_forwarded(r, w) for r in ok) / len(ok), 4) if ok else 0.0,
        # scenarios with [[regions]]: share of answers served in another region than their user's
        "cross_region_share": (
            round(sum(r.provider_region != r.origin_region for r in ok) / len(ok), 4) if ok else 0.0
        ),
        "failed": n - len(ok),
        "errors": dict(Counter(r.error for r in records if r.error)),
        "e2e_slo_curve": e2e_slo_curve(records, slo_thresholds(w)),
        # prefix locality: share of the served prompts' tokens found in the server's prefix cache
        "prefix_hit_rate": round(sum(r.cached_tokens for r in ok) / max(1, prompt_tokens), 4),
        "saved_prefill_tokens": sum(r.cached_tokens for r in ok),
    }


def table(results: dict[str, dict[str, Any]], title: str) -> Table:
    """A rich table, one row per policy."""
    t = Table(title=title)
    cols = [
        "policy",
        "SLO att.",
        "mean lat ms",
        "p50 lat ms",
        "p99 lat ms",
        "mean TTFT ms",
        "p99 TTFT ms",
        "forwarded",
        "failed",
        "served by",
    ]
    for c in cols:
        t.add_column(c)
    for policy, s in results.items():
        t.add_row(
            policy,
            f"{s['slo_attainment']:.1%}",
            str(s["mean_latency_ms"]),
            str(s["p50_latency_ms"]),
            str(s["p99_latency_ms"]),
            str(s["mean_ttft_ms"]),
            str(s["p99_ttft_ms"]),
            f"{s['forwarded_share']:.1%}",
            str(s["failed"]),
            ", ".join(f"{k}:{v}" for k, v in s["served_by_provider"].items()),
        )
    return t


def write_csv(path: Path, records: dict[str, list[Record]]) -> None:
    """Every request of every policy, one row each."""
    names = ["policy", *(f.name for f in fields(Record))]
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=names)
        wr.writeheader()
        for policy, recs in records.items():
            for r in recs:
                wr.writerow({"policy": policy, **asdict(r)})


def write_plots(out: Path, results: dict[str, dict[str, Any]], records: dict[str, list[Record]]) -> None:
    """SLO attainment per policy, latency CDF per policy, and load per provider over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(
        list(results),
        [s["slo_attainment"] for s in results.values()],
        color=["#999", "#2a7", "#47c"][: len(results)],
    )
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out / "slo_attainment.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for policy, recs in records.items():
        lat = sorted(r.e2e_ms for r in recs if r.e2e_ms is not None and not r.error)
        if lat:
            ax.plot(lat, [(i + 1) / len(recs) for i in range(len(lat))], label=policy)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for policy, s in results.items():
        curve = s["e2e_slo_curve"]
        ax.plot([t / 1000 for t, _ in curve], [share for _, share in curve], label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("e2e latency threshold T (s)")
    ax.set_ylabel("share of requests with e2e <= T")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "e2e_slo_curve.png", dpi=120)
    plt.close(fig)

    names = sorted({r.provider for recs in records.values() for r in recs if r.provider})
    colors = {n: f"C{i}" for i, n in enumerate(names)}  # one color per provider in every panel
    fig, axes = plt.subplots(len(records), 1, figsize=(6, 2.2 * len(records)), sharex=True, squeeze=False)
    for ax, (policy, recs) in zip(axes[:, 0], records.items(), strict=True):
        done = [r for r in recs if r.e2e_ms is not None and r.provider]
        if not done:
            continue
        end = max(r.sent_s + (r.e2e_ms or 0) / 1000 for r in done)
        steps = [i * end / 200 for i in range(201)]
        for prov in sorted({r.provider for r in done}):
            mine = [r for r in done if r.provider == prov]
            ax.plot(
                steps,
                [sum(r.sent_s <= t < r.sent_s + (r.e2e_ms or 0) / 1000 for r in mine) for t in steps],
                label=prov,
                color=colors[prov],
            )
        ax.set_title(policy, fontsize=9)
        ax.set_ylabel("in flight")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "load_per_provider.png", dpi=120)
    plt.close(fig)
