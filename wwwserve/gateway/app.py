"""The gateway's ASGI app (Starlette): OpenAI's endpoints in front of a wwwserve network."""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wwwserve.client import Client
from wwwserve.errors import WWWServeError
from wwwserve.gateway.openai_format import (
    GatewayError,
    chunk_event,
    completion_object,
    to_network,
    usage,
)
from wwwserve.gateway.settings import GatewaySettings
from wwwserve.protocol.headers import new_request_id
from wwwserve.protocol.messages import Reply

log = structlog.get_logger(__name__)


class _Metrics:
    """The gateway's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wwwserve_gateway_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wwwserve_gateway_latency_seconds",
            "end-to-end latency of completions",
            ["endpoint"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "wwwserve_gateway_ttft_seconds",
            "time to first token of streams",
            ["endpoint"],
            registry=self.registry,
        )


def create_app(settings: GatewaySettings) -> Starlette:
    """Build the app; it connects to the network on startup and disconnects on shutdown."""
    client = Client(settings.nats_url, timeout=settings.timeout_s)
    metrics = _Metrics()
    keys = [k.encode() for k in settings.api_key]

    def error_response(err: GatewayError, endpoint: str) -> JSONResponse:
        metrics.requests.labels(endpoint, str(err.status)).inc()
        return JSONResponse(err.body(), status_code=err.status)

    def check_auth(request: Request) -> None:
        if not keys:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:].encode() if auth.lower().startswith("bearer ") else b""
        if not any(hmac.compare_digest(token, k) for k in keys):
            raise GatewayError(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")

    async def models(request: Request) -> Response:
        try:
            check_auth(request)
        except GatewayError as err:
            return error_response(err, "models")
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "wwwserve"} for m in client.models()]
        metrics.requests.labels("models", "200").inc()
        return JSONResponse({"object": "list", "data": data})

    async def completions(request: Request, chat: bool) -> Response:
        endpoint = "chat" if chat else "completions"
        started = time.monotonic()
        try:
            check_auth(request)
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise GatewayError(400, f"request body is not valid JSON: {exc}") from exc
            model, net_body, include_usage = to_network(body, chat)
            if model not in client.models():
                raise GatewayError(
                    404,
                    f"the model `{model}` is not served by the network right now",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            rid = new_request_id()
            if not net_body.get("stream"):
                reply = await client.request(model, net_body, request_id=rid)
                metrics.latency.labels(endpoint).observe(time.monotonic() - started)
                metrics.requests.labels(endpoint, "200").inc()
                return JSONResponse(completion_object(reply, chat, model))
            stream = client.stream(model, net_body, request_id=rid)
            first = await anext(stream)  # errors before the first token still become HTTP errors
        except GatewayError as err:
            return error_response(err, endpoint)
        except WWWServeError as err:
            return error_response(GatewayError.from_network(err), endpoint)
        metrics.ttft.labels(endpoint).observe(time.monotonic() - started)

        async def events() -> AsyncIterator[str]:
            created = int(time.time())
            item: Any = first
            try:
                if chat:
                    yield chunk_event(rid, chat, model, created, text="", role=True)
                while True:
                    if isinstance(item, Reply):
                        yield chunk_event(
                            rid, chat, model, created, finish=item.finish_reason, text=None if chat else ""
                        )
                        if include_usage:
                            yield chunk_event(rid, chat, model, created, usage_obj=usage(item))
                        break
                    yield chunk_event(rid, chat, model, created, text=item.delta)
                    item = await anext(stream)
                yield "data: [DONE]\n\n"
                metrics.latency.labels(endpoint).observe(time.monotonic() - started)
                metrics.requests.labels(endpoint, "200").inc()
            except WWWServeError as err:  # after the 200 went out: report in-band, as OpenAI does
                yield f"data: {json.dumps(GatewayError.from_network(err).body())}\n\n"
                metrics.requests.labels(endpoint, "stream_error").inc()
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # a vanished HTTP client cancels the request in the network

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Request-Id": rid},
        )

    async def chat_completions(request: Request) -> Response:
        return await completions(request, chat=True)

    async def text_completions(request: Request) -> Response:
        return await completions(request, chat=False)

    async def health(request: Request) -> Response:
        ok = client._nc is not None and client._nc.is_connected
        return JSONResponse(
            {"status": "ok" if ok else "disconnected", "models": client.models()},
            status_code=200 if ok else 503,
        )

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await client.connect()
        await client.watch_network()
        log.info("gateway.ready", nats=settings.nats_url, host=settings.host, port=settings.port)
        yield
        await client.close()

    app = Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", text_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.client = client
    return app


async def run_gateway(settings: GatewaySettings) -> None:
    """Serve the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning", lifespan="on"
    )
    await uvicorn.Server(config).serve()
