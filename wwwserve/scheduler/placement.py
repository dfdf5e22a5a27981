"""Where the centralized reference places a request: a pure function of the request and the candidates'
states (exact in-flight counts already in them), like a policy: no NATS, no clocks."""

from __future__ import annotations

from dataclasses import replace

from wwwserve.policies.base import PeerState, RequestInfo
from wwwserve.policies.estimate import decode_ms, estimate


def pick(info: RequestInfo, states: list[tuple[str, PeerState]], slo_margin: float) -> str | None:
    """The provider that meets the request's SLOs (with the margin) soonest, else the fastest.

    A provider whose speeds nobody has measured yet (a real engine before its first answers) is
    estimated with the measured providers' mean speeds, never as instant: that made every request of a
    burst look free on the newest provider. Before anyone is measured, a burst is spread by the share of
    each provider's slots in use."""
    if not states:
        return None
    measured = [st for _, st in states if measured_speeds(st)]
    if not measured:
        return min(states, key=lambda s: ((s[1].load + 1) / max(1, s[1].capacity), s[0]))[0]
    typical = mean_speeds(measured)
    e2e_limit = info.remaining_ms if info.slo_ms is None else min(info.remaining_ms, info.slo_ms * slo_margin)
    ttft_limit = info.slo_ttft_ms * slo_margin if info.slo_ttft_ms is not None else None
    decode_limit = (
        info.slo_tpot_ms * slo_margin * max(1, info.max_tokens - 1) if info.slo_tpot_ms is not None else None
    )
    best: tuple[bool, float, str] | None = None
    for name, st in states:
        if not measured_speeds(st):
            st = replace(
                st, prefill_tps=typical[0], tpot_ms=typical[1], ttft_ms=typical[2], latency_ms=typical[3]
            )
        est = estimate(info, st)
        meets = est.e2e_ms <= e2e_limit and (ttft_limit is None or est.ttft_ms <= ttft_limit)
        meets = meets and (decode_limit is None or decode_ms(info, st) <= decode_limit)
        key = (not meets, est.e2e_ms, name)
        if best is None or key < best:
            best = key
    return best[2] if best else None


def measured_speeds(s: PeerState) -> bool:
    """Whether a provider's speeds are known (its engine's model, or its own answers so far)."""
    return s.prefill_tps > 0 or s.ttft_ms > 0


def mean_speeds(states: list[PeerState]) -> tuple[float, float, float, float]:
    """The speeds of a typical measured provider, for one nobody has measured yet: prefill tokens/s,
    TPOT, TTFT and latency."""

    def mean(values: list[float]) -> float:
        known = [v for v in values if v > 0]
        return sum(known) / len(known) if known else 0.0

    return (
        mean([s.prefill_tps for s in states]),
        mean([s.tpot_ms for s in states]),
        mean([s.ttft_ms for s in states]),
        mean([s.latency_ms for s in states]),
    )
