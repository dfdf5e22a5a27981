"""`wwwserve bench --duels`: how fast duels starve a cheater, and what happens to a lying judge.

Two scenarios over real agents and real nats-servers. An origin with one slow slot dispatches all its
users' requests (greedy, so judges `replay`), with the adaptive duel rate (1.0 for servers with little
evidence or recent losses, `duel_rate_min` for proven ones). Its peers: four honest providers and a
cheater (`sim` with `corrupt=<share>`):

- `cheater_100`: the cheater answers garbage every time. Reported: duels until its share of the
  origin's traffic stays below 5%.
- `cheater_10`: garbage one time in ten, and a fifth honest provider judges dishonestly (it votes for the
  cheater whenever the cheater is a duelist; the 10% cheater stays in more duels than the 100% one, so
  the liar is tested more often). Reported: duels until the cheater's share stays below half of an
  honest peer's (mean), and the lying judge's verdicts until its judging weight is lost (below
  WEIGHT_LOST of a fresh judge's, in the origin's ledger, for good).

Shares are measured on what users got: first BASELINE requests without duels (each provider's share
with no evidence), then, after each batch of BATCH requests, the share of the next WINDOW requests each
provider served. Cost: extra generations (duel copies + judges' replays) per user
request over the second half of each run, once trust is established.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nats

from wwwserve.agent.credits import read_ledger
from wwwserve.agent.duels import DuelConfig, honest_judge
from wwwserve.agent.judging import Judgement
from wwwserve.agent.settings import ProviderSettings
from wwwserve.client import Client
from wwwserve.engines.base import Engine
from wwwserve.ledger.book import LedgerView, apply
from wwwserve.ledger.evidence import WEIGHT_LOST
from wwwserve.ledger.records import Verdict
from wwwserve.protocol.messages import CompletionRequest
from wwwserve.topology import LocalNetwork, ProviderHandle

MODEL = "duel-model"
DEFAULTS = DuelConfig.of(ProviderSettings())  # what a provider at its defaults duels with
BATCH = 4
WINDOW = 40  # requests a share is measured over
BASELINE = 80  # requests served before duels start: each provider's share without evidence
CHEATER = "cheater"
# greedy (judges replay); the SLO keeps the origin's own slow engine out, so all of it is forwarded
BODY = {"max_tokens": 16, "temperature": 0.0, "slo_ms": 1000}
LIAR = "liar"
HONEST = ("honest1", "honest2", "honest3", "honest4")


def lying_judge(favour: str) -> Callable[..., Any]:
    """A judge that votes for `favour` whenever it is a duelist, and judges honestly otherwise."""

    async def judge_fn(
        engine: Engine, model: str, req: CompletionRequest, a: tuple[str, str], b: tuple[str, str]
    ) -> Judgement:
        if a[0] == favour:
            return Judgement(1.0, 0.0, "replay")
        if b[0] == favour:
            return Judgement(0.0, 1.0, "replay")
        return await honest_judge(engine, model, req, a, b)

    return judge_fn


@dataclass
class _Run:
    """What one scenario recorded, batch by batch."""

    served: list[list[str]] = field(default_factory=list)  # providers that served each batch
    duels: list[int] = field(default_factory=list)  # duels started before each batch
    generations: list[int] = field(default_factory=list)  # duel copies + judge replays before each batch


def _shares_after(run: _Run, k: int) -> dict[str, float] | None:
    """Each provider's share of the WINDOW requests served from batch k on (None: not enough left)."""
    batches = WINDOW // BATCH
    if k + batches > len(run.served):
        return None
    names = [n for batch in run.served[k : k + batches] for n in batch if n != "origin"]
    if not names:
        return {}
    return {n: names.count(n) / len(names) for n in set(names)}


def _duels_until(run: _Run, holds: Callable[[dict[str, float]], bool]) -> int | None:
    """Duels started before the first batch from which on `holds` is true of every later window."""
    k = _batch_from(run, holds)
    return None if k is None else run.duels[k]


def _requests_until(run: _Run, holds: Callable[[dict[str, float]], bool]) -> int | None:
    """User requests (with duels on) before the first batch from which on `holds` stays true."""
    k = _batch_from(run, holds)
    return None if k is None else k * BATCH


def _batch_from(run: _Run, holds: Callable[[dict[str, float]], bool]) -> int | None:
    found: int | None = None
    for k in range(len(run.served)):
        shares = _shares_after(run, k)
        if shares is None:
            break
        if holds(shares):
            if found is None:
                found = k
        else:
            found = None
    return found


def _verdicts_until_weight_lost(view_records: list[Any], judge: str) -> int | None:
    """Replay the ledger stream: the judge's verdict count when its weight fell for good."""
    view = LedgerView()
    lost_at: int | None = None
    for r in view_records:
        apply(view, r, signature_checked=True)
        ev = view.evidence.judges.get(judge)
        if ev is None:
            continue
        if ev.weight < WEIGHT_LOST:
            if lost_at is None:
                lost_at = ev.verdicts
        else:
            lost_at = None
    return lost_at


async def _scenario(
    corrupt: float, liar: bool, requests: int, duel_rate: float, duel_rate_min: float
) -> tuple[_Run, dict[str, Any]]:
    run = _Run()
    async with LocalNetwork() as net:
        # canaries enter at the hub's client port, as in a deployment (docs/duels.md, "Routes")
        honest: dict[str, Any] = dict(
            engine="sim", model=[MODEL], stake=200.0, max_concurrency=8, entry_url=net.hub_url
        )
        origin = await net.add_provider(
            "origin",
            engine="sim",
            model=[MODEL],
            entry_url=net.hub_url,
            duel_rate=duel_rate,
            duel_rate_min=duel_rate_min,
            max_concurrency=1,
            max_queue=0,
            engine_opt={"decode_tpot_ms": "200"},
        )
        names = [*HONEST, *([LIAR] if liar else [])]
        for name in names:
            await net.add_provider(name, engine_opt={"decode_tpot_ms": "2"}, **honest)
        await net.add_provider(CHEATER, engine_opt={"decode_tpot_ms": "2", "corrupt": str(corrupt)}, **honest)
        if liar:
            net.providers[LIAR].agent.duels.judge_fn = lying_judge(CHEATER)
        names_all = [*names, CHEATER]
        for _ in range(200):  # every stake published and synced: all start with the same weight
            if all(n in origin.agent.credits.ledger.view.stakes for n in names_all):
                break
            await asyncio.sleep(0.05)
        providers = list(net.providers.values())
        async with Client(origin.url, timeout=60) as c:
            duels = origin.agent.duels
            dueling, duels.config = duels.config, replace(duels.config, duel_rate=0.0)
            before = await asyncio.gather(
                *(c.request(MODEL, {"prompt": f"warm-up {i}", **BODY}) for i in range(BASELINE))
            )
            duels.config = dueling
            for start in range(0, requests, BATCH):
                run.duels.append(origin.agent.duels.started)
                run.generations.append(_generations(origin, providers))
                replies = await asyncio.gather(
                    *(
                        c.request(MODEL, {"prompt": f"question {i}", **BODY})
                        for i in range(start, start + BATCH)
                    )
                )
                run.served.append([r.provider for r in replies])
                await _settle(origin)
        view = origin.agent.credits.ledger.view
        detail: dict[str, Any] = {
            "corrupt": corrupt,
            "user_requests": requests,
            "duels": sum(h.agent.duels.started for h in providers),
            "canaries": sum(h.agent.canaries.sent for h in providers),
            "panels": origin.agent.duels.panels,
            "verdicts": sum(j.verdicts for j in view.evidence.judges.values()),
            "quality": {n: round(view.evidence.quality(n), 4) for n in [*names, CHEATER]},
            "judge_weight": {n: round(view.evidence.judge_weight(n), 3) for n in [*names, CHEATER]},
            "served": {h.name: h.agent.stats.served for h in providers},
            "share_without_duels": {
                n: round(sum(r.provider == n for r in before) / BASELINE, 3) for n in [*names, CHEATER]
            },
            "stakes": {n: view.stakes.get(n) for n in names_all},
            # per batch: duels started before it, and how many of its requests the cheater served
            "timeline": [[d, batch.count(CHEATER)] for d, batch in zip(run.duels, run.served, strict=True)],
            "cheater_served_with_duels": sum(batch.count(CHEATER) for batch in run.served),
        }
        if liar:
            nc = await nats.connect(net.hub_url)
            records = await read_ledger(nc)
            await nc.close()
            detail["liar_verdicts"] = sum(1 for r in records if isinstance(r, Verdict) and r.judge == LIAR)
            detail["liar_weight_lost_after"] = _verdicts_until_weight_lost(records, LIAR)
    return run, detail


def _generations(origin: ProviderHandle, providers: list[ProviderHandle]) -> int:
    """Extra generations so far: every canary, every duel copy (one per duel), every judge's replay."""
    return sum(h.agent.duels.started + h.agent.duels.judged + h.agent.canaries.sent for h in providers)


async def _settle(origin: ProviderHandle, limit_s: float = 15.0) -> None:
    """Wait for the origin's duels of the last batch (copies, judges, panels) to finish."""
    for _ in range(int(limit_s / 0.02)):
        if not origin.agent.busy:
            return
        await asyncio.sleep(0.02)


def _second_half_cost(run: _Run) -> float:
    """Extra generations per user request over the second half of a run (trust established)."""
    half = len(run.generations) // 2
    done = run.generations[-1] - run.generations[half]
    return done / max(1, (len(run.generations) - 1 - half) * BATCH)


async def run_duels(
    requests_100: int = 400,
    requests_10: int = 2400,
    requests_honest: int = 400,
    duel_rate: float = DEFAULTS.duel_rate,
    duel_rate_min: float = DEFAULTS.duel_rate_min,
) -> dict[str, Any]:
    """Both scenarios at the providers' default duel rates; the JSON of `wwwserve bench --duels --json`."""
    run100, d100 = await _scenario(1.0, False, requests_100, duel_rate, duel_rate_min)
    run10, d10 = await _scenario(0.1, True, requests_10, duel_rate, duel_rate_min)

    def below_5pct(shares: dict[str, float]) -> bool:
        return shares.get(CHEATER, 0.0) < 0.05

    def below_half_honest(shares: dict[str, float]) -> bool:
        honest = [shares.get(n, 0.0) for n in HONEST]
        return shares.get(CHEATER, 0.0) < 0.5 * statistics.mean(honest)

    run_honest, d_honest = await _scenario(0.0, False, requests_honest, duel_rate, duel_rate_min)
    cost = [_second_half_cost(run100), _second_half_cost(run10)]
    liar_lost = d10.pop("liar_weight_lost_after", None)
    return {
        "cheater_100": {
            "duels_until_share_below_5pct": _duels_until(run100, below_5pct),
            "requests_until_share_below_5pct": _requests_until(run100, below_5pct),
            **d100,
        },
        "cheater_10": {
            "duels_until_below_half_honest": _duels_until(run10, below_half_honest),
            "requests_until_below_half_honest": _requests_until(run10, below_half_honest),
            **d10,
        },
        "lying_judge": {"verdicts_until_weight_lost": liar_lost, "verdicts": d10.get("liar_verdicts")},
        "extra_generations_per_request": round(statistics.mean(cost), 3),
        # every peer honest (the "cheater" answers well): what verification costs once all are proven
        "extra_generations_per_request_proven_honest": round(_second_half_cost(run_honest), 3),
        "honest": {k: d_honest[k] for k in ("duels", "canaries", "served")},
        "extra_generations_per_request_by_scenario": {
            "cheater_100": round(cost[0], 3),
            "cheater_10": round(cost[1], 3),
        },
        "duel_rate": duel_rate,
        "duel_rate_min": duel_rate_min,
    }
