"""Real `wwwserve` processes: killed providers, SIGTERM drain, no orphan nats-server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SIM_FAST, spawn
from wwwserve.broker.process import free_port
from wwwserve.client import Client
from wwwserve.errors import BackendError
from wwwserve.observe import wait_for_providers
from wwwserve.protocol.messages import StreamChunk
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"


def start_provider(net: LocalNetwork, name: str, tmp: Path, *opts: str) -> subprocess.Popen[bytes]:
    """A `wwwserve provider` process with its own leaf node joined to the test hub."""
    return spawn(
        "provider",
        "--name",
        name,
        "--hub",
        f"127.0.0.1:{net.leafnode_port}",
        "--port",
        str(free_port()),
        "--engine",
        "sim",
        "--model",
        MODEL,
        "--data-dir",
        str(tmp / name),
        "--heartbeat-interval-s",
        "0.5",
        *opts,
        log=tmp / f"{name}.log",
    )


async def wait_for_provider(url: str, name: str, timeout: float = 30) -> None:
    """Until `name` heartbeats are visible at `url`."""
    await wait_for_providers(url, {name}, timeout)


def leaf_children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The nats-server processes a provider started."""
    return [c for c in psutil.Process(proc.pid).children(recursive=True) if "nats-server" in c.name()]


def gone(pids: list[int], timeout: float = 10) -> bool:
    """Whether all `pids` have exited within `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_provider_exit_leaves_no_nats_server_behind(
    net: LocalNetwork, tmp_path: Path, sig: int
) -> None:
    proc = start_provider(net, "p1", tmp_path)
    try:
        await wait_for_provider(net.hub_url, "p1")
        leaves = leaf_children(proc)
        assert leaves, "the provider should run its own leaf nats-server"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) is not None
        assert gone([p.pid for p in leaves]), "nats-server outlived its provider"
    finally:
        proc.kill()


async def test_sigterm_drains_in_flight_requests(net: LocalNetwork, tmp_path: Path) -> None:
    proc = start_provider(net, "p1", tmp_path, "--engine-opt", "decode_tpot_ms=50")
    try:
        await wait_for_provider(net.hub_url, "p1")
        async with Client(net.hub_url, timeout=30) as c:
            pending = asyncio.create_task(c.complete(MODEL, "x", max_tokens=30))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            reply = await pending  # finished by the draining agent, not dropped
        assert reply.provider == "p1" and reply.usage.completion_tokens == 30
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


async def test_provider_killed_before_first_token_is_retried_elsewhere(
    net: LocalNetwork, tmp_path: Path
) -> None:
    proc = start_provider(net, "doomed", tmp_path, "--engine-opt", "prefill_tps=1")
    try:
        await wait_for_provider(net.hub_url, "doomed")
        async with Client(net.hub_url, timeout=30, provider_expiry_s=1.5) as c:
            pending = asyncio.create_task(c.complete(MODEL, "a prompt of several words", max_tokens=3))
            await asyncio.sleep(1.0)
            proc.kill()
            await net.add_provider("rescuer", engine="sim", model=[MODEL], engine_opt=SIM_FAST)
            started = time.monotonic()
            reply = await pending
        assert reply.provider == "rescuer"
        assert time.monotonic() - started < 10
    finally:
        proc.kill()


async def test_provider_killed_mid_stream_ends_the_stream_with_an_error(
    net: LocalNetwork, tmp_path: Path
) -> None:
    proc = start_provider(net, "doomed", tmp_path, "--engine-opt", "decode_tpot_ms=100")
    got: list[str] = []
    try:
        await wait_for_provider(net.hub_url, "doomed")
        async with Client(net.hub_url, timeout=60, provider_expiry_s=1.5) as c:
            started = time.monotonic()
            with pytest.raises(BackendError, match="mid-stream"):
                async for item in c.stream(MODEL, {"prompt": "x", "max_tokens": 500}):
                    if isinstance(item, StreamChunk):
                        got.append(item.delta)
                        if len(got) == 3:
                            proc.kill()
            assert time.monotonic() - started < 15, "the error must come long before the 60 s deadline"
        assert len(got) >= 3
    finally:
        proc.kill()
