"""`wwwserve demo`: a hub, a few providers and real answers, on one machine, in one command."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from wwwserve.agent.settings import DEFAULT_MODEL
from wwwserve.client import Client
from wwwserve.errors import WWWServeError
from wwwserve.topology import LocalNetwork

PROMPTS = [
    "What is the capital of France?",
    "Name three colors of the rainbow.",
    "What is 2 + 2?",
    "Write one sentence about the sea.",
    "What do bees make?",
    "Say hello in Spanish.",
]


async def run_demo(n_providers: int, n_requests: int, max_tokens: int, engine: str, json_out: bool) -> int:
    """Start the network, send requests from each provider's own users, print answers; 0 on success."""
    console = Console(stderr=True)
    t0 = time.monotonic()
    results: list[dict[str, object]] = []
    async with LocalNetwork() as net:
        console.print(f"[bold]hub[/] {net.hub_url}")
        for i in range(n_providers):
            # One llama.cpp thread per provider: the demo's providers share this machine's cores.
            opts = {"threads": "1"} if engine == "embedded" else {}
            h = await net.add_provider(
                f"p{i + 1}", wait_peers=False, engine=engine, model=[DEFAULT_MODEL], engine_opt=opts
            )
            console.print(f"[bold]provider[/] {h.name} leaf {h.url} engine {engine}")
        await net.wait_for_peers()
        handles = list(net.providers.values())
        clients = [await Client(h.url, timeout=120).connect() for h in handles]
        try:

            async def one(i: int) -> dict[str, object]:
                c = clients[i % len(clients)]
                prompt = PROMPTS[i % len(PROMPTS)]
                sent = time.monotonic()
                try:
                    r = await c.chat(
                        DEFAULT_MODEL,
                        [{"role": "user", "content": prompt}],
                        max_tokens=max_tokens,
                        temperature=0.2,
                        seed=i,
                    )
                    return {
                        "request": i,
                        "user_of": handles[i % len(handles)].name,
                        "provider": r.provider,
                        "model": r.model,
                        "prompt": prompt,
                        "text": r.text,
                        "hops": r.hops,
                        "latency_ms": round((time.monotonic() - sent) * 1000, 1),
                    }
                except WWWServeError as exc:
                    return {"request": i, "prompt": prompt, "error": exc.code, "message": exc.message}

            results = list(await asyncio.gather(*(one(i) for i in range(n_requests))))
        finally:
            for c in clients:
                await c.close()
    if json_out:
        for r in results:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        table = Table(title=f"wwwserve demo: {n_providers} providers, {n_requests} requests")
        for col in ("#", "user of", "served by", "hops", "latency ms", "answer"):
            table.add_column(col)
        for r in results:
            table.add_row(
                str(r["request"]),
                str(r.get("user_of", "")),
                str(r.get("provider", r.get("error"))),
                str(r.get("hops", "")),
                str(r.get("latency_ms", "")),
                str(r.get("text", r.get("message"))),
            )
        Console().print(table)
    served_by = {r["provider"] for r in results if "provider" in r}
    failed = [r for r in results if "error" in r]
    console.print(
        f"done in {time.monotonic() - t0:.1f}s: {len(results) - len(failed)} answered by "
        f"{len(served_by)} providers, {len(failed)} failed"
    )
    return 0 if not failed and (len(served_by) >= 2 or n_providers < 2) else 1
