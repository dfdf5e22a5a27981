"""Translating between OpenAI's HTTP API shapes and wwwserve protocol v1."""

from __future__ import annotations

import json
import time
from typing import Any

from wwwserve.errors import WWWServeError
from wwwserve.protocol.messages import Reply

# OpenAI request fields we accept but do not act on (they change nothing the network can honour).
IGNORED = {
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream_options",
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "response_format",
    "echo",
    "suffix",
    "best_of",
}
PASSED = {"temperature", "top_p", "stop", "seed", "stream"}

HTTP_STATUS = {
    "bad_request": 400,
    "unknown_model": 404,
    "overloaded": 503,
    "deadline_exceeded": 504,
    "backend_error": 502,
    "internal": 500,
}
ERROR_TYPE = {
    "bad_request": "invalid_request_error",
    "unknown_model": "invalid_request_error",
    "overloaded": "server_error",
    "deadline_exceeded": "timeout",
    "backend_error": "server_error",
    "internal": "server_error",
}


class GatewayError(Exception):
    """An error answered as an OpenAI error object with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    @classmethod
    def from_network(cls, err: WWWServeError) -> GatewayError:
        """The HTTP face of a network error code."""
        code = "model_not_found" if err.code == "unknown_model" else err.code
        return cls(
            HTTP_STATUS.get(err.code, 500), err.message, ERROR_TYPE.get(err.code, "server_error"), code
        )

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _text_content(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which we take the text ones."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise GatewayError(400, "only text content parts are supported", param="messages")
            parts.append(p["text"])
        return "".join(parts)
    if content is None:
        return ""
    raise GatewayError(400, "message content must be a string or a list of text parts", param="messages")


def to_network(body: Any, chat: bool) -> tuple[str, dict[str, Any], bool]:
    """(model, wwwserve request body, include usage in stream) from an OpenAI request body."""
    if not isinstance(body, dict):
        raise GatewayError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "`model` is required", param="model")
    unknown = (
        set(body)
        - IGNORED
        - PASSED
        - {"model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n"}
    )
    if unknown:
        raise GatewayError(400, f"unsupported parameter(s): {sorted(unknown)}", param=sorted(unknown)[0])
    if body.get("n", 1) != 1:
        raise GatewayError(400, "only n=1 is supported", param="n")
    out: dict[str, Any] = {k: body[k] for k in PASSED if k in body and body[k] is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise GatewayError(400, "`messages` must be a non-empty list", param="messages")
        out["messages"] = []
        for m in msgs:
            if not isinstance(m, dict):
                raise GatewayError(400, "each message must be an object", param="messages")
            out["messages"].append({"role": m.get("role"), "content": _text_content(m.get("content"))})
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise GatewayError(400, "`prompt` must be a string", param="prompt")
        out["prompt"] = prompt
    opts = body.get("stream_options") or {}
    return model, out, bool(isinstance(opts, dict) and opts.get("include_usage"))


def usage(r: Reply) -> dict[str, int]:
    """OpenAI's usage object."""
    p, c = r.usage.prompt_tokens, r.usage.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion_object(r: Reply, chat: bool, model: str) -> dict[str, Any]:
    """A non-streaming chat.completion or text_completion."""
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": r.text},
            "finish_reason": r.finish_reason,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + r.request_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(r),
        "system_fingerprint": f"wwwserve:{r.provider}",
    }


def chunk_event(
    rid: str,
    chat: bool,
    model: str,
    created: int,
    text: str | None = None,
    finish: str | None = None,
    role: bool = False,
    usage_obj: dict[str, int] | None = None,
) -> str:
    """One SSE `data:` line of a streaming response."""
    if usage_obj is not None:
        choices: list[dict[str, Any]] = []
    elif chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    else:
        choices = [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]
    obj: dict[str, Any] = {
        "id": ("chatcmpl-" if chat else "cmpl-") + rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_obj is not None:
        obj["usage"] = usage_obj
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"
