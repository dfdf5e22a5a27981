"""The requests an agent is handling and the answers of recent ones: each request id is served once."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from wwwserve.agent.replies import ReplyWriter


@dataclass
class Active:
    """A request being handled: its task (to cancel) and its writer (to redirect)."""

    task: asyncio.Task[None]
    writer: ReplyWriter


class RequestRegistry:
    """Active requests by id, plus the final message of recently finished ones.

    A retry of a request this agent is still serving is attached to the running work (its replies go
    to the new inbox) instead of being served again; a retry of one it finished recently gets the
    same final answer again. Entries of finished requests expire after `ttl_s` or beyond `keep` (the
    oldest dropped an eighth of `keep` at a time).
    """

    def __init__(self, keep: int = 4096, ttl_s: float = 300.0) -> None:
        self.keep = keep
        self.ttl_s = ttl_s
        self.active: dict[str, Active] = {}
        self.cancelled: set[str] = set()
        self._recent: dict[str, tuple[float, bytes, dict[str, str]]] = {}

    def begin(self, request_id: str, task: asyncio.Task[None], writer: ReplyWriter) -> None:
        """Register the handling of `request_id`."""
        self.active[request_id] = Active(task, writer)

    def end(self, request_id: str, task: asyncio.Task[None] | None) -> None:
        """Forget the handling of `request_id` (only if `task` is the one registered)."""
        current = self.active.get(request_id)
        if current is not None and current.task is task:
            del self.active[request_id]
        self.cancelled.discard(request_id)

    def remember(self, request_id: str, data: bytes, headers: dict[str, str]) -> None:
        """Keep the final message of a finished request for retries that come late."""
        recent = self._recent
        recent.pop(request_id, None)  # a dict keeps insertion order: the oldest entries are the first
        recent[request_id] = (time.monotonic() + self.ttl_s, data, headers)
        if len(recent) > self.keep + self.keep // 8:
            # the oldest eighth at once: a dict's deleted entries stay at its front until it resizes,
            # so finding "the oldest" one at a time costs a scan over them on every request
            for old in list(itertools.islice(recent, len(recent) - self.keep)):
                del recent[old]

    def recent(self, request_id: str) -> tuple[bytes, dict[str, str]] | None:
        """The remembered final message of `request_id`, if it has not expired."""
        hit = self._recent.get(request_id)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._recent[request_id]
            return None
        return hit[1], hit[2]
