"""The agent's part in the credit ledger: sign receipts, countersign, gossip and sync records, stake.

- A server attaches its signed half of a receipt to the final message of a forwarded request
  (header `Wwwserve-Receipt`); the forwarding origin checks it, countersigns, keeps it and publishes
  it on `llm.ledger.receipt`; every agent keeps what it hears (docs/credits.md).
- Anti-entropy: each agent answers `llm.ledger.sync.<name>` with the records the asker lacks, and asks
  its peers the same at start, when a peer appears, and every `ledger_sync_s`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from wwwserve.datadir import DataDirLock
from wwwserve.ledger.identity import load_or_create
from wwwserve.ledger.records import Receipt, Stake, parse_record
from wwwserve.ledger.store import Ledger
from wwwserve.protocol import subjects
from wwwserve.protocol.headers import now_ms
from wwwserve.runtime import wait_event

if TYPE_CHECKING:
    from wwwserve.agent.agent import Agent

log = structlog.get_logger(__name__)

VIEW_PREFIX = "llm.ledger.view"


def view_subject(provider: str) -> str:
    """Where a provider answers with its view of the ledger."""
    return f"{VIEW_PREFIX}.{provider}"


class Credits:
    """Identity, ledger and the messages that keep ledgers in agreement, for one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        data_dir = agent.settings.state_dir
        self._lock = DataDirLock(data_dir, f"provider {agent.name}")
        self.identity = load_or_create(data_dir, agent.name)
        self.ledger = Ledger(data_dir / "ledger.sqlite")
        self._sync_wanted = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """End `run` at its next step (a flag, not a cancel: 3.11 can lose a cancel inside nats-py)."""
        self._stopping = True
        self._sync_wanted.set()

    # ---- receipts ------------------------------------------------------------------------------

    def server_half(self, request_id: str, model: str, prompt: int, completion: int, origin: str) -> str:
        """The header value a server attaches to the final message of a request served for `origin`."""
        r = Receipt(
            request_id=request_id,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            price=self.agent.settings.price,
            server=self.agent.name,
            server_key=self.identity.public_key,
            origin=origin,
            ts_ms=now_ms(),
        ).signed_by_server(self.identity)
        return base64.b64encode(r.model_dump_json().encode()).decode()

    async def settle(self, peer: str, request_id: str, header: str | None) -> None:
        """As origin: check the server's half, countersign, keep and publish the receipt."""
        if not header:
            return
        try:
            r = Receipt.model_validate_json(base64.b64decode(header))
        except (ValueError, ValidationError):
            log.warning("receipt.malformed", provider=self.agent.name, peer=peer)
            return
        advertised = next((p.beat.price for p in self.agent.peers.alive() if p.beat.name == peer), r.price)
        if r.server != peer or r.origin != self.agent.name or r.request_id != request_id:
            log.warning("receipt.mismatch", provider=self.agent.name, peer=peer, request_id=request_id)
            return
        if r.price > advertised + 1e-9:
            log.warning("receipt.overpriced", provider=self.agent.name, peer=peer, price=r.price)
            return
        full = r.countersigned_by(self.identity)
        outcome = self.ledger.add(full)
        log.debug("receipt.settled", provider=self.agent.name, peer=peer, outcome=outcome, amount=full.amount)
        await self.agent.nc.publish(subjects.LEDGER_RECEIPT, full.model_dump_json().encode())

    # ---- subscriptions -------------------------------------------------------------------------

    async def subscribe(self) -> None:
        """Hear receipts and answer syncs (views are a micro endpoint: agent/service.py)."""
        nc = self.agent.nc
        await nc.subscribe(subjects.LEDGER_RECEIPT, cb=self.on_record)
        await nc.subscribe(f"{subjects.LEDGER_SYNC_PREFIX}.{self.agent.name}", cb=self._on_sync)

    async def on_record(self, msg: Msg) -> None:
        """Keep a record (receipt, stake, verdict) published by another agent."""
        try:
            record = parse_record(json.loads(msg.data))
        except (ValueError, ValidationError):
            return
        outcome = self.ledger.add(record)
        if outcome not in ("added", "duplicate"):
            log.info("ledger.record_refused", provider=self.agent.name, record=record.id, why=outcome)

    async def _on_sync(self, msg: Msg) -> None:
        try:
            have = set(json.loads(msg.data).get("have", []))
        except (ValueError, AttributeError):
            have = set()
        body = {"records": [json.loads(r.model_dump_json()) for r in self.ledger.records(except_ids=have)]}
        if msg.reply:
            await self.agent.nc.publish(msg.reply, json.dumps(body).encode())

    def view(self) -> dict[str, Any]:
        """This provider's view of the ledger, keyed by provider name."""
        v = self.ledger.view
        return {
            "provider": self.agent.name,
            "balances": dict(sorted(v.balances.items())),
            "stakes": dict(sorted(v.stakes.items())),
            "reputation": dict(sorted(v.reputation.items())),
            "quality": {n: round(v.evidence.quality(n), 4) for n in sorted(v.evidence.duels)},
            "judge_weight": {n: round(v.evidence.judge_weight(n), 4) for n in sorted(v.evidence.judges)},
            "receipts": sum(1 for rid in v.valid if rid.startswith("r:")),
            "invalid": len(v.invalid),
            "keys": dict(sorted(v.keys.items())),
        }

    # ---- anti-entropy and stake ----------------------------------------------------------------

    def peer_appeared(self) -> None:
        """A new peer: catch up with it soon."""
        self._sync_wanted.set()

    async def sync_with(self, peer: str) -> int:
        """Fetch from `peer` the records we lack; returns how many were new."""
        payload = json.dumps({"have": sorted(self.ledger.ids())}).encode()
        try:
            reply = await self.agent.nc.request(f"{subjects.LEDGER_SYNC_PREFIX}.{peer}", payload, timeout=2.0)
            records = json.loads(reply.data).get("records", [])
        except Exception:
            return 0
        added = 0
        for obj in records:
            with contextlib.suppress(ValueError, ValidationError):
                added += self.ledger.add(parse_record(obj)) != "duplicate"
        return added

    async def run(self) -> None:
        """Sync with every peer now and then, and publish our stake once we know our balance."""
        staked = False
        while not self._stopping:
            await wait_event(self._sync_wanted, self.agent.settings.ledger_sync_s)
            self._sync_wanted.clear()
            if self._stopping:
                return
            for peer in [p.beat.name for p in self.agent.peers.alive()]:
                await self.sync_with(peer)
            if not staked:
                staked = await self._publish_stake()

    async def _publish_stake(self) -> bool:
        want = self.agent.settings.stake
        if self.ledger.view.stakes.get(self.agent.name, 0.0) == want:
            return True
        s = Stake(provider=self.agent.name, key=self.identity.public_key, amount=want, ts_ms=now_ms())
        s = s.signed(self.identity)
        outcome = self.ledger.add(s)
        if outcome != "added":
            log.warning("stake.refused", provider=self.agent.name, amount=want, why=outcome)
            return True
        await self.agent.nc.publish(subjects.LEDGER_RECEIPT, s.model_dump_json().encode())
        return True

    def close(self) -> None:
        """Close the ledger's database and give the data directory up (idempotent)."""
        self.ledger.close()
        self._lock.release()
