"""Duel-and-judge: an origin has some requests served twice and a third provider judges the pair.

Origin (the agent whose user sent the request), with probability `--duel-rate`, after the user got
the answer of provider A: sends the same request (id `<id>-duel`, not delivered to anyone) to a
second provider B, then asks a judge J (not A, B or the origin; drawn by stake x reputation) on
`llm.duel.judge.<J>` to compare. J answers with a signed verdict and publishes it on
`llm.duel.verdict`; every ledger applies it: Elo reputation for A and B, and the loser pays the
winner a stake penalty (docs/duels.md).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from wwwserve.agent.judging import judge
from wwwserve.ledger.book import reputation_factor
from wwwserve.ledger.records import ELO_START, Verdict
from wwwserve.policies.default import stake_factor
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.codec import Codec, decode, encode
from wwwserve.protocol.headers import Routing, now_ms
from wwwserve.protocol.messages import CompletionRequest, parse_request

if TYPE_CHECKING:
    from wwwserve.agent.agent import Agent

log = structlog.get_logger(__name__)

JUDGE_PREFIX = "llm.duel.judge"
VERDICT_SUBJECT = "llm.duel.verdict"
DUEL_TIMEOUT_S = 60.0


def judge_subject(provider: str) -> str:
    """Where an origin asks `provider` to judge a duel."""
    return f"{JUDGE_PREFIX}.{provider}"


class Duels:
    """Both sides of duels for one agent: starting them as origin, judging them as judge."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.started = 0
        self.judged = 0

    async def subscribe(self) -> None:
        """Judge requests addressed to us, and verdicts for the ledger."""
        await self.agent.nc.subscribe(judge_subject(self.agent.name), cb=self._on_judge)
        await self.agent.nc.subscribe(VERDICT_SUBJECT, cb=self.agent.credits.on_record)

    def maybe_start(
        self, req: CompletionRequest, model: str, routing: Routing, served_by: str, text: str
    ) -> None:
        """Called after a user's request was answered: start a duel with probability duel_rate."""
        a = self.agent
        if routing.hops > 0 or a.settings.duel_rate <= 0 or a.rng.random() >= a.settings.duel_rate:
            return
        a.spawn(self._duel(req, model, routing.request_id, served_by, text))

    def _weighted_pick(self, names: list[str]) -> str | None:
        if not names:
            return None
        view = self.agent.credits.ledger.view
        weights = [
            stake_factor(view.stakes.get(n, 0.0)) * reputation_factor(view.reputation.get(n, ELO_START))
            for n in names
        ]
        return self.agent.rng.choices(names, weights=[max(w, 1e-6) for w in weights], k=1)[0]

    async def _ask(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[dict[str, Any] | None, str]:
        """Send a request and wait for its final message; returns (body, receipt header)."""
        nc = self.agent.nc
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
        agent = self.agent
        serving = [p.beat.name for p in agent.peers.serving(model)]
        b = self._weighted_pick([n for n in serving if n not in (a, agent.name)])
        if b is None:
            return
        j = self._weighted_pick([n for n in serving if n not in (a, b, agent.name)])
        if j is None:
            return
        self.started += 1
        duel_id = f"{request_id}-duel"
        body = req.model_copy(update={"stream": False}).model_dump(exclude_none=True)
        routing = Routing(duel_id, 1, now_ms() + int(DUEL_TIMEOUT_S * 1000), agent.name)
        headers = {**routing.to_headers(), h.CONTENT_TYPE: Codec.MSGPACK.value}
        reply, receipt = await self._ask(
            subjects.direct_subject(b, model), encode(body, Codec.MSGPACK), headers
        )
        if reply is None:
            log.info("duel.no_second_answer", provider=agent.name, b=b)
            return
        await agent.credits.settle(b, duel_id, receipt)  # the origin pays for the duel copy too
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
        try:
            msg = await agent.nc.request(judge_subject(j), json.dumps(ask).encode(), timeout=DUEL_TIMEOUT_S)
            verdict = Verdict.model_validate_json(msg.data)
        except (TimeoutError, nats.errors.Error, ValidationError) as exc:
            log.info("duel.no_verdict", provider=agent.name, judge=j, error=repr(exc))
            return
        agent.credits.ledger.add(verdict)
        log.info("duel.verdict", provider=agent.name, a=a, b=b, judge=j, winner=verdict.winner)

    async def _on_judge(self, msg: Msg) -> None:
        self.agent.spawn(self._judge(msg))

    async def _judge(self, msg: Msg) -> None:
        agent = self.agent
        try:
            ask = json.loads(msg.data)
            req = parse_request(ask["request"])
            model, a, b = str(ask["model"]), str(ask["a"]), str(ask["b"])
            if model not in agent.models.values() or agent.name in (a, b):
                raise ValueError("cannot judge this duel")
            async with agent.slots.acquire():
                j = await judge(agent.engine, model, req, str(ask["answer_a"]), str(ask["answer_b"]))
        except Exception as exc:  # a judge that cannot judge says so; the origin gives up on the duel
            if msg.reply:
                await agent.nc.publish(msg.reply, json.dumps({"error": str(exc)}).encode())
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
            judge=agent.name,
            judge_key=agent.credits.identity.public_key,
            ts_ms=now_ms(),
        ).signed(agent.credits.identity)
        self.judged += 1
        agent.credits.ledger.add(verdict)
        data = verdict.model_dump_json().encode()
        await agent.nc.publish(VERDICT_SUBJECT, data)
        if msg.reply:
            await agent.nc.publish(msg.reply, data)
