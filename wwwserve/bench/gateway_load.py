"""`wwwserve bench --gateway`: many concurrent OpenAI streams through the gateway vs the SDK direct.

Providers (sim) and the gateway run as their own processes; this process is the load client. The
same streaming chat requests go (a) through the gateway with the official `openai` client and (b)
straight into NATS with the wwwserve SDK, at the same concurrency; the difference of the latency
percentiles is what the gateway adds.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from wwwserve.bench.report import percentile
from wwwserve.bench.runner import _Procs
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.client import Client
from wwwserve.observe import wait_for_providers
from wwwserve.protocol.messages import Reply

MODEL = "gateway-bench-model"


async def _drive(one: Any, requests: int, concurrency: int) -> tuple[list[float], list[float], int]:
    """Run `requests` calls of `one()` (returning (ttft_ms, e2e_ms)) with `concurrency` in flight."""
    ttft: list[float] = []
    e2e: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal errors
        while not queue.empty():
            queue.get_nowait()
            try:
                t, e = await one()
                ttft.append(t)
                e2e.append(e)
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttft, e2e, errors


async def run_gateway_load(
    requests: int = 600, concurrency: int = 64, max_tokens: int = 16
) -> dict[str, Any]:
    """Measure TTFT/e2e percentiles through the gateway and direct; returns the JSON figures."""
    import openai

    work = Path(tempfile.mkdtemp(prefix="wwwserve-gwload-"))
    hub_port, leaf_port, gw_port = free_port(), free_port(), free_port()
    hub = NatsServer(
        HubConfig(port=hub_port, leafnode_port=leaf_port).render(), port=hub_port, workdir=work / "hub"
    )
    procs = _Procs(work)
    await hub.start()
    try:
        for i in range(3):
            procs.start(
                f"p{i}",
                [
                    "provider",
                    "--name",
                    f"p{i}",
                    "--hub",
                    f"127.0.0.1:{leaf_port}",
                    "--port",
                    str(free_port()),
                    "--engine",
                    "sim",
                    "--model",
                    MODEL,
                    "--max-concurrency",
                    "64",
                    "--data-dir",
                    str(work / f"p{i}"),
                    "--engine-opt",
                    "decode_tpot_ms=10",
                ],
            )
        procs.start("gateway", ["gateway", "--nats-url", hub.url, "--port", str(gw_port)])
        await wait_for_providers(hub.url, {"p0", "p1", "p2"})
        end = time.monotonic() + 60
        base = f"http://127.0.0.1:{gw_port}"
        async with httpx.AsyncClient() as h:
            while time.monotonic() < end:
                try:
                    if MODEL in (await h.get(f"{base}/health")).text:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        oai = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
        sdk = await Client(hub.url, timeout=60).connect()
        messages = [{"role": "user", "content": "say something"}]

        async def via_gateway() -> tuple[float, float]:
            t0 = time.perf_counter()
            first = None
            stream = await oai.chat.completions.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                stream=True,
            )
            async for chunk in stream:  # type: ignore[union-attr]
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
            done = time.perf_counter()
            return ((first or done) - t0) * 1000, (done - t0) * 1000

        async def direct() -> tuple[float, float]:
            t0 = time.perf_counter()
            first = None
            async for item in sdk.stream(MODEL, {"messages": messages, "max_tokens": max_tokens}):
                if first is None and not isinstance(item, Reply):
                    first = time.perf_counter()
            done = time.perf_counter()
            return ((first or done) - t0) * 1000, (done - t0) * 1000

        await _drive(via_gateway, 50, 10)  # warm-up of both paths
        await _drive(direct, 50, 10)
        out: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "max_tokens": max_tokens}
        for name, fn in (("direct", direct), ("gateway", via_gateway)):
            t0 = time.perf_counter()
            ttft, e2e, errors = await _drive(fn, requests, concurrency)
            out[name] = {
                "errors": errors,
                "rps": round(requests / (time.perf_counter() - t0), 1),
                "ttft_p50_ms": round(percentile(ttft, 50), 1),
                "ttft_p99_ms": round(percentile(ttft, 99), 1),
                "e2e_p50_ms": round(percentile(e2e, 50), 1),
                "e2e_p99_ms": round(percentile(e2e, 99), 1),
            }
        out["added_ttft_p50_ms"] = round(out["gateway"]["ttft_p50_ms"] - out["direct"]["ttft_p50_ms"], 1)
        out["added_ttft_p99_ms"] = round(out["gateway"]["ttft_p99_ms"] - out["direct"]["ttft_p99_ms"], 1)
        out["added_e2e_p50_ms"] = round(out["gateway"]["e2e_p50_ms"] - out["direct"]["e2e_p50_ms"], 1)
        out["added_e2e_p99_ms"] = round(out["gateway"]["e2e_p99_ms"] - out["direct"]["e2e_p99_ms"], 1)
        await sdk.close()
        await oai.close()
    finally:
        await procs.stop_all()
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out
