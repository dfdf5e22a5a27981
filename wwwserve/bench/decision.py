"""`wwwserve bench --decision`: what one dispatch decision costs as the network grows.

In one process, no NATS: a peer table filled with N real heartbeats (each with a prefix filter), an
empty ledger view, and the default policy. One decision is what the agent does per request before it
serves or forwards: pick the candidate peers (`PeerTable.serving`), build their policy states (ledger
standing, prefix match of the request's prompt), and `decide`. Timed with `perf_counter_ns` over many
requests; `view` is the bounded candidate view (`--peer-view`), `all` looks at every peer (the view
set to N).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from wwwserve.agent.dispatch import peer_state
from wwwserve.agent.peers import PeerTable
from wwwserve.engines.prefix_cache import PrefixCache
from wwwserve.ledger.book import LedgerView
from wwwserve.policies.base import OwnState, RequestInfo
from wwwserve.policies.default import DefaultPolicy
from wwwserve.protocol.messages import Heartbeat
from wwwserve.protocol.prefix import block_hashes, checkpoints

MODEL = "m"


def _table(n: int, view: int, rng: random.Random) -> PeerTable:
    table = PeerTable("me", expiry_s=3600.0, view_size=view, refresh_s=1.0, rng=rng)
    for i in range(n):
        cache = PrefixCache(4096)
        cache.insert(block_hashes(" ".join(f"p{i}.{j}" for j in range(1024))))
        table.update(
            Heartbeat(
                name=f"p{i}",
                models=[MODEL],
                engine="sim",
                capacity=16,
                queue_limit=16,
                running=rng.randrange(0, 17),
                prefill_tps=rng.choice([4000.0, 10000.0, 20000.0]),
                tpot_ms=rng.choice([15.0, 30.0, 60.0]),
                prefix_filter=cache.advertised().encode(),
                seq=1,
                ts_ms=1,
            )
        )
    return table


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def measure(n: int, view: int, requests: int = 2000, seed: int = 0) -> dict[str, float]:
    """Decision time (µs) at `n` peers with a candidate view of `view`."""
    rng = random.Random(seed)
    table = _table(n, view, rng)
    ledger = LedgerView()
    policy = DefaultPolicy()
    own = OwnState(name="me", capacity=16, running=16, queue_limit=0, prefill_tps=4000.0, tpot_ms=60.0)
    prompts = [" ".join(f"p{rng.randrange(n)}.{j}" for j in range(512)) for _ in range(64)]
    probes = [checkpoints(block_hashes(p)) for p in prompts]
    req = RequestInfo(model=MODEL, prompt_tokens=512, max_tokens=128, remaining_ms=30_000, slo_ttft_ms=2000)
    times: list[float] = []
    for i in range(requests):
        t0 = time.perf_counter_ns()
        states = [peer_state(p, ledger, probes[i % 64]) for p in table.serving(MODEL)]
        policy.decide(req, own, states, rng)
        times.append((time.perf_counter_ns() - t0) / 1000.0)
    return {
        "peers": n,
        "view": min(view, n),
        "decision_p50_us": round(statistics.median(times), 1),
        "decision_p99_us": round(_percentile(times, 99), 1),
    }


def run_decision_bench(sizes: tuple[int, ...] = (10, 100, 1000), view: int = 32) -> dict[str, Any]:
    """Decision time per network size, with the bounded view and looking at every peer."""
    return {
        "view": [measure(n, view) for n in sizes],
        "all": [measure(n, n) for n in sizes],
    }
