"""`wwwserve scheduler`: the centralized reference, one process that assigns every request.

It sees every heartbeat, counts exactly what it has in flight at each provider (it relays every
reply), and sends each request to the provider with the lowest expected latency. This is the upper
reference of the benchmark, not a production path: it is a single point of failure and adds a hop.
Providers run with `--policy centralized`, which keeps them out of the `llm.request` queue group.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import defaultdict
from dataclasses import replace
from typing import ClassVar

import nats
import structlog
from nats.aio.msg import Msg
from pydantic import Field

from wwwserve.agent.dispatch import estimate_prompt_tokens, peer_state
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.relay import relay
from wwwserve.agent.replies import ReplyWriter
from wwwserve.config import WWWServeSettings
from wwwserve.engines.base import prompt_text
from wwwserve.errors import DeadlineExceeded, InternalError, Overloaded, WWWServeError
from wwwserve.ledger.book import LedgerView
from wwwserve.policies.base import RequestInfo
from wwwserve.policies.estimate import estimate
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, detect
from wwwserve.protocol.headers import routing_from_headers
from wwwserve.protocol.messages import Heartbeat, parse_request
from wwwserve.protocol.prefix import block_hashes, checkpoints

log = structlog.get_logger(__name__)


class SchedulerSettings(WWWServeSettings):
    """Settings of the centralized reference scheduler."""

    toml_table: ClassVar[str] = "scheduler"

    name: str = Field("scheduler", description="name in replies and logs")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server (a hub)")
    default_timeout_s: float = Field(60.0, gt=0, description="deadline for requests that carry none")
    peer_expiry_s: float = Field(3.5, gt=0, description="a provider silent this long is dropped")


class Scheduler:
    """Takes every `llm.request.>` message and assigns it with full knowledge of the network."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.peers = PeerTable(settings.name, settings.peer_expiry_s, view_size=1 << 30)  # sees everyone
        self._no_ledger = LedgerView()  # the reference scheduler weighs load and speed only
        self.in_flight: dict[str, int] = defaultdict(int)
        self.assigned: dict[str, int] = defaultdict(int)
        self._nc: nats.aio.client.Client | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Ask `run` to return."""
        self._stop.set()

    async def wait_ready(self) -> None:
        """Return once subscribed."""
        await self._ready.wait()

    async def run(self) -> None:
        """Serve until `stop()`."""
        self._nc = await nats.connect(
            self.settings.nats_url, name="wwwserve-scheduler", max_reconnect_attempts=-1
        )
        await self._nc.subscribe(f"{subjects.HEARTBEAT_PREFIX}.>", cb=self._on_heartbeat)
        await self._nc.subscribe(
            f"{subjects.REQUEST_PREFIX}.*", queue=subjects.QUEUE_GROUP, cb=self._on_request
        )
        await self._nc.flush()
        self._ready.set()
        await self._stop.wait()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        await self._nc.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            beat = Heartbeat.model_validate_json(msg.data)
            if beat.models:
                self.peers.update(beat)
            else:
                self.peers.remove(beat.name)

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def choose(self, info: RequestInfo, exclude: set[str], probes: list[int] | None = None) -> str | None:
        """The provider with the lowest expected latency, counting exactly what we sent it and what its
        prefix cache holds of the prompt (`probes`: the prompt's checkpoint hashes), as a precise
        prefix-cache-aware central scheduler (llm-d's) does."""
        best: tuple[float, str] | None = None
        for p in self.peers.serving(info.model):
            b = p.beat
            if b.name in exclude:
                continue
            n = self.in_flight[b.name]
            if n >= b.capacity + b.queue_limit:
                continue
            # its heartbeat's speeds, with the load we know exactly: what we sent it and is not done
            state = replace(
                peer_state(p, self._no_ledger, probes),
                running=min(n, b.capacity),
                queued=max(0, n - b.capacity),
            )
            e2e = estimate(info, state).e2e_ms
            if best is None or e2e < best[0]:
                best = (e2e, b.name)
        return best[1] if best else None

    async def _handle(self, msg: Msg) -> None:
        assert self._nc is not None
        hdrs = msg.headers or {}
        writer = ReplyWriter(
            self._nc, msg.reply or None, Codec.JSON, hdrs.get(h.REQUEST_ID, ""), self.settings.name
        )
        tok = msg.subject.rsplit(".", 1)[-1]
        try:
            writer.codec = detect(msg.data, hdrs)
            routing = routing_from_headers(hdrs, self.settings.default_timeout_s)
            writer.request_id = routing.request_id
            if hdrs.get(h.WANT_ACK) == "true":
                await writer.ack()
            req = parse_request(decode(msg.data, writer.codec))
            probes = checkpoints(block_hashes(prompt_text(req)))
            model = next(
                (m for p in self.peers.alive() for m in p.beat.models if subjects.model_token(m) == tok), tok
            )
            tried: set[str] = set()
            async with asyncio.timeout(max(0.0, routing.remaining_s())):
                while True:
                    info = RequestInfo(
                        model=model,
                        prompt_tokens=estimate_prompt_tokens(req),
                        max_tokens=req.max_tokens,
                        remaining_ms=routing.remaining_s() * 1000,
                    )
                    peer = self.choose(info, tried, probes)
                    if peer is None:
                        raise Overloaded(f"the scheduler found no provider with room for {model}")
                    self.in_flight[peer] += 1
                    self.assigned[peer] += 1
                    started = time.monotonic()
                    try:
                        ok = await relay(
                            self._nc,
                            peer,
                            model,
                            msg.data,
                            dict(hdrs),
                            routing,
                            writer,
                            alive=self.peers.is_alive,
                            origin=self.settings.name,
                        )
                    finally:
                        self.in_flight[peer] -= 1
                    if ok:
                        log.debug("scheduler.served", peer=peer, ms=(time.monotonic() - started) * 1000)
                        return
                    tried.add(peer)
        except TimeoutError:
            await writer.error(DeadlineExceeded("deadline reached before the answer was complete"))
        except WWWServeError as err:
            await writer.error(err)
        except Exception as exc:
            log.exception("scheduler.internal_error")
            await writer.error(InternalError(f"{type(exc).__name__}: {exc}"))


async def run_scheduler(settings: SchedulerSettings) -> None:
    """Run until SIGTERM/SIGINT."""
    sched = Scheduler(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sched.stop)
    await sched.run()
