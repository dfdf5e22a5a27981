"""The peer table: expiry that tells a silent peer from a process that fell behind, and suspension."""

from __future__ import annotations

import pytest

from wwwserve.agent import peers as peers_module
from wwwserve.agent.peers import PeerTable
from wwwserve.protocol.messages import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(peers_module.time, "monotonic", c)
    return c


def beat(name: str, seq: int = 1) -> Heartbeat:
    return Heartbeat(name=name, models=["m"], engine="sim", capacity=1, seq=seq)


def test_a_silent_peer_expires_while_others_are_heard(clock: Clock) -> None:
    t = PeerTable("me", expiry_s=3.5)
    t.update(beat("a"))
    t.update(beat("b"))
    clock.now += 3.0
    t.update(beat("me", 2))  # our own beat, heard on our leaf
    t.update(beat("b", 2))
    clock.now += 1.0
    assert not t.is_alive("a") and t.is_alive("b")
    assert [p.beat.name for p in t.serving("m")] == ["b"]


def test_when_everyone_looks_silent_at_once_nobody_is_declared_lost(clock: Clock) -> None:
    """A busy event loop processes heartbeats late: all peers look old together; that is us."""
    t = PeerTable("me", expiry_s=3.5)
    t.update(beat("a"))
    t.update(beat("b"))
    clock.now += 6.0  # nothing processed for 6 s
    assert t.is_alive("a") and t.is_alive("b") and len(t.serving("m")) == 2
    t.update(beat("b", 2))  # the first heartbeat through: now a's silence is real
    assert not t.is_alive("a") and t.is_alive("b")


def test_a_suspended_peer_is_not_chosen_but_stays_alive_until_its_next_beat(clock: Clock) -> None:
    t = PeerTable("me", expiry_s=3.5)
    t.update(beat("a"))
    t.suspend("a")
    assert t.is_alive("a") and t.serving("m") == []  # relays already streaming from it go on
    t.update(beat("a", 2))
    assert [p.beat.name for p in t.serving("m")] == ["a"]
