"""A whole network on one machine: a hub and providers on free loopback ports (demo, bench, tests).

Every nats-server is a real child process; agents run as tasks of the calling event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from wwwserve.agent.agent import Agent
from wwwserve.agent.settings import ProviderSettings
from wwwserve.broker.config import HubConfig, LeafConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.broker.streams import create_when_ready
from wwwserve.engines.base import Engine
from wwwserve.engines.factory import create_engine
from wwwserve.policies.registry import load_policy
from wwwserve.scheduler import Scheduler, SchedulerSettings


@dataclass
class ProviderHandle:
    """One running provider: its leaf node, agent and the task running the agent."""

    name: str
    leaf: NatsServer
    agent: Agent
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        """Client URL of this provider's leaf node (where its own users connect)."""
        return self.leaf.url


@dataclass
class LocalNetwork:
    """Start with `async with LocalNetwork() as net`, then `await net.add_provider(...)`."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wwwserve-net-")))
    n_hubs: int = 1  # more than one: the hubs form one NATS cluster and every leaf lists them all
    hubs: list[NatsServer] = field(default_factory=list)
    hub_leafnode_ports: list[int] = field(default_factory=list)
    hub: NatsServer | None = None
    providers: dict[str, ProviderHandle] = field(default_factory=dict)
    leafnode_port: int = 0
    scheduler: Scheduler | None = None
    scheduler_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the hub(s); several hubs are clustered with routes to each other."""
        ports = [free_port() for _ in range(self.n_hubs)]
        self.hub_leafnode_ports = [free_port() for _ in range(self.n_hubs)]
        cluster = [free_port() for _ in range(self.n_hubs)] if self.n_hubs > 1 else []
        for i in range(self.n_hubs):
            cfg = HubConfig(
                name=f"hub{i}",
                port=ports[i],
                leafnode_port=self.hub_leafnode_ports[i],
                cluster_port=cluster[i] if cluster else None,
                routes=[f"nats-route://127.0.0.1:{p}" for j, p in enumerate(cluster) if j != i],
                jetstream_dir=str(self.workdir / f"hub{i}" / "jetstream"),
            )
            hub = NatsServer(cfg.render(), port=ports[i], workdir=self.workdir / f"hub{i}", name=f"hub{i}")
            await hub.start()
            self.hubs.append(hub)
        self.hub, self.leafnode_port = self.hubs[0], self.hub_leafnode_ports[0]
        if self.n_hubs > 1:
            await asyncio.sleep(1.0)  # let the routes form
        await create_when_ready(self.hub_url, 3 if self.n_hubs >= 3 else 1)

    @property
    def hub_urls(self) -> list[str]:
        """Client URLs of every hub."""
        return [h.url for h in self.hubs]

    @property
    def hub_url(self) -> str:
        """Client URL of the hub."""
        assert self.hub is not None
        return self.hub.url

    async def add_provider(
        self,
        name: str,
        *,
        engine_impl: Engine | None = None,
        wait_peers: bool = True,
        hub_urls: list[str] | None = None,
        **settings: Any,
    ) -> ProviderHandle:
        """Start a leaf node and an agent; by default wait until the others see its heartbeat."""
        port = free_port()
        leaf = NatsServer(
            LeafConfig(
                hub_urls=hub_urls or [f"127.0.0.1:{p}" for p in self.hub_leafnode_ports],
                name=f"leaf-{name}",
                port=port,
            ).render(),
            port=port,
            workdir=self.workdir / name,
            name=f"leaf-{name}",
        )
        await leaf.start()
        await asyncio.sleep(0.05)
        s = ProviderSettings(name=name, nats_url=leaf.url, data_dir=self.workdir / name, **settings)
        eng = engine_impl or create_engine(s.engine, s.engine_url, s.engine_opt, s.model)
        agent = Agent(s, eng, load_policy(s.policy))
        task = asyncio.create_task(agent.run())
        ready = asyncio.create_task(agent.wait_ready())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await leaf.stop()
            task.result()  # raises the agent's startup error
        handle = ProviderHandle(name, leaf, agent, task)
        self.providers[name] = handle
        if wait_peers:
            await self.wait_for_peers()
        return handle

    async def start_scheduler(self, sched: Scheduler | None = None) -> Scheduler:
        """Start the centralized reference scheduler on the hub (for providers with policy centralized);
        `sched`: one built by the caller (its settings must name this hub)."""
        sched = sched or Scheduler(SchedulerSettings(nats_url=self.hub_url))
        self.scheduler_task = asyncio.create_task(sched.run())
        await sched.wait_ready()
        self.scheduler = sched
        return sched

    async def wait_for_peers(self, timeout: float = 15.0) -> None:
        """Wait until every agent's peer table lists every other provider of a model it serves
        (heartbeats are scoped by model: providers of other models are not heard)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout

        def shares_a_model(a: ProviderHandle, b: ProviderHandle) -> bool:
            return bool(set(a.agent.models) & set(b.agent.models))

        while loop.time() < end:
            if all(
                {p.beat.name for p in h.agent.peers.alive()}
                >= {o for o, other in self.providers.items() if o != n and shares_a_model(h, other)}
                for n, h in self.providers.items()
            ):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("providers did not see each other's heartbeats in time")

    async def stop_agent(self, name: str) -> None:
        """Drain and stop one provider's agent; its leaf node stays up (its users still connect)."""
        h = self.providers[name]
        h.agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(h.task), 30)

    async def stop_provider(self, name: str) -> None:
        """Drain and stop one provider's agent, then its leaf node."""
        await self.stop_agent(name)
        await self.providers.pop(name).leaf.stop()

    async def close(self) -> None:
        """Stop every provider, the scheduler and the hub, and remove the work directory."""
        if self.scheduler is not None and self.scheduler_task is not None:
            self.scheduler.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler_task, 15)
        await asyncio.gather(*(self.stop_provider(n) for n in list(self.providers)), return_exceptions=True)
        for hub in self.hubs:
            await hub.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> LocalNetwork:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
