"""`wwwserve bench --overhead`: what an agent adds over a bare NATS responder, in the same run.

Also measured: the agent's round trip from a client on the hub (through the leafnode connection).

Both responders run as their own processes on the same leaf node; the client (this process) sends
the same msgpack request to each: round trips one at a time (p50/p99), then a fixed number of
concurrent workers for a fixed time (requests per second), both in blocks that alternate between the
two responders so the machine's drift hits both alike. The agent uses the `sim` engine with
zero service time, so everything measured is protocol, validation, policy and NATS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import nats
from nats.aio.client import Client as NATS

from wwwserve.bench.report import percentile
from wwwserve.broker.config import HubConfig, LeafConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.observe import wait_for_providers
from wwwserve.protocol.subjects import request_subject

MODEL = "overhead-model"
ECHO_SUBJECT = "bench.echo"
RATE_BLOCKS = 4  # each responder's rate phase, split into blocks that alternate with the other's


async def _round_trips(nc: NATS, subject: str, payload: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await nc.request(subject, payload, timeout=5)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rate(nc: NATS, subject: str, payload: bytes, workers: int, seconds: float) -> tuple[int, float]:
    """Requests answered by `workers` concurrent requesters in about `seconds`, and the time it took."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await nc.request(subject, payload, timeout=10)
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done, time.perf_counter() - t


async def run_overhead(n: int = 2000, workers: int = 32, seconds: float = 5.0) -> dict[str, Any]:
    """Measure agent vs echo on one leaf node; returns the figures of `--overhead --json`."""
    work = Path(tempfile.mkdtemp(prefix="wwwserve-overhead-"))
    hub_port, leaf_port, port = free_port(), free_port(), free_port()
    hub = NatsServer(
        HubConfig(port=hub_port, leafnode_port=leaf_port).render(), port=hub_port, workdir=work / "hub"
    )
    leaf = NatsServer(
        LeafConfig(hub_urls=[f"127.0.0.1:{leaf_port}"], port=port).render(),
        port=port,
        workdir=work / "leaf",
        name="leaf",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    await hub.start()
    await leaf.start()
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wwwserve",
                    "--log-level",
                    "warning",
                    "provider",
                    "--name",
                    "agent",
                    "--nats-url",
                    leaf.url,
                    "--engine",
                    "sim",
                    "--model",
                    MODEL,
                    "--max-concurrency",
                    "256",
                    "--data-dir",
                    str(work / "agent"),
                ],
                stdout=(work / "agent.log").open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "wwwserve.bench.echo", leaf.url, ECHO_SUBJECT],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        await wait_for_providers(leaf.url, {"agent"}, timeout=30)
        nc = await nats.connect(leaf.url)
        payload = msgpack.packb({"prompt": "hello there", "max_tokens": 1})
        targets = {"agent": request_subject(MODEL), "echo": ECHO_SUBJECT}  # the order of `procs`
        for subject in targets.values():  # warm up both paths
            await _round_trips(nc, subject, payload, 200)
        rtt: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(4):  # interleave blocks so drift hits both equally
            for k, subject in targets.items():
                rtt[k] += await _round_trips(nc, subject, payload, n // 4)
        # The rates too in interleaved blocks: this VM's speed drifts within seconds, and one 5 s phase
        # each put whole drifts between the two arms (one version's ratio spread 0.36-0.53)
        served: dict[str, float] = {k: 0.0 for k in targets}
        elapsed: dict[str, float] = {k: 0.0 for k in targets}
        cpu_s: dict[str, float] = {k: 0.0 for k in targets}
        cpu_known = True  # /proc was readable all along
        for _ in range(RATE_BLOCKS):
            for (k, subject), proc in zip(targets.items(), procs, strict=True):
                before = _cpu_s(proc.pid)
                done, took = await _rate(nc, subject, payload, workers, seconds / RATE_BLOCKS)
                after = _cpu_s(proc.pid)
                served[k] += done
                elapsed[k] += took
                if before is None or after is None:
                    cpu_known = False
                else:
                    cpu_s[k] += after - before
        rate = {k: served[k] / elapsed[k] for k in targets}
        # the responder's own CPU per request: on a shared 2-core machine a steadier figure than the rate
        cpu_us: dict[str, float | None] = {}
        for k in targets:
            cpu_us[k] = round(cpu_s[k] / served[k] * 1e6, 1) if cpu_known and served[k] > 0 else None
        await nc.close()
        # The same agent seen from a client on the hub: one leafnode hop each way.
        hub_nc = await nats.connect(hub.url)
        await _round_trips(hub_nc, targets["agent"], payload, 100)
        via_hub = await _round_trips(hub_nc, targets["agent"], payload, n // 2)
        await hub_nc.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        await leaf.stop()
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {}
    for k in targets:
        out[k] = {
            "p50_ms": round(percentile(rtt[k], 50), 3),
            "p99_ms": round(percentile(rtt[k], 99), 3),
            "rate_rps": round(rate[k], 1),
            "cpu_us_per_request": cpu_us[k],
        }
    out["agent_via_hub"] = {
        "p50_ms": round(percentile(via_hub, 50), 3),
        "p99_ms": round(percentile(via_hub, 99), 3),
    }
    out["p50_ratio"] = round(out["agent"]["p50_ms"] / out["echo"]["p50_ms"], 2)
    out["rate_ratio"] = round(out["agent"]["rate_rps"] / out["echo"]["rate_rps"], 2)
    out["round_trips"], out["workers"], out["seconds"] = n, workers, seconds
    return out
