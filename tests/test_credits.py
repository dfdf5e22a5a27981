"""Credits between real agents: receipts from forwarded traffic, identical views, persistence, catch-up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats

from wwwserve.agent import Agent
from wwwserve.agent.credits import read_ledger
from wwwserve.client import Client
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.ledger.records import INITIAL_GRANT, Receipt
from wwwserve.policies import load_policy
from wwwserve.protocol.subjects import LEDGER_RECEIPT
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"
SIM = {"prefill_tps": "5000", "decode_tpot_ms": "20"}


def balances(agent: Agent) -> dict[str, float]:
    return dict(agent.credits.view()["balances"])


async def converge(
    agents: list[Agent], timeout: float = 15.0, receipts: int | None = None
) -> dict[str, float]:
    """Wait until every agent's balances are the same (and, if given, every view counts `receipts`:
    origins publish receipts after relaying the answer, so equal views may still be incomplete)."""
    for _ in range(int(timeout / 0.1)):
        views = [balances(a) for a in agents]
        complete = receipts is None or all(a.credits.view()["receipts"] == receipts for a in agents)
        if all(v == views[0] for v in views) and views[0] and complete:
            return views[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"views differ: {[balances(a) for a in agents]}")


async def test_forwarded_traffic_moves_credits_and_every_view_agrees(net: LocalNetwork) -> None:
    common: dict[str, Any] = dict(engine="sim", model=[MODEL], engine_opt=SIM, price=0.01)
    for name in ("p1", "p2", "p3"):
        await net.add_provider(name, max_concurrency=1, **common)
    async with Client(net.providers["p1"].url, timeout=30) as c:
        replies = await asyncio.gather(
            *(c.complete(MODEL, f"user request {i}", max_tokens=10) for i in range(12))
        )
    served_elsewhere = [r for r in replies if r.provider != "p1"]
    assert served_elsewhere, "the burst should spill over to peers"
    agents = [h.agent for h in net.providers.values()]
    view = await converge(agents, receipts=len(served_elsewhere))
    assert view["p1"] < INITIAL_GRANT and max(view["p2"], view["p3"]) > INITIAL_GRANT
    assert abs(sum(view.values()) - 3 * INITIAL_GRANT) < 1e-6
    expected = sum(0.01 * (r.usage.prompt_tokens + r.usage.completion_tokens) for r in served_elsewhere)
    assert abs((INITIAL_GRANT - view["p1"]) - expected) < 1e-6
    assert all(a.credits.view()["receipts"] == len(served_elsewhere) for a in agents)

    # a tampered copy of a real receipt, stored in the stream by the hub, changes nothing anywhere
    nc = await nats.connect(net.hub_url)
    real = next(r for r in await read_ledger(nc) if isinstance(r, Receipt))
    forged = json.loads(real.model_dump_json())
    forged["completion_tokens"] += 1000
    forged["request_id"] += "-again"
    await nc.publish(LEDGER_RECEIPT, json.dumps(forged).encode())
    await nc.flush()
    assert len(await read_ledger(nc)) == len(served_elsewhere) + 1  # the hubs store it (they can't judge)
    await nc.close()
    await asyncio.sleep(0.5)
    assert await converge(agents, receipts=len(served_elsewhere)) == view

    # a restarted provider comes back with the same view, from its own SQLite file
    await net.stop_agent("p3")
    h3 = net.providers.pop("p3")
    again = Agent(
        h3.agent.settings, SimEngine(SimOptions(prefill_tps=5000, decode_tpot_ms=20)), load_policy("default")
    )
    assert balances(again) == view
    task = asyncio.create_task(again.run())
    ready = asyncio.create_task(again.wait_ready())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done() and not task.done(), task.exception() if task.done() else "agent did not start"
    again.stop()
    await task
    await h3.leaf.stop()

    # a provider that was down during the traffic catches up from the ledger stream
    late = await net.add_provider("p4", **common)
    caught_up = await converge([agents[0], late.agent], receipts=len(served_elsewhere))
    assert caught_up == view


async def test_stake_is_published_and_the_ledger_cli_shows_every_view(net: LocalNetwork) -> None:
    import subprocess
    import sys

    await net.add_provider("staker", engine="sim", model=[MODEL], stake=300.0)
    await net.add_provider("other", engine="sim", model=[MODEL])
    agents = [h.agent for h in net.providers.values()]
    for _ in range(50):
        if all(a.credits.ledger.view.stakes.get("staker") == 300.0 for a in agents):
            break
        await asyncio.sleep(0.1)
    assert all(a.credits.ledger.view.stakes.get("staker") == 300.0 for a in agents)
    assert net.providers["staker"].agent.heartbeat().stake == 300.0
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "wwwserve",
            "ledger",
            "--provider",
            "other",
            "--nats-url",
            net.hub_url,
            "--json",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    view = json.loads(out.stdout)
    assert view["provider"] == "other" and view["stakes"] == {"staker": 300.0}
    assert view["balances"]["staker"] == INITIAL_GRANT and "reputation" in view and view["receipts"] == 0
