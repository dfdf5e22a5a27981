"""Which heartbeats an agent hears, and how often it beats, so its heartbeat traffic does not grow with N.

Beats go to `llm.heartbeat.<model>.<shard>.<provider>` (64 shards per model, by name). An agent hears
only the models it serves: all of a model's shards while that model has few providers, else a random
subset sized so that it hears about `listen_target` providers (its own shard always, to hear itself;
one shard swapped every `ROTATE_S` so the sample moves). A provider beats at most every `min_gap()`:
the number of providers it hears over the per-agent budget; since listeners hear about as many
providers as it does, each agent receives at most ~`budget` beats per second whatever the network size.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wwwserve.protocol import subjects

ALL = None  # the whole model (one wildcard subscription)
IDLE_SHARE_INV = 10.0  # an idle network uses at most 1/10 of the per-agent heartbeat budget
ROTATE_S = 30.0
_SHARDS = subjects.HEARTBEAT_SHARDS


def shards_wanted(heard: int, listening: int, target: int) -> int:
    """How many shards to hear so that about `target` providers are heard, from what `listening`
    shards gave (`heard` providers); all of them while the model is small."""
    if heard <= 0:
        return _SHARDS
    estimate = heard * _SHARDS / max(1, listening)  # providers of the model network-wide
    return min(_SHARDS, max(1, math.ceil(target * _SHARDS / estimate)))


class BeatScope:
    """The agent's heartbeat subscriptions, per served model, resized as the network grows or shrinks."""

    def __init__(
        self,
        nc: NATS,
        own_name: str,
        model_tokens: list[str],
        on_beat: Callable[[Msg], Awaitable[None]],
        listen_target: int,
        budget: float,
        rng: random.Random,
    ) -> None:
        self._nc = nc
        self._own_shard = subjects.heartbeat_shard(own_name)
        self._tokens = model_tokens
        self._on_beat = on_beat
        self.listen_target = listen_target
        self.budget = budget
        self._rng = rng
        self._subs: dict[str, dict[int | None, Subscription]] = {t: {} for t in model_tokens}
        self._rotated = time.monotonic()

    async def start(self, providers: int = 0) -> None:
        """Hear each served model's shards: all of them, or, when the directory lists `providers`
        already, as many as that size asks for (resized by `adjust` once peers are heard)."""
        want = shards_wanted(providers, _SHARDS, self.listen_target)
        for tok in self._tokens:
            await self._resubscribe(tok, {ALL} if want >= _SHARDS else self._pick(want, set()))

    def listening(self, tok: str) -> int:
        """Shards of `tok` heard now."""
        subs = self._subs.get(tok, {})
        return _SHARDS if ALL in subs else len(subs)

    def min_gap(self, heard: int, interval: float) -> float:
        """Shortest time between two of our beats: listeners each hear ~`heard` providers like us."""
        return min(interval, max(0.05, heard / self.budget))

    def keepalive(self, heard: int, interval: float) -> float:
        """Longest time between two beats: `interval`, stretched (up to 5x) so that an idle network
        costs each agent at most a tenth of its budget; changes still go out after `min_gap`."""
        return min(5.0 * interval, max(interval, heard * IDLE_SHARE_INV / self.budget))

    async def adjust(self, heard: dict[str, int]) -> None:
        """Resize each model's shard set to what `heard` (providers heard per model token) asks for."""
        rotate = time.monotonic() - self._rotated >= ROTATE_S
        if rotate:
            self._rotated = time.monotonic()
        for tok in self._tokens:
            have = self.listening(tok)
            want = shards_wanted(heard.get(tok, 0), have, self.listen_target)
            if want >= _SHARDS:
                if have < _SHARDS:
                    await self._resubscribe(tok, {ALL})
                continue
            current = {s for s in self._subs[tok] if s is not None}
            if ALL in self._subs[tok] or abs(want - have) > max(1, have // 4):
                await self._resubscribe(tok, self._pick(want, current))
            elif rotate and want < _SHARDS - 1:
                others = sorted(current - {self._own_shard})
                if others:
                    current.discard(self._rng.choice(others))
                    spare = sorted(set(range(_SHARDS)) - current - {self._own_shard})
                    current.add(self._rng.choice(spare))
                    await self._resubscribe(tok, set[int | None](current))

    def _pick(self, want: int, keep: set[int]) -> set[int | None]:
        chosen: set[int] = {self._own_shard} | set(sorted(keep)[: max(0, want - 1)])
        spare = [s for s in range(_SHARDS) if s not in chosen]
        self._rng.shuffle(spare)
        chosen |= set(spare[: max(0, want - len(chosen))])
        return set[int | None](chosen)

    async def _resubscribe(self, tok: str, shards: set[int | None]) -> None:
        """Subscribe to the new set before leaving the old one, so no beat falls in between."""
        subs = self._subs[tok]
        for shard in shards - set(subs):
            subs[shard] = await self._nc.subscribe(subjects.heartbeat_filter(tok, shard), cb=self._on_beat)
        for shard in set(subs) - shards:
            with contextlib.suppress(Exception):
                await subs.pop(shard).unsubscribe()
