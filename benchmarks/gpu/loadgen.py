"""A closed-loop load generator for an OpenAI-compatible server, as `vllm bench serve --max-concurrency C
--request-rate inf --ignore-eos` measures (TTFT: request sent to first text; TPOT: (e2e - TTFT) / (output
- 1); output tokens/s over the whole run), with two things that client lacks:

- the streams can come from several processes that start at one instant (`--processes`): one asyncio
  client cannot parse ~16,000 events/s at 128 streams, and separate `vllm bench serve` processes start
  seconds apart;
- the server's own histograms (`/metrics`) are read before and after, so a client's TTFT splits into the
  server's queue, prefill and the rest (frontend, transport), and the step count and tokens per step show
  how the engine batched the load.

Prints one JSON object. `--sweep 128,512,...` instead measures the prompt lengths one at a time (C=1).

    python benchmarks/gpu/loadgen.py --url http://127.0.0.1:8201 --model /root/models/llama-3.1-8b \\
        --input 128 --output 256 --concurrency 128 --prompts 256 --processes 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

import aiohttp

from wwwserve.engines.openai import parse_metrics

HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:iteration_tokens_total",
)


def _prompts(n: int, words: int, prefix_len: int, seed: int) -> list[str]:
    """Random one-token words (the GPU recipe's word-level tokenizer); a shared prefix when asked."""
    rng = random.Random(seed)
    shared = [f"w{rng.randrange(3, 120000)}" for _ in range(prefix_len)]
    return [" ".join(shared + [f"w{rng.randrange(3, 120000)}" for _ in range(words)]) for _ in range(n)]


async def _one(http: aiohttp.ClientSession, url: str, model: str, prompt: str, out: int) -> dict[str, float]:
    body = {"model": model, "prompt": prompt, "max_tokens": out, "stream": True, "ignore_eos": True}
    sent = time.time()
    first = 0.0
    async with http.post(f"{url}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not first and line.startswith(b"data:") and b'"text":""' not in line and b'"text"' in line:
                first = time.time()
    end = time.time()
    return {"sent": sent, "first": first or end, "end": end}


async def _worker_main(args: argparse.Namespace) -> list[dict[str, float]]:
    prompts = _prompts(args.prompts, args.input, args.prefix_len, args.seed)
    todo = list(reversed(prompts))
    done: list[dict[str, float]] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as http:
        await asyncio.sleep(max(0.0, args.start - time.time()))

        async def stream() -> None:
            while todo:
                prompt = todo.pop()
                try:
                    done.append(await _one(http, args.url, args.model, prompt, args.output))
                except (aiohttp.ClientError, TimeoutError) as e:
                    done.append({"error": 1.0, "why": repr(e)[:200]})  # type: ignore[dict-item]

        await asyncio.gather(*(stream() for _ in range(args.concurrency)))
    return done


async def _scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        m = parse_metrics(await resp.text())
    return {k: v for k, v in m.items() if k.startswith(HISTOGRAMS) and k.endswith(("_sum", "_count"))}


async def _point(args: argparse.Namespace) -> dict[str, Any]:
    """One closed loop from `args.processes` worker processes that start together."""
    before = await _scrape(args.url)
    start = time.time() + 2.0 + 0.5 * args.processes  # the workers import aiohttp first
    per_c, per_n = args.concurrency // args.processes, args.prompts // args.processes
    procs = []
    for j in range(args.processes):
        cmd = [sys.executable, __file__, "--worker", "--url", args.url, "--model", args.model,
               "--input", str(args.input), "--output", str(args.output), "--concurrency", str(per_c),
               "--prompts", str(per_n), "--prefix-len", str(args.prefix_len),
               "--seed", str(args.seed * 1000 + j), "--start", str(start)]  # fmt: skip
        procs.append(await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE))
    outs = [await p.communicate() for p in procs]
    after = await _scrape(args.url)
    got = [r for out, _ in outs for r in json.loads(out)["requests"]]
    reqs = [r for r in got if "error" not in r]
    errors = sorted({str(r["why"]) for r in got if "error" in r})
    cpu = [json.loads(out)["cpu_s"] for out, _ in outs]
    ttft = [1000 * (r["first"] - r["sent"]) for r in reqs]
    tpot = [1000 * (r["end"] - r["first"]) / (args.output - 1) for r in reqs] if args.output > 1 else [0.0]
    span = max(r["end"] for r in reqs) - min(r["sent"] for r in reqs)
    server = {}
    for h in HISTOGRAMS:
        n = after.get(f"{h}_count", 0.0) - before.get(f"{h}_count", 0.0)
        s = after.get(f"{h}_sum", 0.0) - before.get(f"{h}_sum", 0.0)
        scale = 1.0 if h.endswith("tokens_total") else 1000.0
        server[h.removeprefix("vllm:")] = {"count": n, "mean": round(scale * s / n, 3) if n else None}
    return {
        "input": args.input, "output": args.output, "concurrency": args.concurrency,
        "seed": args.seed, "prompts": len(reqs), "errors": len(got) - len(reqs), "error_kinds": errors[:3],
        "prefix_len": args.prefix_len, "processes": args.processes,
        "duration": round(span, 3),
        "mean_ttft_ms": round(statistics.mean(ttft), 2), "median_ttft_ms": round(statistics.median(ttft), 2),
        "p90_ttft_ms": round(statistics.quantiles(ttft, n=10)[-1], 2) if len(ttft) > 1 else None,
        "mean_tpot_ms": round(statistics.mean(tpot), 3), "median_tpot_ms": round(statistics.median(tpot), 3),
        "output_throughput": round(len(reqs) * args.output / span, 1),
        "client_cpu_s": cpu, "server_ms": server,
    }  # fmt: skip


def main() -> None:
    """Parse the flags; a worker prints its requests, the parent one point (or a sweep)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--input", type=int, default=1024)
    p.add_argument("--output", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--prefix-len", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="prompts' seed (default: a fresh one, reported)")
    p.add_argument("--name", default="")
    p.add_argument("--sweep", default="", help="prompt lengths, comma-separated: C=1 each, --prompts each")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.seed is None:  # a fixed default shared prompts between points: the prefix cache answered them
        args.seed = random.SystemRandom().randrange(1 << 30)
    if args.worker:
        cpu0 = time.process_time()
        reqs = asyncio.run(_worker_main(args))
        print(json.dumps({"requests": reqs, "cpu_s": round(time.process_time() - cpu0, 2)}))
        return
    if args.sweep:
        for n in (int(x) for x in args.sweep.split(",")):
            args.input = n
            print(json.dumps({"point": f"{args.name}-{n}", **asyncio.run(_point(args))}), flush=True)
        return
    print(json.dumps({"point": args.name, **asyncio.run(_point(args))}))


if __name__ == "__main__":
    main()
