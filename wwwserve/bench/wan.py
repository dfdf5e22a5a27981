"""A WAN link in user space: a TCP relay that delays what crosses it, for benchmarks and tests.

This kernel has no `netem`, so distance is emulated above it, the way Toxiproxy and Comcast-style tools
do for TCP: every link that crosses distance (a leaf node to its region's hub, hub to hub, a client to a
far server) goes through a `Relay`. Each chunk read from one side is written to the other after the
link's one-way delay (RTT / 2 plus jitter), streaming (chunk by chunk, not whole messages), in order per
connection and direction. Loss cannot be emulated for TCP without the kernel: its effect is, a
retransmission: a `loss` share of chunks (and, to keep order, what follows them) is held about one more
RTT + 200 ms. A partition either holds everything (`blackhole`: connections stay open and deliver
nothing, as a real cut does; what was sent arrives after the heal, as TCP retransmits it) or resets
every connection and refuses new ones (`reset`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

RETRANSMIT_EXTRA_S = 0.2  # a TCP retransmission costs about one RTT plus the minimum RTO (200 ms)
_CHUNK = 64 * 1024


@dataclass
class LinkShape:
    """What a link does to the bytes that cross it."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0  # each chunk's one-way delay varies by up to this much either way
    loss: float = 0.0  # share of chunks that need a retransmission

    def one_way_s(self, rng: random.Random) -> float:
        """The delay of one chunk in one direction."""
        delay = self.rtt_ms / 2000.0
        if self.jitter_ms:
            delay += rng.uniform(-self.jitter_ms, self.jitter_ms) / 1000.0
        if self.loss and rng.random() < self.loss:
            delay += self.rtt_ms / 1000.0 + RETRANSMIT_EXTRA_S
        return max(0.0, delay)


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: chunks queued with the time they may be written."""

    writer: asyncio.StreamWriter
    queue: asyncio.Queue[tuple[float, bytes]] = field(default_factory=asyncio.Queue)
    last_due: float = 0.0


class Relay:
    """Listens on a local port and relays every connection to `target`, shaped by `shape`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        shape: LinkShape | None = None,
        seed: int = 0,
        name: str = "",
    ) -> None:
        self.target = (target_host, target_port)
        self.shape = shape or LinkShape()
        self.name = name or f"relay->{target_host}:{target_port}"
        self.port = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()  # set: the link delivers; clear: partitioned (blackhole)
        self._open.set()
        self._refusing = False
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening; returns the port to connect to instead of the target's."""
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every relayed connection."""
        if self._server is not None:
            self._server.close()
        self._reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def partition(self, mode: Literal["blackhole", "reset"] = "blackhole") -> None:
        """Cut the link: hold everything (connections stay open), or reset them and refuse new ones."""
        log.info("wan.partition", link=self.name, mode=mode)
        if mode == "blackhole":
            self._open.clear()
        else:
            self._refusing = True
            self._reset_all()

    def heal(self) -> None:
        """End a partition: what a blackhole held is delivered (late), new connections are accepted."""
        log.info("wan.heal", link=self.name)
        self._refusing = False
        self._open.set()

    def _reset_all(self) -> None:
        for a, b in list(self._conns):
            for w in (a, b):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._conns.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        self._conns.add(pair)
        up, down = _Pipe(server_w), _Pipe(client_w)
        for reader, pipe in ((client_r, up), (server_r, down)):
            self._spawn(self._read(reader, pipe, pair))
            self._spawn(self._write(pipe, pair))

    async def _read(self, reader: asyncio.StreamReader, pipe: _Pipe, pair: tuple[object, object]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(_CHUNK):
                # order is kept: a chunk never overtakes the one before it (jitter, a retransmission)
                pipe.last_due = max(pipe.last_due, loop.time() + self.shape.one_way_s(self._rng))
                pipe.queue.put_nowait((pipe.last_due, data))
        except (ConnectionError, OSError):
            pass
        pipe.queue.put_nowait((pipe.last_due, b""))  # end of stream, after what is still in flight

    async def _write(self, pipe: _Pipe, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await pipe.queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._open.wait()  # a blackhole holds the bytes until the heal
                if not data:
                    break
                pipe.writer.write(data)
                await pipe.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.close()
