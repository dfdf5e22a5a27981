"""Turn a trace (TIMESTAMP, ContextTokens, GeneratedTokens) into timed arrivals with an origin."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime

from wwwserve.bench.scenario import Scenario


@dataclass(frozen=True)
class Arrival:
    """One request to send: when (seconds from replay start), whose user, and its sizes."""

    index: int
    at_s: float
    origin: str
    prompt_tokens: int
    output_tokens: int


def _ts(text: str) -> float:
    # The Azure traces carry 7 fractional digits; datetime takes at most 6.
    head, _, frac = text.strip().partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}").timestamp()


def arrivals(scenario: Scenario) -> list[Arrival]:
    """The scenario's arrivals, in time order, with origins split as the scenario says."""
    w = scenario.workload
    with w.trace.open(newline="") as f:
        rows = [
            (_ts(r["TIMESTAMP"]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(f)
        ]
    if not rows:
        raise ValueError(f"trace {w.trace} is empty")
    rows.sort()
    t0 = rows[0][0] + w.start_s
    names = [p.name for p in scenario.providers]
    rng = random.Random(w.seed)
    out: list[Arrival] = []
    for ts, ctx, gen in rows:
        rel = ts - t0
        if rel < 0 or rel >= w.duration_s:
            continue
        i = len(out)
        origin = (
            names[i % len(names)] if w.split == "round-robin" else rng.choices(names, weights=w.weights)[0]
        )
        out.append(
            Arrival(
                index=i,
                at_s=rel / w.time_scale,
                origin=origin,
                prompt_tokens=max(1, min(ctx, w.max_prompt_tokens)),
                output_tokens=max(1, min(gen, w.max_output_tokens)),
            )
        )
    return out
