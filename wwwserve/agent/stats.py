"""Running measurements of the agent's own speed, for heartbeats and its dispatch policy."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Ewma:
    """An exponentially weighted mean; 0 until the first sample."""

    alpha: float = 0.2
    value: float = 0.0
    samples: int = 0

    def add(self, x: float) -> None:
        """Fold in one sample."""
        self.value = x if self.samples == 0 else self.alpha * x + (1 - self.alpha) * self.value
        self.samples += 1


@dataclass
class ServingStats:
    """Recent TTFT, latency, per-request decode speed and prefill speed of this agent's engine."""

    ttft_ms: Ewma
    latency_ms: Ewma
    tpot_ms: Ewma
    prefill_tps: Ewma
    served: int = 0
    failed: int = 0
    forwarded: int = 0
    beats_heard: int = 0  # heartbeats received (the budget in agent/beats.py is about this)
    # CPU µs of recent dispatch decisions
    decision_us: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    @classmethod
    def new(cls) -> ServingStats:
        """Empty stats."""
        return cls(Ewma(), Ewma(), Ewma(), Ewma())

    def record(self, ttft_ms: float, latency_ms: float, prompt_tokens: int, completion_tokens: int) -> None:
        """Fold in one served request."""
        self.served += 1
        self.ttft_ms.add(ttft_ms)
        self.latency_ms.add(latency_ms)
        if completion_tokens > 1:
            self.tpot_ms.add(max(0.0, latency_ms - ttft_ms) / (completion_tokens - 1))
        if prompt_tokens > 0 and ttft_ms > 0:
            self.prefill_tps.add(prompt_tokens / (ttft_ms / 1000.0))

    def tokens_per_s(self) -> float:
        """Decode speed of one request, tokens per second."""
        return 1000.0 / self.tpot_ms.value if self.tpot_ms.value > 0 else 0.0
