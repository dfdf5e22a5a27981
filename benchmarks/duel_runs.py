"""Repeated duel scenarios at the providers' default rates (docs/duels.md, "At the defaults").

    python benchmarks/duel_runs.py 5 400 600 > runs.jsonl   # ~8 min

Runs the 10% cheater scenario of `wwwserve bench --duels` N times with R user requests each, then the
all-honest network twice with H requests; one JSON line per run (user requests until the cheater's
share stays below half an honest peer's, extra generations per user request over the second half).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys

from wwwserve.bench import duels as d


def below_half_honest(shares: dict[str, float]) -> bool:
    """The cheater's share is below half the honest peers' mean."""
    return shares.get(d.CHEATER, 0.0) < 0.5 * statistics.mean([shares.get(h, 0.0) for h in d.HONEST])


async def main(runs: int, requests: int, honest_requests: int) -> None:
    """Print one JSON line per run."""
    rate, low = d.DEFAULTS.duel_rate, d.DEFAULTS.duel_rate_min
    for _ in range(runs):
        run, detail = await d._scenario(0.1, True, requests, rate, low)
        line = {
            "scenario": "cheater_10",
            "requests_until_below_half_honest": d._requests_until(run, below_half_honest),
            "duels_until": d._duels_until(run, below_half_honest),
            "extra_generations_second_half": round(d._second_half_cost(run), 3),
            "cheater_served": detail["cheater_served_with_duels"],
            "served": detail["served"],
            "canaries": detail["canaries"],
            "duels": detail["duels"],
            "quality_cheater": detail["quality"][d.CHEATER],
        }
        print(json.dumps(line), flush=True)
    for _ in range(2):
        run, detail = await d._scenario(0.0, False, honest_requests, rate, low)
        line = {
            "scenario": "honest",
            "extra_generations_second_half": round(d._second_half_cost(run), 3),
            "duels": detail["duels"],
            "canaries": detail["canaries"],
            "served": detail["served"],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
