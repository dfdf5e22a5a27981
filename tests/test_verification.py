"""Verification on every route, as a new user would run it: separate CLI processes, users at the hub.

A hub with provider logins (its guard on, the default), four providers (`p0` with one slot, `p1` and
`p2` at defaults, `p3` a sim engine with `corrupt=1.0`: every answer garbage), canaries entering at
the hub's client port. Users send plain requests to the hub (as `nats req` does) or through the
OpenAI gateway: 200 warm-up requests in bursts of 10, then 100 measured. The cheater must serve
fewer than 5 of those 100 and be rated lowest in every provider's ledger view.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from tests.conftest import spawn
from wwwserve.broker.process import free_port
from wwwserve.observe import wait_for_providers

pytestmark = pytest.mark.slow

MODEL = "sim-model"
PASSWORDS = {f"p{i}": f"pw-{i}" for i in range(4)}
USER = ("user", "user-pw")
FAST = ["--engine-opt", "prefill_tps=20000", "--engine-opt", "decode_tpot_ms=2"]

Ask = Callable[[int], Awaitable[str]]  # request number -> the provider that answered


class Network:
    """The processes of one run and where to reach them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port, self.leaf_port = free_port(), free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def user_url(self) -> str:
        return f"nats://{USER[0]}:{USER[1]}@127.0.0.1:{self.port}"

    def start_hub(self) -> None:
        users = ",".join(f"{n}:{p}" for n, p in PASSWORDS.items())
        self.procs.append(
            spawn(
                "hub",
                "--name",
                "hub",
                "--port",
                str(self.port),
                "--leafnode-port",
                str(self.leaf_port),
                "--provider-users",
                users,
                "--client-users",
                f"{USER[0]}:{USER[1]}",
                "--ops-users",
                "ops:ops-pw",
                "--data-dir",
                str(self.tmp / "hub"),
                log=self.tmp / "hub.log",
            )
        )

    def start_provider(self, name: str, *opts: str) -> None:
        self.procs.append(
            spawn(
                "provider",
                "--name",
                name,
                "--hub",
                f"127.0.0.1:{self.leaf_port}",
                "--hub-password",
                PASSWORDS[name],
                "--entry-url",
                f"nats://127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--engine",
                "sim",
                "--model",
                MODEL,
                "--data-dir",
                str(self.tmp / name),
                "--heartbeat-interval-s",
                "0.5",
                *FAST,
                *opts,
                log=self.tmp / f"{name}.log",
            )
        )

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    net = Network(tmp_path)
    try:
        yield net
    finally:
        net.stop()


async def start(net: Network, p0_opts: tuple[str, ...]) -> None:
    net.start_hub()
    await asyncio.sleep(1.0)
    net.start_provider("p0", "--max-concurrency", "1", *p0_opts)
    net.start_provider("p1")
    net.start_provider("p2")
    net.start_provider("p3", "--engine-opt", "corrupt=1.0")
    await wait_for_providers(f"nats://ops:ops-pw@127.0.0.1:{net.port}", set(PASSWORDS), 60)
    await asyncio.sleep(2.0)  # stakes and first heartbeats settle


async def bursts(ask: Ask, first: int, n: int) -> collections.Counter[str]:
    """`n` requests in bursts of 10; who answered each."""
    served: collections.Counter[str] = collections.Counter()
    for start_at in range(first, first + n, 10):
        for provider in await asyncio.gather(*(ask(i) for i in range(start_at, start_at + 10))):
            served[provider] += 1
    return served


async def ledger_views(url: str) -> dict[str, dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        views = {}
        for name in PASSWORDS:
            for _ in range(50):  # a banned provider's leaf may be reconnecting (the hub closed it)
                try:
                    msg = await nc.request(f"llm.ledger.view.{name}", b"", timeout=5)
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.2)
            views[name] = json.loads(msg.data)
        return views
    finally:
        await nc.close()


def hub_events(net: Network) -> list[dict[str, Any]]:
    lines = (net.tmp / "hub.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


WARM_UP_LIMIT = 1000  # user requests within which the hub must have banned the cheater


async def check(net: Network, ask: Ask, label: str, measured: Callable[[str], None]) -> None:
    """Users' requests until the hub has banned the cheater and closed its leaf (the evidence grows
    with time as much as with requests: on a fast machine 200 requests took 4 s, a ban 6 s), within
    WARM_UP_LIMIT requests; then 100 more, which the cheater must not serve."""
    warm: collections.Counter[str] = collections.Counter()
    sent = 0
    while sent < WARM_UP_LIMIT:
        warm += await bursts(ask, sent, 50)
        sent += 50
        events = hub_events(net)
        if any(e["event"] == "hub.leaf_closed" and e.get("provider") == "p3" for e in events):
            break
    served = await bursts(ask, 10_000, 100)
    views = await ledger_views(f"nats://ops:ops-pw@127.0.0.1:{net.port}")
    measured(f"{label}: warm-up until the ban {sent} requests, served {dict(warm)}, then {dict(served)}")
    assert sent < WARM_UP_LIMIT, f"no ban within {sent} user requests: {dict(warm)}"
    assert sum(served.values()) == 100
    assert served["p3"] < 5, (warm, served)
    for name, view in views.items():
        rep = view["reputation"]
        lowest = min(PASSWORDS, key=lambda n: rep.get(n, 1500.0))
        assert lowest == "p3", (name, rep)
        assert view["providers"]["p3"]["proven_bad"] and view["providers"]["p3"]["duels_lost"] > 0, name
    events = hub_events(net)
    assert [e["provider"] for e in events if e["event"] == "hub.provider_banned"] == ["p3"]  # what ops see


async def plain_requests_at_the_hub(net: Network) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    nc = await nats.connect(net.user_url)

    async def ask(i: int) -> str:
        body = {"prompt": f"user question number {i} about the weather", "max_tokens": 16, "temperature": 0}
        msg = await nc.request(f"llm.request.{MODEL}", json.dumps(body).encode(), timeout=30)
        reply = json.loads(msg.data)
        assert "text" in reply, reply
        return str(reply["provider"])

    return ask, nc.close


@pytest.mark.parametrize("p0_opts", [("--duel-rate", "0.5"), ()], ids=["p0-duel-rate-0.5", "all-defaults"])
async def test_a_cheater_starves_with_users_at_the_hub(
    network: Network, p0_opts: tuple[str, ...], measured: Callable[[str], None]
) -> None:
    await start(network, p0_opts)
    ask, close = await plain_requests_at_the_hub(network)
    try:
        await check(network, ask, f"users at the hub, {' '.join(p0_opts) or 'defaults'}", measured)
    finally:
        await close()


async def test_a_cheater_starves_behind_the_gateway(
    network: Network, measured: Callable[[str], None]
) -> None:
    import httpx
    from openai import AsyncOpenAI

    await start(network, ())
    port = free_port()
    network.procs.append(
        spawn("gateway", "--nats-url", network.user_url, "--port", str(port), log=network.tmp / "gateway.log")
    )
    async with httpx.AsyncClient() as h:
        for _ in range(100):
            try:
                models = await h.get(f"http://127.0.0.1:{port}/v1/models")
                if models.status_code == 200 and MODEL in models.text:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

    async def ask(i: int) -> str:
        r = await client.completions.create(
            model=MODEL, prompt=f"user question number {i} about the weather", max_tokens=16, temperature=0
        )
        assert r.system_fingerprint and r.system_fingerprint.startswith("wwwserve:")
        return r.system_fingerprint.split(":", 1)[1]

    try:
        await check(network, ask, "users through the gateway, defaults", measured)
    finally:
        await client.close()
