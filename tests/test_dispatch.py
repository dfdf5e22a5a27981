"""Decentralized dispatch between real agents over real nats-servers."""

from __future__ import annotations

import asyncio
from collections import Counter

from wwwserve.client import Client
from wwwserve.errors import Overloaded
from wwwserve.protocol.messages import Reply
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"
SIM = {"prefill_tps": "5000", "decode_tpot_ms": "20"}


async def test_burst_on_a_saturated_provider_spills_to_an_idle_peer(net: LocalNetwork) -> None:
    await net.add_provider("p1", engine="sim", model=[MODEL], engine_opt=SIM, max_concurrency=1)
    await net.add_provider("p2", engine="sim", model=[MODEL], engine_opt=SIM, max_concurrency=1)
    async with Client(net.providers["p1"].url, timeout=30) as c:
        replies = await asyncio.gather(
            *(c.complete(MODEL, f"user request {i}", max_tokens=10) for i in range(12))
        )
    served = Counter(r.provider for r in replies)
    assert len(replies) == 12 and all(isinstance(r, Reply) for r in replies)
    assert served["p2"] >= 4, served
    assert all(r.hops <= 2 for r in replies) and {r.provider for r in replies} <= {"p1", "p2"}


async def test_saturated_providers_never_bounce_past_the_hop_limit(net: LocalNetwork) -> None:
    for name in ("a", "b", "c"):
        await net.add_provider(
            name,
            engine="sim",
            model=[MODEL],
            engine_opt={"decode_tpot_ms": "50"},
            max_concurrency=1,
            max_queue=0,
            max_hops=2,
        )
    outcomes: list[object] = []

    async def one(c: Client, i: int) -> None:
        try:
            outcomes.append(await c.complete(MODEL, f"r{i}", max_tokens=10, timeout=20))
        except Overloaded as exc:
            outcomes.append(exc)

    clients = [await Client(h.url, timeout=20).connect() for h in net.providers.values()]
    try:
        await asyncio.gather(*(one(clients[i % 3], i) for i in range(24)))
    finally:
        for c in clients:
            await c.close()
    replies = [o for o in outcomes if isinstance(o, Reply)]
    assert len(outcomes) == 24
    assert replies and len(replies) < 24  # some served, the rest rejected explicitly
    assert all(r.hops <= 2 for r in replies)
    forwarded = sum(h.agent.stats.forwarded for h in net.providers.values())
    assert forwarded > 0


async def test_centralized_reference_scheduler_assigns_every_request(net: LocalNetwork) -> None:
    for name in ("p1", "p2"):
        await net.add_provider(
            name, engine="sim", model=[MODEL], engine_opt=SIM, max_concurrency=1, policy="centralized"
        )
    sched = await net.start_scheduler()
    await asyncio.sleep(1.2)  # the scheduler learns the providers from their heartbeats
    async with Client(net.providers["p1"].url, timeout=30) as c:
        replies = await asyncio.gather(
            *(c.complete(MODEL, f"user request {i}", max_tokens=10) for i in range(12))
        )
    served = Counter(r.provider for r in replies)
    assert served["p1"] == served["p2"] == 6, served
    assert sum(sched.assigned.values()) == 12 and all(r.hops == 0 for r in replies)  # assigned, not relayed
    assert sched.finished == sched.assigned and not any(sched.in_flight.values())


async def test_isolated_providers_serve_only_their_own_users(net: LocalNetwork) -> None:
    for name in ("p1", "p2"):
        await net.add_provider(
            name, engine="sim", model=[MODEL], engine_opt=SIM, max_concurrency=1, policy="isolated"
        )
    async with Client(net.providers["p1"].url, timeout=30) as c:
        replies = await asyncio.gather(
            *(c.complete(MODEL, f"user request {i}", max_tokens=10) for i in range(6))
        )
    assert {r.provider for r in replies} == {"p1"}
