"""`wwwserve bench --sim`: the sim engine against published vLLM measurements, and what it costs to run.

Calibration replays each published benchmark's workload through the sim engine's own scheduler in
virtual time, so a sweep takes milliseconds and no sleeping: either a closed loop (fixed input and output
lengths, a fixed number of requests in flight, as `vllm bench serve --max-concurrency C --request-rate
inf` does) or a burst (the published run's own per-request input and output lengths, all sent at once,
as `benchmark_serving.py --request-rate inf` does with few prompts). Cost runs the real asyncio engine
loop with many concurrent requests and reads the process's CPU time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.protocol.messages import CompletionRequest


@dataclass(frozen=True)
class Published:
    """One published vLLM measurement: the workload, what was measured, and where it was published."""

    gpu: str
    model: str
    input_len: int
    output_len: int
    concurrency: int
    # "output_tps" (all requests), "ttft_ms", "tpot_ms" (means), "speedup_vs_c1" (output_tps ratio);
    # for bursts also "median_ttft_ms", "median_tpot_ms"
    metric: str
    value: float
    source: str
    burst: tuple[tuple[int, int], ...] = ()  # (input, output) per request, all sent at once


# Published points (BF16 weights, one GPU, vLLM). Add rows as more become known; the table in
# docs/benchmarks.md is printed from this list.
_MUSGRAVE = "J. Musgrave, 'vLLM throughput-latency sweep on NVIDIA A100' (vLLM 0.23, 1024 in / 128 out)"
_LIGHT_LOAD = "Ori and Cloudach posts on vLLM + Llama 3 8B on A100: 100-250 ms TTFT at light load (low end)"
_LAMBDA = (
    "Lambda, LambdaLabsML/vllm-benchmark results/prompt_10 (vLLM 0.6.0, Sept. 2024, 10 ShareGPT prompts "
    "at once, BF16, 1 GPU)"
)
_LAMBDA_L = _LAMBDA + ", Llama-3-8B-Instruct (same shape as 3.1)"
_LAMBDA_M = _LAMBDA + ", Mistral-7B-Instruct-v0.3"
# The 10 ShareGPT prompts of those runs, as each model's tokenizer counted them, with the outputs each run
# produced (a run's own output lengths: the answers differ by model and GPU).
_L_IN = (13, 25, 27, 10, 329, 29, 399, 328, 4, 205)
_M_IN = (14, 30, 28, 12, 375, 29, 487, 369, 5, 236)
_L_H100 = tuple(zip(_L_IN, (120, 429, 233, 194, 101, 741, 9, 3, 6, 31), strict=True))
_L_A100 = tuple(zip(_L_IN, (120, 507, 233, 194, 101, 741, 9, 3, 6, 31), strict=True))
_M_H100 = tuple(zip(_M_IN, (129, 883, 273, 169, 0, 928, 10, 26, 8, 57), strict=True))
_M_A100 = tuple(zip(_M_IN, (129, 883, 273, 165, 0, 928, 10, 26, 8, 18), strict=True))
PUBLISHED: list[Published] = [
    Published("h100", "llama-3.1-8b", 137, 187, 10, "ttft_ms", 62.4, _LAMBDA_L, _L_H100),
    Published("h100", "llama-3.1-8b", 137, 187, 10, "median_tpot_ms", 7.56, _LAMBDA, _L_H100),
    Published("h100", "mistral-7b", 159, 248, 10, "median_ttft_ms", 68.0, _LAMBDA_M, _M_H100),
    Published("h100", "mistral-7b", 159, 248, 10, "median_tpot_ms", 7.06, _LAMBDA, _M_H100),
    Published("a100", "llama-3.1-8b", 137, 195, 10, "ttft_ms", 126.9, _LAMBDA_L, _L_A100),
    Published("a100", "llama-3.1-8b", 137, 195, 10, "median_tpot_ms", 12.01, _LAMBDA, _L_A100),
    Published("a100", "mistral-7b", 159, 244, 10, "median_ttft_ms", 138.4, _LAMBDA_M, _M_A100),
    Published("a100", "mistral-7b", 159, 244, 10, "median_tpot_ms", 11.36, _LAMBDA, _M_A100),
    Published("a100-40gb", "llama-3.1-8b", 1024, 128, 1, "tpot_ms", 13.3, _MUSGRAVE + ": ~75 tok/s at C=1"),
    Published("a100-40gb", "llama-3.1-8b", 1024, 128, 8, "speedup_vs_c1", 6.6, _MUSGRAVE + ": 6.6x at C=8"),
    Published("a100-40gb", "llama-3.1-8b", 1024, 128, 1, "ttft_ms", 100.0, _LIGHT_LOAD),
]


def closed_loop(
    options: SimOptions, input_len: int, output_len: int, concurrency: int, n: int
) -> dict[str, float]:
    """`n` requests, `concurrency` in flight at once, through the engine's scheduler in virtual time."""
    engine = SimEngine(options)
    clock = 0.0
    started: dict[object, float] = {}  # by sequence object (identity): ids of freed objects get reused
    first: dict[object, float] = {}
    ended: dict[object, float] = {}
    submitted = 0

    def fill(now: float) -> None:
        nonlocal submitted
        while submitted < n and submitted - len(ended) < concurrency:
            started[engine.submit(input_len, output_len)] = now
            submitted += 1

    fill(clock)
    for clock, made in engine.virtual_steps():
        for seq in made:
            first.setdefault(seq, clock)
            if seq.done:
                ended[seq] = clock
        fill(clock)
    ttfts = [first[k] - started[k] for k in ended]
    tpots = [(ended[k] - first[k]) / max(1, output_len - 1) for k in ended]
    return {
        "output_tps": output_len * len(ended) / clock if clock else 0.0,
        "ttft_ms": 1000 * sum(ttfts) / len(ttfts),
        "tpot_ms": 1000 * sum(tpots) / len(tpots),
        "preemptions": float(engine.preemptions),
    }


def burst(options: SimOptions, lengths: tuple[tuple[int, int], ...]) -> dict[str, float]:
    """Every (input, output) request sent at once, through the engine's scheduler in virtual time.

    TTFT counts requests that produced a token; TPOT those that produced two or more, as vLLM's
    benchmark does.
    """
    engine = SimEngine(options)
    wanted = {engine.submit(i, max(1, o)): o for i, o in lengths}
    first: dict[object, float] = {}
    ended: dict[object, float] = {}
    for clock, made in engine.virtual_steps():
        for seq in made:
            first.setdefault(seq, clock)
            if seq.done:
                ended[seq] = clock
    ttfts = [first[s] for s, o in wanted.items() if o > 0]
    tpots = [(ended[s] - first[s]) / (o - 1) for s, o in wanted.items() if o > 1]
    return {
        "ttft_ms": 1000 * statistics.mean(ttfts),
        "median_ttft_ms": 1000 * statistics.median(ttfts),
        "tpot_ms": 1000 * statistics.mean(tpots),
        "median_tpot_ms": 1000 * statistics.median(tpots),
    }


def calibrate() -> list[dict[str, Any]]:
    """Every published point beside the sim's value for the same workload, with the relative error."""
    rows = []
    for p in PUBLISHED:
        opts = SimOptions.from_opts({"gpu": p.gpu, "model": p.model})
        if p.burst:
            sim = burst(opts, p.burst)
        else:
            sim = closed_loop(opts, p.input_len, p.output_len, p.concurrency, max(20, 20 * p.concurrency))
        if p.metric == "speedup_vs_c1":
            alone = closed_loop(opts, p.input_len, p.output_len, 1, 20)
            value = sim["output_tps"] / alone["output_tps"]
        else:
            value = sim[p.metric]
        row = {k: v for k, v in asdict(p).items() if k != "burst"}
        rows.append({**row, "sim": round(value, 2), "error": round(value / p.value - 1.0, 3)})
    return rows


def roofline() -> list[dict[str, Any]]:
    """Each GPU profile's saturated prefill throughput (4,096-token prompts) beside its roofline limit."""
    from wwwserve.engines.hardware import GPUS, MODELS

    out = []
    for gpu in GPUS.values():
        model = MODELS["llama-3.1-8b"]
        opts = SimOptions.from_opts({"gpu": gpu.name, "model": model.name})
        sim = closed_loop(opts, 4096, 1, 64, 256)
        limit = gpu.peak_tflops * 1e12 / (2 * model.params_b * 1e9)
        prefill_tps = sim["output_tps"] * 4096  # one output token per prompt
        out.append(
            {
                "gpu": gpu.name,
                "model": model.name,
                "prefill_tps": round(prefill_tps),
                "roofline_tps": round(limit),
            }
        )
    return out


async def engine_cost(concurrent: int = 200, seconds: float = 10.0) -> dict[str, Any]:
    """CPU share of one core used by the real engine loop serving `concurrent` requests at a time."""
    engine = SimEngine(SimOptions.from_opts({"gpu": "h100", "model": "llama-3.1-8b"}))
    req = CompletionRequest(prompt=" ".join(["w"] * 512), max_tokens=256)
    served = 0
    stop = time.monotonic() + seconds

    async def user(i: int) -> None:
        nonlocal served
        while time.monotonic() < stop:
            async for _ in engine.generate(req.replace(seed=i * 100_000 + served), "m"):
                pass
            served += 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(user(i) for i in range(concurrent)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await engine.close()
    return {
        "concurrent": concurrent,
        "wall_s": round(wall, 2),
        "cpu_share_of_one_core": round(cpu / wall, 3),
        "requests_served": served,
        "engine_steps": engine.steps,
    }


async def run_sim_bench() -> dict[str, Any]:
    """The calibration table, the roofline check and the cost of the engine loop."""
    return {"calibration": calibrate(), "roofline": roofline(), "cost": await engine_cost()}
