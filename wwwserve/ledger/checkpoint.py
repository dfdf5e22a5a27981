"""Signed checkpoints of the ledger, so a newcomer replays from the last one, not from the beginning.

Every `checkpoint_every` stream messages, each agent turns its view at that stream sequence into a
`state` (plain JSON), hashes it (`digest`) and signs a `CheckpointVote` (seq, digest). Votes go to
`llm.ledger.checkpoint.<signer>` (the stream keeps each signer's latest); the state itself goes once
per digest to `llm.ledger.state.<digest>`. A newcomer takes the highest sequence at least `quorum`
distinct signers agree on, checks the state against the digest, and replays the stream after it.
Signatures make a checkpoint unforgeable by the hubs; what a newcomer trusts is that `quorum`
providers are not colluding (docs/credits.md, "Checkpoints").
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from wwwserve.ledger.book import LedgerView
from wwwserve.ledger.evidence import DuelEvidence, Evidence, JudgeEvidence
from wwwserve.ledger.records import SignedByOne


def state_of(view: LedgerView, seq: int) -> dict[str, Any]:
    """Everything the fold needs to go on from stream sequence `seq` (routing caches excluded)."""
    return {
        "seq": seq,
        "balances": view.balances,
        "stakes": view.stakes,
        "keys": view.keys,
        "reputation": view.reputation,
        "duels": {n: asdict(d) for n, d in view.evidence.duels.items()},
        "judges": {n: asdict(j) for n, j in view.evidence.judges.items()},
        "votes": view.evidence.votes,
        "valid": view.valid,
        "invalid": view.invalid,
        "receipts": view.receipts,
        "recent": view.recent,
        "max_ts": view.max_ts,
        "pruned_at": view.pruned_at,
    }


def view_of(state: dict[str, Any]) -> LedgerView:
    """The view a state describes (the inverse of `state_of`)."""
    evidence = Evidence(
        duels={n: DuelEvidence(**d) for n, d in state["duels"].items()},
        judges={n: JudgeEvidence(**j) for n, j in state["judges"].items()},
        votes={k: [(str(j), str(w), float(x)) for j, w, x in v] for k, v in state["votes"].items()},
    )
    return LedgerView(
        balances=dict(state["balances"]),
        stakes=dict(state["stakes"]),
        keys=dict(state["keys"]),
        reputation=dict(state["reputation"]),
        evidence=evidence,
        valid=list(state["valid"]),
        invalid=dict(state["invalid"]),
        receipts=int(state["receipts"]),
        recent={k: int(v) for k, v in state["recent"].items()},
        max_ts=int(state["max_ts"]),
        pruned_at=int(state["pruned_at"]),
    )


def encode_state(state: dict[str, Any]) -> bytes:
    """The state's canonical bytes (what is stored and hashed)."""
    return json.dumps(state, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    """The name of a state: its BLAKE2b-256 hash, hex (a valid subject token)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


class CheckpointVote(SignedByOne):
    """`signer` says: the ledger stream up to `seq` folds to the state named `digest`."""

    seq: int
    digest: str
    signer: str
    key: str
    ts_ms: int

    def signer_key(self) -> str:
        """The signer's key."""
        return self.key


def choose(votes: list[CheckpointVote], quorum: int) -> tuple[int, str] | None:
    """The newest (seq, digest) that at least `quorum` distinct signers agree on, with valid signatures."""
    signers: dict[tuple[int, str], set[str]] = defaultdict(set)
    for v in votes:
        if v.signatures_valid():
            signers[(v.seq, v.digest)].add(v.signer)
    agreed = [k for k, names in signers.items() if len(names) >= max(1, quorum)]
    return max(agreed) if agreed else None
