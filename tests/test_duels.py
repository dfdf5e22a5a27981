"""Duel-and-judge between real agents: a provider that serves garbage loses reputation, stake, traffic."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from wwwserve.agent.judging import Judgement, similarity
from wwwserve.client import Client
from wwwserve.ledger.book import compute
from wwwserve.ledger.identity import new_identity
from wwwserve.ledger.records import DUEL_PENALTY, ELO_START, INITIAL_GRANT, Stake, Verdict
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"


def test_judgement_and_similarity() -> None:
    assert similarity("a b c", "a b c") == 1.0 and similarity("a b c", "x y z") == 0.0
    assert Judgement(0.9, 0.1, "replay").winner == "a" and Judgement(0.5, 0.52, "replay").winner == "tie"


def test_verdicts_move_reputation_and_stake() -> None:
    a, b, j = new_identity("a"), new_identity("b"), new_identity("j")
    stakes = [Stake(provider=p.name, key=p.public_key, amount=100, ts_ms=1).signed(p) for p in (a, b)]
    verdict = Verdict(
        duel_id="d1",
        request_id="r",
        model="m",
        a="a",
        b="b",
        winner="a",
        score_a=1.0,
        score_b=0.0,
        method="replay",
        judge="j",
        judge_key=j.public_key,
        ts_ms=2,
    ).signed(j)
    view = compute([*stakes, verdict])
    assert view.reputation["a"] > ELO_START > view.reputation["b"]
    assert view.stakes["b"] == 100 - DUEL_PENALTY and view.balances["a"] == INITIAL_GRANT + DUEL_PENALTY
    self_judged = verdict.model_copy(update={"judge": "a", "duel_id": "d2"})
    assert not self_judged.signatures_valid()


@pytest.mark.timeout(240)
async def test_a_cheater_loses_reputation_stake_and_traffic(net: LocalNetwork) -> None:
    fast: dict[str, Any] = dict(
        engine="sim", model=[MODEL], stake=200.0, ledger_sync_s=1.0, max_concurrency=4
    )
    # The origin's own engine is slow, so it forwards its users' requests to the three peers.
    origin = await net.add_provider(
        "origin",
        engine="sim",
        model=[MODEL],
        duel_rate=0.5,
        ledger_sync_s=1.0,
        engine_opt={"decode_tpot_ms": "400"},
        max_concurrency=1,
        max_queue=0,
    )
    await net.add_provider("honest1", engine_opt={"decode_tpot_ms": "5"}, **fast)
    await net.add_provider("honest2", engine_opt={"decode_tpot_ms": "5"}, **fast)
    await net.add_provider("cheater", engine_opt={"decode_tpot_ms": "5", "corrupt": "1.0"}, **fast)
    await asyncio.sleep(2.5)  # stakes published and synced
    body = {"max_tokens": 8, "temperature": 0.0}

    async with Client(origin.url, timeout=60) as c:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> str:
            async with sem:
                r = await c.request(MODEL, {"prompt": f"question number {i}", **body})
                return r.provider

        await asyncio.gather(*(one(i) for i in range(50)))
        for _ in range(100):  # the last duels finish in the background
            if not origin.agent._tasks:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        view = origin.agent.credits.ledger.view
        rep, stakes = view.reputation, view.stakes
        assert origin.agent.duels.started >= 10
        assert rep["cheater"] < min(rep["honest1"], rep["honest2"]), rep
        assert stakes["cheater"] < min(stakes["honest1"], stakes["honest2"]), stakes

        origin.agent.settings.duel_rate = 0.0
        served = Counter(await asyncio.gather(*(one(100 + i) for i in range(60))))
    peers = {n: served.get(n, 0) for n in ("honest1", "honest2", "cheater")}
    assert peers["cheater"] < min(peers["honest1"], peers["honest2"]), (peers, served, rep, stakes)
