"""The ledger an agent keeps: its view of the ledger stream, persisted in SQLite, and its outbox.

The view is the fold of the hubs' ledger stream up to `applied_seq`. SQLite holds a snapshot of the
view (a checkpoint state) and the records applied since, so a restart replays at most
`SNAPSHOT_EVERY` records and the file does not grow with the network's history. The outbox holds
records this agent signed until the stream has acknowledged them (a hub down, a restart in between:
they are published again, and the stream's deduplication stores them once).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from wwwserve.ledger.book import LedgerView, apply
from wwwserve.ledger.checkpoint import encode_state, state_of, view_of
from wwwserve.ledger.records import Record, parse_record

SNAPSHOT_EVERY = 1000


class Ledger:
    """The view of the stream up to `applied_seq`, persisted in `path` (SQLite; None: in memory)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # a busy timeout: a second reader (an ops tool, say) waits instead of failing the agent
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")  # a commit per record stays cheap
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS tail (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._migrate_gossip_records()
        self._db.commit()
        self.view = LedgerView()
        self.applied_seq = 0
        row = self._db.execute("SELECT state FROM snapshot WHERE id = 1").fetchone()
        if row is not None:
            state = json.loads(row[0])
            self.view, self.applied_seq = view_of(state), int(state["seq"])
        self._tail = 0
        for seq, body in self._db.execute("SELECT seq, body FROM tail ORDER BY seq").fetchall():
            apply(self.view, parse_record(json.loads(body)))  # verifies what the file holds
            self.applied_seq, self._tail = int(seq), self._tail + 1

    def _migrate_gossip_records(self) -> None:
        """A data directory from before the stream kept every record it heard in `records`: hand them
        to the outbox, so they reach the stream (which stores each id once) instead of being lost."""
        legacy = self._db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='records'")
        if legacy.fetchone() is None:
            return
        self._db.execute("INSERT OR IGNORE INTO outbox (id, body) SELECT id, body FROM records")
        self._db.execute("DROP TABLE records")

    def add(self, record: Record, seq: int | None = None) -> str:
        """Fold the record at stream sequence `seq` (None: the next one); returns "added", "duplicate",
        or why it counts for nothing. A signed but invalid record (an overdraft, say) is kept: the
        fold decided, and every reader of the stream decides the same."""
        seq = self.applied_seq + 1 if seq is None else seq
        if seq <= self.applied_seq:
            return "duplicate"
        if not record.signatures_valid():
            self.applied_seq = seq
            return "bad signature"
        if record.id in self.view.recent:
            self.applied_seq = seq
            return "duplicate"
        apply(self.view, record, signature_checked=True)
        self.applied_seq = seq
        self._db.execute(
            "INSERT OR REPLACE INTO tail (seq, body) VALUES (?, ?)", (seq, record.model_dump_json())
        )
        self._tail += 1
        if self._tail >= SNAPSHOT_EVERY:
            self._snapshot()
        self._db.commit()
        return self.view.invalid.get(record.id, "added")

    def state(self) -> dict[str, Any]:
        """The view as a checkpoint state at `applied_seq`."""
        return state_of(self.view, self.applied_seq)

    def restore(self, state: dict[str, Any]) -> None:
        """Start over from a checkpoint state (a newcomer's catch-up)."""
        self.view, self.applied_seq = view_of(state), int(state["seq"])
        self._snapshot()
        self._db.commit()

    def _snapshot(self) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot (id, state) VALUES (1, ?)",
            (encode_state(self.state()).decode(),),
        )
        self._db.execute("DELETE FROM tail")
        self._tail = 0

    # ---- outbox --------------------------------------------------------------------------------

    def hold(self, record: Record) -> None:
        """Keep a record we signed until the stream acknowledges it."""
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (id, body) VALUES (?, ?)", (record.id, record.model_dump_json())
        )
        self._db.commit()

    def held(self) -> list[Record]:
        """Records signed here and not yet acknowledged by the stream."""
        return [
            parse_record(json.loads(b)) for (b,) in self._db.execute("SELECT body FROM outbox").fetchall()
        ]

    def release(self, record_id: str) -> None:
        """The stream stored it."""
        self._db.execute("DELETE FROM outbox WHERE id = ?", (record_id,))
        self._db.commit()

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()
