"""Verification runs on spare capacity: duels and canaries never take capacity users need.

A duel's second answer and its judges are drawn among providers whose last heartbeat (plus what this
agent sent them since) shows them below `SPARE_SHARE` of their capacity: the duel waits for two such
providers up to `SPARE_WAIT_S`, then draws among all (a network that stays busy is still verified). A
canary goes out only while this agent and the model's providers together are below that share. So
verification moves from the peaks to the quieter moments after them (docs/duels.md, "Spare capacity").
"""

from __future__ import annotations

from collections.abc import Iterable

from wwwserve.agent.peers import Peer

SPARE_SHARE = 0.25
SPARE_WAIT_S = 30.0  # a duel waits this long for a spare second provider and judge, then takes any
SPARE_POLL_S = 0.5  # how often it looks again (heartbeats come every second)


def _load(peer: Peer) -> int:
    """Requests at a peer as far as this agent knows: its last beat plus what it was sent since."""
    return peer.beat.running + peer.beat.queued + peer.sent_since_beat


def has_spare(peer: Peer) -> bool:
    """Whether a peer can take verification work without taking capacity its users need."""
    return _load(peer) < peer.beat.capacity * SPARE_SHARE


def network_has_spare(peers: Iterable[Peer], own_load: int, own_capacity: int) -> bool:
    """Whether these providers and this agent, taken together, are below the spare share of capacity."""
    load, capacity = own_load, own_capacity
    for p in peers:
        load += _load(p)
        capacity += p.beat.capacity
    return load < capacity * SPARE_SHARE
