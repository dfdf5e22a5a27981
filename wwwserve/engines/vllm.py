"""`--engine vllm`: the provider runs and supervises its own `vllm serve`, and serves through it.

The server is started on a free local port with the provider's model and every `--engine-opt` that is
not one of this engine's own passed through as a vLLM flag (`load-format=dummy` becomes
`--load-format dummy`, `enforce-eager=true` becomes `--enforce-eager`). Until its health endpoint
answers the provider is `starting` (heartbeats say so, and it takes no requests); if the server dies it
is restarted with backoff while requests in flight end in explicit errors; it stops with the provider.
Requests go through the `openai` engine, which also reads vLLM's /metrics for the load.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from wwwserve.broker.process import free_port
from wwwserve.engines.base import Delta, EngineLoad, parse_options
from wwwserve.engines.openai import OpenAIEngine, OpenAIOptions
from wwwserve.engines.supervisor import ServerProcess, ServerState
from wwwserve.errors import BackendError
from wwwserve.protocol.messages import CompletionRequest

DEFAULT_COMMAND = "{python} -m vllm.entrypoints.cli.main serve {model} --host {host} --port {port}"


@dataclass
class VLLMOptions:
    """This engine's own `--engine-opt` keys; every other key is passed to vLLM as a flag."""

    command: str = ""  # the server's command line, with {model}, {port}, {host}; default: `vllm serve`
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    health_path: str = "/health"  # vLLM's; GET answers 200 once the server can serve
    start_timeout_s: float = 900.0  # vLLM compiles and captures CUDA graphs: minutes on a fresh machine
    restart_backoff_s: float = 1.0  # first wait before a restart; doubles up to max_backoff_s
    max_backoff_s: float = 30.0
    stop_grace_s: float = 20.0  # SIGTERM, then SIGKILL after this
    served_model: str = ""  # the name vLLM serves the model as (default: the provider's model name)
    metrics_interval_s: float = 1.0
    passthrough: dict[str, str] = field(default_factory=dict)  # the vLLM flags

    @classmethod
    def from_opts(cls, opts: dict[str, str]) -> VLLMOptions:
        """Split `--engine-opt` strings into this engine's keys and vLLM's flags."""
        own_keys = {f.name.replace("_", "-") for f in dataclasses.fields(cls)} | {
            f.name for f in dataclasses.fields(cls)
        }
        own = {k: v for k, v in opts.items() if k in own_keys and k != "passthrough"}
        out = parse_options(cls, {k.replace("-", "_"): v for k, v in own.items()}, "vllm")
        out.passthrough = {k: v for k, v in opts.items() if k not in own}
        out.served_model = out.served_model or out.passthrough.get("served-model-name", "")
        return out


def vllm_flags(passthrough: dict[str, str]) -> list[str]:
    """`key=value` options as vLLM command-line flags (`true` alone is a bare flag)."""
    argv: list[str] = []
    for key, value in passthrough.items():
        flag = "--" + key.replace("_", "-")
        if value.lower() == "true":
            argv.append(flag)
        elif value.lower() != "false":
            argv += [flag, value]
    return argv


class VLLMEngine:
    """A supervised `vllm serve` child, served through the `openai` engine."""

    kind = "vllm"

    def __init__(self, model: str, options: VLLMOptions | None = None) -> None:
        self.options = o = options or VLLMOptions()
        if not o.command and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "--engine vllm needs vLLM installed: pip install 'wwwserve[vllm]' (or run a server yourself "
                "and use --engine openai, or give the server's command with --engine-opt command=...)"
            )
        self.model = model
        self.port = o.port or free_port()
        base = f"http://{o.host}:{self.port}"
        fields = {"python": shlex.quote(sys.executable), "model": shlex.quote(model), "port": self.port}
        argv = shlex.split((o.command or DEFAULT_COMMAND).format(host=o.host, **fields))
        self.server = ServerProcess(
            argv + vllm_flags(o.passthrough),
            base + o.health_path,
            name=f"vllm:{model}",
            start_timeout_s=o.start_timeout_s,
            backoff_s=o.restart_backoff_s,
            max_backoff_s=o.max_backoff_s,
            stop_grace_s=o.stop_grace_s,
        )
        self.http = OpenAIEngine(
            base, OpenAIOptions(served_model=o.served_model, metrics_interval_s=o.metrics_interval_s)
        )

    async def start(self) -> None:
        """Start the server and its supervision; the provider is `starting` until it is ready."""
        await self.server.start()
        await self.http.start()

    async def close(self) -> None:
        """Stop the HTTP client and the server (and whatever the server started)."""
        await self.http.close()
        await self.server.stop()

    def load(self) -> EngineLoad:
        """The server's load; unhealthy (no requests taken) while it starts or restarts."""
        load = self.http.load()
        state = self.server.state
        if state != ServerState.READY:
            return load._replace(healthy=False, state=state.value)
        return load

    def context_length(self, model: str) -> int | None:
        """What vLLM reports as its `max_model_len`."""
        return self.http.context_length(model)

    async def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        """Stream from the server; refuse at once while it is not ready."""
        if self.server.state != ServerState.READY:
            raise BackendError(f"the vLLM server is {self.server.state.value}")
        async for delta in self.http.generate(request, model):
            yield delta
