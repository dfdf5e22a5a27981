"""Publishing a message with headers as one ready HPUB frame, for the reply path.

nats-py's `Client.publish` checks and encodes every header of every message (a regex match, a strip,
a translate and six buffer extends per header): ~12 µs for a reply's six headers, against ~1.5 µs
for the same frame built with one join. A provider publishes one to three such messages per request,
so this is ~7% of an agent's CPU per request (docs/benchmarks.md, "overhead"). The frame is the one
nats-py would write (tests/test_publish.py compares what subscribers receive), queued on the client
the way `Client.publish` queues it: appended to the pending buffer, the flusher kicked.

Header names here are the protocol's own constants; values are ours or arrived in NATS headers. Any
value with a line break, a client that is not connected or is draining, a payload over the server's
limit, a nearly full pending buffer, or a nats-py without these internals goes through
`Client.publish` instead, which applies its own checks, buffering and errors.
"""

from __future__ import annotations

from nats.aio.client import Client


async def publish(nc: Client, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    """`nc.publish(subject, payload, headers=headers)` for our own headers, without the per-header cost."""
    # "name: value" lines joined in C (a comprehension is a function call of its own on Python 3.11)
    block = "\r\n".join(map(": ".join, headers.items()))
    n = len(headers) - 1  # line breaks between the lines
    try:
        pending, pending_size, limit = nc._pending, nc._pending_data_size, nc._max_pending_size
        max_payload, flush_queue, status = nc._max_payload, nc._flush_queue, nc._status
    except AttributeError:  # a nats-py without these internals
        pending = None
    size = len(payload)
    if (
        pending is None
        or block.count("\n") != n
        or block.count("\r") != n  # a line break inside a name or value: let nats-py clean it
        or status != Client.CONNECTED  # reconnecting, draining, closed: nats-py's own rules
        or size > max_payload
    ):
        await nc.publish(subject, payload, headers=headers)  # its checks, buffering and errors
        return
    hdr = f"NATS/1.0\r\n{block}\r\n\r\n".encode()
    frame = b"".join((f"HPUB {subject}  {len(hdr)} {len(hdr) + size}\r\n".encode(), hdr, payload, b"\r\n"))
    if limit > 0 and pending_size + len(frame) > limit:
        await nc.publish(subject, payload, headers=headers)  # its forced flush
        return
    pending.append(frame)
    nc._pending_data_size = pending_size + len(frame)
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    if flush_queue is not None and flush_queue.empty():
        await nc._flush_pending()
