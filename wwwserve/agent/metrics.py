"""Prometheus metrics of one agent (`--metrics-port`), in a registry of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from wwwserve.agent.agent import Agent

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)


class AgentMetrics:
    """Requests by outcome, forwards, latency and TTFT histograms, load and speed gauges."""

    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "wwwserve_requests",
            "requests handled, by outcome (served or error code)",
            ["outcome"],
            registry=r,
        )
        self.forwarded = Counter("wwwserve_forwarded", "requests forwarded to peers", registry=r)
        self.latency = Histogram(
            "wwwserve_latency_seconds",
            "end-to-end latency of served requests",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "wwwserve_ttft_seconds",
            "time to first token of served requests",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("wwwserve_completion_tokens", "tokens generated", registry=r)
        Gauge("wwwserve_running", "requests on the engine", registry=r).set_function(
            lambda: agent.slots.running
        )
        Gauge("wwwserve_queued", "requests waiting for a slot", registry=r).set_function(
            lambda: agent.slots.queued
        )
        Gauge(
            "wwwserve_engine_tokens_per_second", "recent decode speed of one request", registry=r
        ).set_function(agent.stats.tokens_per_s)
        Gauge("wwwserve_peers", "alive peers in the peer table", registry=r).set_function(
            lambda: len(agent.peers.alive())
        )
        Gauge("wwwserve_accepting", "1 while in the llm.request queue groups", registry=r).set_function(
            lambda: 1.0 if agent.heartbeat().accepting else 0.0
        )
        self._server: Any = None

    def served(self, ttft_s: float, latency_s: float, completion_tokens: int) -> None:
        """One request served here."""
        self.requests.labels("served").inc()
        self.ttft.observe(ttft_s)
        self.latency.observe(latency_s)
        self.tokens.inc(completion_tokens)

    def failed(self, code: str) -> None:
        """One request answered with an error."""
        self.requests.labels(code).inc()

    def serve_http(self, host: str, port: int) -> None:
        """Expose /metrics on `host:port` (a daemon thread of prometheus_client)."""
        self._server = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if isinstance(self._server, tuple):
            self._server[0].shutdown()
