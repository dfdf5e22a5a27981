"""`wwwserve bench --duels`: how many duels it takes to catch a provider that corrupts a share of answers.

One origin (duel rate as given; it dispatches all its users' requests), two honest providers and one
cheater (`sim` with `corrupt=<share>`), real agents over real nats-servers. Requests are greedy, so
judges use `replay`. We count duels until the cheater's reputation stays below both honest providers'
by `margin` Elo points, and the extra engine work duels cost.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wwwserve.client import Client
from wwwserve.topology import LocalNetwork

MODEL = "duel-model"


async def run_duels(
    corrupt: float = 0.1, duel_rate: float = 1.0, requests: int = 400, margin: float = 30.0
) -> dict[str, Any]:
    """Run the scenario; returns duels-to-catch and the compute cost of duels."""
    common: dict[str, Any] = dict(
        engine="sim", model=[MODEL], stake=200.0, ledger_sync_s=1.0, max_concurrency=8
    )
    async with LocalNetwork() as net:
        origin = await net.add_provider(
            "origin",
            engine="sim",
            model=[MODEL],
            duel_rate=duel_rate,
            ledger_sync_s=1.0,
            max_concurrency=1,
            max_queue=0,
            engine_opt={"decode_tpot_ms": "200"},
        )
        await net.add_provider("honest1", engine_opt={"decode_tpot_ms": "2"}, **common)
        await net.add_provider("honest2", engine_opt={"decode_tpot_ms": "2"}, **common)
        await net.add_provider(
            "cheater", engine_opt={"decode_tpot_ms": "2", "corrupt": str(corrupt)}, **common
        )
        await asyncio.sleep(2.0)
        caught_at: int | None = None
        history: list[tuple[int, float, float]] = []
        async with Client(origin.url, timeout=60) as c:
            for start in range(0, requests, 8):
                await asyncio.gather(
                    *(
                        c.request(MODEL, {"prompt": f"question {i}", "max_tokens": 16, "temperature": 0.0})
                        for i in range(start, start + 8)
                    )
                )
                while origin.agent.duels.started > len(
                    [r for r in origin.agent.credits.ledger.records() if r.kind == "verdict"]
                ) and any(not t.done() for t in origin.agent._tasks):
                    await asyncio.sleep(0.02)
                rep = origin.agent.credits.ledger.view.reputation
                duels = origin.agent.duels.started
                gap = min(rep.get("honest1", 1500.0), rep.get("honest2", 1500.0)) - rep.get("cheater", 1500.0)
                history.append((duels, round(gap, 1), rep.get("cheater", 1500.0)))
                if gap >= margin and caught_at is None:
                    caught_at = duels
                elif gap < margin:
                    caught_at = None  # not caught for good yet
        served = {h.name: h.agent.stats.served for h in net.providers.values()}
        judged = {h.name: h.agent.duels.judged for h in net.providers.values()}
    user_requests = requests
    duels = history[-1][0] if history else 0
    return {
        "corrupt": corrupt,
        "duel_rate": duel_rate,
        "user_requests": user_requests,
        "duels": duels,
        "duels_to_catch": caught_at,
        "final_gap_elo": history[-1][1] if history else None,
        "cheater_elo": history[-1][2] if history else None,
        "extra_generations_per_user_request": round((duels + sum(judged.values())) / user_requests, 3),
        "served": served,
        "judged": judged,
    }
