"""The agent's part in the credit ledger: sign receipts, countersign, publish and follow the stream.

- A server attaches its signed half of a receipt to the final message of a forwarded request
  (header `Wwwserve-Receipt`); the forwarding origin checks it, countersigns and publishes it to the
  ledger stream on the hubs (`llm.ledger.receipt`, JetStream message id = record id: stored once).
- Every agent folds the stream in order (an ordered consumer from its last applied sequence); records
  it signed stay in its outbox until the stream acknowledged them.
- Checkpoints (ledger/checkpoint.py): every `checkpoint_every` records each agent signs its state's
  digest; a newcomer loads the newest state a quorum of signers agree on and replays only the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from wwwserve.agent.peers import PeerTable
from wwwserve.agent.ports import Link, Spawn
from wwwserve.agent.settings import ProviderSettings
from wwwserve.broker.streams import follow_ledger, jetstream, read_all
from wwwserve.datadir import DataDirLock
from wwwserve.ledger.book import LedgerView
from wwwserve.ledger.checkpoint import CheckpointVote, choose, digest, encode_state
from wwwserve.ledger.identity import load_or_create
from wwwserve.ledger.records import ELO_START, INITIAL_GRANT, Receipt, Record, Stake, parse_record
from wwwserve.ledger.store import Ledger
from wwwserve.protocol import subjects
from wwwserve.protocol.headers import now_ms
from wwwserve.runtime import wait_event

log = structlog.get_logger(__name__)

VIEW_PREFIX = "llm.ledger.view"
RETRY_S = 2.0  # how soon the outbox is re-sent while the stream refuses it
IDLE_S = 30.0  # the run loop's wake-up with nothing pending (a failed publish wakes it at once)


def provider_standing(view: LedgerView, name: str) -> dict[str, Any]:
    """One provider's standing in a ledger view: what `wwwserve ledger --json` shows per provider."""
    d = view.evidence.duel(name)
    return {
        "duels_fought": d.verdicts,  # verdicts on its answers (a duel judged by a panel counts three)
        "duels_lost": d.lost,
        "quality": round(d.quality, 4),
        "reputation": round(view.reputation.get(name, ELO_START), 1),  # Elo
        "proven_bad": d.proven_bad,
    }


def view_subject(provider: str) -> str:
    """Where a provider answers with its view of the ledger."""
    return f"{VIEW_PREFIX}.{provider}"


@dataclass(frozen=True)
class CreditConfig:
    """The provider settings the credits read (built with `of`: the defaults are the settings' own)."""

    state_dir: Path
    price: float
    stake: float
    checkpoint_every: int
    checkpoint_quorum: int

    @classmethod
    def of(cls, s: ProviderSettings) -> CreditConfig:
        """The credit section of a provider's settings."""
        return cls(s.state_dir, s.price, s.stake, s.checkpoint_every, s.checkpoint_quorum)


class Credits:
    """Identity, ledger and the messages that keep ledgers in agreement, for one provider.

    Receives its name and settings section, the connection (`link`, connected later), the peer table
    (the prices peers advertise, to check a receipt against) and `spawn` for its background work.
    """

    def __init__(self, name: str, config: CreditConfig, link: Link, peers: PeerTable, spawn: Spawn) -> None:
        self.name = name
        self.config = config
        self.link = link
        self.peers = peers
        self.spawn = spawn
        data_dir = config.state_dir
        self._lock = DataDirLock(data_dir, f"provider {name}")
        self.identity = load_or_create(data_dir, name)
        self.ledger = Ledger(data_dir / "ledger.sqlite")
        self._wake = asyncio.Event()
        self._failed = False  # a publish failed since the last pass: its record waits in the outbox
        self._stopping = False
        self._sub: Subscription | None = None
        self.signed = 0  # records this agent signed and handed to the stream
        self.checkpoint_seq = 0  # the checkpoint this ledger started from (0: replayed from the start)

    def stop(self) -> None:
        """End `run` at its next step (a flag, not a cancel: 3.11 can lose a cancel inside nats-py)."""
        self._stopping = True
        self._wake.set()

    # ---- receipts ------------------------------------------------------------------------------

    def server_half(self, request_id: str, model: str, prompt: int, completion: int, origin: str) -> str:
        """The header value a server attaches to the final message of a request served for `origin`."""
        r = Receipt(
            request_id=request_id,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            price=self.config.price,
            server=self.name,
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
            log.warning("receipt.malformed", provider=self.name, peer=peer)
            return
        advertised = next((p.beat.price for p in self.peers.alive() if p.beat.name == peer), r.price)
        if r.server != peer or r.origin != self.name or r.request_id != request_id:
            log.warning("receipt.mismatch", provider=self.name, peer=peer, request_id=request_id)
            return
        if r.price > advertised + 1e-9:
            log.warning("receipt.overpriced", provider=self.name, peer=peer, price=r.price)
            return
        full = r.countersigned_by(self.identity)
        log.debug("receipt.settled", provider=self.name, peer=peer, amount=full.amount)
        await self.publish(full)

    async def publish(self, record: Record) -> bool:
        """Hand a record we signed to the ledger stream; kept in the outbox until the stream has it."""
        self.ledger.hold(record)
        self.signed += 1
        if await self._send(record):
            return True
        self._failed = True  # the run loop re-sends it
        self._wake.set()
        return False

    async def _send(self, record: Record) -> bool:
        try:
            await jetstream(self.link.nc).publish(
                subjects.LEDGER_RECEIPT,
                record.model_dump_json().encode(),
                stream=subjects.LEDGER_STREAM,
                headers={"Nats-Msg-Id": record.id},
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
            log.debug("ledger.publish_failed", provider=self.name, record=record.id, error=repr(e))
            return False
        self.ledger.release(record.id)
        return True

    # ---- the stream ------------------------------------------------------------------------------

    async def _follow(self) -> bool:
        """Catch up (from a checkpoint when we have nothing yet) and follow the stream from there."""
        if self._sub is not None:
            return True
        js = jetstream(self.link.nc)
        try:
            if self.ledger.applied_seq == 0:
                await self._catch_up_from_checkpoint()
            self._sub = await follow_ledger(js, self._on_record, self.ledger.applied_seq)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
            log.debug("ledger.stream_unavailable", provider=self.name, error=repr(e))
            return False
        return True

    async def _on_record(self, msg: Msg) -> None:
        """Fold the stream's next record."""
        seq = msg.metadata.sequence.stream
        try:
            record = parse_record(json.loads(msg.data))
        except (ValueError, ValidationError):
            self.ledger.applied_seq = max(self.ledger.applied_seq, seq)
            return
        outcome = self.ledger.add(record, seq)
        if outcome not in ("added", "duplicate"):
            log.info("ledger.record_refused", provider=self.name, record=record.id, why=outcome)
        every = self.config.checkpoint_every
        if every and seq % every == 0:
            self.spawn(self._vote(seq, encode_state(self.ledger.state())))

    async def _vote(self, seq: int, state: bytes) -> None:
        """Sign the state at `seq`; publish it unless someone did (a random pause spreads the work)."""
        d = digest(state)
        vote = CheckpointVote(
            seq=seq, digest=d, signer=self.name, key=self.identity.public_key, ts_ms=now_ms()
        ).signed(self.identity)
        js = jetstream(self.link.nc)
        try:
            await asyncio.sleep(random.uniform(0.0, 1.0))
            state_subject = f"{subjects.LEDGER_STATE_PREFIX}.{d}"
            try:
                await js.get_last_msg(subjects.CHECKPOINT_STREAM, state_subject, direct=True)
            except nats.js.errors.NotFoundError:
                await js.publish(
                    state_subject, state, stream=subjects.CHECKPOINT_STREAM, headers={"Nats-Msg-Id": d}
                )
            await js.publish(
                f"{subjects.LEDGER_CHECKPOINT_PREFIX}.{self.name}",
                vote.model_dump_json().encode(),
                stream=subjects.CHECKPOINT_STREAM,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
            log.info("checkpoint.vote_failed", provider=self.name, seq=seq, error=repr(e))

    async def _catch_up_from_checkpoint(self) -> None:
        """Load the newest state `checkpoint_quorum` providers signed, if any (else replay everything)."""
        started = time.monotonic()
        loaded = await load_checkpoint(self.link.nc, self.config.checkpoint_quorum)
        if loaded is not None:
            self.ledger.restore(loaded)
            self.checkpoint_seq = int(loaded["seq"])
            log.info(
                "ledger.checkpoint_loaded",
                provider=self.name,
                seq=loaded["seq"],
                took_s=round(time.monotonic() - started, 3),
            )

    def view(self) -> dict[str, Any]:
        """This provider's view of the ledger, keyed by provider name."""
        v = self.ledger.view
        return {
            "provider": self.name,
            "balances": dict(sorted(v.balances.items())),
            "stakes": dict(sorted(v.stakes.items())),
            "reputation": dict(sorted(v.reputation.items())),
            "quality": {n: round(v.evidence.quality(n), 4) for n in sorted(v.evidence.duels)},
            "providers": {
                n: provider_standing(v, n) for n in sorted(set(v.balances) | set(v.evidence.duels))
            },
            "judge_weight": {n: round(v.evidence.judge_weight(n), 4) for n in sorted(v.evidence.judges)},
            "receipts": v.receipts,
            "applied_seq": self.ledger.applied_seq,
            "invalid": len(v.invalid),
            "keys": dict(sorted(v.keys.items())),
        }

    # ---- outbox and stake --------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the stream, re-send the outbox, and publish our stake once we know our balance."""
        staked = False
        pending = True  # the outbox may hold records of an earlier run
        while not self._stopping:
            if await self._follow():
                if pending or self._failed:
                    self._failed = False
                    pending = not await self._flush_outbox()
                if not staked:
                    staked = await self._publish_stake()
            else:
                pending = True
            # poll only while something waits for the stream; a failed publish wakes us at once (a
            # 2 s poll by each of 1,000 agents was ~10% of the swarm's CPU, measured)
            idle = not pending and staked and self._sub is not None
            await wait_event(self._wake, IDLE_S if idle else RETRY_S)
            self._wake.clear()

    async def _flush_outbox(self) -> bool:
        """Re-send what the stream has not acknowledged yet; False when it still refuses."""
        for record in self.ledger.held():
            if not await self._send(record):
                return False
        return True

    async def _publish_stake(self) -> bool:
        want = self.config.stake
        if self.ledger.view.stakes.get(self.name, 0.0) == want:
            return True
        s = Stake(provider=self.name, key=self.identity.public_key, amount=want, ts_ms=now_ms())
        s = s.signed(self.identity)
        if want > self.ledger.view.balances.get(self.name, INITIAL_GRANT) + 1e-9:
            log.warning("stake.refused", provider=self.name, amount=want, why="stake exceeds balance")
            return True
        await self.publish(s)
        return True

    def close(self) -> None:
        """Close the ledger's database and give the data directory up (idempotent)."""
        self.ledger.close()
        self._lock.release()


async def load_checkpoint(nc: Any, quorum: int) -> dict[str, Any] | None:
    """The newest checkpoint state `quorum` distinct providers signed, checked against its digest and
    against the signers' keys it binds; None when there is none."""
    js = jetstream(nc)
    votes: list[CheckpointVote] = []
    try:
        bodies = await read_all(
            js,
            f"{subjects.LEDGER_CHECKPOINT_PREFIX}.*",
            subjects.CHECKPOINT_STREAM,
            last_per_subject=True,
            wait_s=2.0,
        )
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
        log.debug("checkpoint.unavailable", error=repr(e))
        return None
    for body in bodies:
        with contextlib.suppress(ValidationError, ValueError):
            votes.append(CheckpointVote.model_validate_json(body))
    chosen = choose(votes, quorum)
    if chosen is None:
        return None
    seq, d = chosen
    try:
        raw = await js.get_last_msg(
            subjects.CHECKPOINT_STREAM, f"{subjects.LEDGER_STATE_PREFIX}.{d}", direct=True
        )
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as e:
        log.info("checkpoint.state_missing", seq=seq, error=repr(e))
        return None
    data = raw.data or b""
    if digest(data) != d:
        log.warning("checkpoint.state_corrupt", seq=seq)
        return None
    state: dict[str, Any] = json.loads(data)
    keys = state.get("keys", {})
    signers = {v.signer for v in votes if (v.seq, v.digest) == chosen and keys.get(v.signer) == v.key}
    if int(state.get("seq", -1)) != seq or len(signers) < max(1, quorum):
        log.warning("checkpoint.signers_not_bound", seq=seq)
        return None
    return state


async def read_ledger(nc: Any, wait_s: float = 5.0) -> list[Record]:
    """Every record in the ledger stream, in stream order (tools and benchmarks; agents fold as they go)."""
    out: list[Record] = []
    for body in await read_all(jetstream(nc), subjects.LEDGER_RECEIPT, subjects.LEDGER_STREAM, wait_s=wait_s):
        with contextlib.suppress(ValueError, ValidationError):
            out.append(parse_record(json.loads(body)))
    return out
