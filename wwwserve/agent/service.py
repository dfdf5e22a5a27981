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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from wwwserve import __version__
from wwwserve.agent.credits import view_subject
from wwwserve.protocol import subjects
from wwwserve.protocol.messages import Heartbeat

SERVICE_NAME = "wwwserve"
STATUS_PREFIX = "llm.status"
_ENDPOINT_NAME = re.compile(r"[^A-Za-z0-9_-]")


def status_subject(provider: str) -> str:
    """Where a provider answers with its current state."""
    return f"{STATUS_PREFIX}.{provider}"


@dataclass(frozen=True)
class ServiceParts:
    """What the micro service shows and whom it calls: each a small value or a callable of the agent."""

    name: str  # the provider
    engine_kind: str
    models: Mapping[str, str]  # subject token -> model name
    counts: Callable[[], dict[str, int]]  # `nats micro stats`: served, failed, forwarded, running, queued
    status: Callable[[], Heartbeat]  # `llm.status.<provider>`: what it says about itself now
    ledger_view: Callable[[], dict[str, Any]]  # `llm.ledger.view.<provider>`
    on_direct: Callable[[Msg], Awaitable[None]]  # a request on a model endpoint (the dispatcher)


async def register_service(nc: Client, parts: ServiceParts) -> Service:
    """Register the provider's micro service on `nc`; `nats micro ls/info/stats` find it."""

    def stats(ep: EndpointStats) -> dict[str, Any]:
        return dict(parts.counts())

    name = parts.name
    svc = await add_service(
        nc,
        name=SERVICE_NAME,
        version=__version__,
        description=f"wwwserve provider {name}",
        metadata={"provider": name, "engine": parts.engine_kind, "models": ",".join(parts.models.values())},
        queue_group=f"wwwserve-{name}",
        stats_handler=stats,
    )
    on_direct = parts.on_direct

    async def direct(req: Request) -> None:
        await on_direct(req._msg)

    for tok, model in parts.models.items():
        await svc.add_endpoint(
            name=_ENDPOINT_NAME.sub("_", tok),
            subject=subjects.direct_subject(name, model),
            handler=direct,
            metadata={"model": model},
        )

    async def status(req: Request) -> None:
        await req.respond(
            json.dumps(parts.status().model_dump()).encode(), headers={"Content-Type": "application/json"}
        )

    await svc.add_endpoint(name="status", subject=status_subject(name), handler=status)

    async def ledger(req: Request) -> None:
        body = json.dumps(parts.ledger_view()).encode()
        await req.respond(body, headers={"Content-Type": "application/json"})

    await svc.add_endpoint(name="ledger", subject=view_subject(name), handler=ledger)
    return svc
