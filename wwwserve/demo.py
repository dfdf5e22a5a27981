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


async def run_demo(
    n_providers: int, n_requests: int, max_tokens: int, engine: str, json_out: bool, burst: int = 6
) -> int:
    """Start the network, serve each provider's own users, then a burst at one provider; 0 on success.

    The burst shows the network at work: the first provider gets `burst` requests at once (more than
    its one slot), and its policy forwards what its peers can finish sooner (hops 1 in the table).
    """
    console = Console(stderr=True)
    t0 = time.monotonic()
    results: list[dict[str, object]] = []
    async with LocalNetwork() as net:
        console.print(f"[bold]hub[/] {net.hub_url}")
        for i in range(n_providers):
            # One llama.cpp thread per provider: the demo's providers share this machine's cores.
            opts = {"threads": "1"} if engine == "embedded" else {}
            h = await net.add_provider(
                f"p{i + 1}",
                wait_peers=False,
                engine=engine,
                model=[DEFAULT_MODEL],
                engine_opt=opts,
                max_concurrency=1,
            )
            console.print(f"[bold]provider[/] {h.name} leaf {h.url} engine {engine}")
        await net.wait_for_peers()
        handles = list(net.providers.values())
        clients = [await Client(h.url, timeout=120).connect() for h in handles]
        try:

            async def one(i: int, user_of: int, phase: str) -> dict[str, object]:
                c = clients[user_of]
                prompt = PROMPTS[i % len(PROMPTS)]
                sent = time.monotonic()
                row: dict[str, object] = {
                    "request": i,
                    "phase": phase,
                    "user_of": handles[user_of].name,
                    "prompt": prompt,
                }
                try:
                    r = await c.chat(
                        DEFAULT_MODEL,
                        [{"role": "user", "content": prompt}],
                        max_tokens=max_tokens,
                        temperature=0.2,
                        seed=i,
                    )
                except WWWServeError as exc:
                    return {**row, "error": exc.code, "message": exc.message}
                return {
                    **row,
                    "provider": r.provider,
                    "model": r.model,
                    "text": r.text,
                    "hops": r.hops,
                    "latency_ms": round((time.monotonic() - sent) * 1000, 1),
                }

            own = [one(i, i % len(handles), "own users") for i in range(n_requests)]
            results = list(await asyncio.gather(*own))
            burst_at = f"burst at {handles[0].name}"
            rows = [one(n_requests + i, 0, burst_at) for i in range(burst)]
            results += list(await asyncio.gather(*rows))
        finally:
            for c in clients:
                await c.close()
    if json_out:
        for r in results:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        table = Table(
            title=f"wwwserve demo: {n_providers} providers, {n_requests} requests, burst of {burst}"
        )
        for col in ("#", "phase", "user of", "served by", "hops", "latency ms", "answer"):
            table.add_column(col)
        for r in results:
            table.add_row(
                str(r["request"]),
                str(r["phase"]),
                str(r["user_of"]),
                str(r.get("provider", r.get("error"))),
                str(r.get("hops", "")),
                str(r.get("latency_ms", "")),
                str(r.get("text", r.get("message"))),
            )
        Console().print(table)
    failed = [r for r in results if "error" in r]
    served_by = {r["provider"] for r in results if "provider" in r}
    helped = [r for r in results if r["phase"] != "own users" and r.get("hops") == 1]
    console.print(
        f"done in {time.monotonic() - t0:.1f}s: {len(results) - len(failed)} answered by "
        f"{len(served_by)} providers, {len(failed)} failed; of the burst, {len(helped)} of {burst} "
        "were served by peers (hops 1)"
    )
    if n_providers < 2:
        return 0 if not failed else 1
    return 0 if not failed and len(served_by) >= 2 and (burst < 2 or helped) else 1
