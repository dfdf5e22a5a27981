"""The ledger an agent keeps: valid-looking records in SQLite, and the view they add up to."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from wwwserve.ledger.book import LedgerView, apply, compute, order_key
from wwwserve.ledger.records import Record, parse_record


class Ledger:
    """Records persisted in `path` (SQLite) and the view they add up to.

    Signatures are verified once, on arrival. A record that sorts after every record kept (the usual
    case: a fresh receipt) is folded into the view; one that sorts earlier (a late arrival from
    anti-entropy) recomputes the view from all records, since it may change what follows it.
    """

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # a busy timeout: a second reader (an ops tool, say) waits instead of failing the agent
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")  # a commit per record stays cheap
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._db.commit()
        self._records: dict[str, Record] = {}
        for rid, body in self._db.execute("SELECT id, body FROM records"):
            self._records[rid] = parse_record(json.loads(body))
        self.view: LedgerView = compute(self._records.values())  # verifies what the file holds
        self._last = max(map(order_key, self._records.values()), default=None)

    def add(self, record: Record) -> str:
        """Keep a correctly signed `record`; returns "added", "duplicate", or why it counts for nothing.

        Records that are signed but invalid (an overdraft, say) are kept too: validity depends on the
        whole set in canonical order, so a record invalid now may be valid once an earlier one arrives.
        """
        if record.id in self._records:
            return "duplicate" if self._records[record.id] == record else "conflicting duplicate"
        if not record.signatures_valid():
            return "bad signature"
        self._records[record.id] = record
        self._db.execute(
            "INSERT INTO records (id, body) VALUES (?, ?)", (record.id, record.model_dump_json())
        )
        self._db.commit()
        key = order_key(record)
        if self._last is None or key > self._last:
            apply(self.view, record, signature_checked=True)
            self._last = key
        else:
            self.view = compute(self._records.values(), signatures_checked=True)
        return self.view.invalid.get(record.id, "added")

    def ids(self) -> set[str]:
        """Ids of the records kept."""
        return set(self._records)

    def records(self, except_ids: set[str] | None = None) -> list[Record]:
        """Records kept, but those in `except_ids` (anti-entropy)."""
        skip = except_ids or set()
        return [r for rid, r in self._records.items() if rid not in skip]

    def close(self) -> None:
        """Close the database."""
        self._db.close()
