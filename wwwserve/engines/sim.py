"""A simulated engine that obeys the hardware: one engine loop, iteration by iteration, as vLLM runs.

Each step (vLLM V1's scheduler, Sarathi-Serve's chunked prefill) takes every running decode (one token
each), then prefill chunks, oldest first, up to a token budget (`max_batched_tokens`); new requests are
admitted only while the KV cache has blocks for their prompt, and a decode that finds no free block
preempts the newest running request, which is recomputed later (vLLM's default preemption). A step
lasts (wwwserve/engines/hardware.py)

    step = overhead + admitted x admit_s + max(compute, memory)
    compute = tokens_in_step x seconds_per_token           (1 / prefill_tps, or 2 x params / (peak x mfu))
    memory  = weights_s x (1 + batch_slowdown x (seqs_in_step - 1)) + kv_tokens_read x kv_s_per_token

(`admitted`: the requests the step takes from the waiting queue). With async scheduling (vLLM 0.22's
default) the next step is scheduled while one runs, so a request reaching a busy engine joins the step
after the next. So prefill is shared: concurrent prompts queue for the same budget and a user's TTFT
grows with other users' prompts. `prefill_tps` is the whole engine's prefill throughput,
`decode_tpot_ms` the step time at batch 1 (`weights_s`); `gpu=` and `model=` fill every constant from
datasheets and model configs, and any constant can still be set by hand. With no speeds at all (the
default) every step is instant.

Output is exactly `max_tokens` deterministic words (finish_reason "length") unless a stop sequence cuts
it; prompt tokens are the prompt's whitespace-separated words. With prefix caching (default), a prompt's
full 16-word blocks are cached when its prefill ends and the answer's when it finishes (as vLLM keeps
decoded blocks), so a next turn that resends prompt + answer skips their prefill.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog

from wwwserve.engines.base import Delta, EngineLoad, apply_stop, parse_options, prompt_text
from wwwserve.engines.hardware import (
    DEFAULT_GENERATION,
    GENERATIONS,
    GIB,
    GPUS,
    LEGACY_GENERATION,
    MODELS,
    Generation,
)
from wwwserve.engines.prefix_cache import PrefixCache
from wwwserve.protocol.messages import CompletionRequest
from wwwserve.protocol.prefix import BLOCK_TOKENS, block_hashes

_WORDS = (
    "the network answers every request with care while providers share capacity and credits "
    "flow to those who serve others well latency stays low because dispatch follows the load"
).split()


log = structlog.get_logger(__name__)

_JUNK = "#%&@!"
_MASK = (1 << 64) - 1
_DEFAULT_MFU = 0.55  # hand-set peak_tflops without a gpu profile: the Ampere fit
_DEFAULT_BW_EFF = 0.70
_MAX_DEBT_S = 0.05  # a late event loop is caught up by at most this much (then simulated time slips)
_UNBOUNDED_CACHE_BLOCKS = 65536  # prefix cache size when no KV limit is modelled

_BUSY_WINDOW_S = 5.0  # prefill_busy's look-back


class _SplitMix:
    """splitmix64: a tiny deterministic generator, far cheaper to seed than random.Random."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self.next() >> 11) / float(1 << 53)

    def choice(self, seq: Sequence[str]) -> str:
        return seq[self.next() % len(seq)]


@dataclass
class SimOptions:
    """Engine options for `sim`, set with `--engine-opt key=value` (0 = unset / from the profile)."""

    prefill_tps: float = 0.0  # the engine's total prefill throughput, tokens/s, shared by all requests
    decode_tpot_ms: float = 0.0  # step time at batch 1 (reading the weights once)
    batch_slowdown: float = 0.0  # each extra sequence in a step adds this share of decode_tpot_ms
    corrupt: float = 0.0  # share of answers replaced by junk (a cheating provider, for duels)
    context_length: int = 32768  # tokens per request (prompt + output), as a served model's max length
    gpu: str = ""  # h100, h200, a100, a100-40gb, a10g, l4: datasheet figures
    model: str = ""  # llama-3.1-8b (default with a gpu), qwen2.5-7b, mistral-7b, qwen2.5-14b, ...
    peak_tflops: float = 0.0
    bandwidth_gbs: float = 0.0
    memory_gib: float = 0.0
    params_b: float = 0.0
    kv_bytes_per_token: int = 0
    mfu: float = 0.0  # share of peak FLOP/s a prefill reaches (0 = the GPU profile's fit, else 0.55)
    bandwidth_efficiency: float = 0.0  # share of peak bandwidth a decode step reaches (0 = profile, 0.70)
    step_overhead_ms: float = 0.0  # fixed cost of every step (scheduling, kernel launches)
    admit_ms: float = 0.0  # engine time per request a step admits (its setup on the critical path)
    gpu_memory_utilization: float = 0.9  # as vLLM's flag: the share of memory for weights + KV cache
    max_batched_tokens: int = 0  # token budget of one step (max_num_batched_tokens); 0 = vLLM's default
    vllm: str = ""  # the vLLM generation modelled: 0.22 or 0.6 (default: 0.22 on h100/h200, else 0.6)
    kv_capacity_tokens: int = 0  # KV cache size in tokens; 0 = from the profile, unbounded without one
    block_size: int = 16  # KV cache block (page) size in tokens
    prefix_caching: int = 1  # 1: keep finished prompts' KV blocks and skip the prefill of cached prefixes
    frontend_ms: float = 0.0  # serial work per request before the engine sees it (HTTP, tokenization)
    ttft_overhead_ms: float = 0.0  # latency between a token made and the client seeing it (a fixed lag)
    async_scheduling: str = ""  # on: the next step is scheduled while one runs (default: the generation's)

    @classmethod
    def from_opts(cls, opts: dict[str, str]) -> SimOptions:
        """Parse `--engine-opt` strings, refusing unknown keys and names."""
        out = parse_options(cls, opts, "sim")
        for f in cls.__dataclass_fields__:
            value = getattr(out, f)
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"sim engine option {f} must be >= 0")
        if out.gpu and out.gpu not in GPUS:
            raise ValueError(f"unknown gpu {out.gpu!r}; known: {sorted(GPUS)}")
        if out.model and out.model not in MODELS:
            raise ValueError(f"unknown model {out.model!r}; known: {sorted(MODELS)}")
        if out.block_size < 1:
            raise ValueError("sim engine option block_size must be >= 1")
        if out.async_scheduling not in ("", "on", "off"):
            raise ValueError(f"sim engine option async_scheduling is on or off, not {out.async_scheduling!r}")
        if out.vllm and out.vllm not in GENERATIONS:
            raise ValueError(f"unknown vllm generation {out.vllm!r}; known: {sorted(GENERATIONS)}")
        return out

    def generation(self) -> Generation | None:
        """The vLLM generation modelled: asked for, else the GPU profile's default (None: no profile)."""
        if self.vllm:
            return GENERATIONS[self.vllm]
        if self.gpu:
            return GENERATIONS[DEFAULT_GENERATION.get(self.gpu, LEGACY_GENERATION)]
        return None

    def resolved(self) -> SimOptions:
        """These options with what the generation decides filled in (the step budget, the frontend,
        the batch slowdown), hand-set values winning."""
        gen = self.generation()
        gpu = GPUS.get(self.gpu)
        budget = self.max_batched_tokens or (gen.step_budget(gpu) if gen and gpu else 2048)
        if gen is None:
            return replace(self, max_batched_tokens=budget)
        return replace(
            self,
            max_batched_tokens=budget,
            batch_slowdown=self.batch_slowdown or gen.batch_slowdown,
            frontend_ms=self.frontend_ms or gen.frontend_ms,
            ttft_overhead_ms=self.ttft_overhead_ms or gen.ttft_overhead_ms,
            async_scheduling=self.async_scheduling or ("on" if gen.async_scheduling else "off"),
            admit_ms=self.admit_ms or gen.admit_ms,
        )


@dataclass(frozen=True)
class StepTiming:
    """The roofline of one step, resolved from the options (profile constants, then hand-set ones)."""

    token_s: float  # compute seconds per token in a step
    weights_s: float  # memory seconds to read the weights once (the step time at batch 1)
    kv_token_s: float  # memory seconds to read one token's KV cache
    batch_slowdown: float
    overhead_s: float
    kv_capacity_tokens: int | None  # None: unbounded
    admit_s: float = 0.0  # per request a step admits

    @classmethod
    def from_options(cls, o: SimOptions) -> StepTiming:
        """Fill what a gpu/model profile gives, let hand-set constants win."""
        gpu = GPUS.get(o.gpu)
        model = MODELS.get(o.model or ("llama-3.1-8b" if gpu else ""))
        peak = (o.peak_tflops or (gpu.peak_tflops if gpu else 0.0)) * 1e12
        bandwidth = (o.bandwidth_gbs or (gpu.bandwidth_gbs if gpu else 0.0)) * 1e9
        memory = (o.memory_gib or (gpu.memory_gib if gpu else 0.0)) * GIB
        params = (o.params_b or (model.params_b if model else 0.0)) * 1e9
        kv_bytes = o.kv_bytes_per_token or (model.kv_bytes_per_token if model else 0)
        weight_bytes = params * (model.dtype_bytes if model else 2)
        gen = o.generation()
        fit = gen.fits.get(gpu.name) if gen and gpu else None
        mfu = o.mfu or (fit[0] if fit else gpu.mfu if gpu else _DEFAULT_MFU)
        bw_eff = o.bandwidth_efficiency or (
            fit[1] if fit else gpu.bandwidth_efficiency if gpu else _DEFAULT_BW_EFF
        )
        if o.prefill_tps > 0:
            token_s = 1.0 / o.prefill_tps
        elif peak > 0 and params > 0:
            token_s = 2.0 * params / (peak * mfu)
        else:
            token_s = 0.0
        eff_bw = bandwidth * bw_eff
        if o.decode_tpot_ms > 0:
            weights_s = o.decode_tpot_ms / 1000.0
        else:
            weights_s = weight_bytes / eff_bw if eff_bw > 0 else 0.0
        kv_token_s = kv_bytes / eff_bw if eff_bw > 0 else 0.0
        capacity: int | None = None
        if o.kv_capacity_tokens > 0:
            capacity = o.kv_capacity_tokens
        elif memory > 0 and kv_bytes > 0:
            capacity = max(0, int((memory * o.gpu_memory_utilization - weight_bytes) // kv_bytes))
            if capacity == 0:
                raise ValueError(f"the model's weights ({weight_bytes / GIB:.1f} GiB) leave no KV cache")
        return cls(
            token_s,
            weights_s,
            kv_token_s,
            o.batch_slowdown,
            o.step_overhead_ms / 1000.0,
            capacity,
            o.admit_ms / 1000.0,
        )

    @property
    def instant(self) -> bool:
        """No time and no KV limit at all: nothing for an engine loop to schedule."""
        return not (self.token_s or self.weights_s or self.kv_token_s or self.overhead_s) and (
            self.kv_capacity_tokens is None
        )

    def step_s(self, tokens: int, seqs: int, kv_tokens_read: int, admitted: int = 0) -> float:
        """Duration of a step that computes `tokens` for `seqs` sequences reading that much KV cache,
        `admitted` of them new to the engine."""
        if tokens == 0:
            return 0.0
        compute = tokens * self.token_s
        memory = self.weights_s * (1.0 + self.batch_slowdown * (seqs - 1)) + kv_tokens_read * self.kv_token_s
        return self.overhead_s + admitted * self.admit_s + max(compute, memory)


@dataclass(eq=False)
class _Seq:
    """One request inside the engine."""

    prompt_tokens: int
    max_tokens: int
    prefill_target: int  # tokens to prefill: the prompt, or prompt + output after a preemption
    hashes: list[int] = field(default_factory=list)  # the prompt's block hashes (prefix cache keys)
    cached: int = 0  # prompt tokens found in the prefix cache at admission
    prefilled: int = 0
    produced: int = 0
    blocks: int = 0
    done: bool = False
    cancelled: bool = False
    first_plan: int = 0  # the first step this request can join (a step already scheduled cannot take it)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def context(self) -> int:
        """Tokens whose KV this sequence holds once prefilled."""
        return self.prompt_tokens + self.produced


@dataclass
class Step:
    """One planned engine step: its decodes, its prefill chunks, and how long it lasts."""

    decodes: list[_Seq]
    chunks: list[tuple[_Seq, int]]
    duration_s: float


class SimEngine:
    """Simulated engine: one engine loop schedules steps; answers are deterministic words."""

    kind = "sim"

    def __init__(self, options: SimOptions | None = None) -> None:
        self.options = (options or SimOptions()).resolved()
        self.timing = StepTiming.from_options(self.options)
        o = self.options
        self._instant = self.timing.instant and not (o.frontend_ms or o.ttft_overhead_ms)
        self._frontend_free = 0.0  # when the frontend is done with the requests that arrived so far
        full_step = self.timing.step_s(self.options.max_batched_tokens, 1, 0)
        self._prefill_tps = self.options.max_batched_tokens / full_step if full_step > 0 else 0.0
        cap = self.timing.kv_capacity_tokens
        self._total_blocks = None if cap is None else cap // self.options.block_size
        self._free_blocks = self._total_blocks or 0
        cache_blocks = _UNBOUNDED_CACHE_BLOCKS if self._total_blocks is None else self._total_blocks
        self.prefix_cache = PrefixCache(cache_blocks if self.options.prefix_caching else 0)
        # the context length, asked on every request, bounded by the KV cache once
        limit = self.options.context_length or None
        if cap is not None:
            limit = min(limit, cap) if limit else cap
        self._context_length = limit
        self.cached_tokens = 0  # prompt tokens served from the prefix cache so far
        self.prompt_tokens = 0  # prompt tokens submitted so far
        self._running: list[_Seq] = []  # admission order
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._any_cancelled = False
        self._busy_window: collections.deque[tuple[float, float]] = collections.deque()  # (end, prefill s)
        self.steps = 0
        self.plans = 0  # steps planned so far (one ahead of `steps` while a step runs)
        self._async = self.options.async_scheduling == "on"
        self.preemptions = 0
        self.clock_slip_s = 0.0  # model time lost because this process's event loop ran late
        self._started = time.monotonic()
        self._changes = 0  # bumped by whatever moves a request in the engine: `load()` is cached on it
        self._load: tuple[tuple[int, int], float, EngineLoad] | None = None  # (key, valid until, load)

    async def start(self) -> None:
        """Start the engine loop."""
        self._ensure_loop()

    async def close(self) -> None:
        """Stop the engine loop; say how far the model's clock slipped behind (a CPU-starved run)."""
        elapsed = time.monotonic() - self._started
        if self.clock_slip_s > 0.01 * elapsed:
            log.warning(
                "sim.clock_slip",
                slip_s=round(self.clock_slip_s, 2),
                elapsed_s=round(elapsed, 1),
                steps=self.steps,
                hint="the event loop ran late: simulated service was slower than the model says",
            )
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine-loop")

    # ---- what the engine reports ----------------------------------------------------------------------

    def load(self) -> EngineLoad:
        """What vLLM exposes: running, waiting, KV-cache usage; plus the speeds of the timing model.

        Read for every request and every heartbeat, and unchanged between engine steps: computed again
        only after a submit, a step or a prefix-cache change, or when a prefill leaves the busy window
        (an idle engine's load is one comparison; cold, that halves a local dispatch decision)."""
        key = (self._changes, self.prefix_cache.version)
        cached = self._load
        now = time.monotonic()
        if cached is not None and cached[0] == key and now < cached[1]:
            return cached[2]
        running = self._running
        n = max(1, len(running))
        ctx = sum(s.context for s in running) if running else 0
        load = EngineLoad(
            running=len(running),
            waiting=len(self._waiting),
            prefill_tps=self._prefill_tps,
            tpot_ms=self.timing.step_s(n, n, ctx) * 1000.0,
            kv_cache_usage=self.kv_cache_usage(),
            prefill_busy=self.prefill_busy(),
            prefill_backlog=(
                sum(s.prefill_target - s.prefilled for s in (*running, *self._waiting))
                if running or self._waiting
                else 0
            ),
            prefix_filter=self.prefix_cache.advertised() if self.prefix_cache.capacity else None,
            prefix_hit_rate=self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None,
        )
        window = self._busy_window  # prefill_busy() dropped what had left it: valid until the oldest leaves
        self._load = (key, window[0][0] + _BUSY_WINDOW_S if window else math.inf, load)
        return load

    def prefill_busy(self, window_s: float = _BUSY_WINDOW_S) -> float:
        """Share of the last `window_s` seconds the engine spent on prefill (decodes wait meanwhile)."""
        now = time.monotonic()
        while self._busy_window and self._busy_window[0][0] < now - window_s:
            self._busy_window.popleft()
        return min(1.0, sum(d for _, d in self._busy_window) / window_s)

    def kv_cache_usage(self) -> float | None:
        """Share of KV blocks in use, or None when the cache is unbounded."""
        if not self._total_blocks:
            return None
        return 1.0 - self._free_blocks / self._total_blocks

    def context_length(self, model: str) -> int | None:
        """The configured context length, bounded by the KV cache (0 = unbounded)."""
        return self._context_length

    # ---- the engine loop ----------------------------------------------------------------------------

    async def _through_frontend(self) -> None:
        """A server's frontend handles arriving requests one at a time (HTTP, tokenization) before its
        engine sees them: a burst queues there."""
        work_s = self.options.frontend_ms / 1000.0
        if work_s <= 0:
            return
        now = time.monotonic()
        self._frontend_free = max(now, self._frontend_free) + work_s
        await asyncio.sleep(self._frontend_free - now)

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.options.block_size)

    def _grow(self, s: _Seq, tokens: int) -> bool:
        """Give `s` blocks for `tokens` tokens; False when the cache has too few free."""
        if self._total_blocks is None:
            return True
        need = self._blocks_for(tokens) - s.blocks
        if need > self._free_blocks:
            return False
        self._free_blocks -= max(0, need)
        s.blocks += max(0, need)
        return True

    def _release(self, s: _Seq) -> None:
        if self._total_blocks is not None:
            self._free_blocks += s.blocks
        s.blocks = 0

    def _preempt(self, s: _Seq) -> None:
        """Recompute preemption: drop its KV, re-prefill prompt + output when there is room again."""
        self._running.remove(s)
        self._release(s)
        s.prefilled = 0
        s.prefill_target = s.context
        self._waiting.appendleft(s)
        self.preemptions += 1

    def _schedule(self) -> tuple[list[_Seq], list[tuple[_Seq, int]], int]:
        """The next step's decodes and prefill chunks (and the KV blocks they need), and how many of the
        chunks' requests it took from the waiting queue."""
        budget = self.options.max_batched_tokens
        decodes: list[_Seq] = []
        preempted: set[int] = set()
        for s in list(self._running):  # oldest first; victims come from the newest end
            if id(s) in preempted or s.prefilled < s.prefill_target:
                continue
            while not self._grow(s, s.context + 1):
                victim = self._running[-1]
                self._preempt(victim)  # the newest request gives its blocks back (maybe `s` itself)
                preempted.add(id(victim))
                if victim is s:
                    break
            if id(s) not in preempted:
                decodes.append(s)
        budget -= len(decodes)
        chunks: list[tuple[_Seq, int]] = []
        for s in self._running:
            if budget <= 0:
                break
            if s.prefilled < s.prefill_target:
                n = min(budget, s.prefill_target - s.prefilled)
                chunks.append((s, n))
                budget -= n
        admitted = 0
        while self._waiting and budget > 0:
            s = self._waiting[0]
            if s.first_plan > self.plans:
                break  # it reached the engine after this step was scheduled
            if not self._grow(s, s.prefill_target + 1):
                break  # admission waits for KV blocks
            self._waiting.popleft()
            self._running.append(s)
            n = min(budget, s.prefill_target - s.prefilled)  # a cached prefix is not prefilled
            chunks.append((s, n))
            budget -= n
            admitted += 1
        return decodes, chunks, admitted

    def _apply(self, decodes: list[_Seq], chunks: list[tuple[_Seq, int]]) -> list[_Seq]:
        """The step is over: decodes made a token each; a finished prefill samples its next token."""
        touched: list[_Seq] = []
        for s in decodes:
            s.produced += 1
            touched.append(s)
        for s, n in chunks:
            s.prefilled += n
            if s.prefilled >= s.prefill_target:
                s.produced += 1
                touched.append(s)
                if s.hashes and s.produced == 1:
                    self.prefix_cache.insert(s.hashes)
        for s in touched:
            if s.produced >= s.max_tokens:
                s.done = True
                self._running.remove(s)
                self._release(s)
            s.event.set()
        return touched

    def _drop_cancelled(self) -> None:
        if not self._any_cancelled:
            return
        self._any_cancelled = False
        for s in [s for s in self._running if s.cancelled]:
            self._running.remove(s)
            self._release(s)
        if any(s.cancelled for s in self._waiting):
            self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    @property
    def busy(self) -> bool:
        """Whether any request is inside the engine."""
        return bool(self._running or self._waiting)

    def plan_step(self) -> Step | None:
        """Schedule the next step (None: nothing can run); `finish_step` applies it after `duration_s`."""
        self._changes += 1
        self._drop_cancelled()
        self.plans += 1
        while self._running or self._waiting:
            decodes, chunks, admitted = self._schedule()
            tokens = len(decodes) + sum(n for _, n in chunks)
            if tokens:
                kv_read = sum(s.context for s in decodes) + sum(s.prefilled for s, _ in chunks)
                dt = self.timing.step_s(tokens, len(decodes) + len(chunks), kv_read, admitted)
                return Step(decodes, chunks, dt)
            if self._waiting and self._waiting[0].first_plan > self.plans:
                for s in self._waiting:  # nothing else to run: the engine was idle, so it takes them now
                    s.first_plan = self.plans
                continue
            # the engine is empty and the oldest prompt alone exceeds the KV cache: refuse it
            s = self._waiting.popleft()
            s.cancelled = True
            s.event.set()
        return None

    def finish_step(self, step: Step) -> list[_Seq]:
        """The step's time has passed: apply it; the sequences that made a token."""
        self.steps += 1
        self._changes += 1
        if step.chunks:
            prefill_tokens = sum(n for _, n in step.chunks)
            share = prefill_tokens / (prefill_tokens + len(step.decodes))
            self._busy_window.append((time.monotonic(), step.duration_s * share))
        return self._apply(step.decodes, step.chunks)

    def virtual_steps(self) -> Iterator[tuple[float, list[_Seq]]]:
        """Run the scheduler in virtual time, no sleeping (calibration, tests): after each step, the
        clock and the sequences that made a token. Requests submitted between steps join in."""
        clock = 0.0
        while self.busy:
            step = self.plan_step()
            if step is None:
                return
            clock += step.duration_s
            yield clock, self.finish_step(step)

    def submit(self, prompt_tokens: int, max_tokens: int, hashes: list[int] | None = None) -> _Seq:
        """Queue a request in the engine (the async path and virtual-time calibration both use it).

        Its leading blocks found in the prefix cache are not prefilled again (at least the last token
        is computed, as vLLM does, to sample the first output token).
        """
        seq = _Seq(prompt_tokens, max_tokens, prompt_tokens, hashes or [])
        # with async scheduling a busy engine has already scheduled the step after the one running
        seq.first_plan = self.plans + (2 if self._async and self.busy else 1)
        self._changes += 1
        self.prompt_tokens += prompt_tokens
        if hashes and self.prefix_cache.capacity:
            seq.cached = min(self.prefix_cache.match(hashes) * BLOCK_TOKENS, prompt_tokens - 1)
            seq.prefilled = seq.cached
            self.cached_tokens += seq.cached
        self._waiting.append(seq)
        self._wake.set()
        return seq

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            step = self.plan_step()
            if step is None:
                self._wake.clear()
                await self._wake.wait()
                next_t = loop.time()
                continue
            now = loop.time()
            if now - _MAX_DEBT_S > next_t:  # the event loop was late by more than we catch up
                self.clock_slip_s += now - _MAX_DEBT_S - next_t
            next_t = max(next_t, now - _MAX_DEBT_S) + step.duration_s
            await asyncio.sleep(max(0.0, next_t - now))
            self.finish_step(step)

    # ---- one request ------------------------------------------------------------------------------

    def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        """Queue the request in the engine loop; stream its words as the steps produce them."""
        text = prompt_text(request)
        prompt_tokens = len(text.split()) or 1
        digest = hashlib.sha256(f"{model}\0{text}\0{request.seed}".encode()).digest()
        rng = _SplitMix(int.from_bytes(digest[:8], "little"))
        # a separate draw, so a cheater's honest answers are word for word an honest engine's
        corrupt = self.options.corrupt > 0 and _SplitMix(int.from_bytes(digest[8:16], "little")).random() < (
            self.options.corrupt
        )
        words = _words(rng, corrupt)
        if self._instant:  # no hardware to obey: answer at once, as cheaply as possible
            stops = request.stop_list()
            if stops:
                return _stream(_instant_ready(request.max_tokens), words, prompt_tokens, stops)
            return _instant_answer(words, request.max_tokens, prompt_tokens)
        return self._generate(request, text, prompt_tokens, words)

    async def _generate(
        self, request: CompletionRequest, text: str, prompt_tokens: int, words: Iterator[str]
    ) -> AsyncGenerator[Delta, None]:
        stops = request.stop_list()
        self._ensure_loop()
        hashes = block_hashes(text) if self.options.prefix_caching else []
        await self._through_frontend()
        seq = self.submit(prompt_tokens, request.max_tokens, hashes)
        lag_s = self.options.ttft_overhead_ms / 1000.0

        async def ready() -> AsyncGenerator[tuple[int, bool], None]:
            while True:
                await seq.event.wait()
                seq.event.clear()
                if seq.cancelled and not seq.done:
                    raise RuntimeError("the prompt does not fit the KV cache")
                yield seq.produced, seq.done

        answer: list[str] = []
        try:
            async with contextlib.aclosing(ready()) as steps:
                async for delta in _stream(steps, words, prompt_tokens, stops, seq.cached):
                    if lag_s and not answer:
                        await asyncio.sleep(lag_s)  # the client sees every token this much later
                    answer.append(delta.text)
                    yield delta
            if hashes:  # the answer's full blocks stay cached too: a next turn that resends it hits them
                self.prefix_cache.insert(block_hashes(f"{text} {''.join(answer)}", known=hashes))
        finally:
            if not seq.done:
                seq.cancelled = True
                self._any_cancelled = True
                self._wake.set()


def _words(rng: _SplitMix, corrupt: bool) -> Iterator[str]:
    """The answer's words, endlessly: drawn from the vocabulary, or junk for a corrupted answer."""
    while True:
        yield rng.choice(_WORDS) if not corrupt else "".join(rng.choice(_JUNK) for _ in range(5))


async def _instant_answer(
    words: Iterator[str], max_tokens: int, prompt_tokens: int, chunk: int = 64
) -> AsyncGenerator[Delta, None]:
    """An instant engine's answer without stop sequences: `chunk` words per delta, yielding to the
    event loop in between (one generator: this is all an instant engine costs a request)."""
    for start in range(0, max_tokens, chunk):
        n = chunk if max_tokens - start > chunk else max_tokens - start  # (builtin min: ~3x the cost)
        piece = " ".join(itertools.islice(words, n))
        if start:
            await asyncio.sleep(0)
            piece = " " + piece
        if start + n >= max_tokens:
            yield Delta(piece, "length", prompt_tokens, max_tokens)
            return
        yield Delta(piece)


async def _instant_ready(max_tokens: int, chunk: int = 64) -> AsyncIterator[tuple[int, bool]]:
    """An instant engine makes `chunk` words at a time, yielding to the event loop in between."""
    for n in range(chunk, max_tokens + chunk, chunk):
        if n > chunk:
            await asyncio.sleep(0)
        yield min(n, max_tokens), n >= max_tokens


async def _stream(
    ready: AsyncIterator[tuple[int, bool]],
    words: Iterator[str],
    prompt_tokens: int,
    stops: list[str],
    cached_tokens: int = 0,
) -> AsyncGenerator[Delta, None]:
    """Deltas of the answer as `ready` reports (words made so far, finished); cut at a stop sequence.

    A stop reports the words before the one that completed it, as the engine always has.
    """
    produced = ""
    emitted = 0
    async for count, done in ready:
        piece = ""
        while emitted < count:
            word = next(words)
            word = word if emitted == 0 else " " + word
            if stops:
                cut, stopped = apply_stop(produced + piece + word, stops)
                if stopped:
                    yield Delta(cut[len(produced) :], "stop", prompt_tokens, emitted, cached_tokens)
                    return
            piece += word
            emitted += 1
        produced += piece
        if done:
            yield Delta(piece, "length", prompt_tokens, emitted, cached_tokens)
            return
        if piece:
            yield Delta(piece)
