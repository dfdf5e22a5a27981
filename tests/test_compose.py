"""compose/: the files are valid, and each service's command line works as a local process.

The image itself, and `docker compose up` of the demo, are tested in tests/test_container.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nats
import pytest
import yaml

from tests.fake_openai import StallableServer
from wwwserve.broker.process import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def substitute(obj: object, env: dict[str, str]) -> object:
    """docker compose's ${VAR}, ${VAR:-default}, ${VAR:?error} interpolation."""
    if isinstance(obj, str):

        def one(m: re.Match[str]) -> str:
            name, op, arg = m.group(1), m.group(2), m.group(3)
            if env.get(name):
                return env[name]
            if op == "?":
                raise KeyError(f"{name}: {arg}")
            return arg if op == "-" else ""

        return _VAR.sub(one, obj)
    if isinstance(obj, list):
        return [substitute(x, env) for x in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, env) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("name", ["hub.yml", "compose.yaml", "demo.yaml"])
def test_compose_files_are_valid(name: str) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed")
    subprocess.run(
        [exe, "-f", str(COMPOSE / name), "--env-file", str(COMPOSE / ".env.example"), "config", "-q"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_env_example_documents_every_variable_the_files_use() -> None:
    used = set()
    for name in ("hub.yml", "compose.yaml", "demo.yaml"):
        used |= {m.group(1) for m in _VAR.finditer((COMPOSE / name).read_text())}
    documented = set(env_file(COMPOSE / ".env.example"))
    assert used <= documented, sorted(used - documented)


def _spawn(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **environment, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "wwwserve", "--json-logs", *command],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def test_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    env = env_file(COMPOSE / ".env.example")
    hub_svc = substitute(yaml.safe_load((COMPOSE / "hub.yml").read_text())["services"]["hub"], env)
    agent_svc = substitute(yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["agent"], env)
    assert isinstance(hub_svc, dict) and isinstance(agent_svc, dict)
    client_port, leaf_port, http_port = free_port(), free_port(), free_port()
    # The container ports and paths, mapped onto free loopback ports and a temp dir.
    hub_cmd = [
        {
            "4222": str(client_port),
            "7422": str(leaf_port),
            "8222": str(http_port),
            "/data": str(tmp_path / "hub"),
            "0.0.0.0": "127.0.0.1",
        }.get(a, a)
        for a in hub_svc["command"]
    ]
    engine = StallableServer(free_port())
    await engine.start()
    hub = _spawn(hub_cmd, hub_svc["environment"], tmp_path / "hub.log")
    agent_env = {
        **agent_svc["environment"],
        "WWWSERVE_HUB": f"nats-leaf://127.0.0.1:{leaf_port}",
        "WWWSERVE_ENGINE_URL": f"http://127.0.0.1:{engine.port}",
        "WWWSERVE_PORT": str(free_port()),
        "WWWSERVE_METRICS_PORT": str(free_port()),
        "WWWSERVE_DATA_DIR": str(tmp_path / "agent"),
        "WWWSERVE_HOST": "127.0.0.1",
    }
    agent = _spawn(agent_svc["command"], agent_env, tmp_path / "agent.log")
    app_user, app_pw = env["WWWSERVE_CLIENT_USERS"].split(",")[0].split(":")
    try:
        for _ in range(100):
            try:
                nc = await nats.connect(
                    f"nats://{app_user}:{app_pw}@127.0.0.1:{client_port}",
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                )
                break
            except Exception:
                await asyncio.sleep(0.1)
        model = env["WWWSERVE_MODEL"].replace("/", "~").replace(".", "_")
        reply = None
        for _ in range(60):
            try:
                reply = await nc.request(
                    f"llm.request.{model}",
                    b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}',
                    timeout=2,
                )
                if reply.headers and reply.headers.get("Status") == "503":
                    raise RuntimeError("no responders yet")
                break
            except Exception:
                await asyncio.sleep(0.25)
        assert reply is not None and b'"provider":"alice"' in reply.data, (
            tmp_path / "agent.log"
        ).read_text()[-2000:]
        await nc.close()
    finally:
        for p in (agent, hub):
            p.terminate()
        for p in (agent, hub):
            p.wait(timeout=30)
        await engine.stop()
    assert agent.returncode == 0 and hub.returncode == 0
