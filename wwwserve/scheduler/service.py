"""`wwwserve scheduler`: the centralized reference. It assigns every request, then steps aside.

Like llm-d's endpoint picker or Ray Serve's router it sits in the control path only. It takes each
`llm.request.<model>` message, chooses a provider with the estimate the decentralized policy uses
(`policies/estimate.py`), and sends the request to that provider's direct subject with the client's
own inbox in `Wwwserve-Reply-To`: the provider streams the answer straight to the client. What the
scheduler hears back is small, on its control inbox: the provider's ack, and a `Wwwserve-Done` notice
when the request ended (or the error itself when it failed before any content reached the client, so
the scheduler can place it elsewhere or pass the error on).

It counts exactly what it assigned and what finished at each provider; heartbeats only add what it
cannot know (other load, engine health, speeds, prefix filters, prompt tokens still to prefill from
before its own assignments). When every provider is full, requests wait in one central queue until a
provider has room or the deadline passes: it never fails a request that a provider could still serve.
A provider is lost only when it stops answering: a late heartbeat makes the scheduler ask the
provider's `llm.status.<provider>` endpoint, and only an unanswered probe counts.

This is the benchmark's reference, not a production path (one process that all requests need).
Providers run with `--policy centralized`, which keeps them out of the `llm.request` queue group.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections import defaultdict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from wwwserve.agent.dispatch import estimate_prompt_tokens, peer_state
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.replies import ReplyWriter
from wwwserve.agent.service import status_subject
from wwwserve.engines.base import prompt_text
from wwwserve.errors import (
    BackendError,
    DeadlineExceeded,
    InternalError,
    Overloaded,
    UnknownModel,
    WWWServeError,
)
from wwwserve.ledger.book import LedgerView
from wwwserve.policies.base import PeerState, RequestInfo
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, detect
from wwwserve.protocol.headers import Routing, routing_from_headers
from wwwserve.protocol.messages import CompletionRequest, Heartbeat, parse_request
from wwwserve.protocol.prefix import block_hashes, checkpoints
from wwwserve.protocol.publish import publish
from wwwserve.scheduler.placement import pick
from wwwserve.scheduler.settings import SchedulerSettings

log = structlog.get_logger(__name__)

_FOREVER_S = 1e9  # the peer table never expires a provider by silence: only a failed probe does


@dataclass(eq=False)
class Assignment:
    """One request the scheduler holds: queued, or assigned to `peer` and not yet ended."""

    routing: Routing
    model: str
    data: bytes
    headers: dict[str, str]
    client: str | None  # the client's inbox: where the provider sends the answer
    writer: ReplyWriter  # the scheduler's own replies to the client (acks, errors)
    info: RequestInfo
    probes: list[int]
    stream: bool
    want_ack: bool  # the client asked for acks (the SDK does; a plain `nats req` does not)
    peer: str = ""
    token: str = ""  # this try's control subject suffix
    waited: bool = False  # found every provider full once (and told the client it waits here)
    acked: bool = False
    assigned_ms: int = 0  # wall clock of the assignment (compared with heartbeats' ts_ms)
    tried: set[str] = field(default_factory=set)
    events: asyncio.Queue[tuple[str, Msg | None]] = field(default_factory=asyncio.Queue)


class Scheduler:
    """Takes every `llm.request.>` message and assigns it with full knowledge of the network."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.peers = PeerTable(settings.name, _FOREVER_S, view_size=1 << 30)  # sees everyone
        self._no_ledger = LedgerView()  # the reference weighs load and speed only
        self.assigned: dict[str, int] = defaultdict(int)  # ever assigned, per provider
        self.finished: dict[str, int] = defaultdict(int)  # ended (answer or error), per provider
        self.lost: dict[str, int] = defaultdict(int)  # declared lost after an unanswered probe
        self._at: dict[str, set[Assignment]] = defaultdict(set)  # provider -> its open assignments
        self._by_id: dict[str, Assignment] = {}  # request id -> assignment (a retry joins it)
        self._by_token: dict[str, Assignment] = {}
        self._tokens = itertools.count(1)
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for room, oldest first
        self._probing: set[str] = set()
        self._nc: nats.aio.client.Client | None = None
        self._control = ""
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> dict[str, int]:
        """Assigned and not ended, per provider (every provider ever assigned to is listed)."""
        return {name: len(held) for name, held in self._at.items()}

    def stop(self) -> None:
        """Ask `run` to return."""
        self._stop.set()

    async def wait_ready(self) -> None:
        """Return once subscribed."""
        await self._ready.wait()

    async def run(self) -> None:
        """Serve until `stop()`."""
        self._nc = nc = await nats.connect(
            self.settings.nats_url, name="wwwserve-scheduler", max_reconnect_attempts=-1
        )
        self._control = nc.new_inbox()
        subs: list[Subscription] = [
            await nc.subscribe(f"{subjects.HEARTBEAT_PREFIX}.>", cb=self._on_heartbeat),
            await nc.subscribe(f"{self._control}.*", cb=self._on_control),
            await nc.subscribe(
                f"{subjects.REQUEST_PREFIX}.*", queue=subjects.QUEUE_GROUP, cb=self._on_request
            ),
            # a client re-asks whoever acked it: a request still waiting here was acked by the scheduler
            await nc.subscribe(subjects.direct_subject(self.settings.name, "*"), cb=self._on_request),
        ]
        await nc.flush()
        self._ready.set()
        watch = asyncio.create_task(self._watch())
        await self._stop.wait()
        watch.cancel()
        for sub in subs[2:]:
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        await nc.close()

    # -- what the network tells us ------------------------------------------------------------------

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            self._take_beat(Heartbeat.model_validate_json(msg.data))

    def _take_beat(self, beat: Heartbeat) -> None:
        if beat.models:
            self.peers.update(beat)
            self._wake()
        else:  # a goodbye: it drains what it has and takes nothing new
            self.peers.remove(beat.name)

    async def _on_control(self, msg: Msg) -> None:
        a = self._by_token.get(msg.subject.rsplit(".", 1)[-1])
        if a is None:
            return  # a try we gave up on
        mh = msg.headers or {}
        if h.ACK in mh:
            a.events.put_nowait(("ack", None))
        elif h.DONE in mh:
            a.events.put_nowait(("done", msg))
        elif h.ERROR in mh:
            a.events.put_nowait(("error", msg))
        elif mh.get(h.NATS_STATUS) == "503":
            a.events.put_nowait(("gone", None))

    async def _watch(self) -> None:
        """Probe providers that hold our work and have gone quiet; only silence to a probe loses one."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for name, held in list(self._at.items()):
                peer = self.peers.get(name)
                quiet = peer is None or now - peer.received > max(
                    self.settings.peer_expiry_s, 3.0 * peer.beat.interval_s
                )
                if held and quiet and name not in self._probing:
                    self._probing.add(name)
                    self._spawn(self._probe(name))

    async def _probe(self, name: str) -> None:
        assert self._nc is not None
        try:
            reply = await self._nc.request(status_subject(name), b"", timeout=self.settings.probe_timeout_s)
            self._take_beat(Heartbeat.model_validate_json(reply.data))
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ValidationError):
            log.warning("scheduler.provider_lost", provider=name, open=len(self._at.get(name, ())))
            self.lost[name] += 1
            self.peers.remove(name)
            for a in list(self._at.get(name, ())):
                a.events.put_nowait(("gone", None))
        finally:
            self._probing.discard(name)

    def choose(self, info: RequestInfo, exclude: set[str], probes: list[int] | None = None) -> str | None:
        """The provider with room that meets the request's SLOs soonest (placement.pick), from exactly
        what we have in flight at each plus what only its heartbeat knows."""
        states: list[tuple[str, PeerState]] = []
        for p in self.peers.serving(info.model):
            b = p.beat
            if b.name in exclude:
                continue
            ours = self._at.get(b.name, ())
            n = len(ours)
            if n >= b.capacity + b.queue_limit:
                continue
            # prompt tokens it had not prefilled at its last beat, plus the prompts we sent it since
            backlog = b.prefill_backlog + sum(a.info.prompt_tokens for a in ours if a.assigned_ms > b.ts_ms)
            state = replace(
                peer_state(p, self._no_ledger, probes),
                running=min(n, b.capacity),
                queued=max(0, n - b.capacity),
                prefill_backlog=backlog,
                age_s=0.0,
                sent_since_beat=0,
            )
            states.append((b.name, state))
        return pick(info, states, self.settings.slo_margin)

    def _wake(self) -> None:
        """Room may have opened: the oldest waiting requests look again."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _place(self, a: Assignment) -> str:
        """A provider for `a`, waiting in the central queue while every provider is full."""
        loop = asyncio.get_running_loop()
        while True:
            a.info.remaining_ms = a.routing.remaining_s() * 1000.0
            if a.info.remaining_ms <= 0:
                raise DeadlineExceeded("every provider stayed full until the deadline")
            if not any(a.model in p.models for p in self.peers.alive()):
                raise UnknownModel(f"no provider serves model {a.model!r}")
            peer = self.choose(a.info, a.tried, a.probes)
            if peer is not None:
                return peer
            if a.tried and not any(p.name not in a.tried for p in self.peers.alive() if a.model in p.models):
                a.tried.clear()  # every provider failed it once: each may have room again
            if not a.waited:  # the client learns its request waits here (and re-asks us, not the queue)
                a.waited = True
                await self._ack(a, self.settings.name)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout=min(0.5, a.info.remaining_ms / 1000.0))

    # -- one request ---------------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        self._spawn(self._handle(msg))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        assert self._nc is not None
        hdrs = dict(msg.headers or {})
        rid = h.request_id_from_headers(hdrs)
        writer = ReplyWriter(self._nc, msg.reply or None, Codec.JSON, rid, self.settings.name)
        try:
            writer.codec = detect(msg.data, hdrs)
            routing = routing_from_headers(hdrs, self.settings.default_timeout_s)
            writer.request_id = routing.request_id
            earlier = self._by_id.get(routing.request_id)
            if earlier is not None:  # a client's retry of a request we hold: answer it where it asks now
                earlier.client = earlier.writer.inbox = msg.reply or earlier.client
                earlier.want_ack = earlier.want_ack or hdrs.get(h.WANT_ACK) == "true"
                await self._ack(earlier, earlier.peer or self.settings.name)
                return
            req = parse_request(decode(msg.data, writer.codec))
            tok = msg.subject.rsplit(".", 1)[-1]
            model = next(
                (m for p in self.peers.alive() for m in p.models if subjects.model_token(m) == tok), tok
            )
            a = self._new_assignment(msg, hdrs, routing, model, req, writer)
        except WWWServeError as err:
            await writer.error(err)
            return
        self._by_id[routing.request_id] = a
        try:
            async with asyncio.timeout(max(0.0, routing.remaining_s()) + 1.0):  # the provider's error first
                await self._serve(a)
        except TimeoutError:
            await a.writer.error(DeadlineExceeded("deadline reached before the answer was complete"))
        except WWWServeError as err:
            await a.writer.error(err)
        except Exception as exc:
            log.exception("scheduler.internal_error", request_id=routing.request_id)
            await a.writer.error(InternalError(f"{type(exc).__name__}: {exc}"))
        finally:
            self._release(a)
            self._by_id.pop(routing.request_id, None)

    def _new_assignment(
        self,
        msg: Msg,
        hdrs: dict[str, str],
        routing: Routing,
        model: str,
        req: CompletionRequest,
        writer: ReplyWriter,
    ) -> Assignment:
        info = RequestInfo(
            model=model,
            prompt_tokens=estimate_prompt_tokens(req),
            max_tokens=req.max_tokens,
            remaining_ms=routing.remaining_s() * 1000.0,
            slo_ms=float(req.slo_ms) if req.slo_ms else None,
            slo_ttft_ms=float(req.slo_ttft_ms) if req.slo_ttft_ms else None,
            slo_tpot_ms=float(req.slo_tpot_ms) if req.slo_tpot_ms else None,
        )
        fwd = dict(hdrs)
        fwd.update(routing.to_headers())  # an assignment is not a hop: same id, deadline and hop count
        fwd[h.CONTENT_TYPE] = writer.codec.value
        fwd[h.WANT_ACK] = "true"  # to our control inbox
        if msg.reply:
            fwd[h.REPLY_TO] = msg.reply
        return Assignment(
            routing=routing,
            model=model,
            data=msg.data,
            headers=fwd,
            client=msg.reply or None,
            writer=writer,
            info=info,
            probes=checkpoints(block_hashes(prompt_text(req))),
            stream=req.stream,
            want_ack=hdrs.get(h.WANT_ACK) == "true",
        )

    async def _serve(self, a: Assignment) -> None:
        """Assign until a provider takes the request and ends it; pass on an error nobody else can fix."""
        assert self._nc is not None
        while True:
            peer = await self._place(a)
            self._assign(a, peer)
            await self._ack(a, peer)  # the client watches (and re-asks) the provider that has its request
            fwd = {**a.headers}
            if a.client:
                fwd[h.REPLY_TO] = a.client  # a retry may have moved the client's inbox
            to = subjects.direct_subject(peer, a.model)
            await self._nc.publish(to, a.data, reply=f"{self._control}.{a.token}", headers=fwd)
            outcome = await self._follow(a)
            if outcome == "done":
                return
            self._release(a)
            a.tried.add(peer)

    async def _follow(self, a: Assignment) -> str:
        """What became of one try: done, refused (try elsewhere), or raises the error to pass on."""
        ack_by = time.monotonic() + min(self.settings.ack_timeout_s, max(0.0, a.routing.remaining_s()))
        while True:
            wait = None if a.acked else max(0.0, ack_by - time.monotonic())
            try:
                kind, msg = await asyncio.wait_for(a.events.get(), timeout=wait)
            except TimeoutError:
                log.info("scheduler.no_ack", provider=a.peer, request_id=a.routing.request_id)
                return "refused"
            if kind == "ack":
                a.acked = True
            elif kind == "done":
                return "done"
            elif kind == "gone":
                if not a.acked or not a.stream:
                    return "refused"  # nothing of the answer reached the client: place it again
                raise BackendError(f"provider {a.peer} stopped answering mid-stream")
            elif kind == "error" and msg is not None:
                mh = msg.headers or {}
                code = mh.get(h.ERROR)
                if code == Overloaded.code:
                    return "refused"
                if code == BackendError.code and self._untried(a):
                    return "refused"  # it failed before any content: another provider may serve it
                if a.client and self._nc is not None:  # the provider's own error, passed on as written
                    await publish(self._nc, a.client, msg.data, dict(mh))
                a.writer.done = True
                return "done"

    def _untried(self, a: Assignment) -> bool:
        return any(p.name not in a.tried and p.name != a.peer for p in self.peers.serving(a.model))

    async def _ack(self, a: Assignment, responsible: str) -> None:
        """Tell a client that asked for acks who has its request now (a provider, or this scheduler)."""
        if a.client and a.want_ack:
            assert self._nc is not None
            await publish(self._nc, a.client, b"", {h.ACK: responsible, h.REQUEST_ID: a.routing.request_id})

    def _assign(self, a: Assignment, peer: str) -> None:
        a.peer, a.acked, a.token = peer, False, str(next(self._tokens))
        a.assigned_ms = h.now_ms()
        a.events = asyncio.Queue()
        self._by_token[a.token] = a
        self._at[peer].add(a)
        self.assigned[peer] += 1

    def _release(self, a: Assignment) -> None:
        """The try at `a.peer` ended: its place there is free again."""
        if not a.peer:
            return
        self._by_token.pop(a.token, None)
        held = self._at.get(a.peer)
        if held is not None and a in held:
            held.discard(a)
            self.finished[a.peer] += 1
        a.peer = ""
        self._wake()


async def run_scheduler(settings: SchedulerSettings) -> None:
    """Run until SIGTERM/SIGINT."""
    sched = Scheduler(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sched.stop)
    await sched.run()
