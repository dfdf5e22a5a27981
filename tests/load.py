"""Steady request load with deadlines, counting served / failed explicitly / lost (fault tests)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from wwwserve.client import Client
from wwwserve.errors import DeadlineExceeded, WWWServeError
from wwwserve.protocol.messages import Reply


@dataclass
class Outcome:
    """One request of the load: when it was sent and ended, and how."""

    sent: float
    ended: float = 0.0
    kind: str = ""  # served | failed | lost
    detail: str = ""


@dataclass
class SteadyLoad:
    """Sends `rate_hz` streaming requests per second, round-robin over `clients`, each with `deadline_s`."""

    clients: list[Client]
    model: str
    rate_hz: float = 8.0
    deadline_s: float = 10.0
    max_tokens: int = 20
    outcomes: list[Outcome] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: asyncio.Task[None] | None = None

    async def _one(self, client: Client, i: int) -> None:
        out = Outcome(sent=time.monotonic())
        self.outcomes.append(out)
        try:
            async for item in client.stream(
                self.model, {"prompt": f"load {i}", "max_tokens": self.max_tokens}, timeout=self.deadline_s
            ):
                if isinstance(item, Reply):
                    out.kind, out.detail = "served", item.provider
        except DeadlineExceeded as exc:
            # raised here, not sent by an agent: no answer arrived by the deadline -> lost
            out.kind, out.detail = ("failed" if exc.remote else "lost"), exc.code
        except WWWServeError as exc:
            out.kind, out.detail = "failed", exc.code
        out.ended = time.monotonic()

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            task = asyncio.create_task(self._one(self.clients[i % len(self.clients)], i))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1
            await asyncio.sleep(1 / self.rate_hz)

    def start(self) -> None:
        """Begin sending."""
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, int]:
        """Stop sending, wait for every request to end, and count outcomes."""
        self._stop.set()
        if self._runner:
            await self._runner
        await asyncio.gather(*self._tasks)
        counts = {"sent": len(self.outcomes), "served": 0, "failed": 0, "lost": 0}
        for o in self.outcomes:
            counts[o.kind or "lost"] += 1
        return counts

    def recovery_s(self, fault_at: float) -> float | None:
        """From the fault until a request sent after it was served."""
        after = [o for o in self.outcomes if o.sent >= fault_at and o.kind == "served"]
        return round(min(o.ended for o in after) - fault_at, 3) if after else None
