"""Prometheus metrics of one agent (`--metrics-port`), in a registry of its own.

The request path only adds to plain integers and floats (a prometheus_client Counter or Histogram takes
a lock and a label lookup per update: ~6 µs a request, measured); a collector turns them into metric
families when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)


@dataclass(slots=True)
class _Histogram:
    """Observations counted per bucket (non-cumulative; Prometheus gets the running sums)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(_LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        """The histogram as Prometheus reads it: cumulative buckets, +Inf, sum."""
        buckets, running = [], 0
        for bound, n in zip((*map(str, map(float, _LATENCY_BUCKETS)), "+Inf"), self.counts, strict=True):
            running += n
            buckets.append((bound, float(running)))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


@dataclass(frozen=True)
class Gauges:
    """Readings taken at scrape time (the agent's slots, speed, peers, membership)."""

    running: Callable[[], float]
    queued: Callable[[], float]
    tokens_per_s: Callable[[], float]
    peers: Callable[[], float]
    accepting: Callable[[], float]


class AgentMetrics:
    """Requests by outcome, forwards, latency and TTFT histograms, load and speed gauges."""

    def __init__(self, gauges: Gauges) -> None:
        self.outcomes: Counter[str] = Counter()
        self.forwards = 0
        self.tokens = 0
        self.latency = _Histogram()
        self.ttft = _Histogram()
        self._gauges = gauges
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._server: Any = None

    def served(self, ttft_s: float, latency_s: float, completion_tokens: int) -> None:
        """One request served here."""
        self.outcomes["served"] += 1
        self.ttft.observe(ttft_s)
        self.latency.observe(latency_s)
        self.tokens += completion_tokens

    def failed(self, code: str) -> None:
        """One request answered with an error."""
        self.outcomes[code] += 1

    def forwarded(self) -> None:
        """One request sent on to a peer."""
        self.forwards += 1

    def collect(self) -> Iterator[Metric]:
        """What a scrape reads (called by prometheus_client's registry)."""
        requests = CounterMetricFamily(
            "wwwserve_requests", "requests handled, by outcome (served or error code)", labels=["outcome"]
        )
        for outcome, n in sorted(self.outcomes.items()):
            requests.add_metric([outcome], float(n))
        yield requests
        yield CounterMetricFamily("wwwserve_forwarded", "requests forwarded to peers", value=self.forwards)
        yield self.latency.family("wwwserve_latency_seconds", "end-to-end latency of served requests")
        yield self.ttft.family("wwwserve_ttft_seconds", "time to first token of served requests")
        yield CounterMetricFamily("wwwserve_completion_tokens", "tokens generated", value=self.tokens)
        g = self._gauges
        for name, doc, read in (
            ("wwwserve_running", "requests on the engine", g.running),
            ("wwwserve_queued", "requests waiting for a slot", g.queued),
            ("wwwserve_engine_tokens_per_second", "recent decode speed of one request", g.tokens_per_s),
            ("wwwserve_peers", "alive peers in the peer table", g.peers),
            ("wwwserve_accepting", "1 while in the llm.request queue groups", g.accepting),
        ):
            yield GaugeMetricFamily(name, doc, value=float(read()))

    def serve_http(self, host: str, port: int) -> None:
        """Expose /metrics on `host:port` (a daemon thread of prometheus_client)."""
        self._server = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if isinstance(self._server, tuple):
            self._server[0].shutdown()
