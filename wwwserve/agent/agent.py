"""The provider agent: `Agent(settings, engine, policy)`, then `await agent.run()`; the rest is internal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import Service

from wwwserve import PROTOCOL_VERSION
from wwwserve.agent.admission import Slots
from wwwserve.agent.beats import BeatScope
from wwwserve.agent.canary import Canaries, CanaryConfig
from wwwserve.agent.credits import CreditConfig, Credits
from wwwserve.agent.dispatch import DispatchConfig, Dispatcher, peer_state
from wwwserve.agent.duels import DuelConfig, Duels
from wwwserve.agent.metrics import AgentMetrics, Gauges
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.ports import Link
from wwwserve.agent.requests import RequestRegistry
from wwwserve.agent.service import ServiceParts, register_service
from wwwserve.agent.settings import ProviderSettings
from wwwserve.agent.stats import ServingStats
from wwwserve.broker.streams import ensure_streams
from wwwserve.directory import REFRESH_S, directory_size, publish_entry
from wwwserve.engines.base import Engine, EngineLoad
from wwwserve.logs import connection_callbacks
from wwwserve.policies.base import Policy
from wwwserve.protocol import subjects
from wwwserve.protocol.headers import REQUEST_ID as REQUEST_ID_HEADER
from wwwserve.protocol.headers import Routing, now_ms
from wwwserve.protocol.messages import CompletionRequest, Heartbeat
from wwwserve.runtime import wait_event

log = structlog.get_logger(__name__)

HUB_PAUSE_S = 5.0  # out of the queue groups after a hub's notice (it closes our leaf once we are idle)


@dataclass
class _ModelSub:
    model: str
    sub: Subscription | None = None


class Agent:
    """Serves its models from its own NATS server, heartbeats, and dispatches by its policy."""

    def __init__(self, settings: ProviderSettings, engine: Engine, policy: Policy) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = policy
        self.name = settings.name
        self.models: dict[str, str] = {}  # subject token -> model name
        for m in settings.model:
            tok = subjects.model_token(m)
            if tok in self.models and self.models[tok] != m:
                raise ValueError(
                    f"models {self.models[tok]!r} and {m!r} map to the same subject token {tok!r}"
                )
            self.models[tok] = m
        self.slots = Slots(settings.max_concurrency, settings.max_queue, on_change=self.notify_load_changed)
        self.stats = ServingStats.new()
        self.rng = random.Random()
        self.peers = PeerTable(self.name, settings.peer_expiry_s, settings.peer_view, rng=self.rng)
        self.log = log.bind(provider=self.name)
        self.link = Link()  # the connection, handed to the parts now and connected in `run`
        self._queue_subs: dict[str, _ModelSub] = {t: _ModelSub(m) for t, m in self.models.items()}
        self._other_subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()  # requests' handlers and their own work
        self._audits: set[asyncio.Task[None]] = set()  # duels, canaries, judging: cancelled at drain
        self._loop: asyncio.AbstractEventLoop | None = None  # once running (get_running_loop is a syscall)
        self.requests = RequestRegistry()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._accepting = False
        self._membership_lock = asyncio.Lock()
        self._draining = False
        self._beat_seq = 0
        self._keepalive = settings.heartbeat_interval_s
        self.beats: BeatScope | None = None
        self._listed: tuple[bool, bool] | None = None  # (accepting, healthy) in our directory entry
        self._listed_at = 0.0
        self._listing: asyncio.Future[None] | None = None
        self._dispatcher: Dispatcher | None = None
        self._service: Service | None = None
        self.metrics = AgentMetrics(
            Gauges(
                running=lambda: self.slots.running,
                queued=lambda: self.slots.queued,
                tokens_per_s=self.stats.tokens_per_s,
                peers=lambda: len(self.peers.alive()),
                accepting=lambda: 1.0 if self.accepting else 0.0,
            )
        )
        self.credits = Credits(self.name, CreditConfig.of(settings), self.link, self.peers, self.spawn)
        self.duels = Duels(
            name=self.name,
            config=DuelConfig.of(settings),
            link=self.link,
            rng=self.rng,
            spawn=self.spawn_audit,
            peers=self.peers,
            ledger=self.credits.ledger,
            records=self.credits,
            identity=self.credits.identity,
            models=tuple(self.models.values()),
            engine=engine,
            slots=self.slots,
        )
        self.canaries = Canaries(
            name=self.name,
            config=CanaryConfig.of(settings),
            rng=self.rng,
            spawn=self.spawn_audit,
            peers=self.peers,
            ledger=self.credits.ledger,
            slots=self.slots,
            audit=self.duels.audit,
        )
        self._unhealthy_until = 0.0
        self._was_healthy = True
        # set while out of the queue groups because a hub closes and reopens our leaf: ends the pause
        self._hub_pause: asyncio.TimerHandle | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def nc(self) -> nats.aio.client.Client:
        """The agent's NATS connection (after start)."""
        return self.link.nc

    async def wait_ready(self) -> None:
        """Return once the agent is subscribed and has sent its first heartbeat."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask `run` to drain and return (what SIGTERM does)."""
        self._stop.set()

    async def run(self) -> None:
        """Connect, serve until `stop()`, then drain: leave the queue groups, finish in-flight, exit."""
        self._loop = asyncio.get_running_loop()
        await self.engine.start()
        try:
            nc = await nats.connect(
                self.settings.nats_url or f"nats://{self.settings.host}:{self.settings.port}",
                name=f"wwwserve-agent-{self.name}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                pending_size=8 * 1024 * 1024,
                **connection_callbacks(self.log),
            )
            self.link.attach(nc)
            self._dispatcher = self._new_dispatcher(nc, self._loop)
            if self.settings.metrics_port:
                self.metrics.serve_http(self.settings.host, self.settings.metrics_port)
            await self._subscribe()
            self.spawn(self._ensure_streams())
            await self.duels.subscribe()
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            ledger = asyncio.create_task(self.credits.run())
            self._ready.set()
            self.log.info("agent.ready", models=list(self.models.values()), engine=self.engine.kind)
            await self._stop.wait()
            await self._drain()
            heartbeat.cancel()
            if self._service is not None:
                with contextlib.suppress(Exception):
                    await self._service.stop()
            self.credits.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(Exception):
                await self.canaries.close()
            _, late = await asyncio.wait({ledger}, timeout=5.0)
            for task in late:
                task.cancel()
            await self._publish_heartbeat(goodbye=True)
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            await self.nc.close()  # our own drain above already finished the work
        finally:
            self.metrics.close()
            self.credits.close()
            await self.engine.close()
            self.log.info("agent.stopped", served=self.stats.served, forwarded=self.stats.forwarded)

    def _new_dispatcher(self, nc: nats.aio.client.Client, loop: asyncio.AbstractEventLoop) -> Dispatcher:
        """The request path, handed what it uses (the agent itself only as the engine's `ServingHost`)."""
        return Dispatcher(
            name=self.name,
            config=DispatchConfig.of(self.settings),
            nc=nc,
            loop=loop,
            engine=self.engine,
            models=self.models,
            slots=self.slots,
            peers=self.peers,
            requests=self.requests,
            policy=self.policy,
            rng=self.rng,
            stats=self.stats,
            metrics=self.metrics,
            ledger=self.credits.ledger,
            receipts=self.credits,
            host=self,
            on_answered=self._answered,
        )

    def _answered(
        self, req: CompletionRequest, model: str, routing: Routing, served_by: str, text: str
    ) -> None:
        """A request was answered: the duels may audit a peer's answer, the canaries learn the prompt."""
        self.duels.maybe_start(req, model, routing, served_by, text)
        self.canaries.observe(req, model, routing)

    async def _subscribe(self) -> None:
        # an engine that is still starting (a supervised vLLM) joins once it is healthy (_check_health)
        self._was_healthy = self.engine_healthy()
        self._accepting = getattr(self.policy, "joins_queue_group", True) and self._was_healthy
        await self._sync_membership()
        direct = self._spawn_handler()

        async def unknown_models_only(msg: Msg) -> None:
            # served models arrive through the micro service's endpoints; this answers the rest
            if msg.subject.rsplit(".", 1)[-1] not in self.models:
                await direct(msg)

        self._other_subs.append(
            await self.nc.subscribe(f"{subjects.DIRECT_PREFIX}.{self.name}.*", cb=unknown_models_only)
        )
        self._service = await register_service(
            self.nc,
            ServiceParts(
                name=self.name,
                engine_kind=self.engine.kind,
                models=self.models,
                counts=self._counts,
                status=self.heartbeat,
                ledger_view=self.credits.view,
                on_direct=direct,
            ),
        )
        self.beats = BeatScope(
            self.nc,
            self.name,
            list(self.models),
            self._on_heartbeat,
            listen_target=self.settings.heartbeat_listen,
            budget=self.settings.heartbeat_budget,
            rng=self.rng,
        )
        await self.beats.start(await directory_size(self.nc))
        self._other_subs.append(
            await self.nc.subscribe(subjects.cancel_subject(self.name), cb=self._on_cancel)
        )
        self._other_subs.append(
            await self.nc.subscribe(subjects.hub_notice_subject(self.name), cb=self._on_hub_notice)
        )
        await self.nc.flush()

    def _counts(self) -> dict[str, int]:
        """What `nats micro stats` shows of this provider."""
        s = self.stats
        return {
            "served": s.served,
            "failed": s.failed,
            "forwarded": s.forwarded,
            "running": self.slots.running,
            "queued": self.slots.queued,
        }

    async def _ensure_streams(self) -> None:
        """Create the hubs' JetStream assets if no hub did (an open network); a closed one refuses."""
        try:
            await asyncio.wait_for(ensure_streams(self.nc), 10.0)
        except Exception as e:  # best effort: hubs normally create them
            self.log.debug("jetstream.assets_not_created", error=repr(e))

    async def _sync_membership(self) -> None:
        """Make the queue-group subscriptions match `_accepting` (serialized, idempotent).

        Leaving drains the subscription instead of unsubscribing: every message NATS already routed to
        this member is still handled (served, forwarded or refused explicitly), none is dropped.
        """
        async with self._membership_lock:
            want = self._accepting and not self._draining
            for tok, ms in self._queue_subs.items():
                if want and ms.sub is None:
                    ms.sub = await self.nc.subscribe(
                        f"{subjects.REQUEST_PREFIX}.{tok}",
                        queue=subjects.QUEUE_GROUP,
                        cb=self._spawn_handler(),
                    )
                elif not want and ms.sub is not None:
                    sub, ms.sub = ms.sub, None
                    with contextlib.suppress(Exception):
                        await sub.drain()  # type: ignore[no-untyped-call]

    def _set_accepting(self, accepting: bool) -> None:
        if accepting != self._accepting:
            self._accepting = accepting
            self._changed.set()
            self.spawn(self._sync_membership())

    async def _drain(self) -> None:
        self._draining = True
        self.log.info("agent.draining", in_flight=len(self._tasks), audits=len(self._audits))
        for task in list(self._audits):
            task.cancel()  # verification's own work: no user waits for it (peers may be leaving too)
        await self._sync_membership()  # out of the queue groups; direct and cancel subjects stay
        await self._publish_heartbeat()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.drain_grace_s)
            for task in pending:
                task.cancel()  # each handler answers its requester with an explicit error
            if pending:
                await asyncio.wait(pending, timeout=2.0)

    # ---- load and health ----------------------------------------------------------------------------

    def notify_load_changed(self) -> None:
        """Called whenever running/queued change: heartbeat soon.

        A saturated agent stays in the queue groups (leaving them lost requests in flight, and all
        members could leave at once): requests that reach it are forwarded by its policy or refused
        with `overloaded` at once (docs/policies.md).
        """
        self._changed.set()

    @property
    def accepting(self) -> bool:
        """In the llm.request queue groups and not leaving them."""
        return self._accepting and not self._draining

    @property
    def draining(self) -> bool:
        """Shutting down: finishing what it has, taking nothing new (new work is forwarded or refused)."""
        return self._draining

    def engine_healthy(self, load: EngineLoad | None = None) -> bool:
        """The engine answers (its own health, from `load` when the caller has just read it) and has not
        stalled within the cool-down."""
        healthy = (load or self.engine.load()).healthy
        return healthy and time.monotonic() >= self._unhealthy_until

    def mark_engine_unhealthy(self, reason: str) -> None:
        """An engine fault: stop taking work for the cool-down, then try again."""
        self._unhealthy_until = time.monotonic() + self.settings.unhealthy_cooldown_s
        self.log.warning("engine.unhealthy", reason=reason)
        self._check_health()

    def _check_health(self) -> None:
        """Leave the queue groups while the engine is unhealthy; rejoin once it is healthy again."""
        healthy = self.engine_healthy()
        if healthy == self._was_healthy or self._draining:
            return
        self._was_healthy = healthy
        self._changed.set()
        if not healthy:
            self._set_accepting(False)
        elif self._may_join():
            self.log.info("engine.healthy")
            self._set_accepting(True)

    def _may_join(self) -> bool:
        """Whether the queue groups are ours to join, the engine's health aside: the policy takes part
        in them and no hub is closing and reopening our leaf."""
        return getattr(self.policy, "joins_queue_group", True) and self._hub_pause is None

    # ---- messages --------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task the agent tracks: drain waits for it, shutdown cancels it."""
        # inline, not shared with spawn_audit: this runs once per request message (a call is ~0.1 µs)
        task = (self._loop or asyncio.get_running_loop()).create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn_audit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run verification work (a duel, a canary, a judgement) as a task that shutdown cancels at once."""
        task = (self._loop or asyncio.get_running_loop()).create_task(coro)
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    @property
    def busy(self) -> bool:
        """Requests or verification work still running (benchmarks wait for it between batches)."""
        return any(not t.done() for t in (*self._tasks, *self._audits))

    def _spawn_handler(self) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            assert self._dispatcher is not None
            tok = msg.subject.rsplit(".", 1)[-1]
            self.spawn(self._dispatcher.handle(msg, tok))

        return on_msg

    async def _on_cancel(self, msg: Msg) -> None:
        """The requester is gone: stop the engine (or the relay) working on its request."""
        request_id = (msg.headers or {}).get(REQUEST_ID_HEADER, "")
        active = self.requests.active.get(request_id)
        if active is not None and not active.task.done():
            self.requests.cancelled.add(request_id)
            active.task.cancel()
            self.log.info("request.cancelled", request_id=request_id)

    async def _on_hub_notice(self, msg: Msg) -> None:
        """A hub will close our leaf connection (its guard changed our permissions, docs/duels.md):
        leave the queue groups, finish what we have (the hub waits until we report idle), rejoin
        after `HUB_PAUSE_S`. Answers in flight when a leaf drops would be lost; this way none is."""
        self.log.warning("hub.notice", notice=msg.data.decode(errors="replace")[:200])
        if self._hub_pause is not None:
            self._hub_pause.cancel()
        self._set_accepting(False)
        self._hub_pause = asyncio.get_running_loop().call_later(HUB_PAUSE_S, self._end_hub_pause)

    def _end_hub_pause(self) -> None:
        self._hub_pause = None
        if self.engine_healthy() and self._may_join():
            self._set_accepting(True)

    async def _on_heartbeat(self, msg: Msg) -> None:
        self.stats.beats_heard += 1
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValueError:
            self.log.debug("heartbeat.invalid", subject=msg.subject)
            return
        if not beat.models:
            self.peers.remove(beat.name)
            return
        is_new = beat.name != self.name and not self.peers.knows(beat.name)
        peer = self.peers.update(beat)
        if peer is not None:  # the policy's view of it, built now rather than on a request's path
            peer_state(peer, self.credits.ledger.view, None)
        if is_new and len(self.peers) <= self.settings.heartbeat_listen:
            # a small network: introduce ourselves to a newcomer at once; in a big one a new name is
            # mostly our sample moving (it may not even hear our shard), not worth an extra beat
            self._changed.set()

    # ---- heartbeats ------------------------------------------------------------------------------

    def load(self) -> EngineLoad:
        """The engine's load, with the prompts accepted here but still waiting for a slot as backlog."""
        load = self.engine.load()
        waiting = self.slots.waiting_prefill
        if not waiting:
            return load
        return load._replace(prefill_backlog=load.prefill_backlog + waiting)

    def heartbeat(self) -> Heartbeat:
        """What this agent says about itself now."""
        load = self.load()
        s = self.stats
        return Heartbeat(
            name=self.name,
            models=list(self.models.values()),
            engine=self.engine.kind,
            capacity=self.slots.capacity,
            queue_limit=self.slots.queue_limit,
            running=self.slots.running,
            queued=self.slots.queued,
            accepting=self.accepting,
            healthy=self.engine_healthy() and not self._draining,
            ttft_ms=round(s.ttft_ms.value, 2),
            latency_ms=round(s.latency_ms.value, 2),
            tokens_per_s=round(s.tokens_per_s(), 2),
            tpot_ms=round(load.tpot_ms or s.tpot_ms.value, 3),
            prefill_tps=round(load.prefill_tps or s.prefill_tps.value, 1),
            kv_cache_usage=None if load.kv_cache_usage is None else round(load.kv_cache_usage, 3),
            prefill_backlog=load.prefill_backlog,
            prefill_busy=round(load.prefill_busy, 3),
            prefix_filter=load.prefix_filter.encode() if load.prefix_filter is not None else "",
            prefix_hit_rate=None if load.prefix_hit_rate is None else round(load.prefix_hit_rate, 3),
            price=self.settings.price,
            network_share=self.settings.network_share,
            stake=self.credits.ledger.view.stakes.get(self.name, 0.0),
            pubkey=self.credits.identity.public_key,
            version=PROTOCOL_VERSION,
            seq=self._beat_seq,
            ts_ms=now_ms(),
            interval_s=round(self._keepalive, 2),
            engine_state=load.state,
        )

    async def _publish_heartbeat(self, goodbye: bool = False) -> None:
        self._beat_seq += 1
        beat = self.heartbeat()
        if goodbye:
            beat.models, beat.accepting = [], False
        body = json.dumps(beat.model_dump()).encode()
        with contextlib.suppress(Exception):
            for model in self.models.values():
                # no headers: a message with headers costs every listener a header parse (JSON is plain)
                await self.nc.publish(subjects.heartbeat_subject(self.name, model), body)
        listed = (beat.accepting, beat.healthy)
        due = listed != self._listed or time.monotonic() - self._listed_at >= REFRESH_S
        if goodbye:
            await self._list(beat, listed)
        elif due and (self._listing is None or self._listing.done()):
            self._listed_at = time.monotonic()
            self._listing = asyncio.ensure_future(self._list(beat, listed))

    async def _list(self, beat: Heartbeat, listed: tuple[bool, bool]) -> None:
        """Write our directory entry (beside the beats: a slow hub must not delay them)."""
        try:
            ok = await asyncio.wait_for(publish_entry(self.nc, beat), 5.0)
        except TimeoutError:
            ok = False
        self._listed = listed if ok else None

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        last = resized = 0.0
        min_gap = min(0.05, interval)
        while not self._draining:
            self._changed.clear()
            self._check_health()
            for model in self.models.values():
                self.peers.serving(model)  # rebuild the candidate view off the request path
            if self.beats is not None and time.monotonic() - resized >= 2.0:
                resized = time.monotonic()
                alive = self.peers.alive()
                # providers heard per served model (its token), ourselves excluded
                heard = {tok: sum(m in p.beat.models for p in alive) for tok, m in self.models.items()}
                await self.beats.adjust(heard)
                min_gap = self.beats.min_gap(len(alive), interval)
                self._keepalive = self.beats.keepalive(len(alive), interval)
            gap = time.monotonic() - last
            if gap < min_gap:
                await asyncio.sleep(min_gap - gap)
            await self._publish_heartbeat()
            last = time.monotonic()
            await wait_event(self._changed, self._keepalive)
