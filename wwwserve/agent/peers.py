"""The peer table: what every other agent last said about itself, expiring when it falls silent."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from wwwserve.policies.base import PeerState
from wwwserve.protocol.messages import Heartbeat
from wwwserve.protocol.prefix import PrefixFilter


@dataclass
class Peer:
    """One peer's latest heartbeat, when it arrived, and what we sent it since."""

    beat: Heartbeat
    received: float  # time.monotonic() at arrival
    sent_since_beat: int = 0  # requests we forwarded to it after this heartbeat
    prefix_filter: PrefixFilter | None = None  # what its prefix cache holds, decoded from the heartbeat
    state: PeerState | None = None  # the policy's view of this beat (agent/dispatch.py), reused per request
    state_version: int = -1  # the ledger version `state`'s stake and reputation come from

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this peer last spoke."""
        return (now if now is not None else time.monotonic()) - self.received


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
        self._suspended: set[str] = set()  # failed us: not chosen again until its next heartbeat
        self._last_heard = time.monotonic()
        self._views: dict[str, tuple[float, list[str]]] = {}  # model -> (built at, candidate names)

    def update(self, beat: Heartbeat) -> Peer | None:
        """Take a heartbeat; a newer one resets what we sent since the last. Returns the new entry."""
        now = time.monotonic()
        self._last_heard = now
        if beat.name == self.own_name:
            return None
        old = self._peers.get(beat.name)
        if old is not None and beat.seq and old.beat.seq > beat.seq and old.beat.ts_ms >= beat.ts_ms:
            return None  # out of order
        if old is not None and old.beat.prefix_filter == beat.prefix_filter:
            decoded = old.prefix_filter  # unchanged since the last beat: no need to decode it again
        else:
            decoded = PrefixFilter.decode(beat.prefix_filter)
        if old is None:
            self._views.clear()  # a newcomer is a candidate at once, not at the next rebuild
        peer = self._peers[beat.name] = Peer(beat, now, prefix_filter=decoded)
        self._suspended.discard(beat.name)
        return peer

    def _expired(self, peer: Peer, now: float) -> bool:
        # a peer that beats less often (a big network) is given three of its own intervals
        expiry = max(self.expiry_s, 3.0 * peer.beat.interval_s)
        return peer.age_s(now) > expiry and now - self._last_heard <= expiry

    def __len__(self) -> int:
        """Peers in the table (alive or not yet dropped)."""
        return len(self._peers)

    def knows(self, name: str) -> bool:
        """Whether `name` is in the table (alive or not yet expired-and-dropped)."""
        return name in self._peers

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
        self._peers.pop(name, None)

    def suspend(self, name: str) -> None:
        """A request to `name` failed: choose it no more until its next heartbeat.

        Unlike `remove`, it stays alive for the relays already streaming from it (removing it made
        them give up on answers that were still coming).
        """
        if name in self._peers:
            self._suspended.add(name)

    def alive(self) -> list[Peer]:
        """Peers heard from within the expiry window; expired ones are dropped."""
        now = time.monotonic()
        for name in [n for n, p in self._peers.items() if self._expired(p, now)]:
            del self._peers[name]
        return list(self._peers.values())

    def _usable(self, p: Peer, model: str, now: float) -> bool:
        return (
            model in p.beat.models
            and p.beat.healthy
            and p.beat.name not in self._suspended
            and not self._expired(p, now)
        )

    def serving(self, model: str, now: float | None = None, max_age_s: float | None = None) -> list[Peer]:
        """Alive, healthy, not suspended peers that serve `model`: all of them up to `view_size`, else a
        bounded view of that many candidates, so a decision costs O(view_size) whatever the network's size.

        The view holds the half with the most free room by their last heartbeat (room x prefill speed)
        and a random sample of the rest, so load spreads and every peer is looked at now and then. It
        is rebuilt when older than `max_age_s` (default `refresh_s`): the agent's heartbeat loop
        rebuilds it every `refresh_s`, and requests accept one twice that old, so the sort stays off the
        request path.
        """
        now = time.monotonic() if now is None else now
        built = self._views.get(model)
        if built is not None and now - built[0] < (self.refresh_s if max_age_s is None else max_age_s):
            picked = (self._peers.get(name) for name in built[1])
            return [p for p in picked if p is not None and self._usable(p, model, now)]
        of_model = [p for p in self.alive() if model in p.beat.models]
        usable = [p for p in of_model if self._usable(p, model, now)]
        if len(usable) <= self.view_size:
            # every provider of the model, usable or not: each request filters (a suspended one is back
            # with its next beat)
            self._views[model] = (now, [p.beat.name for p in of_model])
            return usable
        usable.sort(key=_room, reverse=True)
        best = self.view_size // 2
        view = usable[:best] + self._rng.sample(usable[best:], self.view_size - best)
        self._views[model] = (now, [p.beat.name for p in view])
        return view
