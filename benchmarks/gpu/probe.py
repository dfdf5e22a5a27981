"""Measure each OpenAI-compatible server alone (the others idle): prefill speed and decode step times, so
the sim can be given matching per-server profiles. Prints one JSON object, one entry per server.

    python benchmarks/gpu/probe.py --model llama-3.1-8b http://127.0.0.1:8101 http://127.0.0.1:8102
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import httpx

from wwwserve.logs import configure_logging


async def _one(
    http: httpx.AsyncClient, model: str, words: int, max_tokens: int, rng: random.Random
) -> dict[str, float]:
    prompt = " ".join(f"w{rng.randrange(3, 120000)}" for _ in range(words))
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    first = None
    n = 0
    async with http.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data:") and '"text"' in line:
                n += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return {"ttft_ms": (first - t0) * 1000, "tpot_ms": (end - first) * 1000 / max(1, max_tokens - 1)}


async def probe(url: str, model: str, seed: int) -> dict[str, float]:
    """Prefill speed from long prompts' TTFT, step time at batch 1 and at batch 16."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await _one(http, model, 64, 4, rng)  # warm
        long = [await _one(http, model, 4000, 1, rng) for _ in range(3)]
        short = [await _one(http, model, 16, 1, rng) for _ in range(3)]
        c1 = [await _one(http, model, 1024, 64, rng) for _ in range(3)]
        c16 = await asyncio.gather(*(_one(http, model, 1024, 64, rng) for _ in range(16)))
    fixed = statistics.median(s["ttft_ms"] for s in short)
    prefill_ms = max(1e-3, statistics.median(s["ttft_ms"] for s in long) - fixed)
    return {
        "prefill_tps": round(3984 / prefill_ms * 1000),
        "fixed_ttft_ms": round(fixed, 2),
        "tpot_c1_ms": round(statistics.median(s["tpot_ms"] for s in c1), 3),
        "tpot_c16_ms": round(statistics.median(s["tpot_ms"] for s in c16), 3),
        "ttft_c1_1024_ms": round(statistics.median(s["ttft_ms"] for s in c1), 2),
    }


async def main(a: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Probe each server in turn."""
    out = {}
    for i, url in enumerate(a.servers):
        out[url] = await probe(url, a.model, i + 1)
        print(url, out[url], file=sys.stderr)
    return out


if __name__ == "__main__":
    configure_logging("warning")  # logs to stderr: stdout is the JSON
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("servers", nargs="+")
    p.add_argument("--model", required=True)
    json.dump(asyncio.run(main(p.parse_args())), sys.stdout, indent=1)
    sys.stdout.write("\n")
