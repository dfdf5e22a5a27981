"""Build the engine a provider's settings name."""

from __future__ import annotations

from wwwserve.engines.base import Engine


def create_engine(
    kind: str, url: str = "", opts: dict[str, str] | None = None, models: list[str] | None = None
) -> Engine:
    """Return an engine of `kind` with its options parsed (unknown options are an error); `models`: what
    the provider serves (an engine that starts its own server needs to know)."""
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
        from wwwserve.engines.vllm import VLLMEngine, VLLMOptions

        if not models or len(models) != 1:
            raise ValueError(f"--engine vllm serves exactly one --model (got {models or []})")
        return VLLMEngine(models[0], VLLMOptions.from_opts(opts))
    raise ValueError(f"unknown engine {kind!r}: use embedded, openai, sim or vllm")
