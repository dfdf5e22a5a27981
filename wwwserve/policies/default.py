"""The default policy: load-, SLO- and stake-aware, decided from heartbeats alone (no probes).

Formulas (docs/policies.md):
- every option (local, each eligible peer) gets an estimate from `estimate.estimate`; a peer's load
  counts what we sent it since its last heartbeat, and its estimate carries the hop cost plus a
  staleness penalty proportional to the heartbeat's age;
- trust = (1 + stake_bonus x stake / (stake + stake_scale)) x reputation: a newcomer with no stake
  weighs as much as this agent itself, a large stake up to (1 + stake_bonus) times more; reputation is
  the Elo factor times the duel quality factor, which falls steeply with evidence of bad answers
  (wwwserve/ledger/evidence.py), so a provider that loses most of its duels gets almost nothing;
- an option "meets" the request when e2e <= slo_ms x slo_margin, ttft <= slo_ttft_ms x slo_margin and
  (e2e - ttft) / (max_tokens - 1) <= slo_tpot_ms x slo_margin (each only when the request states it) and
  e2e <= remaining_ms (the hard deadline);
- a request a peer forwarded to us is served here whenever we have room and can make its deadline
  (the peer chose us from the same heartbeats; a second hop only when we have no room at all);
- serve locally when a slot is free and local meets the request (no hop is cheaper than a hop), or
  when the request states an SLO and local meets it even after queueing;
- otherwise draw among options that meet the request, weighted by trust / e2e**sharpness, where
  trust grows with stake and reputation (newcomers keep a base weight, so they still get traffic);
- prefix locality: each option's estimate prefills only what its prefix cache does not hold (from the
  Bloom filter in its heartbeat), its weight is multiplied by (prompt / tokens left)**prefix_sharpness
  (the saved prefill is capacity saved for everyone), and a free local slot is left for a peer that
  holds more of the prompt and answers with at most prefix_gain of the local TTFT;
- if nothing meets the request, take the fastest option that still makes the deadline;
- reject with `overloaded` when no option can make the deadline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from wwwserve.policies.base import (
    ACCEPT,
    Decision,
    Forward,
    OwnState,
    PeerState,
    Reject,
    RequestInfo,
    ServerState,
)
from wwwserve.policies.estimate import Estimate, decode_ms, estimate


def stake_factor(stake: float, bonus: float = 4.0, scale: float = 100.0) -> float:
    """Routing weight from stake: 1 with none, up to 1 + bonus; half the bonus at `scale` credits."""
    return 1.0 + bonus * stake / (stake + scale)


@dataclass
class DefaultPolicy:
    """Load- and SLO-aware dispatch with weighted random peer choice."""

    name: str = "default"
    hop_ms: float = 2.0  # cost of one extra broker hop and relay
    staleness_ms_per_s: float = 50.0  # penalty per second of heartbeat age
    slo_margin: float = 0.8  # count an SLO as met only with 20% to spare (estimates are optimistic)
    sharpness: float = 3.0  # weight = trust / e2e**sharpness: higher prefers the fastest more
    stake_bonus: float = 4.0  # a peer with a very large stake weighs up to (1 + bonus)x one with none
    stake_scale: float = 100.0  # stake at which half of the bonus is reached
    prefix_aware: bool = True  # count what each server's prefix cache holds of the prompt
    prefix_sharpness: float = 2.0  # weight x (prompt / tokens left to prefill)**this: saved work is shared
    prefix_gain: float = 0.8  # leave a free local slot only for a peer whose TTFT is this much lower or less

    @staticmethod
    def _network_places(s: ServerState) -> int:
        """Places (slots + queue) a server offers to peers' requests: network_share of all of them."""
        return math.ceil((s.capacity + s.queue_limit) * s.network_share)

    def _local_room(self, req: RequestInfo, own: OwnState) -> bool:
        if not req.own_user and own.load >= self._network_places(own):
            return False  # the rest of our capacity is kept for our own users
        return own.load < own.capacity + own.queue_limit

    def _peer_room(self, p: PeerState) -> bool:
        return p.load + p.sent_since_beat < self._network_places(p)

    @staticmethod
    def _like_us_if_unmeasured(p: PeerState, own: OwnState) -> PeerState:
        """A peer whose speeds nobody has measured yet (a real engine before its first answers reports
        none) is estimated as fast as this agent, not as instant: instant drew every forward to it."""
        if p.prefill_tps > 0 or p.ttft_ms > 0 or not (own.prefill_tps > 0 or own.ttft_ms > 0):
            return p
        return replace(
            p,
            prefill_tps=own.prefill_tps,
            tpot_ms=own.tpot_ms,
            ttft_ms=own.ttft_ms,
            latency_ms=own.latency_ms,
        )

    def _trust(self, p: PeerState) -> float:
        # no floor that keeps a proven cheater a share: its quality factor alone decides (docs/duels.md)
        return stake_factor(p.stake, self.stake_bonus, self.stake_scale) * max(1e-9, p.reputation)

    def _prefix_bonus(self, req: RequestInfo, s: ServerState) -> float:
        """A server that already holds most of the prompt saves the network that prefill: prefer it."""
        if not self.prefix_aware or s.cached_tokens <= 0:
            return 1.0
        left = max(1, req.prompt_tokens - s.cached_tokens)
        return float((req.prompt_tokens / left) ** self.prefix_sharpness)

    def _hop_ms(self, p: PeerState) -> float:
        """What a forward to `p` adds before the first token: one broker hop and relay, the measured
        round trip to it (distance: a peer across an ocean costs its 100-250 ms; a same-region peer
        little), and the staleness of what we know of its load."""
        return self.hop_ms + p.rtt_ms + self.staleness_ms_per_s * p.age_s

    def _prefix_elsewhere(
        self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], local: Estimate | None
    ) -> bool:
        """Whether a peer with room holds more of the prompt and would answer clearly sooner."""
        if local is None:
            return True
        if req.cacheable_tokens is not None and req.cacheable_tokens <= own.cached_tokens:
            return False  # no peer can hold more of this prompt than we do (its states are not even built)
        for p in peers:
            if p.cached_tokens <= own.cached_tokens or not self._peer_room(p):
                continue
            hop = self._hop_ms(p)
            est = estimate(req, self._like_us_if_unmeasured(p, own), extra_load=p.sent_since_beat, hop_ms=hop)
            if est.ttft_ms <= local.ttft_ms * self.prefix_gain:
                return True
        return False

    def _limits(self, req: RequestInfo) -> tuple[float, float, float]:
        """The most e2e, TTFT and decode time (e2e - TTFT) an option may take to meet the user's SLOs
        (with the safety margin) and the deadline."""
        m = self.slo_margin
        e2e = req.remaining_ms if req.slo_ms is None else min(req.remaining_ms, req.slo_ms * m)
        ttft = math.inf if req.slo_ttft_ms is None else req.slo_ttft_ms * m
        decode = math.inf if req.slo_tpot_ms is None else req.slo_tpot_ms * m * max(1, req.max_tokens - 1)
        return e2e, ttft, decode

    def _meets(self, req: RequestInfo, est: Estimate, s: ServerState) -> bool:
        """Whether an estimate meets the user's SLOs (with the safety margin) and the deadline."""
        e2e, ttft, decode = self._limits(req)
        return (
            est.e2e_ms <= e2e and est.ttft_ms <= ttft and (decode == math.inf or decode_ms(req, s) <= decode)
        )

    def decide(
        self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], rng: random.Random
    ) -> Decision:
        """Accept, forward to a peer drawn by expected latency and trust, or reject."""
        has_slo = req.slo_ms is not None or req.slo_ttft_ms is not None or req.slo_tpot_ms is not None
        pa = self.prefix_aware
        local = estimate(req, own, prefix=pa) if own.healthy and self._local_room(req, own) else None
        can_forward = req.hops < own.max_hops and (own.forward or not req.own_user)
        cached_elsewhere = pa and can_forward and self._prefix_elsewhere(req, own, peers, local)
        if (
            local is not None
            and own.load < own.capacity
            and self._meets(req, local, own)
            and not cached_elsewhere
        ):
            return ACCEPT
        if local is not None and req.hops > 0 and local.e2e_ms <= req.remaining_ms:
            return ACCEPT  # a peer already chose us with the same heartbeats; bouncing it on helps nobody
        if has_slo and local is not None and self._meets(req, local, own) and not cached_elsewhere:
            return ACCEPT  # the user's SLO is met here, even if queued: no hop needed

        # (peer or None for local, estimate, weight, decode time for the TPOT target)
        tpot_target = req.slo_tpot_ms is not None
        options: list[tuple[str | None, Estimate, float, float]] = []
        if local is not None:
            options.append(
                (None, local, self._prefix_bonus(req, own), decode_ms(req, own) if tpot_target else 0.0)
            )
        if can_forward:
            for p in peers:
                if not self._peer_room(p):
                    continue
                if req.max_price is not None and p.price > req.max_price:
                    continue
                hop = self._hop_ms(p)
                speeds = self._like_us_if_unmeasured(p, own)
                est = estimate(req, speeds, extra_load=p.sent_since_beat, hop_ms=hop, prefix=pa)
                decode = decode_ms(req, speeds) if tpot_target else 0.0
                options.append((p.name, est, self._trust(p) * self._prefix_bonus(req, p), decode))
        if not options:
            return Reject("overloaded", f"{own.name} and its peers are full for {req.model}")

        e2e_limit, ttft_limit, decode_limit = self._limits(req)  # _meets per option, limits computed once
        meeting = [
            o
            for o in options
            if o[1].e2e_ms <= e2e_limit and o[1].ttft_ms <= ttft_limit and o[3] <= decode_limit
        ]
        if meeting:
            weights = [trust / max(1.0, est.e2e_ms) ** self.sharpness for _, est, trust, _ in meeting]
            choice = rng.choices(meeting, weights=weights, k=1)[0][0]
        else:
            feasible = [o for o in options if o[1].e2e_ms <= req.remaining_ms]
            if not feasible and own.slo_aware:
                best = min(o[1].e2e_ms for o in options)
                return Reject(
                    "overloaded",
                    f"no provider can finish before the deadline (best estimate {best:.0f} ms, "
                    f"{req.remaining_ms:.0f} ms left)",
                )
            choice = min(feasible or options, key=lambda o: o[1].e2e_ms)[0]
        return ACCEPT if choice is None else Forward(choice)
