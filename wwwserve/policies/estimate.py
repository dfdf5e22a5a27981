"""Latency estimates from a server's reported state: the arithmetic every policy shares."""

from __future__ import annotations

from typing import NamedTuple

from wwwserve.policies.base import RequestInfo, ServerState


class Estimate(NamedTuple):
    """Expected time to first token and to the last token, in milliseconds (a tuple: one per option
    per decision)."""

    ttft_ms: float
    e2e_ms: float


def estimate(
    req: RequestInfo, s: ServerState, extra_load: int = 0, hop_ms: float = 0.0, prefix: bool = True
) -> Estimate:
    """Expected TTFT and end-to-end latency of `req` if `s` takes it now.

    Service once it runs: prefill is shared by everything in the engine: the prompts already inside
    are prefilled first (delaying the first token), and the steps that prefill them also hold up every
    running decode; prompts that keep arriving do too, so decoding only gets the share of time prefill
    leaves it. With `prefix`, the part of the prompt the server's prefix cache holds is not prefilled
    again. Without a prefill speed, the server's recent TTFT stands in for the prefill.

    wait = 0 with a free slot, else (queued ahead + 1) / capacity x mean service time;
    ttft = hop + wait + prefill; e2e = ttft + (max_tokens - 1) x tpot.
    """
    # conditionals rather than builtin min/max: this runs per option per decision, and a two-argument
    # min() costs ~3x a comparison
    busy = s.prefill_busy if s.prefill_busy < 0.9 else 0.9
    decode = (req.max_tokens - 1 if req.max_tokens > 1 else 0) * s.tpot_ms / (1.0 - busy)
    tps = s.prefill_tps
    if tps > 0:
        backlog = s.prefill_backlog / tps * 1000.0
        todo = req.prompt_tokens
        if prefix:
            todo -= s.cached_tokens
            if todo < 1:
                todo = 1
        prefill = backlog + todo / tps * 1000.0
        if req.max_tokens > 1:
            decode += backlog
    else:
        prefill = s.ttft_ms
    load = s.running + s.queued + extra_load
    wait = 0.0
    if load >= s.capacity:
        mean_service = s.latency_ms if s.latency_ms > 0 else prefill + decode
        wait = (load - s.capacity + 1) / max(1, s.capacity) * mean_service
    ttft = hop_ms + wait + prefill
    return Estimate(ttft, ttft + decode)


def decode_ms(req: RequestInfo, s: ServerState) -> float:
    """Time from the first token to the last at `s`'s step time, stalled by its share of prefill: what a
    TPOT target is checked against.

    Unlike `estimate`'s e2e it leaves out the prompts already queued: those are prefilled before this
    request's own first token (they cost its TTFT, not its time per token)."""
    busy = s.prefill_busy if s.prefill_busy < 0.9 else 0.9
    return (req.max_tokens - 1 if req.max_tokens > 1 else 0) * s.tpot_ms / (1.0 - busy)
