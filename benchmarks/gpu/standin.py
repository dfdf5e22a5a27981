"""A stand-in for `vllm serve` on a machine without a GPU: an OpenAI-compatible server whose one engine
loop runs steps the way vLLM's scheduler does (every running stream gets a token per step; prompts are
prefilled in chunks of a per-step token budget; a request joins at the next step), with fixed, made-up
costs. It exists to measure what sits in front of an engine (`benchmarks/gpu/overhead.py` on the CPU),
not an engine: the step times are parameters, the text is `w<n>` words.

    python benchmarks/gpu/standin.py --port 8101 --step-ms 6 --per-seq-ms 0.08 --prefill-tps 40000

Speaks HTTP/1.1 keep-alive with chunked SSE like uvicorn, `POST /v1/completions` (streaming or not),
`GET /health`, `/v1/models` and `/metrics` (vLLM's running/waiting gauges).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class Stream:
    """One request inside the engine loop."""

    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    prompt_left: int
    tokens_left: int
    model: str
    index: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Engine:
    """vLLM-like continuous batching with a token budget per step, in wall-clock time."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.waiting: list[Stream] = []
        self.running: list[Stream] = []
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """The engine loop: one step after another while there is work."""
        a = self.a
        while True:
            if not self.waiting and not self.running:
                self.wake.clear()
                await self.wake.wait()
            # a client that went away is aborted, as vLLM aborts a request whose connection closed
            for queue in (self.waiting, self.running):
                for s in [s for s in queue if s.reader.at_eof() or s.writer.is_closing()]:
                    queue.remove(s)
                    s.done.set()
            if not self.waiting and not self.running:
                continue
            while self.waiting and len(self.running) < a.max_num_seqs:
                self.running.append(self.waiting.pop(0))
            budget = a.budget - sum(1 for s in self.running if s.prompt_left == 0)
            prefill = 0
            for s in self.running:
                if s.prompt_left and budget > 0:
                    take = min(s.prompt_left, budget)
                    s.prompt_left -= take
                    budget -= take
                    prefill += take
                    s.index = -1 if s.prompt_left == 0 else 0  # -1: emits its first token this step
            step_s = (a.step_ms + a.per_seq_ms * len(self.running)) / 1000 + prefill / a.prefill_tps
            await asyncio.sleep(step_s)
            still: list[Stream] = []
            for s in self.running:
                if s.prompt_left:
                    still.append(s)
                    continue
                s.index += 1
                s.tokens_left -= 1
                finish = "length" if s.tokens_left == 0 else None
                event = {
                    "id": "cmpl-standin",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": s.model,
                    "choices": [
                        {
                            "index": 0,
                            "text": f" w{s.index + 3}",
                            "logprobs": None,
                            "finish_reason": finish,
                            "stop_reason": None,
                        }
                    ],
                    "usage": None,
                }
                _chunk(s.writer, f"data: {json.dumps(event)}\n\n".encode())
                if finish:
                    s.done.set()
                else:
                    still.append(s)
            self.running = still


def _chunk(w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(b"%x\r\n%s\r\n" % (len(data), data))


async def _respond(w: asyncio.StreamWriter, status: str, ctype: str, body: bytes) -> None:
    w.write(
        f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
    )
    await w.drain()


async def serve(engine: Engine, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """One keep-alive connection."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(hdrs.get("content-length", 0)))
            if path == "/health":
                await _respond(w, "200 OK", "text/plain", b"")
            elif path == "/v1/models":
                card = {"id": engine.a.model, "object": "model", "max_model_len": 131072}
                await _respond(w, "200 OK", "application/json", json.dumps({"data": [card]}).encode())
            elif path == "/metrics":
                text = (
                    f"vllm:num_requests_running {len(engine.running)}\n"
                    f"vllm:num_requests_waiting {len(engine.waiting)}\n"
                )
                await _respond(w, "200 OK", "text/plain", text.encode())
            elif method == "POST" and path == "/v1/completions":
                req = json.loads(body)
                prompt_tokens = max(1, len(str(req["prompt"]).split()))
                s = Stream(w, reader, prompt_tokens, int(req.get("max_tokens", 16)), str(req["model"]))
                if not req.get("stream"):
                    await _respond(w, "400 Bad Request", "application/json", b'{"error": "stream only"}')
                    continue
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                w.write(b"transfer-encoding: chunked\r\n\r\n")
                engine.waiting.append(s)
                engine.wake.set()
                await s.done.wait()
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": int(req.get("max_tokens", 16))}
                if (req.get("stream_options") or {}).get("include_usage"):
                    last = {"id": "cmpl-standin", "object": "text_completion", "choices": [], "usage": usage}
                    _chunk(w, f"data: {json.dumps(last)}\n\n".encode())
                _chunk(w, b"data: [DONE]\n\n")
                w.write(b"0\r\n\r\n")
                await w.drain()
            else:
                await _respond(w, "404 Not Found", "application/json", b'{"error": "not found"}')
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


async def main(a: argparse.Namespace) -> None:
    """Serve until killed."""
    engine = Engine(a)
    loop_task = asyncio.create_task(engine.run())
    server = await asyncio.start_server(lambda r, w: serve(engine, r, w), "127.0.0.1", a.port)
    async with server:
        await asyncio.gather(server.serve_forever(), loop_task)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--step-ms", type=float, default=6.0, help="a step's fixed cost")
    p.add_argument("--per-seq-ms", type=float, default=0.08, help="a step's cost per running stream")
    p.add_argument("--prefill-tps", type=float, default=40000.0, help="prompt tokens per second")
    p.add_argument("--budget", type=int, default=8192, help="tokens per step (decodes + prefill chunks)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    asyncio.run(main(p.parse_args()))
