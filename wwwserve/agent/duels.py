"""Duel-and-judge: an origin has some requests served twice and a third provider judges the pair.

Origin (the agent whose user sent the request), with an adaptive probability (`--duel-rate` for a
server with little evidence or recent losses, `--duel-rate-min` for a proven one), after the user got
the answer of provider A: sends the same request (id `<id>-duel`, not delivered to anyone) to a
second provider B, then asks a judge J (not A, B or the origin; drawn by stake x judging weight x
quality) on `llm.duel.judge.<J>` to compare. J answers with a signed verdict and publishes it on
`llm.duel.verdict`. A verdict that is not a tie (and some that are) goes to two more judges: a panel
of three, whose minority loses judging weight. Every ledger applies every verdict, weighted by its
judge's weight: duel evidence (routing quality), Elo, and a stake penalty (docs/duels.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from wwwserve.agent.admission import Slots
from wwwserve.agent.judging import Judgement, judge
from wwwserve.agent.peers import PeerTable
from wwwserve.agent.ports import LedgerReader, Link, RecordSink, Spawn
from wwwserve.agent.settings import ProviderSettings
from wwwserve.agent.spare import SPARE_POLL_S, SPARE_WAIT_S, has_spare
from wwwserve.engines.base import Engine
from wwwserve.ledger.evidence import PANEL_SIZE
from wwwserve.ledger.identity import Identity
from wwwserve.ledger.records import Verdict
from wwwserve.policies.default import stake_factor
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, encode
from wwwserve.protocol.headers import Routing, now_ms
from wwwserve.protocol.messages import CompletionRequest, parse_request

log = structlog.get_logger(__name__)

JUDGE_PREFIX = "llm.duel.judge"
DUEL_TIMEOUT_S = 60.0
SUSPECT_BAD_RATE = 0.05  # a server losing this share of its duels or more is dueled at the full rate

# (engine, model, request, (a, answer_a), (b, answer_b)) -> judgement
JudgeFn = Callable[[Engine, str, CompletionRequest, tuple[str, str], tuple[str, str]], Awaitable[Judgement]]


async def honest_judge(
    engine: Engine, model: str, req: CompletionRequest, a: tuple[str, str], b: tuple[str, str]
) -> Judgement:
    """The judge every agent runs: the answers alone decide, not who gave them."""
    return await judge(engine, model, req, a[1], b[1])


def judge_subject(provider: str) -> str:
    """Where an origin asks `provider` to judge a duel."""
    return f"{JUDGE_PREFIX}.{provider}"


@dataclass(frozen=True)
class DuelConfig:
    """The provider settings the duels read (built with `of`: the defaults are the settings' own)."""

    duel_rate: float
    duel_rate_min: float
    judge_check_rate: float

    @classmethod
    def of(cls, s: ProviderSettings) -> DuelConfig:
        """The duel section of a provider's settings."""
        return cls(s.duel_rate, s.duel_rate_min, s.judge_check_rate)


class Duels:
    """Both sides of duels for one provider: starting them as origin, judging them as judge.

    Receives its name, settings section, connection (`link`), RNG and `spawn`; the peer table (who
    serves a model), the ledger (evidence and stakes), the record sink (settle the duel copy's
    receipt, publish verdicts) with the identity verdicts are signed with; and, to judge, the models
    it serves, its engine and its slots (judging takes a slot like a request).

    `judge_fn` compares two answers (wwwserve/agent/judging.py); the duel benchmark swaps in a lying
    judge for one agent to measure how fast panels take its weight away.
    """

    def __init__(
        self,
        *,
        name: str,
        config: DuelConfig,
        link: Link,
        rng: random.Random,
        spawn: Spawn,
        peers: PeerTable,
        ledger: LedgerReader,
        records: RecordSink,
        identity: Identity,
        models: Collection[str],
        engine: Engine,
        slots: Slots,
    ) -> None:
        self.name = name
        self.config = config
        self.link = link
        self.rng = rng
        self.spawn = spawn
        self.peers = peers
        self.ledger = ledger
        self.records = records
        self.identity = identity
        self.models = models
        self.engine = engine
        self.slots = slots
        self.started = 0
        self.judged = 0
        self.panels = 0
        self.judge_fn: JudgeFn = honest_judge

    async def subscribe(self) -> None:
        """Judge requests addressed to us."""
        await self.link.nc.subscribe(judge_subject(self.name), cb=self._on_judge)

    def rate_for(self, server: str) -> float:
        """Adaptive duel rate for an answer `server` gave: high while little is known about it or it
        lost recently, `duel_rate_min` once it is proven (the steady cost, docs/duels.md)."""
        s = self.config
        low = min(s.duel_rate_min, s.duel_rate)
        ev = self.ledger.view.evidence
        need = max(ev.unproven(server), min(1.0, ev.bad_rate(server) / SUSPECT_BAD_RATE))
        return low + (s.duel_rate - low) * need

    def maybe_start(
        self, req: CompletionRequest, model: str, routing: Routing, served_by: str, text: str
    ) -> None:
        """Called after a user's request was answered: start a duel with the server's adaptive rate
        (an agent does not audit its own answers: that is what others' canaries and duels are for)."""
        if routing.hops > 0 or served_by == self.name or self.config.duel_rate <= 0:
            return
        if self.rng.random() < self.rate_for(served_by):
            self.spawn(self._duel(req, model, routing.request_id, served_by, text))

    def audit(self, req: CompletionRequest, model: str, request_id: str, served_by: str, text: str) -> None:
        """Duel a canary's answer (wwwserve/agent/canary.py): always, the canary was sent for it."""
        if served_by != self.name:
            self.spawn(self._duel(req, model, request_id, served_by, text))

    def _pick(self, names: list[str], weight: Callable[[str], float]) -> str | None:
        if not names:
            return None
        return self.rng.choices(names, weights=[max(weight(n), 1e-6) for n in names], k=1)[0]

    def _second_weight(self, name: str) -> float:
        """B: the providers we know least about first, everyone sometimes (a starved one can recover)."""
        view = self.ledger.view
        return stake_factor(view.stakes.get(name, 0.0)) * (0.25 + view.evidence.uncertainty(name))

    def _judge_weight(self, name: str) -> float:
        """J: judges that agree with panels, whose own answers are good, with stake."""
        view = self.ledger.view
        ev = view.evidence
        return stake_factor(view.stakes.get(name, 0.0)) * ev.judge_weight(name) * ev.quality(name)

    async def _ask(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[dict[str, Any] | None, str]:
        """Send a request and wait for its final message; returns (body, receipt header)."""
        nc = self.link.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(subject, payload, reply=inbox, headers=headers)
            end = time.monotonic() + DUEL_TIMEOUT_S
            while (left := end - time.monotonic()) > 0:
                try:
                    m = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                mh = m.headers or {}
                if h.ACK in mh:
                    continue
                if mh.get(h.NATS_STATUS) == "503" or mh.get(h.STATUS, "200") != "200":
                    return None, ""
                if mh.get(h.FINAL) == "true":
                    body: dict[str, Any] = decode(m.data, Codec.MSGPACK)
                    return body, mh.get("Wwwserve-Receipt", "")
        finally:
            await sub.unsubscribe()
        return None, ""

    async def _duel(self, req: CompletionRequest, model: str, request_id: str, a: str, text_a: str) -> None:
        me = self.name
        serving = await self._spare_peers(model, a)
        b = self._pick([n for n in serving if n not in (a, me)], self._second_weight)
        if b is None:
            return
        j = self._pick([n for n in serving if n not in (a, b, me)], self._judge_weight)
        if j is None:
            return
        self.started += 1
        duel_id = f"{request_id}-duel"
        body = req.replace(stream=False).to_wire()
        routing = Routing(duel_id, 1, now_ms() + int(DUEL_TIMEOUT_S * 1000), me)
        headers = {**routing.to_headers(), h.CONTENT_TYPE: Codec.MSGPACK.value}
        reply, receipt = await self._ask(
            subjects.direct_subject(b, model), encode(body, Codec.MSGPACK), headers
        )
        if reply is None:
            log.info("duel.no_second_answer", provider=me, b=b)
            return
        await self.records.settle(b, duel_id, receipt)  # the origin pays for the duel copy too
        ask = {
            "duel_id": duel_id,
            "request_id": request_id,
            "model": model,
            "request": body,
            "a": a,
            "b": b,
            "answer_a": text_a,
            "answer_b": str(reply.get("text", "")),
        }
        first = await self._verdict(j, ask)
        if first is None:
            return
        if first.winner == "tie" and self.rng.random() >= self.config.judge_check_rate:
            return
        # a panel: two more judges see the same pair; a judge outvoted by the other two dissents
        others = [n for n in serving if n not in (a, b, j, me)]
        panel = []
        for _ in range(PANEL_SIZE - 1):
            k = self._pick([n for n in others if n not in panel], self._judge_weight)
            if k is not None:
                panel.append(k)
        if len(panel) == PANEL_SIZE - 1:
            self.panels += 1
            await asyncio.gather(*(self._verdict(k, ask) for k in panel))

    async def _spare_peers(self, model: str, a: str) -> list[str]:
        """Providers of `model` to draw B and the judges from: those with spare capacity, waited for up to
        SPARE_WAIT_S (verification yields to users' requests at peaks); then everyone, so that a network
        that stays busy is still verified at its rates."""
        end = time.monotonic() + SPARE_WAIT_S
        while True:
            peers = self.peers.serving(model)
            spare = [p.beat.name for p in peers if has_spare(p) and p.beat.name not in (a, self.name)]
            if len(spare) >= 2:
                return spare
            if time.monotonic() >= end:
                log.info("duel.no_spare_capacity", provider=self.name, a=a, waited_s=SPARE_WAIT_S)
                return [p.beat.name for p in peers]
            await asyncio.sleep(SPARE_POLL_S)

    async def _verdict(self, judge_name: str, ask: dict[str, Any]) -> Verdict | None:
        """Ask one judge for its signed verdict and keep it."""
        try:
            msg = await self.link.nc.request(
                judge_subject(judge_name), json.dumps(ask).encode(), timeout=DUEL_TIMEOUT_S
            )
            verdict = Verdict.model_validate_json(msg.data)
        except (TimeoutError, nats.errors.Error, ValidationError) as exc:
            log.info("duel.no_verdict", provider=self.name, judge=judge_name, error=repr(exc))
            return None
        log.info("duel.verdict", provider=self.name, judge=judge_name, a=ask["a"], won=verdict.winner)
        return verdict

    async def _on_judge(self, msg: Msg) -> None:
        self.spawn(self._judge(msg))

    async def _judge(self, msg: Msg) -> None:
        nc = self.link.nc
        try:
            ask = json.loads(msg.data)
            req = parse_request(ask["request"])
            model, a, b = str(ask["model"]), str(ask["a"]), str(ask["b"])
            if model not in self.models or self.name in (a, b):
                raise ValueError("cannot judge this duel")
            async with self.slots.acquire():
                j = await self.judge_fn(
                    self.engine, model, req, (a, str(ask["answer_a"])), (b, str(ask["answer_b"]))
                )
        except Exception as exc:  # a judge that cannot judge says so; the origin gives up on the duel
            if msg.reply:
                await nc.publish(msg.reply, json.dumps({"error": str(exc)}).encode())
            return
        verdict = Verdict(
            duel_id=str(ask["duel_id"]),
            request_id=str(ask["request_id"]),
            model=model,
            a=a,
            b=b,
            winner=j.winner,
            score_a=round(j.score_a, 4),
            score_b=round(j.score_b, 4),
            method=j.method,
            judge=self.name,
            judge_key=self.identity.public_key,
            ts_ms=now_ms(),
        ).signed(self.identity)
        self.judged += 1
        data = verdict.model_dump_json().encode()
        await self.records.publish(verdict)
        if msg.reply:
            await nc.publish(msg.reply, data)
