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
import heapq
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.protocol.messages import CompletionRequest
from wwwserve.protocol.prefix import block_hashes


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
    vllm: str = "0.6"  # the vLLM generation it was measured on (the sim models each)
    prompts: int = 0  # requests of the closed loop (0: 20 x concurrency, at least 20)
    prefix_len: int = 0  # tokens every prompt shares (`--random-prefix-len`), on top of input_len
    range_ratio: float = 0.0  # lengths uniform in [x (1 - r), x (1 + r)] (`--random-range-ratio`)
    gap: str = ""  # why the sim misses this point by more than 15% (docs/benchmarks.md), if it does


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
_H200 = (
    "vLLM 0.22.0 on the lent H200, dummy weights, `vllm bench serve --dataset-name random --ignore-eos`, "
    "2026-12-03"
)
_H200_L = _H200 + ": ../shared/calibration/h200-vllm-0.22.md (Llama-3.1-8B shape, prefix caching off)"
_H200_Q = _H200 + ": benchmarks/gpu/qwen.sh, docs/gpu-runs/run5-qwen (Qwen3-8B shape, prefix caching on)"
_RUN13 = "benchmarks/gpu/calib.sh, docs/gpu-runs/run13-calib (warm servers, more requests)"
_H200_L2 = _H200 + ": " + _RUN13 + " (Llama-3.1-8B shape, prefix caching off)"
_H200_LP = _H200_L + "; pooled with " + _RUN13
_H200_Q2 = _H200 + ": " + _RUN13 + " (Qwen3-8B shape, prefix caching on)"
_H200_QP = _H200_Q + "; pooled with " + _RUN13


def _h200(
    model: str,
    source: str,
    io_c_n: tuple[int, int, int, int],
    values: dict[str, float],
    gaps: dict[str, str] | None = None,
    prefix_len: int = 0,
    range_ratio: float = 0.0,
) -> list[Published]:
    """One workload (input, output, concurrency, prompts) measured on vLLM 0.22 on the H200, as one point
    per metric; `gaps`: per metric, why the sim misses it."""
    i, o, c, n = io_c_n
    return [
        Published(
            "h200",
            model,
            i,
            o,
            c,
            metric,
            v,
            source,
            vllm="0.22",
            prompts=n,
            prefix_len=prefix_len,
            range_ratio=range_ratio,
            gap=(gaps or {}).get(metric, ""),
        )
        for metric, v in values.items()
    ]


_RUN16 = "benchmarks/gpu/calib3.sh, docs/gpu-runs/run16-calib"
_RUN19 = "benchmarks/gpu/calib4.sh, docs/gpu-runs/run19-holdout"
_SHAPES = (
    "Qwen3's C=1 prefill near 1,024 tokens is slow at some lengths and not others (" + _RUN19 + ", C=1 "
    "sweep 768-1,536, prefix caching off): medians 37/51/38/53/51/48/46/50 ms at 768/896/960/1,024/1,088/"
    "1,152/1,280/1,536 tokens, the sim within 12% at 768, 960, 1,152-1,536 and 20-29% under at 896-1,088; "
    "Llama's within 11% at all of them and at 128-8,192 (" + _RUN16 + "): a kernel choice for some GEMM "
    "sizes of that shape, which a per-token step cost cannot follow"
)
_HELD_OUT = "held out: predicted before measured; prefix caching off"
_H200_LN = _H200 + ": " + _RUN19 + " (Llama-3.1-8B shape, " + _HELD_OUT + ")"
_H200_QN = _H200 + ": " + _RUN19 + " (Qwen3-8B shape, " + _HELD_OUT + ")"
_L, _Q = "llama-3.1-8b", "qwen3-8b"
_BURST_2000 = tuple((2000, 1) for _ in range(64))
MODERN: list[Published] = [
    # 32 requests on a warm server (the first run's 8 held a cold first request of ~1 s in its duration)
    *_h200(_L, _H200_L2, (1024, 128, 1, 32), {"median_ttft_ms": 34.4, "tpot_ms": 4.84, "output_tps": 197}),
    # two runs pooled (24 + 96 requests): one run's mean moves by a quarter with where the waves fall
    *_h200(_L, _H200_LP, (1024, 128, 8, 96), {"ttft_ms": 179.3, "tpot_ms": 5.40, "output_tps": 1183}),
    *_h200(_L, _H200_L, (1024, 128, 32, 96), {"ttft_ms": 509, "tpot_ms": 8.41, "output_tps": 2587}),
    Published("h200", _L, 2000, 1, 64, "ttft_ms", 1692, _H200_L, _BURST_2000, vllm="0.22"),
    *_h200(_L, _H200_L, (128, 256, 128, 256), {"ttft_ms": 470, "tpot_ms": 7.95, "output_tps": 13029}),
    # four runs pooled (8 + 32 + 16 + 24 requests: mean TTFT 49.8, 50.6, 45.2, 43.8 ms)
    *_h200(_Q, _H200_QP + ", " + _RUN16 + ", " + _RUN19, (1024, 128, 1, 80),
           {"ttft_ms": 47.4, "tpot_ms": 5.08, "output_tps": 184.6}, {"ttft_ms": _SHAPES}),
    *_h200(_Q, _H200_Q, (1024, 128, 8, 24), {"ttft_ms": 195.7, "tpot_ms": 5.85, "output_tps": 1089}),
    *_h200(_Q, _H200_Q, (1024, 128, 32, 96), {"ttft_ms": 556.2, "tpot_ms": 8.52, "output_tps": 2490}),
    Published("h200", _Q, 2000, 1, 64, "ttft_ms", 1720, _H200_Q, _BURST_2000, vllm="0.22"),
    *_h200(_Q, _H200_Q, (128, 256, 128, 256), {"ttft_ms": 514.6, "tpot_ms": 8.27, "output_tps": 12372}),
    *_h200(_Q, _H200_Q, (1024, 256, 16, 64), {"ttft_ms": 133.3, "tpot_ms": 7.24, "output_tps": 1806},
           range_ratio=0.9),
    *_h200(_Q, _H200_Q, (512, 1024, 16, 32), {"ttft_ms": 182.9, "tpot_ms": 5.87, "output_tps": 2648}),
    # three runs pooled (64 requests each: 135, 145, 128 ms)
    *_h200(_Q, _H200_QP, (256, 64, 16, 64), {"ttft_ms": 136.2, "tpot_ms": 5.97, "output_tps": 1975},
           prefix_len=1024),
    *_h200(_Q, _H200_Q2, (256, 64, 1, 16), {"ttft_ms": 24.5, "tpot_ms": 5.06, "output_tps": 186.2},
           prefix_len=1024),
    # held out: the sim's predictions were committed before these were measured (predicted.json there)
    *_h200(_L, _H200_LN, (128, 256, 64, 192), {"ttft_ms": 251.7, "tpot_ms": 6.15, "output_tps": 8980}),
    *_h200(_L, _H200_LN, (1024, 128, 16, 64), {"ttft_ms": 314.5, "tpot_ms": 6.14, "output_tps": 1868}),
    *_h200(_L, _H200_LN, (4096, 256, 8, 32), {"ttft_ms": 569.5, "tpot_ms": 6.83, "output_tps": 885}),
    *_h200(_L, _H200_LN, (512, 512, 32, 64), {"ttft_ms": 322.3, "tpot_ms": 6.05, "output_tps": 4788}),
    *_h200(_L, _H200_LN, (128, 256, 128, 256), {"ttft_ms": 410.8, "tpot_ms": 8.00, "output_tps": 13318}),
    *_h200(_Q, _H200_QN, (2048, 128, 16, 64), {"ttft_ms": 540.1, "tpot_ms": 8.22, "output_tps": 1291}),
    *_h200(_Q, _H200_QN, (128, 256, 64, 192), {"ttft_ms": 258.4, "tpot_ms": 6.28, "output_tps": 8790}),
    *_h200(_Q, _H200_QN, (256, 1024, 48, 48), {"ttft_ms": 355.7, "tpot_ms": 6.82, "output_tps": 6689}),
    *_h200(_Q, _H200_QN, (128, 256, 128, 256), {"ttft_ms": 438.3, "tpot_ms": 8.07, "output_tps": 13077}),
]  # fmt: skip

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
    *MODERN,
]


def _lengths(p: Published) -> list[tuple[int, int]]:
    """The requests of a point: fixed sizes, or drawn as vLLM's random dataset does with a range ratio."""
    n = p.prompts or max(20, 20 * p.concurrency)
    if not p.range_ratio:
        return [(p.input_len, p.output_len)] * n
    rng = random.Random(0)
    lo, hi = 1.0 - p.range_ratio, 1.0 + p.range_ratio
    return [
        (
            rng.randint(int(p.input_len * lo), int(p.input_len * hi)),
            rng.randint(int(p.output_len * lo), int(p.output_len * hi)),
        )
        for _ in range(n)
    ]


@dataclass
class _Sent:
    """One request of a replay, as the client saw it."""

    input_len: int
    output_len: int
    sent: float
    first: float = 0.0
    ended: float = 0.0


def replay(
    options: SimOptions,
    lengths: list[tuple[int, int]],
    concurrency: int,
    prefix_len: int = 0,
) -> dict[str, float]:
    """Send `lengths` (input, output per request) with at most `concurrency` in flight, as `vllm bench
    serve --max-concurrency C --request-rate inf` does, through the engine's scheduler in virtual time.

    Each request passes the server's frontend first (`SimOptions.frontend_ms` of serial work per request:
    HTTP, tokenization) and the client sees every token `ttft_overhead_ms` later than the engine made it.
    With `prefix_len`, every prompt starts with the same that many tokens (`--random-prefix-len`).
    TTFT counts requests that produced a token, TPOT those that produced two or more.
    """
    engine = SimEngine(options)
    front_s = engine.options.frontend_ms / 1000.0  # the options with the generation's values filled in
    lag_s = engine.options.ttft_overhead_ms / 1000.0
    shared = " ".join(f"p{j}" for j in range(prefix_len))
    todo = list(reversed(list(enumerate(lengths))))
    pending: list[tuple[float, int, _Sent]] = []  # (enters the engine at, order, request): a heap
    inside: dict[object, _Sent] = {}
    done: list[_Sent] = []
    frontend_free = 0.0

    def send(now: float) -> None:
        nonlocal frontend_free
        i, (inp, out) = todo.pop()
        frontend_free = max(now, frontend_free) + front_s
        heapq.heappush(pending, (frontend_free, i, _Sent(inp, out, now)))

    for _ in range(min(concurrency, len(todo))):
        send(0.0)
    clock = 0.0
    while pending or engine.busy:
        if not engine.busy and pending:
            clock = max(clock, pending[0][0])
        while pending and pending[0][0] <= clock:
            _, i, r = heapq.heappop(pending)
            hashes = None
            if prefix_len and engine.options.prefix_caching:  # the shared prefix, then this request's words
                own = " ".join(f"r{i}.{j}" for j in range(max(0, r.input_len - prefix_len - 1)))
                hashes = block_hashes(f"{shared} u{i} {own}")
            inside[engine.submit(r.input_len, max(1, r.output_len), hashes)] = r
        step = engine.plan_step()
        if step is None:
            if not pending:
                break
            continue
        clock += step.duration_s
        for seq in engine.finish_step(step):
            r = inside[seq]
            if not r.first:
                r.first = clock + lag_s
            if seq.done:
                r.ended = clock + lag_s
                done.append(inside.pop(seq))
                if todo:
                    send(r.ended)
    ttfts = [r.first - r.sent for r in done if r.output_len > 0]
    tpots = [(r.ended - r.first) / (r.output_len - 1) for r in done if r.output_len > 1]
    span = max(r.ended for r in done) - min(r.sent for r in done)
    return {
        "output_tps": sum(r.output_len for r in done) / span if span else 0.0,
        "ttft_ms": 1000 * statistics.mean(ttfts),
        "median_ttft_ms": 1000 * statistics.median(ttfts),
        "tpot_ms": 1000 * statistics.mean(tpots) if tpots else 0.0,
        "median_tpot_ms": 1000 * statistics.median(tpots) if tpots else 0.0,
        "duration_s": span,
        "preemptions": float(engine.preemptions),
    }


def closed_loop(
    options: SimOptions, input_len: int, output_len: int, concurrency: int, n: int
) -> dict[str, float]:
    """`n` requests of fixed sizes, `concurrency` in flight at once (see `replay`)."""
    return replay(options, [(input_len, output_len)] * n, concurrency)


def burst(options: SimOptions, lengths: tuple[tuple[int, int], ...]) -> dict[str, float]:
    """Every (input, output) request sent at once (see `replay`)."""
    return replay(options, list(lengths), len(lengths))


def calibrate() -> list[dict[str, Any]]:
    """Every published point beside the sim's value for the same workload, with the relative error."""
    rows = []
    for p in PUBLISHED:
        opts = SimOptions.from_opts({"gpu": p.gpu, "model": p.model, "vllm": p.vllm})
        if p.burst:
            sim = burst(opts, p.burst)
        else:
            with_prefix = [(i + p.prefix_len, o) for i, o in _lengths(p)]
            sim = replay(opts, with_prefix, p.concurrency, prefix_len=p.prefix_len)
        if p.metric == "speedup_vs_c1":
            alone = closed_loop(opts, p.input_len, p.output_len, 1, 20)
            value = sim["output_tps"] / alone["output_tps"]
        else:
            value = sim[p.metric]
        row = {
            k: v for k, v in asdict(p).items() if k not in ("burst", "prompts", "range_ratio", "prefix_len")
        }
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
