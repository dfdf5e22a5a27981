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
        self.waiting_prefill = 0  # prompt tokens of the requests waiting for a slot (prefill ahead)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def try_take(self) -> bool:
        """Take a free slot at once when nobody waits ahead (the common case needs no await)."""
        if self.running < self.capacity and not self._waiters:
            self.running += 1
            self._on_change()
            return True
        return False

    async def take(self, prefill: int = 0) -> None:
        """Take a slot, waiting in arrival order; raise Overloaded when the wait queue is full.

        `prefill`: the request's prompt tokens, counted in `waiting_prefill` while it waits (until
        the engine has it, its prompt is prefill work ahead of later requests: the policies' estimate).
        """
        if self.try_take():
            return
        if len(self._waiters) >= self.queue_limit:
            raise Overloaded(f"queue full ({self.queue_limit} waiting, {self.running} running)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.waiting_prefill += prefill
        self._on_change()
        try:
            await fut
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self._release()  # we were handed a slot but leave without using it
            raise
        finally:
            self.waiting_prefill -= prefill
        self._on_change()

    def give_back(self) -> None:
        """Return a slot taken with `take` or `try_take`."""
        self._release()
        self._on_change()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block; raise Overloaded when the queue is full."""
        await self.take()
        try:
            yield
        finally:
            self.give_back()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.running -= 1
