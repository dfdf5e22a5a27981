"""Relaying one request through a chosen provider's direct subject, with ack and liveness checks.

Used by agents that forward, and by the centralized reference scheduler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from wwwserve.agent.replies import ReplyWriter
from wwwserve.errors import BackendError, Overloaded
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.headers import Routing

log = structlog.get_logger(__name__)

RECEIPT_HEADER = "Wwwserve-Receipt"  # the server's signed half of a receipt, on a final message

ACK_TIMEOUT_S = 2.0  # a provider we forward to must acknowledge within this (or the deadline)
LIVENESS_SLICE_S = 0.5  # how often a relay checks that its provider is still alive


async def relay(
    nc: NATS,
    peer: str,
    model: str,
    data: bytes,
    headers: dict[str, str],
    routing: Routing,
    writer: ReplyWriter,
    alive: Callable[[str], bool],
    origin: str,
    settle: Callable[[str, str, str | None], Awaitable[None]] | None = None,
) -> bool:
    """Forward to `peer` and pass its reply on; False when the peer never took it (try elsewhere).

    Raises BackendError when the peer dies after content already reached the requester.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    fwd_headers = dict(headers)
    fwd_headers.update(routing.next_hop(origin=origin).to_headers())
    fwd_headers[h.WANT_ACK] = "true"
    fwd_headers[h.CONTENT_TYPE] = writer.codec.value
    bound = log.bind(provider=origin, request_id=routing.request_id, peer=peer)
    try:
        await nc.publish(subjects.direct_subject(peer, model), data, reply=inbox, headers=fwd_headers)
        acked = False
        ack_by = time.monotonic() + min(ACK_TIMEOUT_S, max(0.0, routing.remaining_s()))
        while True:
            try:
                m = await sub.next_msg(timeout=LIVENESS_SLICE_S)
            except nats.errors.TimeoutError:
                if not acked and time.monotonic() > ack_by:
                    bound.info("forward.no_ack")
                    return False
                if acked and not alive(peer):
                    bound.warning("forward.peer_lost", delivered=writer.delivered)
                    if not writer.delivered:
                        return False
                    raise BackendError(f"peer {peer} stopped answering mid-stream") from None
                continue
            mh = m.headers or {}
            if mh.get(h.NATS_STATUS) == "503":
                bound.info("forward.no_responders")
                return False
            acked = True
            if h.ACK in mh:
                continue
            if mh.get(h.ERROR) == Overloaded.code and not writer.delivered:
                bound.info("forward.peer_overloaded")
                return False
            receipt = mh.pop(RECEIPT_HEADER, None)  # ours to countersign, not the user's business
            await writer.relay(m.data, mh)
            if writer.done:
                if settle is not None and mh.get(h.STATUS, "200") == "200":
                    await settle(peer, routing.request_id, receipt)
                return True
    except asyncio.CancelledError:
        # our requester cancelled (or we shut down): the peer should stop working too
        await nc.publish(subjects.cancel_subject(peer), b"", headers={h.REQUEST_ID: routing.request_id})
        raise
    finally:
        await sub.unsubscribe()
