"""`wwwserve bench` end to end on a tiny generated trace (the real scenarios take minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wwwserve.bench.scenario import load_scenario
from wwwserve.bench.workload import arrivals

TRACE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:00:{i // 4:02d}.{(i % 4) * 25:02d}00000,{50 + 10 * i},{4 + i % 3}\n" for i in range(16)
)

SCENARIO = """
name = "tiny"
[workload]
trace = "trace.csv"
duration_s = 4
time_scale = 2.0
split = "weighted"
weights = [0.8, 0.2]
seed = 1
slo_ttft_ms = 1000
slo_e2e_ms = 3000
timeout_s = 10

[[providers]]
name = "slow"
max_concurrency = 1
prefill_tps = 2000
decode_tpot_ms = 60

[[providers]]
name = "fast"
max_concurrency = 4
prefill_tps = 10000
decode_tpot_ms = 5
"""


def write_scenario(tmp: Path) -> Path:
    (tmp / "trace.csv").write_text(TRACE)
    path = tmp / "tiny.toml"
    path.write_text(SCENARIO)
    return path


def test_scenario_and_workload(tmp_path: Path) -> None:
    s = load_scenario(write_scenario(tmp_path))
    a = arrivals(s)
    assert s.workload.trace == tmp_path / "trace.csv" and len(a) == 16
    assert a[-1].at_s < 2.0 and {x.origin for x in a} <= {"slow", "fast"}
    assert a[0].prompt_tokens == 50 and a[0].output_tokens == 4


def test_bench_runs_every_policy_and_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "wwwserve",
            "--log-level",
            "warning",
            "bench",
            str(write_scenario(tmp_path)),
            "--json",
            "--out",
            str(out),
            "--policies",
            "isolated,wwwserve,wwwserve-noprefix,centralized",
        ],
        capture_output=True,
        timeout=240,
        check=True,
    )
    doc = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert doc["requests"] == 16
    assert set(doc["policies"]) == {"isolated", "wwwserve", "wwwserve-noprefix", "centralized"}
    for s in doc["policies"].values():
        assert set(s) >= {
            "slo_attainment",
            "mean_latency_ms",
            "p50_latency_ms",
            "p99_latency_ms",
            "mean_ttft_ms",
            "p99_ttft_ms",
            "served_by_provider",
            "forwarded_share",
            "failed",
            "e2e_slo_curve",
            "prefix_hit_rate",
            "saved_prefill_tokens",
        }
        curve = s["e2e_slo_curve"]
        assert [t for t, _ in curve] == sorted(t for t, _ in curve) and curve[-1][1] == 1.0
        assert s["failed"] == 0 and sum(s["served_by_provider"].values()) == 16
    assert doc["policies"]["isolated"]["forwarded_share"] == 0.0
    assert {p.name for p in out.iterdir()} >= {
        "requests.csv",
        "summary.json",
        "slo_attainment.png",
        "latency_cdf.png",
        "load_per_provider.png",
        "e2e_slo_curve.png",
    }
    ratio = doc["policies"]["wwwserve"]["e2e_slo_ratio_vs_isolated"]
    assert ratio["best"] >= ratio["worst"] > 0


def test_shifted_split_gives_each_provider_its_own_window(tmp_path: Path) -> None:
    rows = "".join(f"2023-11-16 18:00:{s:02d}.0000000,{100 + s},{1 + s % 5}\n" for s in range(40))
    (tmp_path / "trace.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    text = SCENARIO.replace('split = "weighted"\nweights = [0.8, 0.2]', 'split = "shifted"\nshift_s = 10')
    (tmp_path / "s.toml").write_text(text.replace("duration_s = 4", "start_s = 5\nduration_s = 8"))
    a = arrivals(load_scenario(tmp_path / "s.toml"))
    # provider 0 replays trace seconds 5..12, provider 1 seconds 15..22, both from replay time 0
    assert sorted(x.prompt_tokens - 100 for x in a if x.origin == "slow") == list(range(5, 13))
    assert sorted(x.prompt_tokens - 100 for x in a if x.origin == "fast") == list(range(15, 23))
    assert [x.at_s for x in a] == sorted(x.at_s for x in a) and a[-1].at_s < 4.0  # time_scale 2
    assert [x.index for x in a] == list(range(16))


def test_e2e_slo_curve_and_its_best_and_worst_ratio() -> None:
    from wwwserve.bench.report import curve_ratios, e2e_slo_curve
    from wwwserve.bench.runner import Record

    def rec(e2e: float | None, error: str = "") -> Record:
        return Record(0, "p", 10, 5, 0.0, ttft_ms=e2e, e2e_ms=e2e, provider="p", error=error)

    ours = e2e_slo_curve([rec(100), rec(300), rec(900), rec(None, "overloaded")], [200, 500, 1000])
    base = e2e_slo_curve([rec(400), rec(800), rec(2000), rec(3000)], [200, 500, 1000])
    assert ours == [[200, 0.25], [500, 0.5], [1000, 0.75]] and base == [[200, 0.0], [500, 0.25], [1000, 0.5]]
    assert curve_ratios(ours, base) == {"best": 2.0, "best_at_ms": 500, "worst": 1.5, "worst_at_ms": 1000}


def test_sessions_share_prefixes_and_grow_turn_by_turn(tmp_path: Path) -> None:
    rows = "".join(f"2023-11-16 18:00:{s:02d}.0000000,{900 + 50 * s},{20}\n" for s in range(40))
    (tmp_path / "trace.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    sessions = "[workload.sessions]\ncontinue_share = 0.7\nsystem_prompts = 3\nsystem_prompt_tokens = 800\n"
    text = SCENARIO.replace("duration_s = 4", "duration_s = 40").replace(
        "[[providers]]", sessions + "\n[[providers]]", 1
    )
    (tmp_path / "s.toml").write_text(text)
    a = arrivals(load_scenario(tmp_path / "s.toml"))
    assert all(len(x.prompt.split()) == x.prompt_tokens for x in a)
    turns = [x for x in a if x.turn > 0]
    assert len(turns) > 10 and len({x.session for x in a}) < len(a)
    for x in turns:  # a next turn starts with its whole previous turn (prompt and answer)
        prev = max((y for y in a if y.session == x.session and y.turn == x.turn - 1), key=lambda y: y.index)
        assert (
            x.prompt.startswith(prev.prompt)
            and x.prompt_tokens >= prev.prompt_tokens + prev.output_tokens + 16
        )
        assert x.origin == prev.origin  # a session stays with its users
    firsts = [x for x in a if x.turn == 0]
    assert len({" ".join(x.prompt.split()[:800]) for x in firsts}) <= 3  # tenants' system prompts
    plain = arrivals(load_scenario(write_scenario(tmp_path)))
    assert len({" ".join(x.prompt.split()[:16]) for x in plain}) == len(plain)  # no sessions: nothing shared


async def test_overhead_bench_measures_the_agent_against_a_bare_responder() -> None:
    from wwwserve.bench.overhead import run_overhead

    res = await run_overhead(n=80, workers=4, seconds=1.0)  # the real run: 2,000 round trips, 32 workers, 5 s
    for arm in ("agent", "echo"):
        assert 0 < res[arm]["p50_ms"] <= res[arm]["p99_ms"]
        assert res[arm]["rate_rps"] > 0 and res[arm]["cpu_us_per_request"] > 0
    assert res["agent_via_hub"]["p50_ms"] > 0
    assert res["p50_ratio"] == round(res["agent"]["p50_ms"] / res["echo"]["p50_ms"], 2)
    assert res["rate_ratio"] == round(res["agent"]["rate_rps"] / res["echo"]["rate_rps"], 2)
    assert (res["round_trips"], res["workers"], res["seconds"]) == (80, 4, 1.0)
