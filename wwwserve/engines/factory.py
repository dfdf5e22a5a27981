"""Build the engine a provider's settings name."""

from __future__ import annotations

from wwwserve.engines.base import Engine


def create_engine(kind: str, url: str = "", opts: dict[str, str] | None = None) -> Engine:
    """Return an engine of `kind` with its options parsed (unknown options are an error)."""
    opts = opts or {}
    if kind == "sim":
        from wwwserve.engines.sim import SimEngine, SimOptions

        return SimEngine(SimOptions.from_opts(opts))
    if kind == "openai":
        from wwwserve.engines.openai import OpenAIEngine, OpenAIOptions

        return OpenAIEngine(url, OpenAIOptions.from_opts(opts))
    if kind == "embedded":
        from wwwserve.engines.embedded import EmbeddedEngine, EmbeddedOptions

        return EmbeddedEngine(EmbeddedOptions.from_opts(opts))
    if kind == "vllm":
        raise ValueError(
            "in-process vLLM is not built yet: run `vllm serve MODEL` and use --engine openai "
            "--engine-url http://127.0.0.1:8000 (the agent reads vLLM's /metrics for its load)"
        )
    raise ValueError(f"unknown engine {kind!r}: use embedded, openai or sim")
