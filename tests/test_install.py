"""The user's path: the wheel, installed non-editable in a fresh venv, run from outside the checkout.

The checkout was once importable only as an editable install (the wheel lacked `wwwserve.ledger`);
here the wheel is built, installed into a new virtual environment, and a hub plus two providers started
from one directory (no `--data-dir`) serve a burst, while the checkout stays untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from wwwserve.broker.process import free_port
from wwwserve.observe import wait_for_providers

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sim-model"

pytestmark = pytest.mark.slow


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the checkout with the wheel (not editable) installed; its `bin/` dir."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to check the checkout stays clean")
    work = tmp_path_factory.mktemp("install")
    dist = work / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("wwwserve-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield venv / "bin"


def test_wheel_carries_every_subpackage(installed: Path, tmp_path: Path) -> None:
    packages = sorted(
        ".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "wwwserve").rglob("__init__.py")
    )
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    print(importlib.import_module(m).__file__)"
    out = subprocess.run(
        [str(installed / "python"), "-c", code, *packages], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    files = out.stdout.split()
    assert len(files) == len(packages)
    assert all(str(installed.parent) in f for f in files), f"imported from outside the venv: {files}"
    help_out = subprocess.run([str(installed / "wwwserve"), "demo", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0, help_out.stderr


async def _burst(url: str, n: int) -> list[dict[str, object]]:
    """`n` plain NATS requests (JSON body, no SDK) at once; every answer decoded."""
    nc = await nats.connect(url)
    try:
        body = json.dumps({"prompt": "hello there", "max_tokens": 64}).encode()
        msgs = await asyncio.gather(*(nc.request(f"llm.request.{MODEL}", body, timeout=60) for _ in range(n)))
        return [json.loads(m.data) for m in msgs]
    finally:
        await nc.close()


async def test_hub_and_two_providers_from_one_directory(
    installed: Path, tmp_path: Path, measured: Callable[[str], None]
) -> None:
    before = _git_status()
    cwd = tmp_path / "here"  # both providers start here, with no --data-dir
    cwd.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    hub_port, leaf_port = free_port(), free_port()
    ports = {"p1": free_port(), "p2": free_port()}
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> None:
        with (tmp_path / log).open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(installed / "wwwserve"), *args], cwd=cwd, env=env, stdout=out, stderr=out
                )
            )

    try:
        start("hub", "--port", str(hub_port), "--leafnode-port", str(leaf_port), log="hub.log")
        for name, port in ports.items():
            start(
                "provider", "--name", name, "--hub", f"127.0.0.1:{leaf_port}", "--port", str(port),
                "--engine", "sim", "--model", MODEL, "--max-concurrency", "1",
                "--engine-opt", "decode_tpot_ms=20", "--heartbeat-interval-s", "0.5",
                log=f"{name}.log",
            )  # fmt: skip
        await wait_for_providers(f"nats://127.0.0.1:{ports['p1']}", set(ports), timeout=60)
        t0 = time.monotonic()
        replies = await _burst(f"nats://127.0.0.1:{ports['p1']}", 12)
        wall = time.monotonic() - t0
        errors = [r for r in replies if "error" in r]
        assert not errors, errors
        served = {str(r["provider"]) for r in replies}
        assert served == {"p1", "p2"}, served
        assert all(len(str(r["text"]).split()) == 64 for r in replies)
        by = {n: sum(r["provider"] == n for r in replies) for n in sorted(served)}
        measured(f"burst of 12 at p1 (1 slot, 64 tokens x 20 ms): {wall:.2f} s wall, served {by}")
        # each provider got its own state directory under the user's data dir, and its own key
        seeds = {n: (tmp_path / "xdg" / "wwwserve" / "providers" / n / "identity.seed") for n in ports}
        assert all(s.exists() and (s.stat().st_mode & 0o777) == 0o600 for s in seeds.values())
        assert seeds["p1"].read_bytes() != seeds["p2"].read_bytes()
        assert not any(cwd.iterdir()), f"files written into the working directory: {list(cwd.iterdir())}"
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    assert _git_status() == before, "running the installed package changed the checkout"
