"""A real OpenAI-compatible HTTP server whose token stream a test can stall (engine-fault tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


class StallableServer:
    """Streams `tok` every `token_s` seconds; while `stalled` is set it sends nothing."""

    def __init__(
        self,
        port: int,
        token_s: float = 0.02,
        metrics: str = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n",
        models: list[dict[str, object]] | None = None,
    ) -> None:
        self.port = port
        self.token_s = token_s
        self.metrics_text = metrics  # what /metrics answers (vLLM's Prometheus text)
        self.models = models or []  # the /v1/models cards (vLLM's carry max_model_len)
        self.stalled = False
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def app(self) -> Starlette:
        async def chat(request: Request) -> StreamingResponse:
            body = await request.json()
            n = int(body.get("max_tokens", 16))

            async def gen() -> AsyncIterator[str]:
                for _ in range(n):
                    while self.stalled:
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(self.token_s)
                    chunk = {"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                last = {
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": n},
                }
                yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")

        async def metrics(request: Request) -> PlainTextResponse:
            return PlainTextResponse(self.metrics_text)

        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": self.models})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/completions", chat, methods=["POST"]),
                Route("/metrics", metrics),
                Route("/v1/models", models),
            ]
        )

    async def start(self) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self.stalled = False
            await self._task
