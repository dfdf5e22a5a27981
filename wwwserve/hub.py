"""`wwwserve hub`: render a hub config and run nats-server until told to stop."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path
from typing import Annotated, ClassVar

import structlog
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer
from wwwserve.broker.streams import create_when_ready
from wwwserve.config import WWWServeSettings, split_list
from wwwserve.datadir import default_data_dir
from wwwserve.hubguard import HubGuard

log = structlog.get_logger(__name__)


class HubSettings(WWWServeSettings):
    """Settings of a hub (a public seed server of the network)."""

    toml_table: ClassVar[str] = "hub"

    name: str = Field("hub", description="server name, unique among hubs")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 for a public hub)")
    port: int = Field(4222, description="client port")
    leafnode_port: int = Field(7422, description="port provider leaf nodes connect to")
    http_port: int | None = Field(None, description="nats-server monitoring port (/varz, /leafz)")
    cluster_port: int | None = Field(None, description="cluster port, to join other hubs")
    routes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="other hubs' cluster URLs"
    )
    provider_users: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="provider:password pairs, comma-separated (env WWWSERVE_PROVIDER_USERS)",
    )
    client_users: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="client user:password pairs (requests only)"
    )
    ops_users: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="operator user:password pairs (everything)"
    )
    data_dir: Path | None = Field(
        None,
        description="where the config, log and JetStream store go "
        "(default: <user data dir>/wwwserve/hubs/<name>)",
    )
    guard: bool = Field(
        True,
        description="stop routing users' requests to providers the ledger's duels prove bad "
        "(needs --provider-users: a leaf must log in to be told apart)",
    )
    jetstream_replicas: int = Field(
        0, ge=0, le=5, description="replicas of the ledger and directory (0: 3 in a cluster of 3+, else 1)"
    )

    @field_validator("provider_users", "client_users", "ops_users", mode="before")
    @classmethod
    def _pairs(cls, v: object) -> object:
        if isinstance(v, list):  # repeated flags
            v = ",".join(str(i) for i in v)
        if isinstance(v, str):
            pairs = [p.split(":", 1) for p in v.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("expected user:password[,user:password...]")
            return {u.strip(): pw.strip() for u, pw in pairs}
        return v

    @field_validator("routes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_list(v)

    @property
    def state_dir(self) -> Path:
        """The data directory in effect: the one given, else this hub's own default."""
        return self.data_dir or default_data_dir("hubs", self.name)

    @property
    def replicas(self) -> int:
        """Replicas of the JetStream assets: what was asked, else 3 once the cluster has three hubs."""
        return self.jetstream_replicas or (3 if len(self.routes) >= 2 else 1)

    def config(
        self,
        internal_user: tuple[str, str] | None = None,
        system_user: tuple[str, str] | None = None,
        banned: frozenset[str] = frozenset(),
    ) -> HubConfig:
        """The nats-server config these settings describe (with the guard's login and bans)."""
        return HubConfig(
            name=self.name,
            host=self.host,
            port=self.port,
            leafnode_port=self.leafnode_port,
            http_port=self.http_port,
            cluster_port=self.cluster_port,
            routes=self.routes,
            provider_users=self.provider_users,
            client_users=self.client_users,
            ops_users=self.ops_users,
            jetstream_dir=str(self.state_dir / "jetstream"),
            internal_user=internal_user,
            system_user=system_user,
            banned=banned,
        )


async def run_hub(settings: HubSettings) -> None:
    """Run the hub's nats-server until SIGTERM/SIGINT, then stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # with users configured, the hub's own setup logs in as a user made for it at each start
    secured = bool(settings.provider_users or settings.client_users or settings.ops_users)
    internal = ("_wwwserve_hub", secrets.token_urlsafe(24)) if secured else None
    guarded = settings.guard and bool(settings.provider_users)
    system = ("_wwwserve_hub_sys", secrets.token_urlsafe(24)) if guarded else None
    server = NatsServer(
        settings.config(internal, system).render(),
        port=settings.port,
        host=settings.host,
        workdir=settings.state_dir,
        name=settings.name,
    )
    async with server:
        await create_when_ready(server.url, settings.replicas, internal)
        log.info(
            "hub.ready", url=server.url, leafnodes=f"nats-leaf://{settings.host}:{settings.leafnode_port}"
        )
        waiter = asyncio.create_task(stop.wait())
        died = asyncio.create_task(_wait_exit(server))
        tasks = {waiter, died}
        if internal is not None and system is not None:
            guard = HubGuard(
                url=server.url,
                hub_name=settings.name,
                user=internal,
                system_user=system,
                providers=set(settings.provider_users),
                apply_bans=lambda banned: server.reload(settings.config(internal, system, banned).render()),
            )
            tasks.add(asyncio.create_task(guard.run(stop)))
        await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("hub.stopped")


async def _wait_exit(server: NatsServer) -> None:
    while server.pid is not None:
        await asyncio.sleep(0.5)
