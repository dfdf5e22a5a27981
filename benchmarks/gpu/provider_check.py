"""Watch a provider's heartbeats until its engine is ready (printing each `engine_state` it announces and
when), then send requests through the NATS server given (a hub): non-streaming and streaming, some at
once. Prints one JSON object.

    python benchmarks/gpu/provider_check.py nats://127.0.0.1:4222 gpu-qwen /root/models/qwen3-8b
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import nats

from wwwserve.client import Client, heartbeat_from
from wwwserve.logs import configure_logging
from wwwserve.protocol.messages import Reply


async def main(url: str, provider: str, model: str, wait_s: float) -> dict[str, object]:
    """States until ready, then answers."""
    t0 = time.monotonic()
    states: list[tuple[float, str, bool]] = []
    ready = asyncio.Event()
    nc = await nats.connect(url)

    async def on_beat(msg: nats.aio.msg.Msg) -> None:
        beat = heartbeat_from(msg)
        if beat is None or beat.name != provider:
            return
        if not states or states[-1][1:] != (beat.engine_state, beat.healthy):
            states.append((round(time.monotonic() - t0, 1), beat.engine_state, beat.healthy))
        if beat.engine_state == "ready" and beat.healthy:
            ready.set()

    await nc.subscribe(f"llm.heartbeat.{provider}.>", cb=on_beat)
    await asyncio.wait_for(ready.wait(), wait_s)
    ready_after = time.monotonic() - t0
    rng = random.Random(0)
    answers = []
    async with Client(url, timeout=120) as c:
        for _i in range(3):
            prompt = " ".join(f"w{rng.randrange(3, 150000)}" for _ in range(200))
            t = time.monotonic()
            r = await c.complete(model, prompt, max_tokens=32)
            answers.append(
                {
                    "mode": "complete",
                    "provider": r.provider,
                    "tokens": r.usage.completion_tokens,
                    "ms": round((time.monotonic() - t) * 1000, 1),
                    "text": r.text[:60],
                }
            )
        chunks = 0
        async for item in c.stream(model, {"prompt": "w5 w6 w7 w8", "max_tokens": 16}):
            if isinstance(item, Reply):
                answers.append({"mode": "stream", "chunks": chunks, "tokens": item.usage.completion_tokens})
            else:
                chunks += 1
        t = time.monotonic()
        burst = await asyncio.gather(
            *(c.complete(model, f"w{9 + i} w4 w5", max_tokens=64) for i in range(16))
        )
        answers.append(
            {
                "mode": "16 at once",
                "served": len(burst),
                "by": sorted({r.provider for r in burst}),
                "ms": round((time.monotonic() - t) * 1000, 1),
            }
        )
    await nc.close()
    return {"states": states, "ready_after_s": round(ready_after, 1), "answers": answers}


if __name__ == "__main__":
    configure_logging("warning")  # logs to stderr: stdout is the JSON
    wait = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    json.dump(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], wait)), sys.stdout, indent=1)
    sys.stdout.write("\n")
