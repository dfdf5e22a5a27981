"""One timer per request for both of its limits: the deadline, and an engine that stops producing.

`asyncio.timeout` around the request plus one around each engine delta cost three timers per request
and one per token (each a Python context manager, a heap push and a cancel: ~15 µs of a ~200 µs
request, measured). Here a request arms one timer, due at its deadline or after `stall_s`, whichever
is nearer; progress only writes a timestamp, and when the timer fires it re-arms if the engine moved
meanwhile (or has not started yet), or cancels the request's task and says why (`fired`). Most
requests end before either limit: one arm, one cancel.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

Reason = Literal["deadline", "stall"]


class Watchdog:
    """Cancels `task` at `deadline` (loop time), or when the engine is silent for `stall_s` while watched."""

    __slots__ = ("_deadline", "_handle", "_loop", "_stall_s", "_task", "fired", "progress", "watching")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], deadline: float, stall_s: float
    ) -> None:
        self._loop = loop
        self._task = task
        self._deadline = deadline
        self._stall_s = stall_s
        self.watching = False  # the engine is generating: its silence counts
        self.progress = math.inf  # loop time of the engine's last sign of life
        self.fired: Reason | None = None
        # due at the nearer limit a request can have: the engine starts soon, and the check re-arms
        # for what is left (one timer per request instead of one more when the engine starts)
        soon = loop.time() + stall_s
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            deadline if deadline < soon else soon, self._check
        )

    def engine_started(self) -> None:
        """The engine has the request now: from here, silence longer than `stall_s` is a stall."""
        self.progress = self._loop.time()
        self.watching = True

    def tick(self) -> None:
        """The engine produced something: it is alive."""
        self.progress = self._loop.time()

    def engine_stopped(self) -> None:
        """The engine is done with the request (only the deadline counts again)."""
        self.watching = False

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self._fire("deadline")
        elif self.watching and now - self.progress >= self._stall_s:
            self._fire("stall")
        else:
            # waiting (a slot, a peer): look again in `stall_s`, in case the engine starts meanwhile
            last = self.progress if self.watching else now
            due = min(self._deadline, last + self._stall_s)
            self._handle = self._loop.call_at(due, self._check)

    def _fire(self, reason: Reason) -> None:
        self._handle = None
        if not self._task.done():
            self.fired = reason
            self._task.cancel()

    def claim(self) -> Reason | None:
        """After a CancelledError: the reason when this watchdog caused it (and nobody else cancelled)."""
        reason, self.fired = self.fired, None
        if reason is None:
            return None
        return reason if self._task.uncancel() == 0 else None

    def close(self) -> None:
        """The request ended: drop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
