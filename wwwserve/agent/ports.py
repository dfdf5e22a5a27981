"""What the agent's parts receive instead of the agent: the few narrow inputs each one uses.

The agent wires its parts together (docs/architecture.md): the dispatcher, the credits, the duels and
the micro service each get the values below and never import `Agent`. A test builds any of them
from fakes of these inputs, without NATS or an agent (tests/test_agent_parts.py).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from nats.aio.client import Client

from wwwserve.engines.base import EngineLoad
from wwwserve.ledger.book import LedgerView
from wwwserve.ledger.records import Record

# run a coroutine as a task its owner tracks (drain waits for it, shutdown cancels it)
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Link:
    """The agent's NATS connection, handed to its parts before it exists (the agent connects in `run`)."""

    __slots__ = ("_nc",)

    def __init__(self, nc: Client | None = None) -> None:
        self._nc = nc

    @property
    def nc(self) -> Client:
        """The connection; an error before the agent connected."""
        if self._nc is None:
            raise RuntimeError("not connected yet")
        return self._nc

    def attach(self, nc: Client) -> None:
        """The agent connected: every part holding this link uses `nc` from now on."""
        self._nc = nc


class LedgerReader(Protocol):
    """Whoever holds the folded credit ledger (the view object changes when a checkpoint is loaded)."""

    @property
    def view(self) -> LedgerView:
        """The current folded view: balances, stakes, reputation, duel evidence."""
        ...


class Receipts(Protocol):
    """Both halves of a served request's receipt: the server signs one, the origin settles it."""

    def server_half(self, request_id: str, model: str, prompt: int, completion: int, origin: str) -> str:
        """The header a server attaches to the final message of a request served for `origin`."""
        ...

    async def settle(self, peer: str, request_id: str, header: str | None) -> None:
        """As origin: check the server's half, countersign it, keep and publish the receipt."""
        ...


class RecordSink(Receipts, Protocol):
    """Receipts, plus handing any record this agent signed to the ledger stream."""

    async def publish(self, record: Record) -> bool:
        """Publish a signed record (kept in an outbox until the stream has it)."""
        ...


class ServingHost(Protocol):
    """What a request's path asks of the agent that hosts it: its engine's health and load."""

    def load(self) -> EngineLoad:
        """The engine's load, with prompts accepted but still waiting for a slot as backlog."""
        ...

    def engine_healthy(self, load: EngineLoad | None = None) -> bool:
        """The engine answers and has not stalled within the cool-down."""
        ...

    @property
    def draining(self) -> bool:
        """Shutting down: new work is forwarded or refused."""
        ...

    def mark_engine_unhealthy(self, reason: str) -> None:
        """An engine fault: stop taking work for the cool-down."""
        ...
