"""Operating the network: NATS micro services API, Prometheus metrics, hub credentials and permissions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import nats
import nats.errors
import pytest

from tests.conftest import SIM_FAST
from wwwserve.agent import Agent, ProviderSettings
from wwwserve.broker.config import HubConfig, LeafConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.client import Client
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.errors import UnknownModel
from wwwserve.policies import load_policy
from wwwserve.protocol.subjects import heartbeat_subject
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"


async def test_micro_ping_info_stats_follow_the_schema(net: LocalNetwork) -> None:
    await net.add_provider("p1", engine="sim", model=[MODEL], engine_opt=SIM_FAST)
    await net.add_provider("p2", engine="sim", model=[MODEL], engine_opt=SIM_FAST)
    async with Client(net.hub_url) as c:
        await c.complete(MODEL, "hello", max_tokens=2)
    nc = await nats.connect(net.hub_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING.wwwserve", b"", reply=inbox)
        pings = [json.loads((await sub.next_msg(timeout=2)).data) for _ in range(2)]
        assert {p["type"] for p in pings} == {"io.nats.micro.v1.ping_response"}
        assert {p["metadata"]["provider"] for p in pings} == {"p1", "p2"} and all(
            p["name"] == "wwwserve" for p in pings
        )
        ids = {p["metadata"]["provider"]: p["id"] for p in pings}
        info = json.loads((await nc.request(f"$SRV.INFO.wwwserve.{ids['p1']}", b"", timeout=2)).data)
        assert info["type"] == "io.nats.micro.v1.info_response"
        subjects = {e["subject"] for e in info["endpoints"]}
        assert subjects == {f"llm.direct.p1.{MODEL}", "llm.status.p1", "llm.ledger.view.p1"}
        stats = json.loads((await nc.request(f"$SRV.STATS.wwwserve.{ids['p1']}", b"", timeout=2)).data)
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        assert all("num_requests" in e and "served" in e["data"] for e in stats["endpoints"])
        status = json.loads((await nc.request("llm.status.p2", b"", timeout=2)).data)
        assert status["name"] == "p2" and status["models"] == [MODEL]
    finally:
        await nc.close()


async def test_metrics_are_scraped_after_traffic(net: LocalNetwork) -> None:
    port = free_port()
    await net.add_provider("p1", engine="sim", model=[MODEL], engine_opt=SIM_FAST, metrics_port=port)
    async with Client(net.providers["p1"].url) as c:
        for _ in range(3):
            await c.complete(MODEL, "hello", max_tokens=4)
        with pytest.raises(UnknownModel):
            await c.complete("nobody-serves-this", "x", timeout=2)
    async with httpx.AsyncClient() as h:
        text = (await h.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'wwwserve_requests_total{outcome="served"} 3.0' in text
    assert "wwwserve_latency_seconds_count 3.0" in text and "wwwserve_ttft_seconds_bucket" in text
    assert "wwwserve_completion_tokens_total 12.0" in text and "wwwserve_running 0.0" in text


@pytest.fixture
async def secured() -> AsyncIterator[tuple[NatsServer, int]]:
    """A hub that requires credentials: providers alice and bob, client user app, ops user ops."""
    port, leaf_port = free_port(), free_port()
    cfg = HubConfig(
        port=port,
        leafnode_port=leaf_port,
        provider_users={"alice": "a-pw", "bob": "b-pw"},
        client_users={"app": "app-pw"},
        ops_users={"ops": "ops-pw"},
    )
    async with NatsServer(cfg.render(), port=port, name="hub") as hub:
        yield hub, leaf_port


async def _leaf(leaf_port: int, user: str | None, password: str | None) -> NatsServer:
    port = free_port()
    cfg = LeafConfig(
        hub_urls=[f"127.0.0.1:{leaf_port}"],
        port=port,
        name=f"leaf-{user}",
        credentials_user=user,
        credentials_password=password,
    )
    leaf = NatsServer(cfg.render(), port=port, name=f"leaf-{user}")
    await leaf.start()
    return leaf


async def test_permissions_are_enforced_by_the_real_server(secured: tuple[NatsServer, int]) -> None:
    hub, leaf_port = secured
    alice_leaf = await _leaf(leaf_port, "alice", "a-pw")
    stranger_leaf = await _leaf(leaf_port, "mallory", "guess")
    agent = Agent(
        ProviderSettings(name="alice", nats_url=alice_leaf.url, engine="sim", model=[MODEL]),
        SimEngine(SimOptions(decode_tpot_ms=1)),
        load_policy("default"),
    )
    task = asyncio.create_task(agent.run())
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    try:
        await agent.wait_ready()
        ops = await nats.connect(f"nats://ops:ops-pw@127.0.0.1:{hub.port}")
        seen: list[str] = []

        async def on_beat(msg: object) -> None:
            seen.append(msg.subject)  # type: ignore[attr-defined]

        await ops.subscribe("llm.heartbeat.>", cb=on_beat)
        await ops.flush()
        # anonymous clients are refused by the hub
        with pytest.raises(nats.errors.Error):
            await nats.connect(
                f"nats://127.0.0.1:{hub.port}",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=1,
            )
        # alice's leaf may heartbeat as alice, not as bob; a leaf with bad credentials reaches nobody
        on_alice = await nats.connect(alice_leaf.url)
        on_stranger = await nats.connect(stranger_leaf.url)
        await asyncio.sleep(1.5)
        await on_alice.publish(heartbeat_subject("bob", "x"), b'{"name":"bob","models":["x"]}')
        await on_stranger.publish(heartbeat_subject("mallory", "x"), b'{"name":"mallory","models":["x"]}')
        # a client user may send requests (served by alice) but may not publish a heartbeat
        app = await nats.connect(f"nats://app:app-pw@127.0.0.1:{hub.port}", error_cb=on_error)
        reply = await app.request(f"llm.request.{MODEL}", b'{"prompt":"hi","max_tokens":2}', timeout=5)
        assert json.loads(reply.data)["provider"] == "alice"
        await app.publish(heartbeat_subject("alice", "fake"), b'{"name":"alice","models":["fake"]}')
        await app.flush()
        await asyncio.sleep(1.2)
        assert heartbeat_subject("alice", MODEL) in seen
        assert heartbeat_subject("alice", "fake") not in seen
        assert not [s for s in seen if s.startswith(("llm.heartbeat.bob.", "llm.heartbeat.mallory."))]
        assert any("permissions violation" in e.lower() for e in errors)
        for c in (ops, on_alice, on_stranger, app):
            await c.close()
    finally:
        agent.stop()
        await task
        await alice_leaf.stop()
        await stranger_leaf.stop()
