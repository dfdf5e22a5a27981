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


def test_a_large_network_is_seen_through_a_bounded_view_with_the_roomiest_peers_in_it(clock: Clock) -> None:
    import random

    table = PeerTable("me", expiry_s=3.5, view_size=8, refresh_s=1.0, rng=random.Random(1))
    for i in range(100):  # p0..p3 are idle, everyone else is full
        running = 0 if i < 4 else 1
        table.update(Heartbeat(name=f"p{i}", models=["m"], engine="sim", capacity=1, running=running, seq=1))
    view = [p.beat.name for p in table.serving("m")]
    assert len(view) == 8 and {"p0", "p1", "p2", "p3"} <= set(view)  # the best half by room
    assert [p.beat.name for p in table.serving("m")] == view  # kept until the refresh
    table.suspend(view[-1])
    assert view[-1] not in {p.beat.name for p in table.serving("m")}
    seen: set[str] = set()
    for _ in range(30):  # refreshed views sample the rest: every peer gets looked at now and then
        clock.now += 1.1
        for i in range(100):
            table.update(Heartbeat(name=f"p{i}", models=["m"], engine="sim", capacity=1, running=1, seq=2))
        seen |= {p.beat.name for p in table.serving("m")}
    assert len(seen) > 60
    small = PeerTable("me", expiry_s=3.5, view_size=8)
    for i in range(5):
        small.update(beat(f"q{i}"))
    assert len(small.serving("m")) == 5  # below the view size: every peer, as before
