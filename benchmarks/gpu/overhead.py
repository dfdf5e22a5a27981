"""What the agent adds in front of a real engine: the same prompts straight to the server's OpenAI API
(one shared HTTP client) and through a provider (SDK client at its leaf, and at the hub), in alternating
blocks, at each concurrency. Prints one JSON object: TTFT and e2e p50/p90 per route and concurrency, and
each route's p50s relative to direct.

    python benchmarks/gpu/overhead.py --server http://127.0.0.1:8101 --model llama-3.1-8b \\
        --leaf nats://127.0.0.1:4301 --hub nats://127.0.0.1:4222 --concurrency 8,32 --rounds 3

Prompts are `--prompt-words` words `w<n>` (one token each with the GPU recipe's word-level tokenizer),
random per request so no two share a prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from wwwserve.client import Client
from wwwserve.logs import configure_logging
from wwwserve.protocol.messages import Reply

# (ttft ms, e2e ms, the agent's own ttft and latency from its receipt of the request, as its final reply
# says; NaN on the direct route): what the client saw minus what the agent saw is the NATS route's share
Sample = tuple[float, float, float, float]
NAN = float("nan")


def _prompt(rng: random.Random, words: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(3, vocab)}" for _ in range(words))


async def _direct(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Sample:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    t0 = time.perf_counter()
    ttft = None
    async with http.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if ttft is None and line.startswith("data:") and '"text"' in line:
                ttft = time.perf_counter() - t0
    e2e = time.perf_counter() - t0
    return (ttft or e2e) * 1000, e2e * 1000, NAN, NAN


async def _sdk(client: Client, model: str, prompt: str, max_tokens: int) -> Sample:
    t0 = time.perf_counter()
    ttft = None
    final: Reply | None = None
    async for item in client.stream(model, {"prompt": prompt, "max_tokens": max_tokens}):
        if ttft is None:
            ttft = time.perf_counter() - t0
        if isinstance(item, Reply):
            final = item
            break
    e2e = time.perf_counter() - t0
    agent = (final.ttft_ms, final.latency_ms) if final is not None else (NAN, NAN)
    return (ttft or e2e) * 1000, e2e * 1000, *agent


async def _block(
    one: Callable[[str], Awaitable[Sample]], prompts: list[str], concurrency: int
) -> list[Sample]:
    """A closed loop: `concurrency` requests in flight until every prompt was sent."""
    queue = list(reversed(prompts))
    out: list[Sample] = []

    async def worker() -> None:
        while queue:
            out.append(await one(queue.pop()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _pct(values: list[float], q: float) -> float:
    return (
        round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2) if len(values) > 1 else 0.0
    )


async def main(a: argparse.Namespace) -> dict[str, object]:
    """Alternate the routes block by block; summarize per route and concurrency."""
    rng = random.Random(a.seed)
    samples: dict[str, dict[int, list[Sample]]] = {}
    pool = httpx.Limits(max_connections=None, max_keepalive_connections=1024)  # as the openai engine's
    async with (
        httpx.AsyncClient(base_url=a.server, timeout=600, limits=pool) as http,
        Client(a.leaf, timeout=600) as leaf,
        Client(a.hub, timeout=600) as hub,
    ):
        routes: dict[str, Callable[[str], Awaitable[Sample]]] = {
            "direct": lambda p: _direct(http, a.model, p, a.max_tokens),
            "leaf": lambda p: _sdk(leaf, a.model, p, a.max_tokens),
            "hub": lambda p: _sdk(hub, a.model, p, a.max_tokens),
        }
        # warm every path (connections, the engine's first requests) before measuring
        for one in routes.values():
            await _block(one, [_prompt(rng, a.prompt_words, a.vocab) for _ in range(4)], 4)
        for r in range(a.rounds):
            for c in a.concurrency:
                order = list(routes)
                if r:  # the first round in a fixed order, later ones shuffled
                    rng.shuffle(order)
                for name in order:
                    prompts = [_prompt(rng, a.prompt_words, a.vocab) for _ in range(a.per_block * c)]
                    got = await _block(routes[name], prompts, c)
                    samples.setdefault(name, {}).setdefault(c, []).extend(got)
                    print(f"round {r} C={c} {name}: {len(got)} done", file=sys.stderr)
    result: dict[str, object] = {
        "server": a.server,
        "model": a.model,
        "prompt_words": a.prompt_words,
        "max_tokens": a.max_tokens,
        "rounds": a.rounds,
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_c in samples.items():
        for c, got in by_c.items():
            ttft, e2e = [s[0] for s in got], [s[1] for s in got]
            row = table.setdefault(str(c), {})[name] = {
                "n": len(got),
                "ttft_p50_ms": _pct(ttft, 50),
                "ttft_p90_ms": _pct(ttft, 90),
                "e2e_p50_ms": _pct(e2e, 50),
                "e2e_p90_ms": _pct(e2e, 90),
            }
            if name != "direct":  # where the time went: the agent's own clock vs the client's
                row["agent_ttft_p50_ms"] = _pct([s[2] for s in got], 50)
                row["agent_e2e_p50_ms"] = _pct([s[3] for s in got], 50)
                row["route_ttft_p50_ms"] = _pct([s[0] - s[2] for s in got], 50)  # request in, first chunk out
                row["route_e2e_p50_ms"] = _pct([s[1] - s[3] for s in got], 50)  # request in, final out
    for row in table.values():
        base = row["direct"]
        for name, s in row.items():
            if name != "direct":
                s["e2e_p50_vs_direct"] = round(s["e2e_p50_ms"] / base["e2e_p50_ms"] - 1, 4)
                s["ttft_p50_vs_direct"] = round(s["ttft_p50_ms"] / base["ttft_p50_ms"] - 1, 4)
                s["ttft_p50_added_ms"] = round(s["ttft_p50_ms"] - base["ttft_p50_ms"], 2)
    result["by_concurrency"] = table
    return result


if __name__ == "__main__":
    configure_logging("warning")  # logs to stderr: stdout is the JSON
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the engine's base URL (direct route)")
    p.add_argument("--model", required=True, help="the model name, as served and as the network knows it")
    p.add_argument("--leaf", required=True, help="NATS URL of the provider's leaf node")
    p.add_argument("--hub", required=True, help="NATS URL of the hub")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-block", type=int, default=3, help="requests per block = this x concurrency")
    p.add_argument("--prompt-words", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--vocab", type=int, default=128256, help="words w3..w<vocab> are real tokens")
    p.add_argument("--seed", type=int, default=1)
    json.dump(asyncio.run(main(p.parse_args())), sys.stdout, indent=1)
    sys.stdout.write("\n")
