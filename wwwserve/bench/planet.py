"""Regions for the benchmark: one hub per region, every link that crosses distance through a WAN relay.

Hubs form one NATS cluster (not a supercluster of gateways): the network is one account and one
JetStream domain (the directory and the ledger stay single streams), queue groups still prefer members
on the publisher's own server and then any, and a cluster needs no per-region configuration beyond its
routes. Gateways would add interest-only propagation between regions, worth it at hundreds of hubs,
not at three. Each hub dials every other through a relay shaped like that region pair's link
(`no_advertise`: no hub learns another's direct address and bypasses the relay); each provider's
leaf joins its region's hub through its own access relay; users at a hub and the centralized scheduler
connect through an access relay too (the scheduler sits in the first region and pays the WAN like
everyone). `partition(region)` cuts every link of a region at once (tests and fault scenarios).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wwwserve.bench.scenario import Scenario
from wwwserve.bench.wan import LinkShape, Relay
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.broker.streams import create_when_ready


@dataclass
class _Hub:
    region: str
    server: NatsServer
    leaf_port: int
    cluster_port: int


@dataclass
class Planet:
    """The hubs of a scenario's regions and the relays between everything."""

    scenario: Scenario
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wwwserve-planet-")))
    hubs: dict[str, _Hub] = field(default_factory=dict)
    relays: list[tuple[frozenset[str], Relay]] = field(default_factory=list)  # (regions it joins, relay)
    _seed: int = 0

    def _shape(self, rtt_ms: float) -> LinkShape:
        n = self.scenario.network
        return LinkShape(
            rtt_ms=rtt_ms, jitter_ms=n.jitter_ms if rtt_ms else 0.0, loss=n.loss if rtt_ms else 0.0
        )

    async def _relay(self, port: int, rtt_ms: float, regions: frozenset[str], name: str) -> int:
        self._seed += 1
        relay = Relay("127.0.0.1", port, self._shape(rtt_ms), seed=self._seed, name=name)
        self.relays.append((regions, relay))
        return await relay.start()

    async def start(self) -> None:
        """Start each region's hub, joined to the others through the inter-region relays."""
        regions = [r.name for r in self.scenario.regions]
        ports = {r: (free_port(), free_port(), free_port()) for r in regions}  # client, leaf, cluster
        routes: dict[str, list[str]] = {r: [] for r in regions}
        for a in regions:  # every hub lists routes to all others (JetStream's clustering needs them)
            for b in regions:
                if a != b:
                    rtt = self.scenario.rtt_ms(a, b)
                    port = await self._relay(ports[b][2], rtt, frozenset({a, b}), f"{a}->{b}")
                    routes[a].append(f"nats-route://127.0.0.1:{port}")
        for r in regions:
            client, leaf, cluster = ports[r]
            cfg = HubConfig(
                name=f"hub-{r}",
                port=client,
                leafnode_port=leaf,
                cluster_port=cluster,
                routes=routes[r],
                cluster_no_advertise=True,
                jetstream_dir=str(self.workdir / r / "jetstream"),
            )
            server = NatsServer(cfg.render(), port=client, workdir=self.workdir / r, name=f"hub-{r}")
            self.hubs[r] = _Hub(r, server, leaf, cluster)
        await asyncio.gather(*(h.server.start() for h in self.hubs.values()))
        first = self.hubs[regions[0]].server.url
        if not await create_when_ready(first, 1):
            raise RuntimeError("the hubs' JetStream did not come up")

    def _access(self, region: str) -> float:
        """The round trip between `region`'s hub and what connects to it there."""
        return next(r.access_rtt_ms for r in self.scenario.regions if r.name == region)

    async def leaf_url(self, provider: str, region: str) -> str:
        """Where `provider`'s leaf joins: its region's hub, through an access relay."""
        port = await self._relay(
            self.hubs[region].leaf_port, self._access(region), frozenset({region}), f"{provider}->hub"
        )
        return f"127.0.0.1:{port}"

    async def client_url(self, region: str, who: str) -> str:
        """Where a client in `region` (users at the hub, the scheduler) connects: through an access relay."""
        port = await self._relay(
            self.hubs[region].server.port, self._access(region), frozenset({region}), f"{who}->hub"
        )
        return f"nats://127.0.0.1:{port}"

    @property
    def first_hub_url(self) -> str:
        """The first region's hub, directly (the benchmark's own observation, not a user's path)."""
        return self.hubs[self.scenario.regions[0].name].server.url

    def partition(self, region: str, mode: Literal["blackhole", "reset"] = "blackhole") -> None:
        """Cut `region` off from the others (its providers still reach their own hub)."""
        for regions, relay in self.relays:
            if region in regions and len(regions) == 2:
                relay.partition(mode)

    def heal(self, region: str) -> None:
        """End a partition of `region`."""
        for regions, relay in self.relays:
            if region in regions and len(regions) == 2:
                relay.heal()

    async def stop(self) -> None:
        """Stop the hubs and every relay."""
        for h in self.hubs.values():
            with contextlib.suppress(Exception):
                await h.server.stop()
        await asyncio.gather(*(r.stop() for _, r in self.relays), return_exceptions=True)
