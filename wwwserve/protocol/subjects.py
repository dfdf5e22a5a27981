"""Subject names of protocol v1 and the one rule that turns a model name into a subject token."""

from __future__ import annotations

import re
import zlib

from wwwserve.errors import BadRequest

QUEUE_GROUP = "wwwserve"
REQUEST_PREFIX = "llm.request"
DIRECT_PREFIX = "llm.direct"
HEARTBEAT_PREFIX = "llm.heartbeat"
LEDGER_RECEIPT = "llm.ledger.receipt"
DUEL_PREFIX = "llm.duel"
CANCEL_PREFIX = "llm.cancel"
HUB_NOTICE_PREFIX = "llm.hub.notice"  # a hub tells a provider it is about to close its leaf (a ban)
HEARTBEAT_SHARDS = 64  # a model's beats are spread over this many subjects: a listener can hear a sample

# JetStream, on the hubs: the JetStream domain every hub shares (leaf nodes reach it through
# `$JS.<domain>.API`), the directory bucket and the ledger's streams.
JS_DOMAIN = "wwwserve"
DIRECTORY_BUCKET = "wwwserve-directory"
LEDGER_STREAM = "LEDGER"
CHECKPOINT_STREAM = "LEDGER_CHECKPOINTS"
LEDGER_CHECKPOINT_PREFIX = "llm.ledger.checkpoint"
LEDGER_STATE_PREFIX = "llm.ledger.state"

_UNSAFE = re.compile(r"[^A-Za-z0-9_~-]")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def model_token(model: str) -> str:
    """Map a model name onto one NATS subject token, so names with `/` and `.` can be routed.

    Rule: `/` becomes `~`, `.` becomes `_`, any other character outside `[A-Za-z0-9_~-]` becomes `-`.
    Case is kept. `Qwen/Qwen2.5-7B-Instruct` -> `Qwen~Qwen2_5-7B-Instruct`.
    """
    if not model:
        raise ValueError("model name must not be empty")
    return _UNSAFE.sub("-", model.replace("/", "~").replace(".", "_"))


def check_provider_name(name: str) -> str:
    """Refuse a provider name that cannot be one subject token, before it breaks routing."""
    if not _NAME.match(name):
        raise ValueError(f"provider name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
    return name


_REPLY_SUBJECT = re.compile(r"^[^\s*>.]+(\.[^\s*>.]+)*$")  # tokens joined by dots, no wildcards


def check_reply_subject(subject: str) -> str:
    """Refuse a `Wwwserve-Reply-To` that cannot be published to (whitespace, wildcards, too long)."""
    if len(subject) > 256 or not _REPLY_SUBJECT.match(subject):
        raise BadRequest(f"Wwwserve-Reply-To {subject[:64]!r} is not a subject a reply can be sent to")
    return subject


def request_subject(model: str) -> str:
    """Where clients publish requests for `model`; agents serving it share one queue group here."""
    return f"{REQUEST_PREFIX}.{model_token(model)}"


def direct_subject(provider: str, model: str) -> str:
    """Where a forwarding agent reaches one chosen provider for `model`."""
    return f"{DIRECT_PREFIX}.{provider}.{model_token(model)}"


def hub_notice_subject(provider: str) -> str:
    """Where hubs tell `provider` they will close its leaf connection (wwwserve/hubguard.py)."""
    return f"{HUB_NOTICE_PREFIX}.{provider}"


def cancel_subject(provider: str) -> str:
    """Where a requester tells `provider` to stop working on a request it no longer wants."""
    return f"{CANCEL_PREFIX}.{provider}"


def heartbeat_shard(provider: str) -> int:
    """The shard a provider's beats go to: fixed by its name, spread evenly over the shards."""
    return zlib.crc32(provider.encode()) % HEARTBEAT_SHARDS


def heartbeat_subject(provider: str, model: str) -> str:
    """Where `provider` announces its state to the providers of `model` (and ops with `nats sub`)."""
    return f"{HEARTBEAT_PREFIX}.{provider}.{model_token(model)}.{heartbeat_shard(provider):02d}"


def heartbeat_filter(model_tok: str, shard: int | None = None) -> str:
    """What a listener subscribes to: every beat of a model (shard None), or one shard of it.

    The provider's name comes first so a hub can allow each provider `llm.heartbeat.<name>.>` only
    (nats-server does not forward a hub-side `llm.heartbeat.>` interest through a leaf whose publish
    permission puts wildcards before the name)."""
    if shard is None:
        return f"{HEARTBEAT_PREFIX}.*.{model_tok}.*"
    return f"{HEARTBEAT_PREFIX}.*.{model_tok}.{shard:02d}"


def directory_put_subject(provider: str) -> str:
    """Where `provider` writes its directory entry: the KV subject behind the domain's API prefix,
    the one form that reaches the hubs' bucket from a leaf node (as nats.go's KV does)."""
    return f"$JS.{JS_DOMAIN}.API.$KV.{DIRECTORY_BUCKET}.{provider}"
