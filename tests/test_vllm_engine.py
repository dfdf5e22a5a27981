"""`--engine vllm`: the provider owns its server's life. On the CPU the server is a stand-in with the same
HTTP API (llama-cpp-python's server on the bundled GGUF), started through `--engine-opt command=...`."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys

import pytest

from wwwserve.client import Client
from wwwserve.engines.factory import create_engine
from wwwserve.engines.supervisor import ServerState
from wwwserve.engines.vllm import VLLMEngine, VLLMOptions, vllm_flags
from wwwserve.errors import BackendError
from wwwserve.protocol.messages import Reply
from wwwserve.topology import LocalNetwork

MODEL = "SmolLM2-135M-Instruct"


def test_engine_options_split_into_ours_and_vllm_flags() -> None:
    o = VLLMOptions.from_opts(
        {"load-format": "dummy", "gpu-memory-utilization": "0.3", "enforce-eager": "true", "port": "8123"}
    )
    assert o.port == 8123 and o.health_path == "/health"
    assert vllm_flags(o.passthrough) == [
        "--load-format", "dummy", "--gpu-memory-utilization", "0.3", "--enforce-eager"
    ]  # fmt: skip
    assert VLLMOptions.from_opts({"served-model-name": "q"}).served_model == "q"
    with pytest.raises(ValueError, match="start_timeout_s"):
        VLLMOptions.from_opts({"start-timeout-s": "soon"})


def test_a_clear_error_without_vllm_installed() -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: the error is for machines without it")
    with pytest.raises(ValueError, match=r"wwwserve\[vllm\]"):
        create_engine("vllm", "", {}, ["Qwen/Qwen3-8B"])
    with pytest.raises(ValueError, match="exactly one --model"):
        create_engine("vllm", "", {"command": "x {port}"}, ["a", "b"])


def _stand_in() -> dict[str, str]:
    pytest.importorskip("fastapi", reason="llama-cpp-python's server extra is not installed")
    from wwwserve.engines.embedded import bundled_model_path

    command = (
        f"{sys.executable} -m llama_cpp.server --model {bundled_model_path()} --model_alias {{model}} "
        "--host {host} --port {port} --n_ctx 512 --n_threads 1"
    )
    return {"command": command, "health_path": "/v1/models", "restart_backoff_s": "0.2"}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_start_wait_serve_crash_restart_and_stop(net: LocalNetwork) -> None:
    handle = await net.add_provider("v", engine="vllm", model=[MODEL], engine_opt=_stand_in())
    agent = handle.agent
    engine = agent.engine
    assert isinstance(engine, VLLMEngine)
    # starting: the heartbeat says so, and the provider is out of the queue group
    beat = agent.heartbeat()
    assert beat.engine_state == "starting" and not beat.healthy and not agent.accepting

    async with Client(net.hub_url, timeout=120) as c:
        # sent while the server starts: the client retries until a provider takes it
        first = await c.complete(MODEL, "Say hello.", max_tokens=4)
        assert isinstance(first, Reply) and first.provider == "v"
        assert engine.server.state == ServerState.READY and agent.heartbeat().engine_state == "ready"
        pid = engine.server.pid
        assert pid is not None

        # the server dies mid-answer: that request ends in an explicit error, not silence
        async def killed_midway() -> None:
            async for item in c.stream(MODEL, {"prompt": "Count from one to a hundred.", "max_tokens": 200}):
                if not isinstance(item, Reply):
                    os.kill(pid, signal.SIGKILL)

        with pytest.raises(BackendError):
            await asyncio.wait_for(killed_midway(), 60)

        # restarted with backoff; the next requests are served again
        await asyncio.wait_for(_restarted(engine, pid), 120)
        again = await c.complete(MODEL, "Say hello again.", max_tokens=4)
        assert isinstance(again, Reply) and again.provider == "v"
        assert engine.server.restarts == 1

    new_pid = engine.server.pid
    assert new_pid is not None and new_pid != pid
    await net.stop_provider("v")  # a clean stop takes the server (and its process group) with it
    assert engine.server.state == ServerState.STOPPED
    assert not _group_alive(new_pid) and not _group_alive(pid)


async def _restarted(engine: VLLMEngine, old_pid: int) -> None:
    while engine.server.pid == old_pid or engine.server.state != ServerState.READY:
        await asyncio.sleep(0.1)
