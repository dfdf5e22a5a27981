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
    decode = max(0, req.max_tokens - 1) * s.tpot_ms / (1.0 - min(0.9, s.prefill_busy))
    tps = s.prefill_tps
    if tps > 0:
        backlog = s.prefill_backlog / tps * 1000.0
        todo = max(1, req.prompt_tokens - s.cached_tokens) if prefix else req.prompt_tokens
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
