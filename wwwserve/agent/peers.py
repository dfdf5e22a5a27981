"""The peer table: what every other agent last said about itself, expiring when it falls silent."""

from __future__ import annotations

import time
from dataclasses import dataclass

from wwwserve.protocol.messages import Heartbeat


@dataclass
class Peer:
    """One peer's latest heartbeat, when it arrived, and what we sent it since."""

    beat: Heartbeat
    received: float  # time.monotonic() at arrival
    sent_since_beat: int = 0  # requests we forwarded to it after this heartbeat

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this peer last spoke."""
        return (now if now is not None else time.monotonic()) - self.received


class PeerTable:
    """Peers by name, built from heartbeats; entries older than `expiry_s` are invisible."""

    def __init__(self, own_name: str, expiry_s: float) -> None:
        self.own_name = own_name
        self.expiry_s = expiry_s
        self._peers: dict[str, Peer] = {}

    def update(self, beat: Heartbeat) -> None:
        """Take a heartbeat; a newer one resets what we sent since the last."""
        if beat.name == self.own_name:
            return
        old = self._peers.get(beat.name)
        if old is not None and beat.seq and old.beat.seq > beat.seq and old.beat.ts_ms >= beat.ts_ms:
            return  # out of order
        self._peers[beat.name] = Peer(beat, time.monotonic())

    def knows(self, name: str) -> bool:
        """Whether `name` is in the table (alive or not yet expired-and-dropped)."""
        return name in self._peers

    def is_alive(self, name: str) -> bool:
        """Whether `name` has heartbeated within the expiry window."""
        peer = self._peers.get(name)
        return peer is not None and peer.age_s() <= self.expiry_s

    def note_forwarded(self, name: str) -> None:
        """Count a request we just sent, so the next choice does not herd onto the same peer."""
        peer = self._peers.get(name)
        if peer is not None:
            peer.sent_since_beat += 1

    def remove(self, name: str) -> None:
        """Forget a peer at once (it said goodbye, or it failed us)."""
        self._peers.pop(name, None)

    def alive(self) -> list[Peer]:
        """Peers heard from within the expiry window; expired ones are dropped."""
        now = time.monotonic()
        for name in [n for n, p in self._peers.items() if p.age_s(now) > self.expiry_s]:
            del self._peers[name]
        return list(self._peers.values())

    def serving(self, model: str) -> list[Peer]:
        """Alive, healthy peers that serve `model`."""
        return [p for p in self.alive() if model in p.beat.models and p.beat.healthy]
