"""Bounded concurrency with a bounded FIFO wait queue: the engine's slots."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

from wwwserve.errors import Overloaded


class Slots:
    """`capacity` requests run at once; up to `queue_limit` wait in arrival order; more are refused."""

    def __init__(self, capacity: int, queue_limit: int, on_change: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.queue_limit = queue_limit
        self._on_change = on_change or (lambda: None)
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block; raise Overloaded when the queue is full."""
        if self.running >= self.capacity or self._waiters:
            if len(self._waiters) >= self.queue_limit:
                raise Overloaded(f"queue full ({self.queue_limit} waiting, {self.running} running)")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            self._on_change()
            try:
                await fut
            except BaseException:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self._release()  # we were handed a slot but leave without using it
                raise
        else:
            self.running += 1
        self._on_change()
        try:
            yield
        finally:
            self._release()
            self._on_change()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.running -= 1
