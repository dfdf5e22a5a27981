"""Duel-and-judge: a provider that serves garbage loses reputation, stake and (almost all) traffic; a judge
outvoted by panels loses its judging weight."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from wwwserve.agent.judging import Judgement, similarity
from wwwserve.client import Client
from wwwserve.ledger.book import compute, routing_factor
from wwwserve.ledger.evidence import WEIGHT_LOST
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
    fast: dict[str, Any] = dict(engine="sim", model=[MODEL], stake=200.0, max_concurrency=4)
    # The origin's own engine is slow, so it forwards its users' requests to the three peers.
    origin = await net.add_provider(
        "origin",
        engine="sim",
        model=[MODEL],
        duel_rate=0.5,
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
            if not origin.agent.busy:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        view = origin.agent.credits.ledger.view
        rep, stakes = view.reputation, view.stakes
        # proven honest peers are dueled at the low rate once ~18 verdicts found no fault: ~10 of 50
        assert origin.agent.duels.started >= 6
        assert rep["cheater"] < min(rep["honest1"], rep["honest2"]), rep
        assert stakes["cheater"] < min(stakes["honest1"], stakes["honest2"]), stakes

        origin.agent.duels.config = replace(origin.agent.duels.config, duel_rate=0.0)
        served = Counter(await asyncio.gather(*(one(100 + i) for i in range(60))))
    peers = {n: served.get(n, 0) for n in ("honest1", "honest2", "cheater")}
    # starved, not just ranked last: duel quality, not the Elo gap, sets its routing weight
    assert peers["cheater"] <= 0.05 * 60 < min(peers["honest1"], peers["honest2"]), (peers, served, rep)
    assert view.evidence.quality("cheater") < 0.01 < view.evidence.quality("honest1"), view.evidence.duels


def _verdict(judge: Any, duel: str, a: str, b: str, winner: str, ts: int) -> Verdict:
    score = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (1.0, 1.0)}[winner]
    return Verdict(
        duel_id=duel,
        request_id=duel,
        model="m",
        a=a,
        b=b,
        winner=winner,  # type: ignore[arg-type]
        score_a=score[0],
        score_b=score[1],
        method="replay",
        judge=judge.name,
        judge_key=judge.public_key,
        ts_ms=ts,
    ).signed(judge)


def test_a_provider_that_loses_its_duels_is_starved_and_recovers_by_winning() -> None:
    judges = [new_identity(f"j{i}") for i in range(3)]
    records = [_verdict(judges[i % 3], f"d{i}", "cheat", "honest", "b", i + 1) for i in range(3)]
    view = compute(records)
    ev = view.evidence
    assert ev.quality("newcomer") == 1.0 and ev.uncertainty("newcomer") == 1.0  # no evidence: full weight
    assert ev.quality("honest") == 1.0
    assert ev.quality("cheat") < 0.002, ev.duels["cheat"]  # three lost duels: almost nothing
    assert routing_factor(view, "cheat") < 0.002 < routing_factor(view, "honest")
    wins = [_verdict(judges[i % 3], f"w{i}", "cheat", "honest", "tie", 100 + i) for i in range(120)]
    assert compute([*records, *wins]).evidence.quality("cheat") > 0.9  # old losses fade


def test_one_lost_duel_in_ten_keeps_a_provider_below_half_an_honest_one() -> None:
    judges = [new_identity(f"j{i}") for i in range(3)]
    records = []
    for i in range(100):  # a lost duel is not a tie, so a panel of three judges sees it
        panel = judges if i % 10 == 0 else judges[:1]
        winner = "b" if i % 10 == 0 else "tie"
        records += [_verdict(j, f"d{i}", "sloppy", "honest", winner, 10 * i + k) for k, j in enumerate(panel)]
    ev = compute(records).evidence
    assert ev.quality("sloppy") < 0.5 * ev.quality("honest"), ev.duels


def test_a_judge_outvoted_by_panels_loses_its_weight_and_its_verdicts_stop_counting() -> None:
    liar, j1, j2 = (new_identity(n) for n in ("liar", "j1", "j2"))
    records = []
    for i in range(6):  # every panel: two honest judges say the cheater lost, the liar says it won
        records += [
            _verdict(j1, f"d{i}", "cheat", "honest", "b", 10 * i + 1),
            _verdict(liar, f"d{i}", "cheat", "honest", "a", 10 * i + 2),
            _verdict(j2, f"d{i}", "cheat", "honest", "b", 10 * i + 3),
        ]
    view = compute(records)
    assert view.evidence.judge_weight("liar") < WEIGHT_LOST < view.evidence.judge_weight("j1") == 1.0
    assert view.evidence.judges["liar"].verdicts == 6
    # the liar alone can no longer hurt an honest provider
    lies = [_verdict(liar, f"x{i}", "honest", "other", "b", 1000 + i) for i in range(5)]
    assert compute([*records, *lies]).evidence.quality("honest") > 0.85
    fresh = new_identity("fresh")  # the same five verdicts from a judge never outvoted do hurt
    same = [_verdict(fresh, f"x{i}", "honest", "other", "b", 1000 + i) for i in range(5)]
    assert compute([*records, *same]).evidence.quality("honest") < 0.2


@pytest.mark.timeout(240)
async def test_duel_bench_reports_the_named_json_fields() -> None:
    from wwwserve.bench.duels import run_duels

    res = await run_duels(requests_100=48, requests_10=48, requests_honest=48)
    assert set(res["cheater_100"]) >= {"duels_until_share_below_5pct", "share_without_duels", "timeline"}
    assert "duels_until_below_half_honest" in res["cheater_10"]
    assert "verdicts_until_weight_lost" in res["lying_judge"]
    assert 0 < res["extra_generations_per_request"] < 3
    assert 0 <= res["extra_generations_per_request_proven_honest"] < 3 and res["honest"]["duels"] > 0
    # with duels on, a provider answering garbage every time is dueled at once and served almost nothing
    assert res["cheater_100"]["cheater_served_with_duels"] <= 4, res["cheater_100"]["timeline"]
    assert res["cheater_100"]["quality"]["cheater"] < 0.01
