"""Regions over emulated WAN links: a region cut off for 10 s loses nothing, and forwarding resumes.

Two regions 40 ms apart (wwwserve/bench/planet.py: one hub each, clustered through delaying relays),
a provider in each; users in region `a` at their provider's leaf. `a`'s provider has one slot, so a
burst is partly forwarded to `b`. Region `b` is then partitioned (blackhole: connections stay open
and deliver nothing, as a real cut) for 10 s while the users keep sending, then healed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from wwwserve.agent import Agent, ProviderSettings
from wwwserve.bench.planet import Planet
from wwwserve.bench.scenario import Scenario
from wwwserve.broker.config import LeafConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.client import Client
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.errors import WWWServeError
from wwwserve.policies.registry import load_policy

pytestmark = pytest.mark.slow

MODEL = "sim-model"


def two_regions() -> Scenario:
    return Scenario.model_validate(
        {
            "workload": {"trace": "unused.csv"},
            "regions": [
                {"name": "a", "access_rtt_ms": 4, "rtt_ms": {"b": 40}},
                {"name": "b", "access_rtt_ms": 4},
            ],
            "network": {"jitter_ms": 1},
            "providers": [{"name": "pa", "region": "a"}, {"name": "pb", "region": "b"}],
        }
    )


class Provider:
    """A provider's leaf (joined through the planet's access relay) and its agent, in this process."""

    def __init__(self, name: str, hub: str, tmp: Path, slots: int) -> None:
        port = free_port()
        cfg = LeafConfig(hub_urls=[hub], port=port, name=name)
        self.leaf = NatsServer(cfg.render(), port=port, name=f"leaf-{name}", workdir=tmp / f"leaf-{name}")
        self.url = f"nats://127.0.0.1:{port}"
        self.agent = Agent(
            ProviderSettings(
                name=name,
                nats_url=self.url,
                engine="sim",
                model=[MODEL],
                data_dir=tmp / name,
                max_concurrency=slots,
                heartbeat_interval_s=0.5,
                duel_rate=0.0,
            ),
            SimEngine(SimOptions(decode_tpot_ms=20, prefill_tps=20000)),
            load_policy("default"),
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.leaf.start()
        self.task = asyncio.create_task(self.agent.run())
        await self.agent.wait_ready()

    async def stop(self) -> None:
        self.agent.stop()
        if self.task is not None:
            await self.task
        await self.leaf.stop()


@pytest.fixture
async def planet(tmp_path: Path) -> AsyncIterator[tuple[Planet, dict[str, Provider]]]:
    p = Planet(two_regions(), tmp_path / "planet")
    await p.start()
    providers = {
        "pa": Provider("pa", await p.leaf_url("pa", "a"), tmp_path, slots=1),
        "pb": Provider("pb", await p.leaf_url("pb", "b"), tmp_path, slots=8),
    }
    try:
        for prov in providers.values():
            await prov.start()
        yield p, providers
    finally:
        for prov in providers.values():
            await prov.stop()
        await p.stop()


async def test_a_region_cut_off_for_10s_loses_nothing_and_forwarding_resumes(
    planet: tuple[Planet, dict[str, Provider]], measured: Callable[[str], None]
) -> None:
    net, providers = planet
    phases = ("before", "cut", "after")
    outcomes: dict[str, collections.Counter[str]] = {p: collections.Counter() for p in phases}
    async with Client(providers["pa"].url, timeout=30, origin="pa") as users:

        async def one(i: int, phase: str) -> None:
            try:
                reply = await users.request(MODEL, {"prompt": f"question {i}", "max_tokens": 8})
                outcomes[phase][f"served:{reply.provider}"] += 1
            except WWWServeError as exc:
                lost = "before the deadline" in exc.message and exc.code == "deadline_exceeded"
                outcomes[phase]["lost" if lost else f"error:{exc.code}"] += 1

        async def phase(name: str, seconds: float, start_i: int) -> list[asyncio.Task[None]]:
            tasks, end, i = [], time.monotonic() + seconds, start_i
            while time.monotonic() < end:
                tasks.extend(asyncio.create_task(one(i + k, name)) for k in range(4))  # a burst of 4
                i += 4
                await asyncio.sleep(0.5)
            return tasks

        await asyncio.sleep(3.0)  # each agent has heard the other across the WAN
        pending = await phase("before", 4.0, 0)
        net.partition("b")
        pending += await phase("cut", 10.0, 1000)
        net.heal("b")
        await asyncio.sleep(4.0)  # heartbeats cross again; the peer is alive in pa's table
        pending += await phase("after", 6.0, 2000)
        await asyncio.gather(*pending)

    measured(f"outcomes by phase: { {k: dict(v) for k, v in outcomes.items()} }")
    total = {k: sum(v.values()) for k, v in outcomes.items()}
    assert all(outcomes[p]["lost"] == 0 for p in outcomes), outcomes  # each ended: an answer or an error
    assert outcomes["before"]["served:pb"] > 0, outcomes  # the burst was partly forwarded across the WAN
    assert outcomes["cut"]["served:pa"] > 0, outcomes  # users in the cut-off region kept being served
    assert outcomes["after"]["served:pb"] > 0, outcomes  # forwarding resumed after the heal
    assert total["cut"] >= 70


async def test_a_provider_behind_a_slow_lossy_link_loses_nothing(
    tmp_path: Path, measured: Callable[[str], None]
) -> None:
    # `slow` reaches its hub over 300 ms with 5% of chunks retransmitted (~500 ms more each); users sit
    # at the near provider's leaf, whose single slot sends part of each burst over that link
    scenario = Scenario.model_validate(
        {
            "workload": {"trace": "unused.csv"},
            "regions": [
                {"name": "near", "access_rtt_ms": 2, "rtt_ms": {"far": 20}},
                {"name": "far", "access_rtt_ms": 300},
            ],
            "network": {"jitter_ms": 5, "loss": 0.05},
            "providers": [{"name": "fast", "region": "near"}, {"name": "slow", "region": "far"}],
        }
    )
    net = Planet(scenario, tmp_path / "planet")
    await net.start()
    near = Provider("near", await net.leaf_url("near", "near"), tmp_path, slots=1)
    slow = Provider("slow", await net.leaf_url("slow", "far"), tmp_path, slots=8)
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        await near.start()
        await slow.start()
        await asyncio.sleep(3.0)
        async with Client(near.url, timeout=30, origin="near") as users:

            async def one(i: int) -> None:
                try:
                    reply = await users.request(MODEL, {"prompt": f"question {i}", "max_tokens": 8})
                    outcomes[f"served:{reply.provider}"] += 1
                except WWWServeError as exc:
                    lost = "before the deadline" in exc.message and exc.code == "deadline_exceeded"
                    outcomes["lost" if lost else f"error:{exc.code}"] += 1

            for burst in range(10):
                await asyncio.gather(*(one(burst * 6 + k) for k in range(6)))
    finally:
        await near.stop()
        await slow.stop()
        await net.stop()
    measured(f"outcomes: {dict(outcomes)}")
    assert outcomes["lost"] == 0 and sum(outcomes.values()) == 60, outcomes
    assert outcomes["served:near"] > 0, outcomes
