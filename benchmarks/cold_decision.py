"""A local dispatch decision on warm and on cold caches, as the 1,000-provider swarm sees it.

    python benchmarks/cold_decision.py [--decisions 3000]

In the swarm an agent decides about once a minute, between thousands of heartbeats of other agents in
the same process, so every decision runs on cold caches (p50 ~40-65 µs there, against ~10 µs back to
back). This reproduces that in one process: a real agent on a nats-server (the swarm's engine and
settings), and before every other decision a sweep over 32 MB of buffers and 200,000 dicts that evicts
the caches. It times what the agent times (`thread_time_ns` around the own state, the candidates and
the policy; the request's description is built before, once) and prints p50/p90/p99 for both.

Run it from a directory outside the checkout, with PYTHONPATH naming the tree to measure, to compare two
versions side by side (`python -m` and scripts in the checkout import the checkout first).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from wwwserve.agent.dispatch import CandidateStates, estimate_prompt_tokens
from wwwserve.bench.swarm import MODEL, _start_agent
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.engines.base import prompt_text
from wwwserve.protocol.headers import routing_from_headers
from wwwserve.protocol.messages import parse_request
from wwwserve.protocol.prefix import block_hashes, checkpoints


def _evict(buffers: list[bytearray], objects: list[dict[str, int]]) -> int:
    """Touch every page of the buffers and a spread of small objects: what other agents' work does."""
    for b in buffers:
        b[100] = 1
    return sum(o["a"] for o in objects[::7])


def _summary(xs: list[float]) -> str:
    xs = sorted(xs)
    at = [xs[min(len(xs) - 1, int(q * len(xs)))] for q in (0.5, 0.9, 0.99)]
    return "p50 {:.1f} µs, p90 {:.1f} µs, p99 {:.1f} µs".format(*at)


async def measure(decisions: int) -> dict[str, list[float]]:
    """Decision times (µs) with warm and with evicted caches, alternating."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="wwwserve-cold-"))
    config = HubConfig(port=port, leafnode_port=free_port()).render()
    hub = NatsServer(config, port=port, workdir=work / "hub")
    await hub.start()
    agent, task = await _start_agent("s0001", hub.url, work)
    try:
        dispatcher = agent._dispatcher
        assert dispatcher is not None
        req = parse_request({"prompt": "swarm request 1 " + "word " * 60, "max_tokens": 16})
        routing = routing_from_headers({}, 15.0)
        probes = checkpoints(block_hashes(prompt_text(req)))
        info = dispatcher._request_info(req, MODEL, routing, estimate_prompt_tokens(req), probes)
        buffers = [bytearray(4096) for _ in range(8192)]
        objects = [{"a": i} for i in range(200_000)]
        out: dict[str, list[float]] = {"warm": [], "cold": []}
        for i in range(decisions):
            cold = i % 2 == 1
            if cold:
                _evict(buffers, objects)
            t0 = time.thread_time_ns()
            info.remaining_ms = routing.remaining_s() * 1000.0
            peers = CandidateStates(dispatcher, MODEL, set(), probes)
            agent.policy.decide(info, dispatcher.own_state(probes), peers, agent.rng)
            out["cold" if cold else "warm"].append((time.thread_time_ns() - t0) / 1000.0)
        return out
    finally:
        agent.stop()
        await asyncio.wait({task}, timeout=10)
        await hub.stop()


def main() -> None:
    """Parse the flags, measure, print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decisions", type=int, default=3000)
    args = ap.parse_args()
    from wwwserve.logs import configure_logging
    from wwwserve.runtime import run

    configure_logging("warning", json_logs=False)
    for kind, xs in run(measure(args.decisions)).items():
        print(f"{kind}: {_summary(xs)}")


if __name__ == "__main__":
    main()
