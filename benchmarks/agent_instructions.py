"""Instructions an agent executes per request, counted by callgrind: a figure this noisy 2-core VM
cannot move (its speed swings up to 2x within minutes; instruction counts repeat to ~1%).

    python benchmarks/agent_instructions.py [--requests 4000] [--workers 32] [--keep callgrind.out]

Starts a nats-server and a `wwwserve provider` (instant sim engine, as `bench --overhead` runs it)
under `valgrind --tool=callgrind` with instrumentation off; after a warm-up it turns counting on,
sends the requests from `--workers` concurrent requesters, dumps, and prints instructions per request
(everything the agent process ran meanwhile: NATS, asyncio, heartbeats, the request path).

Run it from a directory outside the checkout, with PYTHONPATH naming the tree to measure, to compare two
versions (`python -m` puts the working directory first on sys.path). Needs valgrind (Debian: valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack
import nats

from wwwserve.bench.overhead import MODEL
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.observe import wait_for_providers
from wwwserve.protocol.subjects import request_subject


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def measure(requests: int, workers: int, keep: Path | None = None) -> int:
    """Instructions per request of an agent serving `requests` from `workers` concurrent requesters."""
    work = Path(tempfile.mkdtemp(prefix="wwwserve-callgrind-"))
    port = free_port()
    server = NatsServer(HubConfig(port=port, leafnode_port=free_port()).render(), port=port, workdir=work)
    await server.start()
    out = work / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no"]
    provider = ["provider", "--name", "agent", "--nats-url", server.url, "--engine", "sim", "--model", MODEL]
    limits = ["--max-concurrency", "256", "--data-dir", str(work / "agent")]
    agent = subprocess.Popen(
        [*valgrind, sys.executable, "-m", "wwwserve", "--log-level", "warning", *provider, *limits],
        stdout=(work / "agent.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for_providers(server.url, {"agent"}, timeout=300)
        nc = await nats.connect(server.url)
        payload = msgpack.packb({"prompt": "hello there", "max_tokens": 1})
        subject = request_subject(MODEL)
        for _ in range(50):  # warm-up: imports, first requests
            await nc.request(subject, payload, timeout=30)
        _control(agent.pid, "-i", "on")
        _control(agent.pid, "-z")

        async def requester(n: int) -> None:
            for _ in range(n):
                await nc.request(subject, payload, timeout=30)

        await asyncio.gather(*(requester(requests // workers) for _ in range(workers)))
        _control(agent.pid, "-d")
        await nc.close()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)
        await server.stop()
    dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    total = int(re.search(r"^summary: (\d+)", dumps[0].read_text(), re.M).group(1))  # type: ignore[union-attr]
    if keep is not None:  # for callgrind_annotate (--inclusive=yes, --tree=caller)
        shutil.copy(dumps[0], keep)
    shutil.rmtree(work, ignore_errors=True)
    return total // (requests // workers * workers)


def main() -> None:
    """Parse the flags, measure, print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--keep", type=Path, help="copy the callgrind profile of the measured requests here")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (Debian: apt-get install valgrind)")
    print(f"instructions per request: {asyncio.run(measure(args.requests, args.workers, args.keep)):,}")


if __name__ == "__main__":
    main()
