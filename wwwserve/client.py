"""Client SDK: `Client` (async) and `SyncClient` send requests into the network and read answers.

Every request carries a request id, a deadline, and asks for an ack; silence from the responsible
provider makes the client ask it again on its direct subject, so a provider that died mid-request
shows as no responders at once instead of at the deadline, and the network's directory (a JetStream
KV bucket, directory.py) tells which models exist and which providers left. No responders (nobody
serves the model right now) is retried with backoff until the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from wwwserve import PROTOCOL_VERSION
from wwwserve.directory import Directory
from wwwserve.errors import (
    BackendError,
    DeadlineExceeded,
    Overloaded,
    UnknownModel,
    WWWServeError,
    error_from_wire,
)
from wwwserve.logs import connection_callbacks
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, detect, encode
from wwwserve.protocol.messages import ErrorBody, Heartbeat, Reply, StreamChunk

_SLICE_S = 0.25
_GRACE_S = 1.0  # past the deadline, how long to wait for the network's own explicit error
_ACK_S = 2.0  # no ack this long after sending: nobody took it, send again
_REASK_S = 2.0  # silence this long after the ack: ask the responsible provider again (same id)
log = structlog.get_logger(__name__)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Inbox:
    """The messages of one attempt, waited for with a timeout. nats-py's `next_msg(timeout)` makes a
    task and a `wait_for` per message: at 32 streams of a chunk per token that was a sixth of a
    client's CPU. Here a message costs a deque append and, when the reader waits, one future."""

    __slots__ = ("msgs", "waiter")

    def __init__(self) -> None:
        self.msgs: deque[Msg] = deque()
        self.waiter: asyncio.Future[None] | None = None

    async def on_msg(self, msg: Msg) -> None:
        """The subscription's callback."""
        self.msgs.append(msg)
        if self.waiter is not None:
            _wake(self.waiter)

    async def next(self, timeout: float) -> Msg | None:
        """The next message, or None after `timeout` seconds without one (a cancel propagates)."""
        if not self.msgs:
            loop = asyncio.get_running_loop()
            self.waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None
        return self.msgs.popleft() if self.msgs else None


class Client:
    """An async client of the network, connected to any of its NATS servers."""

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        timeout: float = 60.0,
        origin: str = "",
        codec: Codec = Codec.MSGPACK,
        provider_expiry_s: float = 3.5,
    ) -> None:
        self.servers = [s.strip() for s in servers.split(",")] if isinstance(servers, str) else servers
        self.timeout = timeout
        self.origin = origin
        self.codec = codec
        self.provider_expiry_s = provider_expiry_s
        self._nc: NATS | None = None
        self._directory: Directory | None = None
        self._watch_since = 0.0
        self._directory_tried = -1e9

    async def connect(self) -> Client:
        """Open the NATS connection (reconnects by itself afterwards)."""
        self._nc = await nats.connect(
            servers=self.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            name="wwwserve-client",
            **connection_callbacks(log.bind(component="client")),
        )
        return self

    async def close(self) -> None:
        """Close the connection."""
        if self._directory is not None:
            await self._directory.stop()
            self._directory = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> NATS:
        """The underlying nats-py connection."""
        if self._nc is None:
            raise RuntimeError("client not connected: use `async with Client(...)` or `await connect()`")
        return self._nc

    # ---- public calls ----------------------------------------------------------------------------

    async def complete(
        self, model: str, prompt: str, *, timeout: float | None = None, **params: Any
    ) -> Reply:
        """A completion for `prompt`; `params` are request fields (max_tokens, temperature, ...)."""
        return await self.request(model, {"prompt": prompt, **params}, timeout=timeout)

    async def chat(
        self, model: str, messages: list[dict[str, str]], *, timeout: float | None = None, **params: Any
    ) -> Reply:
        """A chat completion for `messages`; `params` are request fields."""
        return await self.request(model, {"messages": messages, **params}, timeout=timeout)

    async def request(
        self, model: str, body: dict[str, Any], *, timeout: float | None = None, request_id: str | None = None
    ) -> Reply:
        """Send one non-streaming request; raise the typed error of an error reply."""
        final: Reply | None = None
        async for item in self._exchange(model, {**body, "stream": False}, timeout, request_id):
            if isinstance(item, Reply):
                final = item
        assert final is not None
        return final

    async def stream(
        self, model: str, body: dict[str, Any], *, timeout: float | None = None, request_id: str | None = None
    ) -> AsyncGenerator[StreamChunk | Reply, None]:
        """Stream chunks in order, then the final Reply."""
        async for item in self._exchange(model, {**body, "stream": True}, timeout, request_id):
            yield item

    def models(self) -> list[str]:
        """Models some listed provider serves now (after `watch_network`)."""
        return sorted(self._directory.models()) if self._directory is not None else []

    # ---- internals -------------------------------------------------------------------------------

    async def watch_network(self) -> None:
        """Start following the directory (done by the first request anyway), e.g. to list models."""
        if self._directory is None:
            self._watch_since = time.monotonic()
            self._directory = Directory(self.nc)
        if not self._directory.available and time.monotonic() - self._directory_tried >= 5.0:
            self._directory_tried = time.monotonic()
            await self._directory.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._directory.synced.wait(), 2.0)

    def _provider_alive(self, name: str) -> bool:
        """False once the directory says `name` left or fell silent (a responder it never listed, a
        scheduler say, counts as alive: silence then shows through the re-asks)."""
        d = self._directory
        return d is None or name not in d.gone

    def _model_advertised(self, model: str) -> bool:
        d = self._directory
        return d is None or not d.available or model in d.models()

    def _no_responders_error(self, model: str, deadline: float) -> WWWServeError | None:
        """After no responders: the error to raise now, or None to retry.

        A model that no directory entry lists fails fast (a typo should not wait for the deadline);
        a model whose providers exist but all left their queue groups is retried until the deadline.
        """
        watched = time.monotonic() - self._watch_since
        if not self._model_advertised(model):
            if watched >= self.provider_expiry_s / 2 or time.monotonic() >= deadline:
                return UnknownModel(f"no provider serves model {model!r} (the directory lists none)")
            return None
        if time.monotonic() >= deadline:
            return Overloaded(f"every provider of {model!r} stayed saturated until the deadline")
        return None

    async def _exchange(
        self, model: str, body: dict[str, Any], timeout: float | None, request_id: str | None = None
    ) -> AsyncIterator[StreamChunk | Reply]:
        await self.watch_network()
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout + min(_GRACE_S, timeout * 0.1)
        routing = h.Routing(
            request_id=request_id or h.new_request_id(),
            hops=0,
            deadline_ms=h.now_ms() + int(timeout * 1000),
            origin=self.origin,
            version=PROTOCOL_VERSION,
        )
        headers = {**routing.to_headers(), h.CONTENT_TYPE: self.codec.value, h.WANT_ACK: "true"}
        payload = encode(body, self.codec)
        subject = subjects.request_subject(model)
        backoff = 0.05
        while True:
            inbox = self.nc.new_inbox()
            box = _Inbox()
            sub = await self.nc.subscribe(inbox, cb=box.on_msg)
            try:
                await self.nc.publish(subject, payload, reply=inbox, headers=headers)
                retry = False

                async def resend(provider: str, inbox: str = inbox) -> None:
                    await self.nc.publish(
                        subjects.direct_subject(provider, model), payload, reply=inbox, headers=headers
                    )

                async for item in self._read(box, deadline, routing.request_id, resend):
                    if item is None:
                        retry = True
                        break
                    yield item
                if not retry:
                    return
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            err = self._no_responders_error(model, deadline - backoff)
            if err is not None:
                raise err
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    async def _read(
        self, box: _Inbox, deadline: float, request_id: str, resend: Callable[[str], Awaitable[None]]
    ) -> AsyncIterator[StreamChunk | Reply | None]:
        """Messages of one attempt; None means: nobody took it, retry (nothing was delivered yet).

        Liveness: without an ack within `_ACK_S` the attempt is retried; after the ack, every
        `_REASK_S` of silence the request is re-sent (same id) to the responsible provider's direct
        subject. The agent never serves an id twice: it re-acks a running request and replays the
        answer of a finished one, so replies lost in transit (a hub or link failing) are recovered,
        and a provider that is gone shows as no responders at once. Its heartbeats are watched too.
        Leaving early (the consumer stopped, or was cancelled) tells the responsible provider to stop.
        """
        responsible: str | None = None
        last_heard = time.monotonic()
        delivered = False
        ended = False
        try:
            while True:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    raise DeadlineExceeded(f"no complete answer before the deadline (request {request_id})")
                msg = await box.next(min(_SLICE_S, left))
                if msg is None:
                    now = time.monotonic()
                    gone = responsible is not None and not self._provider_alive(responsible)
                    if gone or (responsible is None and now - last_heard > _ACK_S):
                        ended = True  # nobody has it; nothing to cancel
                        if not delivered:
                            yield None  # retry, same request id
                            return
                        raise BackendError(f"provider {responsible} stopped responding mid-stream") from None
                    if responsible is not None and now - last_heard > _REASK_S:
                        last_heard = now
                        await resend(responsible)
                    continue
                last_heard = time.monotonic()
                mh = msg.headers or {}
                if mh.get(h.NATS_STATUS) == "503":  # no responders: the queue group, or a re-ask's target
                    ended = True
                    if not delivered:
                        yield None
                        return
                    raise BackendError(f"provider {responsible} left mid-stream")
                if h.ACK in mh:
                    responsible = mh[h.ACK]
                    continue
                obj = decode(msg.data, detect(msg.data, mh))
                if mh.get(h.STATUS, "200") != "200" or h.ERROR in mh:
                    ended = True
                    err = ErrorBody.model_validate(obj)
                    raise error_from_wire(err.code, err.message)
                delivered = True
                if obj.get("final"):
                    ended = True
                    yield Reply.model_validate(obj)
                    return
                yield StreamChunk.model_validate(obj)
        finally:
            if not ended and responsible and self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.publish(
                        subjects.cancel_subject(responsible), b"", headers={h.REQUEST_ID: request_id}
                    )


class SyncClient:
    """A blocking wrapper around `Client` for scripts and notebooks; owns a private event loop."""

    def __init__(self, servers: str | list[str] = "nats://127.0.0.1:4222", **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client(servers, **kwargs)
        self._loop.run_until_complete(self._client.connect())

    def complete(self, model: str, prompt: str, **params: Any) -> Reply:
        """A completion for `prompt`."""
        return self._loop.run_until_complete(self._client.complete(model, prompt, **params))

    def chat(self, model: str, messages: list[dict[str, str]], **params: Any) -> Reply:
        """A chat completion for `messages`."""
        return self._loop.run_until_complete(self._client.chat(model, messages, **params))

    def stream(self, model: str, body: dict[str, Any]) -> Iterator[StreamChunk | Reply]:
        """Stream chunks, then the final Reply."""
        agen = self._client.stream(model, body)
        while True:
            try:
                yield self._loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close the connection and the loop."""
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def heartbeat_from(msg: Msg) -> Heartbeat | None:
    """Parse a heartbeat message, or None when it is not one."""
    try:
        return Heartbeat.model_validate_json(msg.data)
    except ValueError:
        return None
