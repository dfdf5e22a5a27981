"""Balances as a pure function of a set of records: every agent with the same set agrees.

Rules (docs/credits.md):
- A name is bound to the key of its earliest valid record (by ts, then id); records naming it with
  another key are invalid.
- Every bound identity starts with INITIAL_GRANT credits.
- Records are applied in canonical order (ts_ms, id). A receipt is valid when both signatures check,
  server != origin, and the origin's spendable balance (balance - stake) covers its amount: a later
  receipt that would overdraw is invalid, so an origin cannot spend the same credits twice.
- A stake record sets its owner's locked amount; it is valid when the owner's balance covers it.
- Credits only move from origin to server; the total is grants x identities.

Agents fold the ledger stream in the hubs' order (`apply`, one record after the other: every reader
of the same stream agrees); `compute` folds a set in canonical order (tests, tools). A record id is
counted once: the stream deduplicates re-publications within its window, and the fold remembers the
ids of the last `DEDUP_WINDOW_MS` (by record time) and refuses records older than that window as
stale, so the state needed to deduplicate stays bounded however long the ledger grows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from wwwserve.ledger.evidence import Evidence
from wwwserve.ledger.records import (
    DUEL_PENALTY,
    ELO_K,
    ELO_START,
    INITIAL_GRANT,
    Receipt,
    Record,
    Stake,
    Verdict,
)


@dataclass
class LedgerView:
    """What a set of records adds up to."""

    balances: dict[str, float] = field(default_factory=dict)
    stakes: dict[str, float] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    reputation: dict[str, float] = field(default_factory=dict)  # Elo from duel verdicts
    evidence: Evidence = field(default_factory=Evidence)  # bad-answer rates and judges' weights
    routing: dict[str, float] = field(default_factory=dict)  # routing_factor by name, until the next record
    version: int = 0  # records applied: what was derived from an older version is stale
    valid: list[str] = field(default_factory=list)  # valid record ids within the dedupe window
    invalid: dict[str, str] = field(default_factory=dict)  # record id -> why (within the window)
    receipts: int = 0  # valid receipts ever
    recent: dict[str, int] = field(default_factory=dict)  # id -> ts_ms of records within the window
    max_ts: int = 0  # newest record time seen
    pruned_at: int = 0  # max_ts when `recent` was last pruned

    def spendable(self, name: str) -> float:
        """Balance not locked in stake."""
        return self.balances.get(name, 0.0) - self.stakes.get(name, 0.0)


def _parties(r: Record) -> list[tuple[str, str]]:
    if isinstance(r, Receipt):
        return [(r.server, r.server_key), (r.origin, r.origin_key)]
    if isinstance(r, Verdict):
        return [(r.judge, r.judge_key)]
    return [(r.provider, r.key)]


def order_key(r: Record) -> tuple[int, str]:
    """The canonical order records are applied in."""
    return (r.ts_ms, r.id)


def compute(records: Iterable[Record], signatures_checked: bool = False) -> LedgerView:
    """Apply `records` in canonical order; the result does not depend on the iteration order.

    `signatures_checked` skips re-verifying what the caller verified on arrival (the costly part).
    """
    view = LedgerView()
    for r in sorted({r.id: r for r in records}.values(), key=order_key):
        apply(view, r, signatures_checked)
    return view


DEDUP_WINDOW_MS = 600_000  # = the ledger stream's duplicate window


def _remember(view: LedgerView, r: Record) -> bool:
    """Note `r`'s id; False when it was counted already or is older than the dedupe window."""
    if r.id in view.recent:
        return False
    if r.ts_ms + DEDUP_WINDOW_MS < view.max_ts:
        view.invalid[r.id] = "stale: older than the dedupe window"
        return False
    view.recent[r.id] = r.ts_ms
    if r.ts_ms > view.max_ts:
        view.max_ts = r.ts_ms
        if view.max_ts - view.pruned_at > DEDUP_WINDOW_MS // 10:
            _prune(view)
    return True


def _prune(view: LedgerView) -> None:
    """Forget ids (and their valid/invalid notes) older than the window: they can only come back stale."""
    cutoff = view.max_ts - DEDUP_WINDOW_MS
    view.pruned_at = view.max_ts
    view.recent = {i: t for i, t in view.recent.items() if t >= cutoff}
    view.valid = [i for i in view.valid if i in view.recent]
    view.invalid = {i: why for i, why in view.invalid.items() if i in view.recent}


def apply(view: LedgerView, r: Record, signature_checked: bool = False) -> None:
    """Apply one record after every record before it (in the stream, or in canonical order)."""
    view.routing.clear()
    view.version += 1
    if not signature_checked and not r.signatures_valid():
        view.invalid[r.id] = "bad signature"  # not remembered: a forgery cannot block the real record
        return
    if not _remember(view, r):
        return
    parties = _parties(r)
    if any(name in view.keys and view.keys[name] != key for name, key in parties):
        view.invalid[r.id] = "key does not match the name's bound key"
        return
    for name, key in parties:
        if name not in view.keys:
            view.keys[name] = key
            view.balances[name] = INITIAL_GRANT
    if isinstance(r, Receipt):
        if r.server == r.origin:
            view.invalid[r.id] = "server and origin are the same"
            return
        if view.spendable(r.origin) + 1e-9 < r.amount:
            view.invalid[r.id] = "overdraft"
            return
        view.balances[r.origin] = round(view.balances[r.origin] - r.amount, 6)
        view.balances[r.server] = round(view.balances[r.server] + r.amount, 6)
        view.receipts += 1
    elif isinstance(r, Verdict):
        if r.judge in (r.a, r.b) or r.a == r.b:
            view.invalid[r.id] = "a judge cannot judge its own duel"
            return
        _apply_verdict(view, r)
    elif isinstance(r, Stake):
        if r.amount > view.balances[r.provider] + 1e-9:
            view.invalid[r.id] = "stake exceeds balance"
            return
        view.stakes[r.provider] = r.amount
    view.valid.append(r.id)


def reputation_factor(elo: float) -> float:
    """Routing weight from Elo: 1.0 at the start rating, towards 0 below, towards 2 above."""
    return 2.0 / (1.0 + 10 ** ((ELO_START - elo) / 400.0))


def routing_factor(view: LedgerView, name: str) -> float:
    """How much a peer's answers are trusted for routing: its Elo factor times its duel quality
    (computed once per peer between two records: every request's decision reads it)."""
    f = view.routing.get(name)
    if f is None:
        f = reputation_factor(view.reputation.get(name, ELO_START)) * view.evidence.quality(name)
        view.routing[name] = f
    return f


def _apply_verdict(view: LedgerView, v: Verdict) -> None:
    """Duel evidence, Elo for both duelists and a stake penalty for the loser, each scaled by the
    judge's weight (a judge often outvoted by panels moves little)."""
    weight = view.evidence.add_verdict(v.duel_id, v.judge, v.a, v.b, v.winner)
    ra, rb = view.reputation.get(v.a, ELO_START), view.reputation.get(v.b, ELO_START)
    expected_a = 1.0 / (1.0 + 10 ** ((rb - ra) / 400.0))
    score = {"a": 1.0, "b": 0.0, "tie": 0.5}[v.winner]
    view.reputation[v.a] = round(ra + weight * ELO_K * (score - expected_a), 3)
    view.reputation[v.b] = round(rb - weight * ELO_K * (score - expected_a), 3)
    if v.winner == "tie":
        return
    winner, loser = (v.a, v.b) if v.winner == "a" else (v.b, v.a)
    if loser not in view.balances or winner not in view.balances:
        return  # a duelist without an identity in the ledger has no stake to lose
    penalty = round(min(weight * DUEL_PENALTY, view.stakes.get(loser, 0.0)), 6)
    if penalty <= 0:
        return
    view.stakes[loser] = round(view.stakes[loser] - penalty, 6)
    view.balances[loser] = round(view.balances[loser] - penalty, 6)
    view.balances[winner] = round(view.balances[winner] + penalty, 6)
