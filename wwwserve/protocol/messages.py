"""Message bodies of protocol v1, validated at the boundary with pydantic."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from wwwserve.errors import BadRequest

MAX_STOP = 4  # the OpenAI API's limit on stop sequences

# A request is validated by pydantic at the boundary into a plain dataclass: every stage of a request's
# path reads its fields, and a BaseModel's attribute reads go through its `__getattr__` hook (~30 reads
# per request, ~450 instructions each, 4% of an agent's instructions per request). Strict types: JSON
# and msgpack bodies are taken as they are, never coerced ("3" is not a number).
_WIRE = ConfigDict(extra="forbid")


@dataclass(config=_WIRE)
class ChatMessage:
    """One turn of a chat, as in OpenAI's chat completions API."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: StrictStr


@dataclass(config=_WIRE)
class CompletionRequest:
    """An OpenAI-shaped request: `prompt` (completion) or `messages` (chat), plus routing hints."""

    model: StrictStr | None = Field(
        default=None, description="model name; defaults to the one in the subject"
    )
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    max_tokens: StrictInt = Field(default=64, ge=1, description="tokens to generate at most")
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(default=1.0, gt=0.0, le=1.0)
    stop: StrictStr | list[StrictStr] | None = Field(
        default=None, description=f"at most {MAX_STOP} stop sequences"
    )
    seed: StrictInt | None = None
    stream: StrictBool = False
    slo_ms: StrictInt | None = Field(default=None, gt=0, description="end-to-end latency the user hopes for")
    slo_ttft_ms: StrictInt | None = Field(
        default=None, gt=0, description="time to first token the user hopes for"
    )
    slo_tpot_ms: StrictInt | None = Field(
        default=None, gt=0, description="time per output token (after the first) the user hopes for"
    )
    max_price: StrictFloat | None = Field(
        default=None, ge=0.0, description="most credits per token the user pays"
    )

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP:
            raise ValueError(
                f"at most {MAX_STOP} stop sequences are allowed (as in OpenAI's API), got {len(stop)}"
            )
        return stop

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> CompletionRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        return self

    def stop_list(self) -> list[str]:
        """Stop sequences as a list, whatever shape the user sent."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def replace(self, **changes: Any) -> CompletionRequest:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        """The request as a body to send on (the fields that are set)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class Usage(BaseModel):
    """Token counts of one served request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(0, description="prompt tokens served from the prefix cache (no prefill)")


class Reply(BaseModel):
    """The complete answer: the single message of a non-streaming reply, the last of a stream."""

    seq: int = 0
    final: bool = True
    request_id: str
    text: str
    finish_reason: str
    usage: Usage
    provider: str
    model: str
    hops: int
    ttft_ms: float
    latency_ms: float


class StreamChunk(BaseModel):
    """One piece of a streaming reply; the stream ends with a `Reply` whose `final` is true."""

    seq: int
    final: bool = False
    delta: str


class ErrorBody(BaseModel):
    """The body of an error reply: a machine-readable code and a message for humans."""

    code: str
    message: str
    request_id: str | None = None
    provider: str | None = None


class Heartbeat(BaseModel):
    """What an agent announces about itself every second and on significant change."""

    model_config = ConfigDict(extra="ignore")

    name: str
    models: list[str]
    engine: str
    capacity: int = Field(description="requests served at once (max concurrency)")
    queue_limit: int = 0
    running: int = 0
    queued: int = 0
    accepting: bool = True
    healthy: bool = True
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    tokens_per_s: float = 0.0
    tpot_ms: float = 0.0
    prefill_tps: float = 0.0
    kv_cache_usage: float | None = Field(None, description="share of the engine's KV cache in use, 0..1")
    prefill_backlog: int = Field(0, description="prompt tokens in the engine not yet prefilled")
    prefill_busy: float = Field(0.0, description="share of recent engine time spent prefilling, 0..1")
    prefix_filter: str = Field(
        "", description="base64 Bloom filter of cached prompt-prefix checkpoints (docs/protocol.md)"
    )
    prefix_hit_rate: float | None = Field(None, description="engine's prefix-cache hit rate (tokens), 0..1")
    price: float = 0.0
    stake: float = 0.0
    network_share: float = 1.0
    pubkey: str = ""
    version: str = "1"
    seq: int = 0
    ts_ms: int = 0
    interval_s: float = Field(1.0, description="longest gap until this provider's next beat (keepalive)")
    engine_state: str = Field(
        "ready", description="the engine's server: starting, ready, restarting (--engine vllm supervises one)"
    )


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
_JSON_KINDS[type(None)] = "null"


_REQUEST = TypeAdapter(CompletionRequest)  # the validator, built once


def parse_request(obj: object) -> CompletionRequest:
    """Validate a decoded body, turning pydantic's errors into one readable BadRequest."""
    if not isinstance(obj, dict):
        kind = _JSON_KINDS.get(type(obj), type(obj).__name__)
        raise BadRequest(f"body must be an object (a JSON object or a msgpack map), got {kind}")
    try:
        return _REQUEST.validate_python(obj)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{loc}: {err['msg']}")
        raise BadRequest("; ".join(parts)) from exc
