"""The agent's parts on their own: Dispatcher, Credits and Duels built from fakes of their narrow inputs.

No NATS server and no `Agent` here: each part gets a recording connection, a scripted engine or policy,
and the real small values it is wired with (slots, peer table, ledger view, identity). The end-to-end
behaviour stays covered by the network tests; these pin what each part does with what it is handed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgpack
import nats.errors
import pytest
from nats.aio.msg import Msg

from wwwserve.agent.admission import Slots
from wwwserve.agent.canary import Canaries, CanaryConfig
from wwwserve.agent.credits import CreditConfig, Credits
from wwwserve.agent.dispatch import DispatchConfig, Dispatcher
from wwwserve.agent.duels import DuelConfig, Duels, judge_subject
from wwwserve.agent.judging import Judgement
from wwwserve.agent.metrics import AgentMetrics, Gauges
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.ports import Link
from wwwserve.agent.requests import RequestRegistry
from wwwserve.agent.settings import ProviderSettings
from wwwserve.agent.stats import ServingStats
from wwwserve.engines.base import Delta, EngineLoad
from wwwserve.ledger.book import LedgerView
from wwwserve.ledger.evidence import DuelEvidence
from wwwserve.ledger.identity import load_or_create
from wwwserve.ledger.records import Receipt, Record, Verdict
from wwwserve.policies.base import ACCEPT, Decision, Forward, OwnState, PeerState, Reject, RequestInfo
from wwwserve.protocol import headers as h
from wwwserve.protocol.headers import Routing, now_ms
from wwwserve.protocol.messages import CompletionRequest, Heartbeat

MODEL = "m"


class Sent:
    """One message a fake connection was asked to publish."""

    def __init__(self, subject: str, data: bytes, headers: dict[str, str] | None, reply: str = "") -> None:
        self.subject, self.data, self.headers, self.reply = subject, data, dict(headers or {}), reply

    def body(self) -> Any:
        """The payload decoded by its content type."""
        if self.headers.get(h.CONTENT_TYPE) == "application/msgpack":
            return msgpack.unpackb(self.data)
        return json.loads(self.data)


class FakeJetStream:
    """Records what is published to the ledger stream; `refuse` makes it fail like an absent stream."""

    def __init__(self, sent: list[Sent]) -> None:
        self.sent, self.refuse = sent, False

    async def publish(self, subject: str, payload: bytes, stream: str, headers: dict[str, str]) -> None:
        if self.refuse:
            raise TimeoutError("no stream")
        self.sent.append(Sent(subject, payload, headers))


class FakeSubscription:
    """An inbox subscription: `next_msg` hands what the fake connection queued for it, or times out."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def next_msg(self, timeout: float = 1.0) -> Msg:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise nats.errors.TimeoutError from None

    async def unsubscribe(self) -> None:
        return None


# a scripted peer: given the forwarded request, the (data, headers) messages it answers with
Responder = Callable[[Sent], list[tuple[bytes, dict[str, str]]]]


class FakeConnection:
    """The few connection calls the parts make, recorded (nats-py's Client is not subclassed);
    `responders` answer requests published to their subject, on the request's reply inbox."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.js = FakeJetStream(self.sent)
        self.subscribed: list[str] = []
        self.subs: dict[str, FakeSubscription] = {}
        self.responders: dict[str, Responder] = {}
        self._inboxes = itertools.count()

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        sent = Sent(subject, payload, headers, reply)
        self.sent.append(sent)
        respond = self.responders.get(subject)
        if respond is not None and reply in self.subs:
            for data, hdrs in respond(sent):
                self.subs[reply].queue.put_nowait(Msg(self, reply, "", data, hdrs))  # type: ignore[arg-type]

    def new_inbox(self) -> str:
        return f"_INBOX.fake.{next(self._inboxes)}"

    async def subscribe(self, subject: str, **_: Any) -> FakeSubscription:
        self.subscribed.append(subject)
        sub = self.subs[subject] = FakeSubscription(subject)
        return sub

    def jetstream(self, **_: Any) -> FakeJetStream:
        return self.js

    def to(self, subject: str) -> list[Sent]:
        return [m for m in self.sent if m.subject == subject]


class ScriptedEngine:
    """Answers with fixed words; `fail` raises from inside the generation like a broken backend."""

    kind = "scripted"

    def __init__(self, words: Sequence[str] = ("hello", " world"), fail: bool = False) -> None:
        self.words, self.fail, self.calls = list(words), fail, 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def context_length(self, model: str) -> int | None:
        return 512

    def load(self) -> EngineLoad:
        return EngineLoad(tpot_ms=10.0, prefill_tps=5000.0)

    async def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        self.calls += 1
        for w in self.words:
            await asyncio.sleep(0)
            if self.fail:
                raise RuntimeError("backend exploded")
            yield Delta(w)
        yield Delta("", "stop", prompt_tokens=3, completion_tokens=len(self.words))


class ScriptedPolicy:
    """Returns the decision it was given, and keeps what it was shown."""

    name = "scripted"

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.seen: list[tuple[RequestInfo, OwnState]] = []

    def decide(
        self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], rng: random.Random
    ) -> Decision:
        self.seen.append((req, own))
        return self.decision


class Host:
    """The agent's side of a request's path: healthy, a fixed load, and engine faults recorded."""

    def __init__(self) -> None:
        self.draining = False
        self.faults: list[str] = []

    def load(self) -> EngineLoad:
        return EngineLoad(tpot_ms=10.0, prefill_tps=5000.0)

    def engine_healthy(self, load: EngineLoad | None = None) -> bool:
        return True

    def mark_engine_unhealthy(self, reason: str) -> None:
        self.faults.append(reason)


class Ledger:
    """A ledger holder: just the folded view."""

    def __init__(self) -> None:
        self.view = LedgerView()


class ReceiptsSeen:
    """Signs a fixed server half and records settlements."""

    def __init__(self) -> None:
        self.halves: list[tuple[str, str, int, int, str]] = []
        self.settled: list[tuple[str, str, str | None]] = []

    def server_half(self, request_id: str, model: str, prompt: int, completion: int, origin: str) -> str:
        self.halves.append((request_id, model, prompt, completion, origin))
        return "signed-half"

    async def settle(self, peer: str, request_id: str, header: str | None) -> None:
        self.settled.append((peer, request_id, header))


class Parts:
    """A Dispatcher and the fakes it was built from."""

    def __init__(
        self, decision: Decision = ACCEPT, engine: ScriptedEngine | None = None, **config: Any
    ) -> None:
        self.nc = FakeConnection()
        self.engine = engine or ScriptedEngine()
        self.policy = ScriptedPolicy(decision)
        self.slots = Slots(2, 4)
        self.stats = ServingStats.new()
        self.host = Host()
        self.receipts = ReceiptsSeen()
        self.answered: list[tuple[str, str, str]] = []
        self.peers = PeerTable("me", 3.5, 64, rng=random.Random(1))
        gauges = Gauges(lambda: 0, lambda: 0, lambda: 0.0, lambda: 0, lambda: 1.0)
        self.dispatcher = Dispatcher(
            name="me",
            config=DispatchConfig.of(ProviderSettings(**config)),
            nc=self.nc,  # type: ignore[arg-type]
            loop=asyncio.get_running_loop(),
            engine=self.engine,
            models={MODEL: MODEL},
            slots=self.slots,
            peers=self.peers,
            requests=RequestRegistry(),
            policy=self.policy,
            rng=random.Random(1),
            stats=self.stats,
            metrics=AgentMetrics(gauges),
            ledger=Ledger(),
            receipts=self.receipts,
            host=self.host,
            on_answered=lambda req, model, routing, by, text: self.answered.append(
                (routing.request_id, by, text)
            ),
        )

    async def send(
        self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None, tok: str = MODEL
    ) -> Sent:
        """Hand one request message to the dispatcher as the agent does (as a task); its last reply."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        msg = Msg(self.nc, f"llm.request.{tok}", "_INBOX.client", data, headers)  # type: ignore[arg-type]
        await asyncio.get_running_loop().create_task(self.dispatcher.handle(msg, tok))
        replies = self.nc.to("_INBOX.client")
        assert replies and replies[-1].headers[h.FINAL] == "true", [r.headers for r in replies]
        return replies[-1]


async def test_dispatcher_serves_locally_and_reports_the_answer() -> None:
    p = Parts()
    final = await p.send({"prompt": "say hello", "max_tokens": 4}, {h.REQUEST_ID: "r1"})
    body = final.body()
    assert final.headers[h.STATUS] == "200"
    assert (body["text"], body["provider"], body["request_id"]) == ("hello world", "me", "r1")
    assert body["usage"]["completion_tokens"] == 2
    assert p.answered == [("r1", "me", "hello world")]  # the duel hook sees every complete answer
    assert p.stats.served == 1 and p.slots.running == 0
    info, own = p.policy.seen[0]
    assert info.own_user and info.max_tokens == 4 and own.capacity == 2 and own.healthy


async def test_dispatcher_signs_the_server_half_for_a_forwarded_request() -> None:
    p = Parts()
    routing = Routing("r2", 1, now_ms() + 30_000, "origin-peer")
    final = await p.send({"prompt": "x y", "max_tokens": 2}, routing.to_headers())
    assert final.headers["Wwwserve-Receipt"] == "signed-half"
    assert p.receipts.halves == [("r2", MODEL, 3, 2, "origin-peer")]
    assert p.policy.seen[0][0].own_user is False


@pytest.mark.parametrize(
    ("body", "tok", "code"),
    [
        (b"\x00not json", MODEL, "bad_request"),
        ({"prompt": "hi", "max_tokens": 4}, "other", "unknown_model"),
        ({"prompt": "hi", "max_tokens": 100_000}, MODEL, "bad_request"),  # beyond the context length
        ({"prompt": "x" * 5000, "max_tokens": 4}, MODEL, "bad_request"),  # beyond max_request_bytes
    ],
)
async def test_dispatcher_answers_bad_input_with_an_explicit_error(body: Any, tok: str, code: str) -> None:
    p = Parts(max_request_bytes=4096)
    final = await p.send(body, tok=tok)
    assert final.headers[h.STATUS] != "200" and final.headers[h.ERROR] == code
    assert final.body()["code"] == code and final.body()["message"]
    assert p.engine.calls == 0 and p.stats.failed == 1 and p.answered == []


async def test_dispatcher_passes_a_policy_refusal_on() -> None:
    p = Parts(Reject("overloaded", "no room anywhere"))
    final = await p.send({"prompt": "hi", "max_tokens": 4})
    assert final.headers[h.ERROR] == "overloaded" and "no room" in final.body()["message"]
    assert p.engine.calls == 0


async def test_dispatcher_turns_an_engine_failure_into_backend_error() -> None:
    p = Parts(engine=ScriptedEngine(fail=True))
    final = await p.send({"prompt": "hi", "max_tokens": 4})
    assert final.headers[h.ERROR] == "backend_error" and "exploded" in final.body()["message"]
    assert p.slots.running == 0  # the slot came back


def _beat_of(name: str) -> Heartbeat:
    return Heartbeat(name=name, models=[MODEL], engine="sim", capacity=4, ts_ms=now_ms())


async def test_dispatcher_relays_a_peer_answer_and_settles_its_receipt() -> None:
    p = Parts(Forward("peer"))
    p.peers.update(_beat_of("peer"))

    def peer(req: Sent) -> list[tuple[bytes, dict[str, str]]]:
        rid = req.headers[h.REQUEST_ID]
        assert req.headers[h.HOPS] == "1" and req.headers[h.ORIGIN] == "me"  # the next hop, from us
        final = {"request_id": rid, "text": "from peer", "provider": "peer", "seq": 0, "final": True}
        return [
            (b"", {h.ACK: "peer", h.REQUEST_ID: rid}),
            (json.dumps(final).encode(), {h.STATUS: "200", h.FINAL: "true", "Wwwserve-Receipt": "half"}),
        ]

    p.nc.responders["llm.direct.peer.m"] = peer
    final = await p.send({"prompt": "hi", "max_tokens": 4}, {h.REQUEST_ID: "r4"})
    assert final.body()["provider"] == "peer" and "Wwwserve-Receipt" not in final.headers
    assert p.receipts.settled == [("peer", "r4", "half")]  # the origin countersigns what the peer signed
    assert p.answered == [("r4", "peer", "from peer")]  # and may duel the peer's answer
    assert p.stats.forwarded == 1 and p.engine.calls == 0


async def test_dispatcher_asks_again_when_a_peer_never_takes_the_request() -> None:
    # the first peer does not answer at all: after the ack timeout it is suspended and the policy
    # decides again without it (here: serve locally)
    p = Parts(Forward("silent"))
    p.peers.update(_beat_of("silent"))

    class ThenAccept(ScriptedPolicy):
        def decide(
            self, req: RequestInfo, own: OwnState, peers: Sequence[PeerState], rng: random.Random
        ) -> Decision:
            self.seen.append((req, own))
            return Forward("silent") if len(self.seen) == 1 else ACCEPT

    p.dispatcher.policy = p.policy = ThenAccept(ACCEPT)
    final = await p.send({"prompt": "hi", "max_tokens": 4}, {h.REQUEST_ID: "r5"})
    assert final.body()["provider"] == "me" and len(p.policy.seen) == 2
    assert p.peers.serving(MODEL) == []  # suspended: not chosen again until its next heartbeat


async def test_waiting_requests_count_their_prompt_as_prefill_ahead() -> None:
    slots = Slots(1, 4)
    assert slots.try_take()
    waiter = asyncio.ensure_future(slots.take(prefill=700))
    await asyncio.sleep(0)
    assert (slots.queued, slots.waiting_prefill) == (1, 700)
    slots.give_back()
    await waiter
    assert (slots.queued, slots.waiting_prefill, slots.running) == (0, 0, 1)


# ---- Credits ------------------------------------------------------------------------------------


def _credits(
    tmp_path: Path, name: str, link: Link, peers: PeerTable | None = None, price: float = 0.0
) -> Credits:
    spawned: list[Coroutine[Any, Any, None]] = []
    return Credits(
        name,
        CreditConfig.of(ProviderSettings(name=name, data_dir=tmp_path / name, price=price)),
        link,
        peers or PeerTable(name, 3.5, 64, rng=random.Random(1)),
        spawned.append,
    )


def _beat(name: str, price: float) -> Heartbeat:
    return Heartbeat(name=name, models=[MODEL], engine="sim", capacity=4, price=price, ts_ms=now_ms())


async def test_credits_settle_a_server_half_into_a_countersigned_receipt(tmp_path: Path) -> None:
    nc = FakeConnection()
    peers = PeerTable("origin", 3.5, 64, rng=random.Random(1))
    peers.update(_beat("server", 0.5))
    server = _credits(tmp_path, "server", Link(), price=0.5)
    origin = _credits(tmp_path, "origin", Link(nc), peers)  # type: ignore[arg-type]
    try:
        half = server.server_half("r1", MODEL, 10, 20, "origin")
        await origin.settle("server", "r1", half)
        [sent] = nc.sent
        receipt = Receipt.model_validate_json(sent.data)
        assert sent.headers["Nats-Msg-Id"] == receipt.id
        assert (receipt.server, receipt.origin, receipt.amount) == ("server", "origin", pytest.approx(15.0))
        assert receipt.signatures_valid() and receipt.origin_key == origin.identity.public_key
        assert not origin.ledger.held()  # the stream has it: out of the outbox
    finally:
        server.close()
        origin.close()


async def test_credits_refuse_a_receipt_that_is_not_for_them_or_overpriced(tmp_path: Path) -> None:
    nc = FakeConnection()
    peers = PeerTable("origin", 3.5, 64, rng=random.Random(1))
    peers.update(_beat("server", 0.1))  # advertises 0.1 per token
    server = _credits(tmp_path, "server", Link(), price=0.5)
    origin = _credits(tmp_path, "origin", Link(nc), peers)  # type: ignore[arg-type]
    try:
        await origin.settle("server", "r1", server.server_half("r1", MODEL, 1, 1, "origin"))  # overpriced
        await origin.settle("server", "r2", server.server_half("r2", MODEL, 1, 1, "someone-else"))
        await origin.settle("server", "r3", base64.b64encode(b"garbage").decode())
        await origin.settle("server", "r4", None)
        assert nc.sent == [] and origin.signed == 0
    finally:
        server.close()
        origin.close()


async def test_credits_keep_a_record_the_stream_refused_in_the_outbox(tmp_path: Path) -> None:
    nc = FakeConnection()
    nc.js.refuse = True
    credits = _credits(tmp_path, "p", Link(nc))  # type: ignore[arg-type]
    try:
        server = _credits(tmp_path, "s", Link())
        record = Receipt.model_validate_json(base64.b64decode(server.server_half("r", MODEL, 1, 1, "p")))
        server.close()
        full = record.countersigned_by(credits.identity)
        assert await credits.publish(full) is False
        assert [r.id for r in credits.ledger.held()] == [full.id]
        nc.js.refuse = False
        assert await credits._flush_outbox()
        assert not credits.ledger.held() and len(nc.sent) == 1
    finally:
        credits.close()


# ---- Duels --------------------------------------------------------------------------------------


class RecordsSeen(ReceiptsSeen):
    """A record sink: settlements and published records recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Record] = []

    async def publish(self, record: Record) -> bool:
        self.published.append(record)
        return True


def _duels(tmp_path: Path, nc: FakeConnection, rate: float, spawned: list[Any]) -> tuple[Duels, RecordsSeen]:
    records = RecordsSeen()
    duels = Duels(
        name="origin",
        config=DuelConfig.of(ProviderSettings(duel_rate=rate, duel_rate_min=0.05)),
        link=Link(nc),  # type: ignore[arg-type]
        rng=random.Random(7),
        spawn=spawned.append,
        peers=PeerTable("origin", 3.5, 64, rng=random.Random(1)),
        ledger=Ledger(),
        records=records,
        identity=load_or_create(tmp_path / "origin", "origin"),
        models=(MODEL,),
        engine=ScriptedEngine(),
        slots=Slots(1, 4),
    )
    return duels, records


async def test_duels_start_only_for_own_users_at_the_adaptive_rate(tmp_path: Path) -> None:
    spawned: list[Coroutine[Any, Any, None]] = []
    duels, _ = _duels(tmp_path, FakeConnection(), 1.0, spawned)
    req = CompletionRequest(prompt="q", max_tokens=4)
    own = Routing("r1", 0, now_ms() + 10_000, "")
    forwarded = Routing("r2", 1, now_ms() + 10_000, "peer")
    assert duels.rate_for("never-seen") == pytest.approx(1.0)  # no evidence: the full rate
    duels.maybe_start(req, MODEL, forwarded, "a", "answer")  # a peer's user: its origin duels it
    duels.maybe_start(req, MODEL, own, "a", "answer")
    assert len(spawned) == 1
    for coro in spawned:
        coro.close()
    off, _ = _duels(tmp_path / "off", FakeConnection(), 0.0, spawned)
    off.maybe_start(req, MODEL, own, "a", "answer")
    assert len(spawned) == 1  # duel_rate 0: nothing


async def test_a_judge_signs_publishes_and_answers_its_verdict(tmp_path: Path) -> None:
    nc = FakeConnection()
    spawned: list[Any] = []
    duels, records = _duels(tmp_path, nc, 0.5, spawned)

    async def prefers_b(engine: Any, model: str, req: CompletionRequest, a: Any, b: Any) -> Judgement:
        return Judgement(0.1, 0.9, "llm")

    duels.judge_fn = prefers_b
    ask = {
        "duel_id": "r1-duel",
        "request_id": "r1",
        "model": MODEL,
        "request": {"prompt": "q", "max_tokens": 4},
        "a": "x",
        "b": "y",
        "answer_a": "bad",
        "answer_b": "good",
    }
    await duels._judge(Msg(nc, judge_subject("origin"), "_INBOX.asker", json.dumps(ask).encode()))  # type: ignore[arg-type]
    [verdict] = records.published
    assert isinstance(verdict, Verdict) and verdict.winner == "b" and verdict.judge == "origin"
    assert verdict.judge_key == duels.identity.public_key and verdict.signatures_valid()
    assert Verdict.model_validate_json(nc.to("_INBOX.asker")[0].data).duel_id == "r1-duel"
    # a duel it is a party to, or for a model it does not serve, gets an explicit refusal
    await duels._judge(Msg(nc, "j", "_INBOX.asker", json.dumps({**ask, "a": "origin"}).encode()))  # type: ignore[arg-type]
    assert "error" in json.loads(nc.to("_INBOX.asker")[1].data)
    assert len(records.published) == 1 and duels.judged == 1


# ---- Canaries -----------------------------------------------------------------------------------


def _canaries(
    entry: str | None, spawned: list[Any], ledger: Ledger | None = None, slots: int = 1000
) -> Canaries:
    peers = PeerTable("me", 3.5, 64, rng=random.Random(1))
    for name in ("a", "b"):
        peers.update(_beat_of(name))
    return Canaries(
        name="me",
        config=CanaryConfig(entry_url=entry, rate=0.5, rate_min=0.01),
        rng=random.Random(3),
        spawn=spawned.append,
        peers=peers,
        ledger=ledger or Ledger(),
        slots=Slots(slots, 4),
        audit=lambda *args: None,
    )


def test_canaries_follow_user_requests_at_a_rate_set_by_what_is_unknown() -> None:
    ledger = Ledger()
    spawned: list[Coroutine[Any, Any, None]] = []
    canaries = _canaries("nats://hub:4222", spawned, ledger)
    assert canaries.rate_for(MODEL) == pytest.approx(0.5)  # nothing known about a and b
    proven = DuelEvidence(fought=40.0, bad=0.0)
    ledger.view.evidence.duels.update(a=proven, b=proven)
    assert canaries.rate_for(MODEL) == pytest.approx(0.01)  # both proven good: the steady rate
    ledger.view.evidence.duels["b"] = DuelEvidence(fought=40.0, bad=30.0)  # proven bad: the hubs' job
    assert canaries.rate_for(MODEL) == pytest.approx(0.01)
    ledger.view.evidence.duels["b"] = DuelEvidence(fought=40.0, bad=6.0)  # a known suspect: duels' job
    assert canaries.rate_for(MODEL) == pytest.approx(0.01)
    ledger.view.evidence.duels["b"] = DuelEvidence(fought=1.0, bad=0.0)  # a newcomer
    assert canaries.rate_for(MODEL) > 0.3

    req = CompletionRequest(prompt="what is the capital of France", max_tokens=8, temperature=0.0)
    for i in range(200):
        canaries.observe(req, MODEL, Routing(f"r{i}", 0, now_ms() + 10_000, ""))
        canaries.observe(req, MODEL, Routing(f"f{i}", 1, now_ms() + 10_000, "peer"))  # not a user's
    assert 30 < len(spawned) < 120 and len(canaries.samples) == 64
    for coro in spawned:
        coro.close()
    busy: list[Coroutine[Any, Any, None]] = []
    small = _canaries("nats://hub:4222", busy, slots=2)
    for i in range(100):
        small.observe(req, MODEL, Routing(f"r{i}", 0, now_ms() + 10_000, ""))
    # only on spare capacity: these 2 slots and the peers' 4 + 4 take canaries while under a quarter full
    assert len(busy) == 3
    for coro in busy:
        coro.close()
    loaded: list[Coroutine[Any, Any, None]] = []
    idle_here = _canaries("nats://hub:4222", loaded, slots=2)
    for name in ("a", "b"):  # the peers are full: no canary, even with this agent idle
        idle_here.peers.update(_beat_of(name).model_copy(update={"running": 4}))
    for i in range(50):
        idle_here.observe(req, MODEL, Routing(f"r{i}", 0, now_ms() + 10_000, ""))
    assert loaded == []


def test_no_canaries_without_an_entry_point() -> None:
    spawned: list[Coroutine[Any, Any, None]] = []
    canaries = _canaries(None, spawned)
    for i in range(50):
        canaries.observe(
            CompletionRequest(prompt="q", max_tokens=4), MODEL, Routing(f"r{i}", 0, now_ms() + 9000, "")
        )
    assert spawned == [] and not canaries.samples


async def test_a_canary_to_an_unreachable_entry_point_fails_quietly_and_backs_off() -> None:
    from wwwserve.broker.process import free_port

    canaries = _canaries(f"nats://127.0.0.1:{free_port()}", [])
    canaries._in_flight = 1
    await canaries._send(MODEL, CompletionRequest(prompt="q", max_tokens=4))
    assert canaries.sent == 0 and canaries._in_flight == 0
    assert canaries._entry_retry_at > 0  # no new connection attempt per canary for a while
