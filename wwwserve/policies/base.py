"""The policy interface: plain data in, one decision out; no NATS, no clocks, no I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class RequestInfo:
    """What the policy may know about the request being dispatched (built per request: slotted, not
    frozen, which costs three times as much to build; policies only read it)."""

    model: str
    prompt_tokens: int
    max_tokens: int
    remaining_ms: float  # until the hard deadline
    hops: int = 0
    own_user: bool = True  # from this provider's own users (not forwarded by a peer)
    slo_ms: float | None = None  # the end-to-end latency the user hopes for (soft)
    slo_ttft_ms: float | None = None  # the time to first token the user hopes for (soft)
    slo_tpot_ms: float | None = None  # the time per output token after the first the user hopes for (soft)
    max_price: float | None = None
    # of the prompt, the tokens any provider could advertise as cached (its checkpoint blocks): no peer
    # can hold more of the prefix than this, so with own.cached_tokens >= it nobody needs asking (None:
    # not known, ask them all)
    cacheable_tokens: int | None = None


# Server states are built fresh for every decision (one per candidate): plain slotted dataclasses, three
# to four times cheaper to build than frozen ones; a policy reads them and keeps none.
@dataclass(slots=True)
class ServerState:
    """Load and speed of one server (this agent or a peer), as the policy sees it."""

    name: str
    capacity: int
    running: int = 0
    queued: int = 0
    queue_limit: int = 0
    prefill_tps: float = 0.0  # 0 = unknown
    tpot_ms: float = 0.0  # 0 = unknown
    prefill_backlog: int = 0  # prompt tokens ahead in the engine's shared prefill
    prefill_busy: float = 0.0  # share of recent engine time spent prefilling (decodes stall meanwhile)
    cached_tokens: int = 0  # of this request's prompt, tokens its prefix cache likely holds (no prefill)
    ttft_ms: float = 0.0  # recent mean
    latency_ms: float = 0.0  # recent mean
    network_share: float = 1.0
    price: float = 0.0
    stake: float = 0.0
    reputation: float = 1.0

    @property
    def load(self) -> int:
        """Requests inside (running + queued)."""
        return self.running + self.queued


@dataclass(slots=True)
class OwnState(ServerState):
    """This agent's state plus its participation settings."""

    forward: bool = True
    max_hops: int = 2
    slo_aware: bool = True
    min_price: float = 0.0
    healthy: bool = True  # False: the engine is down or stalled; serve nothing locally


@dataclass(slots=True)
class PeerState(ServerState):
    """A peer's last heartbeat, aged, plus what we sent it since."""

    age_s: float = 0.0
    sent_since_beat: int = 0
    accepting: bool = True
    rtt_ms: float = 0.0  # measured round trip to it (twice its heartbeats' transit); 0: not measured


@dataclass(frozen=True)
class Accept:
    """Serve on this agent's own engine."""


ACCEPT = Accept()  # the one Accept a policy needs (immutable): no object per request


@dataclass(frozen=True)
class Forward:
    """Send to this peer on its direct subject and relay its answer."""

    peer: str


@dataclass(frozen=True)
class Reject:
    """Refuse with this wire error code (usually `overloaded`) and reason."""

    code: str
    reason: str


Decision = Accept | Forward | Reject


class Policy(Protocol):
    """A dispatch policy: `decide` must be pure and fast; it runs for every request."""

    name: str

    def decide(
        self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], rng: random.Random
    ) -> Decision:
        """Choose what to do with one request."""
        ...
