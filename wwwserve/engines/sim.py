"""A calibrated simulated engine for tests and benchmarks: real timing model, deterministic text.

Timing model (continuous batching, see docs/benchmarks.md):
  prefill_s = prompt_tokens / prefill_tps                      (prefill_tps = 0: instant)
  each output token takes decode_tpot_ms * (1 + batch_slowdown * (running - 1)) ms
where `running` is the number of requests inside the engine at that step. Prompt tokens are the
whitespace-separated words of the prompt (benchmarks send prompts of exactly the trace's length).
Output is exactly `max_tokens` tokens (finish_reason "length") unless a stop sequence cuts it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from wwwserve.engines.base import Delta, EngineLoad, apply_stop, parse_options, prompt_text
from wwwserve.protocol.messages import CompletionRequest

_WORDS = (
    "the network answers every request with care while providers share capacity and credits "
    "flow to those who serve others well latency stays low because dispatch follows the load"
).split()


_JUNK = "#%&@!"
_MASK = (1 << 64) - 1


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
    """Engine options for `sim`, set with `--engine-opt key=value`."""

    prefill_tps: float = 0.0
    decode_tpot_ms: float = 0.0
    batch_slowdown: float = 0.0
    corrupt: float = 0.0
    context_length: int = 32768  # tokens per request (prompt + output), as a served model's max length

    @classmethod
    def from_opts(cls, opts: dict[str, str]) -> SimOptions:
        """Parse `--engine-opt` strings, refusing unknown keys."""
        out = parse_options(cls, opts, "sim")
        if any(getattr(out, f) < 0 for f in cls.__dataclass_fields__):
            raise ValueError("sim engine options must be >= 0")
        return out


class SimEngine:
    """Simulated engine: sleeps as a GPU serving engine would, answers with deterministic words."""

    kind = "sim"

    def __init__(self, options: SimOptions | None = None) -> None:
        self.options = options or SimOptions()
        self._running = 0

    async def start(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing to release."""

    def load(self) -> EngineLoad:
        """Running count and the speeds of the timing model."""
        o = self.options
        return EngineLoad(
            running=self._running,
            prefill_tps=o.prefill_tps,
            tpot_ms=o.decode_tpot_ms * (1 + o.batch_slowdown * max(0, self._running - 1)),
        )

    def context_length(self, model: str) -> int | None:
        """The configured context length (0 = unbounded)."""
        return self.options.context_length or None

    async def generate(self, request: CompletionRequest, model: str) -> AsyncIterator[Delta]:
        """Stream `max_tokens` deterministic words, timed by the model above."""
        text = prompt_text(request)
        prompt_tokens = len(text.split())
        digest = hashlib.sha256(f"{model}\0{text}\0{request.seed}".encode()).digest()
        rng = _SplitMix(int.from_bytes(digest[:8], "little"))
        # a separate draw, so a cheater's honest answers are word for word an honest engine's
        corrupt = self.options.corrupt > 0 and _SplitMix(int.from_bytes(digest[8:16], "little")).random() < (
            self.options.corrupt
        )
        stops = request.stop_list()
        self._running += 1
        try:
            o = self.options
            if o.prefill_tps > 0:
                await asyncio.sleep(prompt_tokens / o.prefill_tps)
            produced = ""
            for i in range(request.max_tokens):
                if o.decode_tpot_ms > 0:
                    step = o.decode_tpot_ms * (1 + o.batch_slowdown * max(0, self._running - 1))
                    await asyncio.sleep(step / 1000.0)
                elif i % 64 == 63:
                    await asyncio.sleep(0)  # stay fair to other tasks when instant
                word = rng.choice(_WORDS) if not corrupt else "".join(rng.choice(_JUNK) for _ in range(5))
                piece = word if i == 0 else " " + word
                cut, stopped = apply_stop(produced + piece, stops)
                if stopped:
                    yield Delta(cut[len(produced) :], "stop", prompt_tokens, i)
                    return
                produced += piece
                last = i == request.max_tokens - 1
                if last:
                    yield Delta(piece, "length", prompt_tokens, i + 1)
                else:
                    yield Delta(piece)
        finally:
            self._running -= 1
