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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from wwwserve.ledger.records import INITIAL_GRANT, Receipt, Record, Stake


@dataclass
class LedgerView:
    """What a set of records adds up to."""

    balances: dict[str, float] = field(default_factory=dict)
    stakes: dict[str, float] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    valid: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # record id -> why

    def spendable(self, name: str) -> float:
        """Balance not locked in stake."""
        return self.balances.get(name, 0.0) - self.stakes.get(name, 0.0)


def _parties(r: Record) -> list[tuple[str, str]]:
    if isinstance(r, Receipt):
        return [(r.server, r.server_key), (r.origin, r.origin_key)]
    return [(r.provider, r.key)]


def compute(records: Iterable[Record]) -> LedgerView:
    """Apply `records` in canonical order; the result does not depend on the iteration order."""
    view = LedgerView()
    ordered = sorted({r.id: r for r in records}.values(), key=lambda r: (r.ts_ms, r.id))
    for r in ordered:
        if not r.signatures_valid():
            view.invalid[r.id] = "bad signature"
            continue
        parties = _parties(r)
        if any(name in view.keys and view.keys[name] != key for name, key in parties):
            view.invalid[r.id] = "key does not match the name's bound key"
            continue
        for name, key in parties:
            if name not in view.keys:
                view.keys[name] = key
                view.balances[name] = INITIAL_GRANT
        if isinstance(r, Receipt):
            if r.server == r.origin:
                view.invalid[r.id] = "server and origin are the same"
                continue
            if view.spendable(r.origin) + 1e-9 < r.amount:
                view.invalid[r.id] = "overdraft"
                continue
            view.balances[r.origin] = round(view.balances[r.origin] - r.amount, 6)
            view.balances[r.server] = round(view.balances[r.server] + r.amount, 6)
        elif isinstance(r, Stake):
            if r.amount > view.balances[r.provider] + 1e-9:
                view.invalid[r.id] = "stake exceeds balance"
                continue
            view.stakes[r.provider] = r.amount
        view.valid.append(r.id)
    return view
