"""The peer table: what every other agent last said about itself, expiring when it falls silent."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from wwwserve.policies.base import PeerState
from wwwserve.protocol.messages import Heartbeat
from wwwserve.protocol.prefix import PrefixFilter


@dataclass(slots=True, eq=False)
class Peer:
    """One peer, kept for as long as it is heard: its latest heartbeat and what the request path reads
    of it, updated in place by each beat (a decision touches one small object per candidate, not the
    heartbeat model)."""

    beat: Heartbeat
    received: float  # time.monotonic() at arrival
    name: str = ""
    models: frozenset[str] = frozenset()
    healthy: bool = True
    silence_s: float = 0.0  # how long it may stay silent before it counts as gone (3 of its intervals)
    sent_since_beat: int = 0  # requests we forwarded to it after this heartbeat
    prefix_filter: PrefixFilter | None = None  # what its prefix cache holds, decoded from the heartbeat
    state: PeerState | None = None  # the policy's view of this beat (agent/dispatch.py), reused per request
    state_version: int = -1  # the ledger version `state` was filled from; -1: a newer beat to fill in
    suspended: bool = False  # failed us: not chosen again until its next heartbeat
    gone: bool = False  # dropped from the table (a candidate view built earlier may still hold it)
    one_way_ms: float = -1.0  # how long its beats take to reach us (lower envelope); -1: not measured

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this peer last spoke."""
        return (now if now is not None else time.monotonic()) - self.received

    def take(self, beat: Heartbeat, now: float, expiry_s: float) -> None:
        """Adopt a newer heartbeat: fresh load, nothing sent since, chosen again if it was suspended."""
        first = self.received < 0
        if first or self.beat.prefix_filter != beat.prefix_filter:
            self.prefix_filter = PrefixFilter.decode(beat.prefix_filter)  # unchanged: no decoding again
        if first or self.beat.models != beat.models:
            self.models = frozenset(beat.models)
        if beat.ts_ms > 0:
            self.one_way_ms = _lower_envelope(self.one_way_ms, time.time() * 1000.0 - beat.ts_ms)
        self.beat = beat
        self.received = now
        self.name = beat.name
        self.healthy = beat.healthy
        self.silence_s = max(expiry_s, 3.0 * beat.interval_s)  # a slow beater (big network): 3 intervals
        self.sent_since_beat = 0
        self.state_version = -1
        self.suspended = False


MAX_TRANSIT_MS = 500.0  # no link on Earth is slower one way; more is queueing in a loaded agent


def _lower_envelope(current: float, sample: float) -> float:
    """The path delay under the noise: a beat's transit is the path plus queueing in both agents'
    event loops, so the estimate follows new lows at once and highs only slowly (like TCP's min RTT).

    Needs clocks in step (NTP: ~1 ms); a sample from a clock ahead of ours counts as 0."""
    sample = min(max(sample, 0.0), MAX_TRANSIT_MS)
    if current < 0 or sample < current:
        return sample
    return current + 0.05 * (sample - current)


def _room(p: Peer) -> float:
    """A peer's free places (by its last heartbeat, minus what we sent since) times its prefill speed."""
    b = p.beat
    free = b.capacity + b.queue_limit - b.running - b.queued - p.sent_since_beat
    return max(0, free) * max(1.0, b.prefill_tps)


class PeerTable:
    """Peers by name, built from heartbeats; entries older than `expiry_s` are invisible.

    Silence is judged against the last heartbeat heard from anyone (our own included): when every
    peer looks silent at once, the likelier cause is that this process fell behind (a busy event loop
    processes heartbeats late), not that the whole network died, so nobody is declared lost until
    some heartbeat gets through again. An agent cut off from the hub still hears its own beats on its
    leaf, so real silence is still noticed within the expiry.
    """

    def __init__(
        self,
        own_name: str,
        expiry_s: float,
        view_size: int = 32,
        refresh_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.own_name = own_name
        self.expiry_s = expiry_s
        self.view_size = view_size
        self.refresh_s = refresh_s
        self._rng = rng or random.Random()
        self._peers: dict[str, Peer] = {}
        self._last_heard = time.monotonic()
        self._views: dict[str, tuple[float, list[Peer]]] = {}  # model -> (built at, candidates)

    def update(self, beat: Heartbeat) -> Peer | None:
        """Take a heartbeat; a newer one resets what we sent since the last. Returns the peer's entry."""
        now = time.monotonic()
        self._last_heard = now
        if beat.name == self.own_name:
            return None
        peer = self._peers.get(beat.name)
        if peer is not None and beat.seq and peer.beat.seq > beat.seq and peer.beat.ts_ms >= beat.ts_ms:
            return None  # out of order
        joined = peer is None or peer.beat.models != beat.models
        if peer is None:
            peer = self._peers[beat.name] = Peer(beat, -1.0)
        peer.take(beat, now, self.expiry_s)
        if joined:
            self._joined(peer)
        return peer

    def _expired(self, peer: Peer, now: float) -> bool:
        return now - peer.received > peer.silence_s and now - self._last_heard <= peer.silence_s

    def __len__(self) -> int:
        """Peers in the table (alive or not yet dropped)."""
        return len(self._peers)

    def knows(self, name: str) -> bool:
        """Whether `name` is in the table (alive or not yet expired-and-dropped)."""
        return name in self._peers

    def get(self, name: str) -> Peer | None:
        """`name`'s entry, alive or not yet dropped (None if unknown)."""
        return self._peers.get(name)

    def is_alive(self, name: str) -> bool:
        """Whether `name` has heartbeated within the expiry window."""
        peer = self._peers.get(name)
        return peer is not None and not self._expired(peer, time.monotonic())

    def note_forwarded(self, name: str) -> None:
        """Count a request we just sent, so the next choice does not herd onto the same peer."""
        peer = self._peers.get(name)
        if peer is not None:
            peer.sent_since_beat += 1

    def remove(self, name: str) -> None:
        """Forget a peer at once (it said goodbye)."""
        peer = self._peers.pop(name, None)
        if peer is not None:
            peer.gone = True

    def suspend(self, name: str) -> None:
        """A request to `name` failed: choose it no more until its next heartbeat.

        Unlike `remove`, it stays alive for the relays already streaming from it (removing it made
        them give up on answers that were still coming).
        """
        peer = self._peers.get(name)
        if peer is not None:
            peer.suspended = True

    def alive(self) -> list[Peer]:
        """Peers heard from within the expiry window; expired ones are dropped."""
        now = time.monotonic()
        for name in [n for n, p in self._peers.items() if self._expired(p, now)]:
            self._peers.pop(name).gone = True
        return list(self._peers.values())

    def _usable(self, p: Peer, model: str, now: float) -> bool:
        usable = p.healthy and not p.suspended and not p.gone
        return usable and model in p.models and not self._expired(p, now)

    def serving(self, model: str, now: float | None = None, max_age_s: float | None = None) -> list[Peer]:
        """Alive, healthy, not suspended peers that serve `model`: all of them up to `view_size`, else a
        bounded view of that many candidates, so a decision costs O(view_size) whatever the network's size.

        The view holds the half with the most free room by their last heartbeat (room x prefill speed)
        and a random sample of the rest, so load spreads and every peer is looked at now and then. It
        is rebuilt when older than `max_age_s` (default `refresh_s`). Requests use `candidates`, which
        never sorts: a rebuild is the agent's to do between requests.
        """
        now = time.monotonic() if now is None else now
        built = self._views.get(model)
        if built is not None and now - built[0] < (self.refresh_s if max_age_s is None else max_age_s):
            return [p for p in built[1] if self._usable(p, model, now)]
        return self._rebuild(model, now)

    def candidates(self, model: str, now: float) -> tuple[list[Peer], bool]:
        """A request's candidates: the current view, filtered, and whether it is due a rebuild (the
        caller schedules one after the request). Only a model never looked at is built on the spot."""
        built = self._views.get(model)
        if built is None:
            return self._rebuild(model, now), False
        return [p for p in built[1] if self._usable(p, model, now)], now - built[0] >= self.refresh_s

    def _rebuild(self, model: str, now: float) -> list[Peer]:
        of_model = [p for p in self.alive() if model in p.models]
        usable = [p for p in of_model if self._usable(p, model, now)]
        if len(usable) <= self.view_size:
            # every provider of the model, usable or not: each request filters (a suspended one is back
            # with its next beat)
            self._views[model] = (now, of_model)
            return usable
        usable.sort(key=_room, reverse=True)
        best = self.view_size // 2
        view = usable[:best] + self._rng.sample(usable[best:], self.view_size - best)
        self._views[model] = (now, view)
        return view

    def _joined(self, peer: Peer) -> None:
        """A newcomer (or a peer with new models) is a candidate at once in a view with room for it;
        a full view takes it at its next rebuild, which is then due."""
        for model, (built, view) in list(self._views.items()):
            if peer in view:
                view = [p for p in view if p is not peer]
            if model in peer.models and len(view) < self.view_size:
                self._views[model] = (built, [*view, peer])
            else:
                self._views[model] = (-math.inf if model in peer.models else built, view)
