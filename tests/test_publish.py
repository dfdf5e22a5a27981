"""The reply path's own HPUB frames: byte for byte what nats-py writes; nats-py's rules where ours stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.errors import ConnectionClosedError, MaxPayloadError

from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.protocol.publish import publish

HEADERS = {
    "Content-Type": "application/json",
    "Wwwserve-Status": "200",
    "Wwwserve-Seq": "0",
    "Wwwserve-Final": "true",
    "Wwwserve-Request-Id": "r-1",
    "Wwwserve-Provider": "p1",
}


@pytest.fixture
async def server() -> AsyncIterator[NatsServer]:
    """One nats-server on a free loopback port."""
    port = free_port()
    async with NatsServer(HubConfig(port=port, leafnode_port=free_port()).render(), port=port) as s:
        yield s


async def _raw_subscriber(
    server: NatsServer, subject: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A protocol-level subscriber: it sees the frames exactly as the server relays them."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n')
    writer.write(f"SUB {subject} 1\r\nPING\r\n".encode())
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    return reader, writer


async def _next_frame(reader: asyncio.StreamReader) -> bytes:
    """One HMSG: its control line and its header and payload bytes (the server's INFO updates skipped)."""
    line = await asyncio.wait_for(reader.readline(), 5)
    while line.startswith(b"INFO "):
        line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"HMSG "), line
    total = int(line.split()[-1])
    return line + await reader.readexactly(total + 2)


async def test_frame_is_what_nats_py_writes(server: NatsServer) -> None:
    reader, writer = await _raw_subscriber(server, "reply.>")
    nc = await nats.connect(server.url)
    try:
        payload = b'{"text": "hello"}'
        await nc.publish("reply.a", payload, headers=HEADERS)
        await nc.flush()
        theirs = await _next_frame(reader)
        await publish(nc, "reply.a", payload, HEADERS)
        await nc.flush()
        ours = await _next_frame(reader)
        assert ours == theirs
        assert nc.stats["out_msgs"] == 2 and nc.stats["out_bytes"] == 2 * len(payload)
        sub = await nc.subscribe("reply.b")
        await publish(nc, "reply.b", b"", {"Wwwserve-Ack": "p1", "Wwwserve-Request-Id": "r-1"})
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"" and msg.headers == {"Wwwserve-Ack": "p1", "Wwwserve-Request-Id": "r-1"}
    finally:
        writer.close()
        await nc.close()


async def test_line_breaks_and_limits_take_nats_py_s_path(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    sub = await nc.subscribe("reply.c")
    # a value with a line break cannot be put on the wire as is: nats-py's cleaning applies
    await publish(nc, "reply.c", b"x", {"Wwwserve-Error": "bad\r\nInjected: yes"})
    msg = await sub.next_msg(timeout=5)
    assert msg.headers is not None and "Injected" not in msg.headers
    with pytest.raises(MaxPayloadError):
        await publish(nc, "reply.c", b"x" * (nc.max_payload + 1), HEADERS)
    await nc.close()
    with pytest.raises(ConnectionClosedError):
        await publish(nc, "reply.c", b"x", HEADERS)
