"""Fault tolerance under steady load with deadlines: nothing may be lost (no answer by the deadline).

Set WWWSERVE_FAULT_REPORT=FILE to append each test's counts and recovery time as a JSON line
(docs/reliability.md is built from that).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from tests.fake_openai import StallableServer
from tests.load import SteadyLoad
from tests.netcut import CuttableLink
from tests.test_processes import start_provider, wait_for_provider
from wwwserve.agent.credits import read_ledger
from wwwserve.broker.process import free_port
from wwwserve.client import Client
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"
SIM = {"decode_tpot_ms": "20"}


def report(fault: str, counts: dict[str, int], recovery: float | None) -> None:
    path = os.environ.get("WWWSERVE_FAULT_REPORT")
    if path:
        with Path(path).open("a") as f:
            f.write(json.dumps({"fault": fault, **counts, "recovery_s": recovery}) + "\n")


async def clients_for(urls: list[str], n: int = 2) -> list[Client]:
    return [await Client(urls, timeout=10, provider_expiry_s=2.5).connect() for _ in range(n)]


async def run_with_fault(
    load: SteadyLoad, fault: object, before_s: float = 2.5, after_s: float = 5.0
) -> tuple[dict[str, int], float | None]:
    load.start()
    await asyncio.sleep(before_s)
    fault_at = time.monotonic()
    await fault()  # type: ignore[operator]
    await asyncio.sleep(after_s)
    counts = await load.stop()
    return counts, load.recovery_s(fault_at)


@pytest.fixture
async def three_hubs() -> AsyncIterator[LocalNetwork]:
    async with LocalNetwork(n_hubs=3) as network:  # three: JetStream keeps a quorum with one gone
        yield network


async def test_a_provider_sigkilled_while_streaming(net: LocalNetwork, tmp_path: Path) -> None:
    await net.add_provider("p1", engine="sim", model=[MODEL], engine_opt=SIM)
    proc = start_provider(net, "victim", tmp_path, "--engine-opt", "decode_tpot_ms=20")
    try:
        await wait_for_provider(net.hub_url, "victim")
        clients = await clients_for([net.hub_url])
        load = SteadyLoad(clients, MODEL)

        async def kill() -> None:
            proc.kill()

        counts, recovery = await run_with_fault(load, kill)
        for c in clients:
            await c.close()
    finally:
        proc.kill()
    report("provider SIGKILLed while streaming", counts, recovery)
    assert counts["lost"] == 0, counts
    assert counts["served"] > counts["sent"] * 0.8 and recovery is not None
    assert any(o.detail == "victim" for o in load.outcomes), "the victim should have served before dying"


async def test_b_one_of_three_clustered_hubs_sigkilled(three_hubs: LocalNetwork) -> None:
    """No request lost, and no ledger record: receipts signed before and after the kill all end in
    the replicated stream (an origin keeps each in its outbox until the stream acknowledged it)."""
    net = three_hubs
    for name in ("p1", "p2"):
        await net.add_provider(
            name, engine="sim", model=[MODEL], engine_opt=SIM, price=0.001, max_concurrency=2
        )
    clients = await clients_for(net.hub_urls)
    load = SteadyLoad(clients, MODEL)

    async def kill() -> None:
        net.hubs[0].kill()

    counts, recovery = await run_with_fault(load, kill, after_s=6.0)
    for c in clients:
        await c.close()
    report("one of three clustered hubs SIGKILLed", counts, recovery)
    assert counts["lost"] == 0, counts
    assert counts["served"] > counts["sent"] * 0.8 and recovery is not None
    agents = [h.agent for h in net.providers.values()]
    signed = sum(a.credits.signed for a in agents)
    nc = await nats.connect(net.hubs[1].url)
    stored: list[object] = []
    for _ in range(200):  # outboxes drain and every agent folds the whole stream
        try:
            stored = list(await read_ledger(nc))
        except (nats.errors.Error, TimeoutError):  # a stream leader being elected after the kill
            await asyncio.sleep(0.2)
            continue
        if not any(a.credits.ledger.held() for a in agents) and all(
            a.credits.ledger.view.receipts == len(stored) for a in agents
        ):
            break
        await asyncio.sleep(0.1)
    await nc.close()
    assert signed > 0 and len(stored) == signed, (signed, len(stored))
    assert not any(a.credits.ledger.held() for a in agents)
    assert all(a.credits.ledger.view.receipts == len(stored) for a in agents)


async def test_c_provider_leaf_cut_off_from_the_hub_and_restored(net: LocalNetwork) -> None:
    link = CuttableLink(free_port(), net.leafnode_port)
    await link.start()
    cut_off = await net.add_provider(
        "cutoff", engine="sim", model=[MODEL], engine_opt=SIM, hub_urls=[f"127.0.0.1:{link.port}"]
    )
    await net.add_provider("p2", engine="sim", model=[MODEL], engine_opt=SIM)
    clients = await clients_for([net.hub_url])
    load = SteadyLoad(clients, MODEL)

    async def cut() -> None:
        await link.cut()

    counts, recovery = await run_with_fault(load, cut, after_s=3.0)
    await link.restore()
    await asyncio.sleep(3.0)  # the leaf reconnects by itself
    again = await clients[0].complete(MODEL, "after restore", max_tokens=2)
    for c in clients:
        await c.close()
    await link.cut()
    report("provider leaf cut off from the hub (3 s), restored", counts, recovery)
    assert counts["lost"] == 0, counts
    assert again.provider in {"cutoff", "p2"}
    assert "p2" in {p.beat.name for p in cut_off.agent.peers.alive()}, "the cut-off provider rejoined"


async def test_d_engine_that_stalls(net: LocalNetwork) -> None:
    server = StallableServer(free_port())
    await server.start()
    try:
        stally = await net.add_provider(
            "stally",
            engine="openai",
            engine_url=f"http://127.0.0.1:{server.port}",
            model=[MODEL],
            engine_stall_s=1.0,
            unhealthy_cooldown_s=2.0,
        )
        await net.add_provider("p2", engine="sim", model=[MODEL], engine_opt=SIM)
        clients = await clients_for([net.hub_url])
        load = SteadyLoad(clients, MODEL)

        async def stall() -> None:
            server.stalled = True

        counts, recovery = await run_with_fault(load, stall, after_s=4.0)
        assert not stally.agent.engine_healthy() or server.stalled
        server.stalled = False
        await asyncio.sleep(3.0)  # cool-down over, engine answers again: back in the queue group
        assert stally.agent.engine_healthy() and stally.agent.heartbeat().accepting
        for c in clients:
            await c.close()
    finally:
        await server.stop()
    report("engine stalls (4 s)", counts, recovery)
    assert counts["lost"] == 0, counts
    assert counts["served"] > counts["sent"] * 0.6 and recovery is not None


async def test_an_answer_paused_mid_stream_longer_than_a_reask_is_delivered_whole(net: LocalNetwork) -> None:
    """An engine silent mid-answer (vLLM preempting a request under a full KV cache, seen on the H200 run)
    makes the client ask the provider again, same inbox: the provider confirms and streams on; it used to
    answer 'already streaming to another inbox' and the user got backend_error."""
    await net.add_provider("slow", engine="sim", model=[MODEL], engine_opt={"decode_tpot_ms": "2600"})
    async with Client([net.hub_url], timeout=30) as client:
        chunks = [c async for c in client.stream(MODEL, {"prompt": "hello there", "max_tokens": 3})]
    final = chunks[-1]
    assert final.usage.completion_tokens == 3, final
