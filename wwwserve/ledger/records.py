"""Ledger records: a serve receipt (signed by server and origin) and a stake (signed by its owner)."""

from __future__ import annotations

import json
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from wwwserve.ledger.identity import Identity, verify

INITIAL_GRANT = 1000.0
ELO_START = 1500.0
ELO_K = 32.0
DUEL_PENALTY = 20.0  # credits of stake the loser of a duel pays the winner (at most its stake)


class Receipt(BaseModel):
    """Server S served `request_id` for origin O: O owes S `price x (prompt + completion tokens)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["receipt"] = "receipt"
    request_id: str
    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    price: float = Field(ge=0)
    server: str
    server_key: str
    origin: str
    origin_key: str = ""
    ts_ms: int
    server_sig: str = ""
    origin_sig: str = ""

    @property
    def id(self) -> str:
        """The record's identity: one receipt per request and server."""
        return f"r:{self.request_id}:{self.server}"

    @property
    def amount(self) -> float:
        """Credits that move from origin to server."""
        return round(self.price * (self.prompt_tokens + self.completion_tokens), 6)

    def body(self) -> bytes:
        """Canonical bytes both parties sign (everything but the signatures)."""
        return json.dumps(
            self.model_dump(exclude={"server_sig", "origin_sig", "origin_key"}),
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def countersigned_body(self) -> bytes:
        """What the origin signs: the server's body, the server's signature, and its own key."""
        return self.body() + b"|" + self.server_sig.encode() + b"|" + self.origin_key.encode()

    def signed_by_server(self, server: Identity) -> Receipt:
        """The server's half."""
        return self.model_copy(update={"server_sig": server.sign(self.body())})

    def countersigned_by(self, origin: Identity) -> Receipt:
        """The origin's half, over the server's half."""
        with_key = self.model_copy(update={"origin_key": origin.public_key})
        return with_key.model_copy(update={"origin_sig": origin.sign(with_key.countersigned_body())})

    def signatures_valid(self) -> bool:
        """Both signatures check against the keys in the record."""
        return (
            bool(self.server_sig and self.origin_sig)
            and verify(self.server_key, self.body(), self.server_sig)
            and verify(self.origin_key, self.countersigned_body(), self.origin_sig)
        )


class SignedByOne(BaseModel):
    """A record one party signs: its canonical body is every field but `sig` (sorted-key compact JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sig: str = ""

    def signer_key(self) -> str:
        """The public key the signature must check against (a field of the record)."""
        raise NotImplementedError

    def body(self) -> bytes:
        """Canonical bytes the signer signs."""
        return json.dumps(self.model_dump(exclude={"sig"}), sort_keys=True, separators=(",", ":")).encode()

    def signed(self, identity: Identity) -> Self:
        """Signed by `identity`."""
        return self.model_copy(update={"sig": identity.sign(self.body())})

    def signatures_valid(self) -> bool:
        """The signer's signature checks."""
        return bool(self.sig) and verify(self.signer_key(), self.body(), self.sig)


class Stake(SignedByOne):
    """`provider` locks `amount` of its balance (the latest stake record of a provider counts)."""

    kind: Literal["stake"] = "stake"
    provider: str
    key: str
    amount: float = Field(ge=0)
    ts_ms: int

    @property
    def id(self) -> str:
        """One record per provider and time."""
        return f"s:{self.provider}:{self.ts_ms}"

    def signer_key(self) -> str:
        """The owner's key."""
        return self.key


class Verdict(SignedByOne):
    """Judge J compared the answers of providers `a` and `b` to the same request (duel-and-judge)."""

    kind: Literal["verdict"] = "verdict"
    duel_id: str
    request_id: str
    model: str
    a: str
    b: str
    winner: Literal["a", "b", "tie"]
    score_a: float
    score_b: float
    method: Literal["replay", "llm"]
    judge: str
    judge_key: str
    ts_ms: int

    @property
    def id(self) -> str:
        """One verdict per duel and judge (a panel has several)."""
        return f"v:{self.duel_id}:{self.judge}"

    def signer_key(self) -> str:
        """The judge's key."""
        return self.judge_key


Record = Receipt | Stake | Verdict


def parse_record(obj: object) -> Record:
    """A record from its JSON form (raises ValueError)."""
    if not isinstance(obj, dict):
        raise ValueError("a ledger record is an object")
    if obj.get("kind") == "stake":
        return Stake.model_validate(obj)
    if obj.get("kind") == "verdict":
        return Verdict.model_validate(obj)
    return Receipt.model_validate(obj)
