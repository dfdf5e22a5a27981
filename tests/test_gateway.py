"""The OpenAI-compatible gateway, driven by the official `openai` client, against real providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import uvicorn

from tests.conftest import SIM_FAST
from wwwserve.broker.process import free_port
from wwwserve.gateway.app import create_app
from wwwserve.gateway.settings import GatewaySettings
from wwwserve.topology import LocalNetwork

MODEL = "org/sim-model-1.0"
KEY = "test-key"


@pytest.fixture
async def gateway(net: LocalNetwork) -> AsyncIterator[str]:
    """Two sim providers and a gateway in front of the hub; yields the gateway's base URL."""
    for name in ("p1", "p2"):
        await net.add_provider(name, engine="sim", model=[MODEL], engine_opt=SIM_FAST)
    port = free_port()
    app = create_app(GatewaySettings(nats_url=[net.hub_url], port=port, api_key=[KEY], timeout_s=20))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    for _ in range(50):  # until the gateway has heard the providers' heartbeats
        if MODEL in app.state.client.models():
            break
        await asyncio.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
def oai(gateway: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


async def test_models_list_shows_what_providers_serve(oai: openai.AsyncOpenAI) -> None:
    models = await oai.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_chat_non_streaming(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=7
    )
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 7 and r.usage.total_tokens > 7


async def test_chat_streaming_sends_content_chunks_then_done(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, finish, used = [], None, None
    async for chunk in stream:
        if chunk.usage:
            used = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                content.append(c.delta.content)
            finish = c.finish_reason or finish
    assert len(content) >= 2 and finish == "length"
    assert used is not None and used.completion_tokens == 6


async def test_completions(oai: openai.AsyncOpenAI) -> None:
    r = await oai.completions.create(model=MODEL, prompt="Once upon", max_tokens=5)
    assert r.choices[0].text and r.usage is not None and r.usage.completion_tokens == 5


async def test_unknown_model_is_404(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": "not a list"},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3},
        {"messages": [{"role": "user", "content": "x"}]},
    ],
)
async def test_malformed_requests_are_400(gateway: str, body: dict[str, object]) -> None:
    async with httpx.AsyncClient() as h:
        r = await h.post(
            f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert r.status_code == 400
    assert r.json()["error"]["message"]


async def test_invalid_json_and_bad_key(gateway: str) -> None:
    async with httpx.AsyncClient() as h:
        r = await h.post(
            f"{gateway}/v1/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 400
        r = await h.get(f"{gateway}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_client_disconnect_cancels_the_request_in_the_network(net: LocalNetwork, gateway: str) -> None:
    # A slow provider that serves everything: 20 ms per token, 1000 tokens = 20 s of work.
    slow = await net.add_provider(
        "slow", engine="sim", model=["slow-model"], engine_opt={"decode_tpot_ms": "20"}
    )
    body = {
        "model": "slow-model",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 1000,
        "stream": True,
    }
    for _ in range(50):
        async with httpx.AsyncClient() as h:
            r = await h.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        if "slow-model" in [m["id"] for m in r.json()["data"]]:
            break
        await asyncio.sleep(0.1)
    async with httpx.AsyncClient(timeout=30) as h:
        async with h.stream(
            "POST", f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as resp:
            assert resp.status_code == 200
            seen = 0
            async for line in resp.aiter_lines():
                seen += line.startswith("data:")
                if seen >= 5:
                    break  # the user goes away mid-stream
    for _ in range(60):
        if slow.agent.slots.running == 0:
            break
        await asyncio.sleep(0.1)
    assert slow.agent.slots.running == 0, "the provider kept generating for a client that left"
    assert slow.agent.stats.served == 0
