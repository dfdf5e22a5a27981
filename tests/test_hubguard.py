"""Hubs stop routing users to a provider the ledger proves bad, lose none of its answers, and let it back.

A real hub (provider logins, a system account for its guard), a provider's real leaf and agent, a
client user at the hub. The guard is handed duel evidence directly (the ledger stream's folding is
covered elsewhere: tests/test_verification.py runs the whole loop with CLI processes).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import pytest

from wwwserve.agent import Agent, ProviderSettings
from wwwserve.agent import agent as agent_module
from wwwserve.agent.canary import entry_url_of
from wwwserve.broker.config import HubConfig, LeafConfig, provider_permissions
from wwwserve.broker.process import NatsServer, free_port, nats_server_binary
from wwwserve.broker.streams import create_when_ready
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.hubguard import HubGuard, banned_by, leafs_of
from wwwserve.ledger.book import LedgerView
from wwwserve.ledger.evidence import DuelEvidence
from wwwserve.policies.registry import load_policy

MODEL = "sim-model"
INTERNAL = ("_hub", "internal-pw")
SYSTEM = ("_hub_sys", "system-pw")


def hub_config(port: int, leaf_port: int, tmp: Path, banned: frozenset[str] = frozenset()) -> HubConfig:
    return HubConfig(
        port=port,
        leafnode_port=leaf_port,
        provider_users={"alice": "a-pw"},
        client_users={"app": "app-pw"},
        internal_user=INTERNAL,
        system_user=SYSTEM,
        banned=banned,
        jetstream_dir=str(tmp / "js"),
    )


def test_a_banned_provider_may_not_take_requests_and_the_config_is_valid(tmp_path: Path) -> None:
    assert provider_permissions("p", banned=True)["subscribe"] == {"allow": [">"], "deny": ["llm.request.>"]}
    assert "deny" not in provider_permissions("p")["subscribe"]
    conf = tmp_path / "hub.conf"
    conf.write_text(hub_config(free_port(), free_port(), tmp_path, frozenset({"alice"})).render())
    check = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
    assert "system_account: SYS" in conf.read_text()


def test_proven_bad_needs_evidence_and_most_duels_lost() -> None:
    view = LedgerView()
    d = view.evidence.duels.setdefault("x", DuelEvidence())
    for _ in range(3):
        d.add(1.0, lost=True)
    assert not d.proven_bad  # three lost verdicts: 2.91 of evidence, not yet
    d.add(1.0, lost=True)
    assert d.proven_bad and banned_by(view, {"x", "y"}) == {"x"}
    for _ in range(12):  # answering well again: the old losses fade
        d.add(1.0, lost=False)
    assert not d.proven_bad
    honest = DuelEvidence()
    for i in range(10):
        honest.add(1.0, lost=i % 5 == 0)  # a provider losing one duel in five is not banned
    assert not honest.proven_bad


def test_leafs_are_found_by_their_own_status_subject() -> None:
    leafz = {
        "leafs": [
            {"id": 7, "subscriptions_list": ["llm.status.alice", "llm.request.m"]},
            {"id": 9, "subscriptions_list": ["llm.status.bob"]},
            {"id": 11},
        ]
    }
    assert leafs_of(leafz, "alice") == [7] and leafs_of(leafz, "carol") == []


def test_canaries_enter_at_a_hub_client_port_with_the_provider_login() -> None:
    s = ProviderSettings(name="p1", hub=["nats-leaf://hub.example:7422"], hub_password="s3cret")
    assert entry_url_of(s) == "nats://p1:s3cret@hub.example:4222"
    assert entry_url_of(ProviderSettings(name="p1", hub=["hub.example:17422"])) is None  # unknown client port
    explicit = ProviderSettings(name="p1", hub=["hub.example:17422"], entry_url="nats://10.0.0.1:4333")
    assert entry_url_of(explicit) == "nats://10.0.0.1:4333"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, int]]:
    port, leaf_port = free_port(), free_port()
    server = NatsServer(
        hub_config(port, leaf_port, tmp_path).render(), port=port, name="hub", workdir=tmp_path
    )
    async with server:
        assert await create_when_ready(server.url, 1, INTERNAL)
        yield server, leaf_port


async def test_a_proven_cheater_is_cut_off_at_the_hub_without_losing_an_answer_and_recovers(
    hub: tuple[NatsServer, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "HUB_PAUSE_S", 1.0)
    server, leaf_port = hub
    leaf_client = free_port()
    leaf_cfg = LeafConfig(
        hub_urls=[f"127.0.0.1:{leaf_port}"],
        port=leaf_client,
        name="alice",
        credentials_user="alice",
        credentials_password="a-pw",
    )
    agent = Agent(
        ProviderSettings(
            name="alice",
            nats_url=f"nats://127.0.0.1:{leaf_client}",
            engine="sim",
            model=[MODEL],
            data_dir=tmp_path / "alice",
            heartbeat_interval_s=0.5,
        ),
        SimEngine(SimOptions(decode_tpot_ms=5, prefill_tps=20000)),
        load_policy("default"),
    )
    guard = HubGuard(
        url=server.url,
        hub_name="hub",
        user=INTERNAL,
        system_user=SYSTEM,
        providers={"alice"},
        apply_bans=lambda banned: server.reload(
            hub_config(server.port, leaf_port, tmp_path, banned).render()
        ),
    )
    async with NatsServer(leaf_cfg.render(), port=leaf_client, name="leaf-alice", workdir=tmp_path / "leaf"):
        task = asyncio.create_task(agent.run())
        app = await nats.connect(f"nats://app:app-pw@127.0.0.1:{server.port}")
        nc = await nats.connect(server.url, user=INTERNAL[0], password=INTERNAL[1])
        sysc = await nats.connect(server.url, user=SYSTEM[0], password=SYSTEM[1])
        own_user = await nats.connect(f"nats://127.0.0.1:{leaf_client}")

        async def ask(conn: nats.NATS, max_tokens: int = 4) -> str:
            body = json.dumps({"prompt": "hello", "max_tokens": max_tokens}).encode()
            return str(
                json.loads((await conn.request(f"llm.request.{MODEL}", body, timeout=10)).data)["provider"]
            )

        async def hub_serves(want: bool, within: float = 10.0) -> bool:
            end = asyncio.get_running_loop().time() + within
            while asyncio.get_running_loop().time() < end:
                try:
                    served = await ask(app) == "alice"
                except nats.errors.NoRespondersError:
                    served = False
                if served == want:
                    return True
                await asyncio.sleep(0.2)
            return False

        try:
            await agent.wait_ready()
            assert await hub_serves(True)
            # proven bad: the hub denies it llm.request.>, tells it, waits until it is idle, closes its leaf
            guard.view.evidence.duels["alice"] = DuelEvidence(fought=6.0, bad=6.0, verdicts=6, lost=6)
            in_flight = asyncio.create_task(ask(app, max_tokens=200))  # ~1 s of decoding at alice
            await asyncio.sleep(0.2)
            await guard.check(nc, sysc)
            assert guard.banned == {"alice"}
            assert await in_flight == "alice"  # answered although its leaf was closed after
            await asyncio.sleep(1.5)  # its pause is over: it rejoined its queue group at its own leaf
            assert await hub_serves(False)  # no user request from the hub reaches it
            assert await ask(own_user) == "alice"  # its own leaf's users are still its own
            # answering well again: the ban is lifted the same way, and hub users reach it again
            guard.view.evidence.duels["alice"] = DuelEvidence(fought=30.0, bad=3.0, verdicts=30, lost=3)
            await guard.check(nc, sysc)
            assert guard.banned == frozenset()
            assert await hub_serves(True)
        finally:
            for conn in (app, nc, sysc, own_user):
                await conn.close()
            agent.stop()
            await task
