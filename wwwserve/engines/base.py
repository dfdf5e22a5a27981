"""The engine interface every backend implements, and the small types it speaks."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import NamedTuple, Protocol, TypeVar

from wwwserve.protocol.messages import CompletionRequest
from wwwserve.protocol.prefix import PrefixFilter

_Opts = TypeVar("_Opts")


class Delta(NamedTuple):
    """A piece of generated text; the last one of a generation carries `finish_reason` and counts.

    A tuple: engines make one per token or step, and a frozen dataclass costs ~4x more to build."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (not prefilled again)


class EngineLoad(NamedTuple):
    """What an engine knows about its own load and speed, for heartbeats and the dispatch policy
    (a tuple: read for every request, and a frozen dataclass costs ~4x more to build)."""

    running: int = 0
    waiting: int = 0
    healthy: bool = True
    prefill_tps: float = 0.0  # prompt tokens per second, 0 = unknown
    tpot_ms: float = 0.0  # time per output token at the current batch, 0 = unknown
    kv_cache_usage: float | None = None  # share of the KV cache in use, 0..1; None = unknown
    prefill_backlog: int = 0  # prompt tokens admitted but not yet prefilled (shared prefill queue)
    prefill_busy: float = 0.0  # share of recent engine time spent prefilling, 0..1 (stalls decodes)
    prefix_filter: PrefixFilter | None = None  # what its prefix cache holds (None: no prefix caching known)
    prefix_hit_rate: float | None = None  # the server's own prefix-cache hit rate (tokens), when exported
    state: str = "ready"  # a supervised server's life: starting, ready, restarting, stopped


class Engine(Protocol):
    """An inference backend: `generate` streams deltas; the last delta has a finish_reason."""

    kind: str

    async def start(self) -> None:
        """Load weights or connect; called once before the agent takes requests."""

    async def close(self) -> None:
        """Release what `start` took."""

    def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        """Stream the answer to `request`; cancelling the iterator stops the generation."""
        ...

    def load(self) -> EngineLoad:
        """Current load, read without blocking."""
        ...

    def context_length(self, model: str) -> int | None:
        """Tokens one request may hold (prompt + output): larger asks are refused. None = unknown."""
        ...


def prompt_text(request: CompletionRequest) -> str:
    """A plain-text rendering of the prompt, for engines without a chat template."""
    if request.prompt is not None:
        return request.prompt
    lines = [f"{m.role}: {m.content}" for m in request.messages or []]
    return "\n".join([*lines, "assistant:"])


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop sequence; tell whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def parse_options(cls: type[_Opts], opts: dict[str, str], kind: str) -> _Opts:
    """Engine options from `--engine-opt key=value` strings into `cls` (a dataclass with defaults).

    Unknown keys are an error (a typo must not pass silently); values take the field's default's type.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(opts) - known
    if unknown:
        raise ValueError(f"unknown {kind} engine option(s) {sorted(unknown)}; known: {sorted(known)}")
    out = cls()
    for key, value in opts.items():
        try:
            setattr(out, key, type(getattr(out, key))(value))
        except ValueError as exc:
            raise ValueError(f"{kind} engine option {key}={value!r}: {exc}") from None
    return out
