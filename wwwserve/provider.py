"""`wwwserve provider`: start the provider's leaf nats-server (unless given one), the engine and the agent."""

from __future__ import annotations

import asyncio
import signal

import structlog

from wwwserve.agent.agent import Agent
from wwwserve.agent.settings import ProviderSettings
from wwwserve.broker.config import LeafConfig
from wwwserve.broker.process import NatsServer
from wwwserve.engines.factory import create_engine
from wwwserve.policies.registry import load_policy

log = structlog.get_logger(__name__)


def leaf_server(settings: ProviderSettings) -> NatsServer:
    """The provider's own leaf node, joined to the hubs in `settings.hub`."""
    cfg = LeafConfig(
        hub_urls=settings.hub,
        name=f"leaf-{settings.name}",
        host=settings.host,
        port=settings.port,
        credentials_user=(settings.hub_user or settings.name) if settings.hub_password else None,
        credentials_password=settings.hub_password,
    )
    return NatsServer(
        cfg.render(),
        port=settings.port,
        host=settings.host,
        workdir=settings.state_dir / "nats",
        name=f"leaf-{settings.name}",
    )


async def run_provider(settings: ProviderSettings) -> None:
    """Run until SIGTERM/SIGINT; then drain the agent and stop the leaf node."""
    engine = create_engine(settings.engine, settings.engine_url, settings.engine_opt, settings.model)
    policy = load_policy(settings.policy)
    agent = Agent(settings, engine, policy)  # locks the data directory before anything writes there
    leaf = None if settings.nats_url else leaf_server(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        if leaf is not None:
            await leaf.start()
            log.info("provider.leaf_ready", url=leaf.url, hubs=settings.hub)
        await agent.run()
    finally:
        if leaf is not None:
            await leaf.stop()
        agent.credits.close()  # run() closes it too; this covers a leaf that never started
