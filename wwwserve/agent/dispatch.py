"""One request's path through an agent: decode, validate, decide, then serve or forward, then reply."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, overload

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from wwwserve.agent.admission import Slots
from wwwserve.agent.metrics import AgentMetrics
from wwwserve.agent.peers import Peer, PeerTable
from wwwserve.agent.ports import LedgerReader, Receipts, ServingHost
from wwwserve.agent.relay import RECEIPT_HEADER, relay
from wwwserve.agent.replies import ReplyWriter
from wwwserve.agent.requests import Active, RequestRegistry
from wwwserve.agent.settings import ProviderSettings
from wwwserve.agent.stats import ServingStats
from wwwserve.agent.watchdog import Watchdog
from wwwserve.engines.base import Engine, prompt_text
from wwwserve.errors import (
    BackendError,
    BadRequest,
    DeadlineExceeded,
    InternalError,
    Overloaded,
    UnknownModel,
    WWWServeError,
    error_from_wire,
)
from wwwserve.ledger.book import LedgerView, routing_factor
from wwwserve.policies.base import Accept, Forward, OwnState, PeerState, Policy, Reject, RequestInfo
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, detect
from wwwserve.protocol.headers import RequestIds, Routing, routing_from_headers
from wwwserve.protocol.messages import CompletionRequest, parse_request
from wwwserve.protocol.prefix import BLOCK_TOKENS, CHECKPOINT, block_hashes, checkpoints, matched_tokens
from wwwserve.protocol.publish import publish

log = structlog.get_logger(__name__)

# a retry's earlier handling: the request still running, or the final message (body, headers) it sent
Earlier: TypeAlias = Active | tuple[bytes, dict[str, str]]

# At most one decision per this many seconds is timed: `thread_time_ns` is a system call (vDSO clocks
# cannot read a thread's CPU time), two per request cost more than the policy they timed under load;
# at the swarm's rates every decision is still timed.
DECISION_TIMING_GAP_S = 0.001


def estimate_prompt_tokens(req: CompletionRequest) -> int:
    """Rough prompt size for the policy: whitespace words (engines count real tokens)."""
    if req.prompt is not None:
        return len(req.prompt.split())
    return sum(len(m.content.split()) + 4 for m in req.messages or [])


def peer_state(p: Peer, view: LedgerView, probes: list[int] | None, now: float | None = None) -> PeerState:
    """A peer as the policy sees it: its last heartbeat, aged, with its ledger standing and what it
    likely holds of this request's prefix (`probes`: the prompt's checkpoint hashes).

    One object per peer, filled in when a beat or a ledger record arrives; each request only refreshes
    the three fields that change between beats (a decision costs O(k) attribute writes, not O(k)
    objects)."""
    st = p.state
    if st is None:
        st = p.state = PeerState(name=p.name, capacity=0)
    if p.state_version != view.version:
        _fill_peer_state(st, p, view)
        p.state_version = view.version
    st.age_s = (time.monotonic() if now is None else now) - p.received
    st.cached_tokens = matched_tokens(p.prefix_filter, probes) if probes else 0
    st.sent_since_beat = p.sent_since_beat
    return st


# what a peer's policy state copies from its heartbeat, field for field
_BEAT_FIELDS = (
    "name", "capacity", "running", "queued", "queue_limit", "prefill_tps", "prefill_backlog",
    "prefill_busy", "tpot_ms", "ttft_ms", "latency_ms", "network_share", "price", "accepting",
)  # fmt: skip


def _fill_peer_state(st: PeerState, p: Peer, view: LedgerView) -> None:
    b = p.beat
    for field in _BEAT_FIELDS:
        setattr(st, field, getattr(b, field))
    st.stake = view.stakes.get(b.name, 0.0)
    st.reputation = routing_factor(view, b.name)
    st.rtt_ms = 2.0 * p.one_way_ms if p.one_way_ms > 0 else 0.0


class CandidateStates(Sequence[PeerState]):
    """The candidates' policy states for one decision, built on first look: a policy that serves
    locally without looking at its peers (the common case in a network with room) costs no O(k) work."""

    __slots__ = ("_args", "_dispatcher", "_states")

    def __init__(self, dispatcher: Dispatcher, model: str, exclude: set[str], probes: list[int]) -> None:
        self._dispatcher = dispatcher
        self._args = (model, exclude, probes)
        self._states: list[PeerState] | None = None

    def _built(self) -> list[PeerState]:
        if self._states is None:
            self._states = self._dispatcher.peer_states(*self._args)
        return self._states

    def __len__(self) -> int:
        return len(self._built())

    @overload
    def __getitem__(self, i: int) -> PeerState: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[PeerState]: ...

    def __getitem__(self, i: int | slice) -> PeerState | Sequence[PeerState]:
        return self._built()[i]

    def __iter__(self) -> Iterator[PeerState]:
        return iter(self._built())


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """The provider settings a request's path reads (plain attributes: a pydantic model's read costs
    ~0.1 µs through __getattr__, and the path reads several per request). Built with `of`: the
    defaults are the settings' own."""

    max_request_bytes: int
    default_timeout_s: float
    engine_stall_s: float
    price: float
    network_share: float
    forward: bool
    max_hops: int
    slo_aware: bool
    min_price: float
    serve_without_credit: bool

    @classmethod
    def of(cls, s: ProviderSettings) -> DispatchConfig:
        """The dispatch section of a provider's settings."""
        return cls(**{f: getattr(s, f) for f in cls.__dataclass_fields__})


# called once a user's request was answered: (request, model, routing, served_by, text); duels hook here
AnswerHook: TypeAlias = Callable[[CompletionRequest, str, Routing, str, str], None]


class Dispatcher:
    """One `handle` call per request message: decide by the policy, then serve, forward or refuse.

    It holds what the request path uses, each handed over by the agent that wires it: the connection,
    the engine and its slots, the peer table, the ledger, the policy; `host` answers for the engine's
    health and load (a Protocol the agent implements).
    """

    def __init__(
        self,
        *,
        name: str,
        config: DispatchConfig,
        nc: Client,
        loop: asyncio.AbstractEventLoop,
        engine: Engine,
        models: Mapping[str, str],
        slots: Slots,
        peers: PeerTable,
        requests: RequestRegistry,
        policy: Policy,
        rng: random.Random,
        stats: ServingStats,
        metrics: AgentMetrics,
        ledger: LedgerReader,
        receipts: Receipts,
        host: ServingHost,
        on_answered: AnswerHook,
    ) -> None:
        self.name = name
        self.nc = nc
        # the agent's loop, kept: asyncio's `get_running_loop` and `current_task()` make a getpid system
        # call each (one loop handle for the request path: the agent spawns handlers on the same one)
        self._loop = loop
        self.engine = engine
        self.models = models
        self.slots = slots
        self.peers = peers
        self.requests = requests
        self.policy = policy
        self.rng = rng
        self.stats = stats
        self.metrics = metrics
        self.ledger = ledger
        self.receipts = receipts
        self.host = host
        self.on_answered = on_answered
        self._packer = msgpack.Packer(use_bin_type=True)  # reused for every reply body
        self._new_id = RequestIds()  # names the requests that come without an id (plain `nats req`)
        self._next_timed = 0.0  # monotonic time from which the next decision is timed
        self._rebuilding: set[str] = set()  # models whose candidate view is due and scheduled
        self._config = c = config
        self._max_bytes = c.max_request_bytes
        self._timeout_s = c.default_timeout_s
        self._stall_s = c.engine_stall_s
        # this agent's state as the policy sees it: one object, its changing fields refreshed per request
        self._own = OwnState(
            name=name,
            capacity=slots.capacity,
            queue_limit=slots.queue_limit,
            network_share=c.network_share,
            price=c.price,
            forward=c.forward,
            max_hops=c.max_hops,
            slo_aware=c.slo_aware,
            min_price=c.min_price,
        )

    async def handle(self, msg: Msg, tok: str) -> None:
        """Answer one request message with a result or an explicit error, before its deadline."""
        name = self.name
        received = time.monotonic()
        hdrs = msg.headers or {}
        rid = h.request_id_from_headers(hdrs)
        writer = ReplyWriter(self.nc, msg.reply or None, Codec.JSON, rid, name, self._packer)
        task = asyncio.current_task(self._loop)
        assert task is not None  # handlers run as the agent's tasks (Agent.spawn)
        watchdog: Watchdog | None = None
        try:
            if len(msg.data) > self._max_bytes:
                limit = self._max_bytes
                raise BadRequest(f"payload of {len(msg.data)} bytes exceeds the limit of {limit}")
            codec = writer.codec = detect(msg.data, hdrs)
            reply_to = hdrs.get(h.REPLY_TO)
            if reply_to is not None:  # assigned by a scheduler: the answer goes to its client
                writer.control, writer.inbox = writer.inbox, subjects.check_reply_subject(reply_to)
            routing = routing_from_headers(hdrs, self._timeout_s, self._new_id)
            writer.request_id = routing.request_id
            earlier = self._earlier(msg, routing.request_id)
            if earlier is not None:
                await self._answer_duplicate(msg, earlier, writer, hdrs)
                return
            self.requests.begin(routing.request_id, task, writer)
            writer.on_final = self.requests.remember
            if hdrs.get(h.WANT_ACK) == "true":
                await writer.ack()
            remaining = routing.remaining_s()
            if remaining <= 0:
                raise DeadlineExceeded(f"deadline passed {-remaining:.3f}s before arrival")
            model = self.models.get(tok)
            if model is None:
                raise UnknownModel(f"provider {name} does not serve a model with subject token {tok!r}")
            req = parse_request(decode(msg.data, codec))
            if req.model is not None and subjects.model_token(req.model) != tok:
                raise BadRequest(f"body names model {req.model!r} but the subject is for {model!r}")
            context = self.engine.context_length(model)
            if context is not None and req.max_tokens > context:
                raise BadRequest(
                    f"max_tokens {req.max_tokens} exceeds the context length of {model} ({context} tokens)"
                )
            loop = self._loop
            watchdog = Watchdog(loop, task, loop.time() + remaining, self._stall_s)
            try:
                await self._dispatch(msg, req, model, routing, writer, received, watchdog)
            except asyncio.CancelledError:
                reason = watchdog.claim()
                if reason == "deadline":
                    raise DeadlineExceeded("deadline reached before the answer was complete") from None
                if reason == "stall":
                    stalled = f"engine produced no token for {self._stall_s:.1f}s"
                    self.host.mark_engine_unhealthy(stalled)
                    raise BackendError(stalled) from None
                raise
            if writer.result is not None:
                self.on_answered(req, model, routing, *writer.result)
        except WWWServeError as err:
            self.stats.failed += 1
            self.metrics.failed(err.code)
            # a failing engine is an operator's problem (warning); a user's bad request or deadline is not
            (log.warning if isinstance(err, BackendError) else log.info)(
                "request.error",
                provider=name,
                request_id=writer.request_id,
                code=err.code,
                message=err.message,
            )
            await writer.error(err)
        except asyncio.CancelledError:
            if writer.request_id in self.requests.cancelled:
                return  # the requester cancelled: nobody is listening, and the task ends quietly
            await writer.error(BackendError(f"provider {name} shut down before finishing"))
            raise
        except Exception as exc:
            self.stats.failed += 1
            self.metrics.failed("internal")
            log.exception("request.internal_error", provider=name, request_id=writer.request_id)
            await writer.error(InternalError(f"{type(exc).__name__}: {exc}"))
        finally:
            if watchdog is not None:
                watchdog.close()
            self.requests.end(writer.request_id, task)

    def _earlier(self, msg: Msg, request_id: str) -> Earlier | None:
        """A retry's earlier handling: the one running, or the final message of a recent one (no await)."""
        if not msg.reply:
            return None
        active = self.requests.active.get(request_id)
        if active is not None and not active.task.done():
            return active
        return self.requests.recent(request_id)

    async def _answer_duplicate(
        self, msg: Msg, earlier: Earlier, writer: ReplyWriter, hdrs: dict[str, str]
    ) -> None:
        """A retry of a request we are serving or served: never serve it twice (docs/reliability.md)."""
        if isinstance(earlier, Active):
            if hdrs.get(h.WANT_ACK) == "true":
                await writer.ack()
            # the same inbox is its own requester asking whether we are still at it (the ack says yes,
            # the stream goes on); another inbox can't join an answer that has begun
            if earlier.writer.delivered and writer.inbox != earlier.writer.inbox:
                await writer.error(BackendError("this request is already streaming to another inbox"))
            else:
                earlier.writer.inbox = writer.inbox  # the running work now answers the retry
                if writer.control:  # and tells the scheduler that assigned it again when it ends
                    earlier.writer.control = writer.control
            log.info("request.duplicate", provider=self.name, request_id=writer.request_id, state="running")
            return
        if writer.inbox:
            await publish(self.nc, writer.inbox, earlier[0], earlier[1])  # as the first answer went out
        await writer.notice(earlier[1].get(h.ERROR, "200"))  # an assigning scheduler counts it as ended
        log.info("request.duplicate", provider=self.name, request_id=writer.request_id, state="finished")

    def _request_info(
        self, req: CompletionRequest, model: str, routing: Routing, prompt_tokens: int, probes: list[int]
    ) -> RequestInfo:
        own_user = routing.origin == self.name or (not routing.origin and routing.hops == 0)
        return RequestInfo(
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=req.max_tokens,
            remaining_ms=routing.remaining_s() * 1000.0,
            hops=routing.hops,
            own_user=own_user,
            slo_ms=float(req.slo_ms) if req.slo_ms else None,
            slo_ttft_ms=float(req.slo_ttft_ms) if req.slo_ttft_ms else None,
            slo_tpot_ms=float(req.slo_tpot_ms) if req.slo_tpot_ms else None,
            max_price=req.max_price,
            cacheable_tokens=len(probes) * CHECKPOINT * BLOCK_TOKENS,
        )

    def own_state(self, probes: list[int] | None = None) -> OwnState:
        """This agent's state for the policy (`probes`: the request's prefix checkpoints); the same
        object each time, its changing fields refreshed (policies keep none of what they are given)."""
        st, host = self._own, self.host
        load = host.load()  # read once, for the speeds and for the health
        stats = self.stats
        st.running = self.slots.running
        st.queued = self.slots.queued
        st.prefill_tps = load.prefill_tps or stats.prefill_tps.value
        st.prefill_backlog = load.prefill_backlog
        st.prefill_busy = load.prefill_busy
        st.tpot_ms = load.tpot_ms or stats.tpot_ms.value
        st.ttft_ms = stats.ttft_ms.value
        st.latency_ms = stats.latency_ms.value
        st.healthy = host.engine_healthy(load) and not host.draining
        st.cached_tokens = matched_tokens(load.prefix_filter, probes) if probes else 0
        return st

    def peer_states(self, model: str, exclude: set[str], probes: list[int] | None = None) -> list[PeerState]:
        """Alive peers serving `model` (a bounded view), as the policy sees them."""
        view = self.ledger.view
        now = time.monotonic()
        candidates, due = self.peers.candidates(model, now)
        if due and model not in self._rebuilding:
            # the sort of a new view waits until this request's step is over: never on its path
            self._rebuilding.add(model)
            self._loop.call_soon(self._rebuild_view, model)
        return [peer_state(p, view, probes, now) for p in candidates if p.name not in exclude]

    def _rebuild_view(self, model: str) -> None:
        self._rebuilding.discard(model)
        self.peers.serving(model)

    async def _dispatch(
        self,
        msg: Msg,
        req: CompletionRequest,
        model: str,
        routing: Routing,
        writer: ReplyWriter,
        received: float,
        watchdog: Watchdog,
    ) -> None:
        prompt_tokens = estimate_prompt_tokens(req)
        if routing.hops > 0 and routing.origin and not self._config.serve_without_credit:
            cost = self._config.price * (prompt_tokens + req.max_tokens)
            if self.ledger.view.spendable(routing.origin) < cost:
                raise Overloaded(
                    f"{self.name} serves peers with credit only; {routing.origin} lacks {cost:.2f}"
                )
        probes = checkpoints(block_hashes(prompt_text(req)))  # the prefix's advertised blocks
        # what the policy knows of the request, built once (a decision after a failed forward reuses it)
        info = self._request_info(req, model, routing, prompt_tokens, probes)
        tried: set[str] = {routing.origin} if routing.hops > 0 else set()  # never bounce back
        while True:
            # A decision (the request's description above is built once per request): own state,
            # candidates' states when looked at, the policy. Timed (on a sample, DECISION_TIMING_GAP_S)
            # in CPU time of this thread: what it costs, without the time other processes on a busy
            # machine took the core away in between
            timed = received >= self._next_timed
            if timed:
                self._next_timed = received + DECISION_TIMING_GAP_S
                t0 = time.thread_time_ns()
            info.remaining_ms = routing.remaining_s() * 1000.0  # a retry after a failed forward has less
            peers = CandidateStates(self, model, tried, probes)  # built if the policy looks at them
            decision = self.policy.decide(info, self.own_state(probes), peers, self.rng)
            if timed:
                self.stats.decision_us.append((time.thread_time_ns() - t0) / 1000.0)
            if isinstance(decision, Accept):
                await self._serve(req, model, routing, writer, received, watchdog, prompt_tokens)
                return
            if isinstance(decision, Reject):
                raise error_from_wire(decision.code, decision.reason)
            assert isinstance(decision, Forward)
            if await self._forward(decision.peer, msg, model, routing, writer):
                return
            tried.add(decision.peer)

    async def _serve(
        self,
        req: CompletionRequest,
        model: str,
        routing: Routing,
        writer: ReplyWriter,
        received: float,
        watchdog: Watchdog,
        estimated_prompt: int,
    ) -> None:
        slots = self.slots
        if not slots.try_take():
            await slots.take(estimated_prompt)  # its prompt counts as prefill ahead while it waits
        try:  # the slots report their changes (heartbeats)
            started = time.monotonic()
            first: float | None = None
            parts: list[str] = []
            finish, prompt_tokens, completion_tokens, cached_tokens = "stop", 0, 0, 0
            watchdog.engine_started()
            deltas = self.engine.generate(req, model)
            try:
                async for d in deltas:
                    watchdog.tick()
                    if d.text:
                        if first is None:
                            first = time.monotonic()
                        parts.append(d.text)
                        if req.stream:
                            await writer.chunk(d.text)
                    if d.finish_reason:
                        finish = d.finish_reason
                        prompt_tokens, completion_tokens = d.prompt_tokens, d.completion_tokens
                        cached_tokens = d.cached_tokens
            except (WWWServeError, asyncio.CancelledError):
                await deltas.aclose()  # stop the engine's work (a finished generator needs no closing)
                raise
            except Exception as exc:
                await deltas.aclose()
                raise BackendError(f"engine {self.engine.kind} failed: {exc!r}") from exc
            watchdog.engine_stopped()
            done = time.monotonic()
            first = first or done
            ttft_ms, latency_ms = (first - started) * 1000, (done - started) * 1000
            self.stats.record(ttft_ms, latency_ms, prompt_tokens, completion_tokens)
        finally:
            slots.give_back()
        self.metrics.served(first - received, done - received, completion_tokens)
        if routing.hops > 0 and routing.origin and routing.origin != self.name:
            writer.extra_final_headers[RECEIPT_HEADER] = self.receipts.server_half(
                routing.request_id, model, prompt_tokens, completion_tokens, routing.origin
            )
        await writer.final(
            {
                "request_id": routing.request_id,
                "text": "".join(parts),
                "finish_reason": finish,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "cached_tokens": cached_tokens,
                },
                "provider": self.name,
                "model": model,
                "hops": routing.hops,
                "ttft_ms": round((first - received) * 1e6) / 1000,  # µs resolution (round(x, 3) costs 4x)
                "latency_ms": round((done - received) * 1e6) / 1000,
            }
        )

    async def _forward(self, peer: str, msg: Msg, model: str, routing: Routing, writer: ReplyWriter) -> bool:
        """Relay the request through `peer`; False when the peer never took it (try elsewhere)."""
        peers = self.peers
        peers.note_forwarded(peer)
        self.stats.forwarded += 1
        self.metrics.forwarded()
        ok = await relay(
            self.nc,
            peer,
            model,
            msg.data,
            dict(msg.headers or {}),
            routing,
            writer,
            alive=peers.is_alive,
            origin=self.name,
            settle=self.receipts.settle,
        )
        if not ok:
            peers.suspend(peer)  # it failed us; its next heartbeat brings it back
        return ok
