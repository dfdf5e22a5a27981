"""Subject names of protocol v1 and the one rule that turns a model name into a subject token."""

from __future__ import annotations

import re

QUEUE_GROUP = "wwwserve"
REQUEST_PREFIX = "llm.request"
DIRECT_PREFIX = "llm.direct"
HEARTBEAT_PREFIX = "llm.heartbeat"
HEARTBEAT_ALL = f"{HEARTBEAT_PREFIX}.>"
LEDGER_RECEIPT = "llm.ledger.receipt"
LEDGER_SYNC_PREFIX = "llm.ledger.sync"
DUEL_PREFIX = "llm.duel"
CANCEL_PREFIX = "llm.cancel"

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


def request_subject(model: str) -> str:
    """Where clients publish requests for `model`; agents serving it share one queue group here."""
    return f"{REQUEST_PREFIX}.{model_token(model)}"


def direct_subject(provider: str, model: str) -> str:
    """Where a forwarding agent reaches one chosen provider for `model`."""
    return f"{DIRECT_PREFIX}.{provider}.{model_token(model)}"


def cancel_subject(provider: str) -> str:
    """Where a requester tells `provider` to stop working on a request it no longer wants."""
    return f"{CANCEL_PREFIX}.{provider}"


def heartbeat_subject(provider: str) -> str:
    """Where `provider` announces its state, so peers and ops can see it."""
    return f"{HEARTBEAT_PREFIX}.{provider}"
