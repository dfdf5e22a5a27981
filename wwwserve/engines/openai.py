"""Engine for any OpenAI-compatible HTTP server (vLLM `vllm serve`, SGLang, llama.cpp server).

Streams with SSE; reads vLLM/SGLang Prometheus metrics (when the server has them) for real load
figures instead of guessing, as the original WWW.Serve nodes did.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import aiohttp
import structlog

from wwwserve.engines.base import Delta, EngineLoad, parse_options, prompt_text
from wwwserve.engines.prefix_cache import PrefixCache
from wwwserve.errors import BackendError
from wwwserve.protocol.messages import CompletionRequest
from wwwserve.protocol.prefix import block_hashes

log = structlog.get_logger(__name__)

_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")
_RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
# KV-cache use, 0..1: vLLM V1 renamed the gauge (vllm-project/vllm#18354); older servers export the old name
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
# prefix-cache counters (tokens): vLLM V1, then the older GPU-prefixed names
_PREFIX_COUNTERS = (
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
    ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"),
)
_PREFIX_RATE = ("vllm:gpu_prefix_cache_hit_rate",)  # vLLM V0 exports the rate itself
_POLL_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
_TPOT_WINDOW_S = 2.0  # the streams' recent time per token: what `load().tpot_ms` reports


@dataclass
class OpenAIOptions:
    """Engine options for `openai`, set with `--engine-opt key=value`."""

    served_model: str = ""  # the name the server knows the model by; default: the network's name
    api_key: str = ""
    metrics_interval_s: float = 1.0
    timeout_s: float = 600.0
    context_length: int = 0  # 0 = the server's `max_model_len` from /v1/models (vLLM), else unbounded
    prefix_cache_blocks: int = 16384  # 16-token blocks of served prompts remembered as the server's cache

    @classmethod
    def from_opts(cls, opts: dict[str, str]) -> OpenAIOptions:
        """Parse `--engine-opt` strings, refusing unknown keys."""
        out = parse_options(cls, opts, "openai")
        return out


def parse_metrics(text: str) -> dict[str, float]:
    """Sum Prometheus samples by metric name (over all label sets)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            with contextlib.suppress(ValueError):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def prefix_hit_rate(m: dict[str, float]) -> float | None:
    """The server's prefix-cache hit rate from its counters (hit tokens / queried tokens), if exported."""
    for hits, queries in _PREFIX_COUNTERS:
        if queries in m:
            return m.get(hits, 0.0) / m[queries] if m[queries] > 0 else 0.0
    return next((m[k] for k in _PREFIX_RATE if k in m), None)


class OpenAIEngine:
    """Talks to an OpenAI-compatible server at `base_url` (with or without a trailing /v1)."""

    kind = "openai"

    def __init__(self, base_url: str, options: OpenAIOptions | None = None) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.options = options or OpenAIOptions()
        self._client: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        self._running = 0
        self._server_running: float | None = None
        self._server_waiting: float | None = None
        self._kv_usage: float | None = None
        self._model_lens: dict[str, int] | None = None  # from /v1/models, read once
        self._healthy = True
        self._warned_usage = False
        # the server's prefix cache, as learned from what we sent it (its own LRU is not observable)
        self.prefix_cache = PrefixCache(self.options.prefix_cache_blocks)
        self.prefix_hit_rate: float | None = None  # the server's own counters, when it exports them
        # What only we can know of the server's prefill queue: prompt tokens (words) sent that have not
        # produced a first token yet, and the prefill speed that cleared them. A sample is (the backlog
        # a request found + its own prompt) / its TTFT: the prompts ahead were prefilled before its own
        self.prefill_backlog = 0
        self.prefill_tps = 0.0
        # (when, seconds per token) of the streams' latest events: the server's time per token now,
        # stalls by other prompts' prefill included. The agent's own average moves only as answers
        # finish, seconds after a wave of forwarded prompts has slowed every stream on the server; a sim
        # engine knows its step time at once (docs/benchmarks.md, "On a real GPU")
        self._gaps: deque[tuple[float, float]] = deque()
        self._gaps_sum = 0.0

    async def start(self) -> None:
        """Open the HTTP client and start polling /metrics."""
        headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}
        # aiohttp, not httpx: relaying 32 streams of a token per event, httpx's layers (httpcore, anyio's
        # cancel scope per read) took more of the agent's CPU than the rest of the request path
        # (docs/benchmarks.md, "What the agent adds in front of a real engine")
        self._client = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.options.timeout_s, connect=5),
            # one kept-alive connection per request in flight, unbounded (beyond a pool's limit each
            # request would open a TCP connection to a server a few milliseconds from its answer)
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._poller = asyncio.create_task(self._poll_metrics())

    async def close(self) -> None:
        """Stop polling and close the client."""
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._client:
            await self._client.close()

    def load(self) -> EngineLoad:
        """The server's own counts when it exports them, else what passes through this engine."""
        running = int(self._server_running) if self._server_running is not None else self._running
        waiting = int(self._server_waiting or 0)
        return EngineLoad(
            running=running,
            waiting=waiting,
            healthy=self._healthy,
            tpot_ms=self.recent_tpot_ms(),
            prefill_tps=self.prefill_tps,
            prefill_backlog=self.prefill_backlog,
            kv_cache_usage=self._kv_usage,
            prefix_filter=self.prefix_cache.advertised() if self.prefix_cache.capacity else None,
            prefix_hit_rate=self.prefix_hit_rate,
        )

    def recent_tpot_ms(self, window_s: float = _TPOT_WINDOW_S) -> float:
        """Mean time per token of the streams over the last `window_s` seconds; 0 when none ran."""
        cutoff = time.monotonic() - window_s
        gaps = self._gaps
        while gaps and gaps[0][0] < cutoff:
            self._gaps_sum -= gaps.popleft()[1]
        return max(0.0, self._gaps_sum) / len(gaps) * 1000.0 if gaps else 0.0

    def _token_gap(self, now: float, per_token_s: float) -> None:
        self._gaps.append((now, per_token_s))
        self._gaps_sum += per_token_s

    def _prefill_sample(self, tokens_per_s: float, alpha: float = 0.2) -> None:
        self.prefill_tps = (
            tokens_per_s if not self.prefill_tps else (1 - alpha) * self.prefill_tps + alpha * tokens_per_s
        )

    def context_length(self, model: str) -> int | None:
        """The configured length, else what the server reported for this model (vLLM's `max_model_len`)."""
        if self.options.context_length:
            return self.options.context_length
        return (self._model_lens or {}).get(self.options.served_model or model)

    async def _read_models(self) -> None:
        """Learn each served model's context length once (servers that do not report one give none)."""
        assert self._client is not None
        async with self._client.get(f"{self.base_url}/v1/models", timeout=_POLL_TIMEOUT) as resp:
            if resp.status == 200:
                lens: dict[str, int] = {}
                for card in (await resp.json(content_type=None)).get("data", []):
                    if isinstance(card, dict) and isinstance(card.get("max_model_len"), int):
                        lens[str(card.get("id"))] = card["max_model_len"]
                self._model_lens = lens

    async def _poll_metrics(self) -> None:
        assert self._client is not None
        while True:
            try:
                if self._model_lens is None:
                    with contextlib.suppress(ValueError, AttributeError):
                        await self._read_models()
                async with self._client.get(f"{self.base_url}/metrics", timeout=_POLL_TIMEOUT) as resp:
                    if resp.status == 200:
                        m = parse_metrics(await resp.text())
                        self._server_running = next((m[k] for k in _RUNNING if k in m), None)
                        self._server_waiting = next((m[k] for k in _WAITING if k in m), None)
                        self._kv_usage = next((m[k] for k in _KV_USAGE if k in m), None)
                        self.prefix_hit_rate = prefix_hit_rate(m)
                self._healthy = True
            except (aiohttp.ClientError, TimeoutError):
                self._healthy = False
            await asyncio.sleep(self.options.metrics_interval_s)

    async def generate(self, request: CompletionRequest, model: str) -> AsyncGenerator[Delta, None]:
        """Stream from /v1/completions or /v1/chat/completions and translate the SSE chunks."""
        if self._client is None:
            raise BackendError("openai engine not started")
        chat = request.messages is not None
        body: dict[str, object] = {
            "model": self.options.served_model or model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop is not None:
            body["stop"] = request.stop
        if request.seed is not None:
            body["seed"] = request.seed
        if chat:
            body["messages"] = [dataclasses.asdict(m) for m in request.messages or []]
        else:
            body["prompt"] = request.prompt
        path = "/v1/chat/completions" if chat else "/v1/completions"
        finish: str | None = None
        usage = (0, 0)
        produced = 0
        answer: list[str] = []
        done = False
        self._running += 1
        prompt = prompt_text(request)
        words = len(prompt.split())
        prompt_words = words or 1  # what the prefill backlog counts for this request
        ahead = self.prefill_backlog
        self.prefill_backlog += prompt_words
        waiting_first = True
        sent = last_event = time.monotonic()
        try:
            async with self._client.post(self.base_url + path, json=body) as resp:
                if resp.status != 200:
                    detail = (await resp.read()).decode(errors="replace")[:500]
                    raise BackendError(f"engine answered HTTP {resp.status}: {detail}")
                # Every event that arrived in one read goes out as one delta: a server streams a
                # token per event, and under load (32 streams at ~8 ms per token) relaying each as its
                # own message cost the agent more CPU than the rest of the request; when the agent
                # keeps up, a read holds one event and nothing waits.
                pending = b""
                async for block in resp.content.iter_any():
                    *lines, pending = (pending + block).split(b"\n")
                    texts: list[str] = []
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            break
                        chunk = json.loads(data)
                        if chunk.get("error"):  # an error event inside a 200 stream (vLLM, SGLang)
                            err = chunk["error"]
                            detail = err.get("message", err) if isinstance(err, dict) else err
                            raise BackendError(f"engine failed mid-stream: {detail}")
                        if chunk.get("usage"):
                            u = chunk["usage"]
                            usage = (int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                            if text:
                                produced += 1
                                texts.append(text)
                            finish = choice.get("finish_reason") or finish
                    if texts:
                        now = time.monotonic()
                        if waiting_first:
                            waiting_first = False
                            self.prefill_backlog -= prompt_words
                            self._prefill_sample((ahead + prompt_words) / max(1e-3, now - sent))
                        else:
                            self._token_gap(now, (now - last_event) / len(texts))
                        last_event = now
                        joined = "".join(texts)
                        answer.append(joined)
                        yield Delta(joined)
                    if done:
                        break
            if not done and finish is None:
                # llama-cpp-python's server, refusing a streamed request, answers 200 with an empty body
                raise BackendError(
                    f"engine ended its stream without an answer ({produced} chunks, no [DONE]): "
                    "the server failed the request (too long a prompt for its context?)"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._healthy = False
            raise BackendError(f"engine at {self.base_url} failed: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise BackendError(f"engine sent a malformed stream chunk: {exc}") from exc
        finally:
            self._running -= 1
            if waiting_first:
                self.prefill_backlog -= prompt_words
        if usage == (0, 0):  # a server that ignores stream_options.include_usage (llama-cpp-python's)
            if not self._warned_usage:
                self._warned_usage = True
                log.warning("openai.no_usage", base_url=self.base_url, counted="prompt words and chunks")
            usage = (words, produced)
        # the server's prefix cache now holds the prompt and the answer (a next turn resends both)
        self.prefix_cache.insert(block_hashes(f"{prompt} {''.join(answer)}"))
        yield Delta("", finish or "stop", usage[0], usage[1] or produced)
