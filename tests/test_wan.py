"""The user-space WAN link: delay, jitter, loss's effect and partitions, measured through real NATS."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest

from wwwserve.bench.wan import LinkShape, Relay
from wwwserve.topology import LocalNetwork


@pytest.fixture
async def hub() -> AsyncIterator[LocalNetwork]:
    async with LocalNetwork() as network:
        yield network


async def _relay(net: LocalNetwork, shape: LinkShape) -> Relay:
    port = int(net.hub_url.rsplit(":", 1)[1])
    relay = Relay("127.0.0.1", port, shape)
    await relay.start()
    return relay


async def _round_trips(nc: nats.aio.client.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await nc.flush(timeout=5)  # a NATS PING/PONG through the link
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def test_a_100_ms_link_measures_100_ms_by_nats_round_trip(hub: LocalNetwork) -> None:
    relay = await _relay(hub, LinkShape(rtt_ms=100))
    far = await nats.connect(f"nats://127.0.0.1:{relay.port}")
    near = await nats.connect(hub.hub_url)
    try:
        rtts = await _round_trips(far, 10)
        assert 95 <= statistics.median(rtts) <= 105, rtts

        # a request from across the link to a responder next to the server: one round trip too
        async def echo(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(msg.data)

        await near.subscribe("echo", cb=echo)
        await near.flush()
        t0 = time.perf_counter()
        assert (await far.request("echo", b"x", timeout=5)).data == b"x"
        assert 95 <= (time.perf_counter() - t0) * 1000 <= 120
    finally:
        await far.close()
        await near.close()
        await relay.stop()


async def test_jitter_keeps_order_and_loss_costs_a_retransmission(hub: LocalNetwork) -> None:
    relay = await _relay(hub, LinkShape(rtt_ms=20, jitter_ms=8))
    nc = await nats.connect(f"nats://127.0.0.1:{relay.port}")
    try:
        got: list[int] = []

        async def append(msg: nats.aio.msg.Msg) -> None:
            got.append(int(msg.data))

        sub = await nc.subscribe("seq", cb=append)
        for i in range(200):
            await nc.publish("seq", str(i).encode())
        await nc.flush(timeout=5)
        await asyncio.sleep(0.2)
        assert got == list(range(200))  # per-connection order survives the jitter
        await sub.unsubscribe()
        relay.shape = LinkShape(rtt_ms=20, loss=1.0)  # every chunk retransmitted once
        rtts = await _round_trips(nc, 3)
        assert min(rtts) >= 2 * (20 + 200) * 0.95, rtts
    finally:
        await nc.close()
        await relay.stop()


async def test_a_blackhole_holds_traffic_and_delivers_it_after_the_heal(hub: LocalNetwork) -> None:
    relay = await _relay(hub, LinkShape(rtt_ms=10))
    far = await nats.connect(f"nats://127.0.0.1:{relay.port}", ping_interval=60)
    near = await nats.connect(hub.hub_url)
    arrived: list[float] = []

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    async def note(msg: nats.aio.msg.Msg) -> None:
        arrived.append(time.perf_counter())

    try:
        await near.subscribe("echo", cb=echo)
        await near.subscribe("held", cb=note)
        await near.flush()
        relay.partition("blackhole")
        with pytest.raises(nats.errors.TimeoutError):
            await far.request("echo", b"x", timeout=0.5)  # nothing crosses a cut
        assert far.is_connected  # but the connection stays open, as after a real cut
        cut = time.perf_counter()
        await far.publish("held", b"sent during the cut")
        await asyncio.sleep(0.5)
        assert not arrived
        relay.heal()
        assert (await far.request("echo", b"y", timeout=5)).data == b"y"
        assert len(arrived) == 1 and arrived[0] - cut >= 0.5  # delivered late, not lost
    finally:
        await far.close()
        await near.close()
        await relay.stop()


async def test_a_reset_partition_drops_connections_until_the_heal(hub: LocalNetwork) -> None:
    relay = await _relay(hub, LinkShape(rtt_ms=10))
    disconnected, reconnected = asyncio.Event(), asyncio.Event()

    async def on_disconnect() -> None:
        disconnected.set()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        f"nats://127.0.0.1:{relay.port}",
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    try:
        relay.partition("reset")
        await asyncio.wait_for(disconnected.wait(), 5)
        await asyncio.sleep(1.0)
        assert not reconnected.is_set()  # new connections are refused while the cut lasts
        relay.heal()
        await asyncio.wait_for(reconnected.wait(), 10)
        await nc.flush(timeout=5)
    finally:
        await nc.close()
        await relay.stop()
