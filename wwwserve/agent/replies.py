"""Writing one request's replies to its inbox: ack, stream chunks, the final answer, or an error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgpack
import nats.aio.client
import structlog

from wwwserve.errors import WWWServeError
from wwwserve.protocol import headers as h
from wwwserve.protocol.codec import Codec, decode, encode
from wwwserve.protocol.messages import ErrorBody, StreamChunk
from wwwserve.protocol.publish import publish

log = structlog.get_logger(__name__)


class ReplyWriter:
    """Publishes the messages of one reply stream in order, numbering them, and knows when it ended."""

    __slots__ = (
        "codec",
        "control",
        "delivered",
        "done",
        "extra_final_headers",
        "inbox",
        "nc",
        "on_final",
        "packer",
        "provider",
        "request_id",
        "result",
        "seq",
    )

    def __init__(
        self,
        nc: nats.aio.client.Client,
        inbox: str | None,
        codec: Codec,
        request_id: str,
        provider: str,
        packer: msgpack.Packer | None = None,
    ) -> None:
        self.nc = nc
        self.inbox = inbox
        self.codec = codec
        self.request_id = request_id
        self.provider = provider
        self.packer = packer  # a reusable msgpack packer (codec.encode)
        self.seq = 0
        self.done = False
        self.delivered = False  # a content message (chunk or answer) reached the inbox
        # sees the last message: (request id, body, headers)
        self.on_final: Callable[[str, bytes, dict[str, str]], None] | None = None
        self.extra_final_headers: dict[str, str] = {}  # e.g. the server's half of a receipt
        self.result: tuple[str, str] | None = None  # (provider, text) of a complete answer, once sent
        # an assigning scheduler's inbox (`Wwwserve-Reply-To` requests): it gets the ack, an error that
        # came before any content (to place the request elsewhere), and a notice when the request ends
        self.control: str | None = None

    def _headers(self, status: int = 200, final: bool = False) -> dict[str, str]:
        return {
            h.CONTENT_TYPE: self.codec._value_,  # the member's value without Enum's `value` property call
            h.STATUS: "200" if status == 200 else str(status),
            h.SEQ: str(self.seq),
            h.FINAL: "true" if final else "false",
            h.REQUEST_ID: self.request_id,
            h.PROVIDER: self.provider,
        }

    async def ack(self) -> None:
        """Tell the requester who is now responsible, so it can watch that provider's heartbeats."""
        to = self.control or self.inbox
        if to:
            await publish(self.nc, to, b"", {h.ACK: self.provider, h.REQUEST_ID: self.request_id})

    async def notice(self, status: str) -> None:
        """Tell an assigning scheduler that the request ended (it counts its in-flight work exactly)."""
        if self.control:
            hdrs = {h.DONE: status, h.REQUEST_ID: self.request_id, h.PROVIDER: self.provider}
            await publish(self.nc, self.control, b"", hdrs)

    async def chunk(self, delta: str) -> None:
        """Send one stream chunk."""
        if self.done or not self.inbox:
            return
        body = StreamChunk(seq=self.seq, delta=delta).model_dump()
        await publish(self.nc, self.inbox, encode(body, self.codec, self.packer), self._headers())
        self.seq += 1
        self.delivered = True

    async def final(self, reply: dict[str, Any]) -> None:
        """Send the complete answer (the fields of `protocol.messages.Reply` but seq and final, which
        are added to `reply`), which ends the stream. A plain dict: a pydantic model built and dumped per
        request cost ~10 µs."""
        if self.done:
            return
        self.done = True
        if not self.inbox:
            log.warning("reply.no_inbox", request_id=self.request_id)
            return
        reply["seq"], reply["final"] = self.seq, True
        data = encode(reply, self.codec, self.packer)
        hdrs = self._headers(final=True)
        if self.extra_final_headers:
            hdrs.update(self.extra_final_headers)
        await publish(self.nc, self.inbox, data, hdrs)
        self.delivered = True
        self.result = (self.provider, reply["text"])
        if self.on_final is not None:
            self.on_final(self.request_id, data, hdrs)
        if self.control:
            await self.notice("200")

    async def error(self, err: WWWServeError) -> None:
        """Send an error reply (status header + {code, message}), which ends the stream."""
        if self.done:
            return
        self.done = True
        if not self.inbox:
            log.warning("reply.no_inbox", request_id=self.request_id, code=err.code)
            return
        body = ErrorBody(
            code=err.code, message=err.message, request_id=self.request_id, provider=self.provider
        )
        hdrs = self._headers(status=err.status, final=True)
        hdrs[h.ERROR] = err.code
        data = encode(body.model_dump(), self.codec, self.packer)
        if self.control and not self.delivered:
            # nothing reached the client yet: the scheduler places the request elsewhere or passes this on
            await publish(self.nc, self.control, data, hdrs)
            return
        await publish(self.nc, self.inbox, data, hdrs)
        if self.control:
            await self.notice(err.code)

    async def relay(self, data: bytes, headers: dict[str, str] | None) -> None:
        """Pass on a message from the peer we forwarded to, keeping our own numbering."""
        if self.done or not self.inbox:
            return
        hdrs = dict(headers or {})
        final = hdrs.get(h.FINAL) == "true"
        hdrs[h.SEQ] = str(self.seq)
        await publish(self.nc, self.inbox, data, hdrs)
        self.seq += 1
        if hdrs.get(h.STATUS, "200") == "200":
            self.delivered = True
        self.done = final
        if final and hdrs.get(h.STATUS, "200") == "200":
            with contextlib.suppress(Exception):
                body = decode(data, self.codec)
                self.result = (str(body["provider"]), str(body["text"]))
            if self.on_final is not None:
                self.on_final(self.request_id, data, hdrs)
        if final and self.control:
            await self.notice(hdrs.get(h.ERROR, "200"))
