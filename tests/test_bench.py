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
            "isolated,wwwserve,centralized",
        ],
        capture_output=True,
        timeout=240,
        check=True,
    )
    doc = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert doc["requests"] == 16 and set(doc["policies"]) == {"isolated", "wwwserve", "centralized"}
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
        }
        assert s["failed"] == 0 and sum(s["served_by_provider"].values()) == 16
    assert doc["policies"]["isolated"]["forwarded_share"] == 0.0
    assert {p.name for p in out.iterdir()} >= {
        "requests.csv",
        "summary.json",
        "slo_attainment.png",
        "latency_cdf.png",
        "load_per_provider.png",
    }
