"""The agent as a NATS micro service: `nats micro ls/info/stats` see every provider.

Service name `wwwserve`; one endpoint per model on the provider's direct subject
(`llm.direct.<provider>.<model>`), `status` on `llm.status.<provider>` (the latest heartbeat), and
`ledger` on `llm.ledger.view.<provider>` (its view of the credit ledger).
The `llm.request.<model>` queue-group subscriptions stay outside the service: the agent joins and
leaves them with its load, which micro endpoints cannot do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from wwwserve import __version__
from wwwserve.agent.credits import view_subject
from wwwserve.protocol import subjects

if TYPE_CHECKING:
    from wwwserve.agent.agent import Agent

SERVICE_NAME = "wwwserve"
STATUS_PREFIX = "llm.status"
_ENDPOINT_NAME = re.compile(r"[^A-Za-z0-9_-]")


def status_subject(provider: str) -> str:
    """Where a provider answers with its current state."""
    return f"{STATUS_PREFIX}.{provider}"


async def register_service(agent: Agent, on_direct: Callable[[Msg], Awaitable[None]]) -> Service:
    """Register the agent's micro service; `on_direct` handles requests on the model endpoints."""

    def stats(ep: EndpointStats) -> dict[str, Any]:
        s = agent.stats
        return {
            "served": s.served,
            "failed": s.failed,
            "forwarded": s.forwarded,
            "running": agent.slots.running,
            "queued": agent.slots.queued,
        }

    svc = await add_service(
        agent.nc,
        name=SERVICE_NAME,
        version=__version__,
        description=f"wwwserve provider {agent.name}",
        metadata={
            "provider": agent.name,
            "engine": agent.engine.kind,
            "models": ",".join(agent.models.values()),
        },
        queue_group=f"wwwserve-{agent.name}",
        stats_handler=stats,
    )

    async def direct(req: Request) -> None:
        await on_direct(req._msg)

    for tok, model in agent.models.items():
        await svc.add_endpoint(
            name=_ENDPOINT_NAME.sub("_", tok),
            subject=subjects.direct_subject(agent.name, model),
            handler=direct,
            metadata={"model": model},
        )

    async def status(req: Request) -> None:
        await req.respond(
            json.dumps(agent.heartbeat().model_dump()).encode(), headers={"Content-Type": "application/json"}
        )

    await svc.add_endpoint(name="status", subject=status_subject(agent.name), handler=status)

    async def ledger(req: Request) -> None:
        await req.respond(
            json.dumps(agent.credits.view()).encode(), headers={"Content-Type": "application/json"}
        )

    await svc.add_endpoint(name="ledger", subject=view_subject(agent.name), handler=ledger)
    return svc
