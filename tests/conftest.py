"""Fixtures: real nats-server processes on free loopback ports, always stopped after the test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from wwwserve.logs import configure_logging
from wwwserve.topology import LocalNetwork

configure_logging("warning", json_logs=False)

SIM_FAST = {"prefill_tps": "20000", "decode_tpot_ms": "2"}


@pytest.fixture(scope="session", autouse=True)
def private_data_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests write state only under temporary directories: default data dirs go to a temp XDG home."""
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))


@pytest.fixture
async def net() -> AsyncIterator[LocalNetwork]:
    """A hub; the test adds providers. Everything is stopped and removed afterwards."""
    async with LocalNetwork() as network:
        yield network


def wwwserve_cmd(*args: str) -> list[str]:
    """The `wwwserve` CLI as a subprocess command line, with this interpreter."""
    return [sys.executable, "-m", "wwwserve", *args]


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start the CLI in its own process, logging to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(wwwserve_cmd(*args), stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


_MEASUREMENTS = pytest.StashKey[list[str]]()


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measurement line; they are printed at the end of the run (CI logs keep them)."""
    lines = request.config.stash.setdefault(_MEASUREMENTS, [])
    return lambda text: lines.append(f"{request.node.name}: {text}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print what tests measured (wall times, counts), whatever the verbosity."""
    lines = config.stash.get(_MEASUREMENTS, [])
    if lines:
        terminalreporter.section("wwwserve measurements")
        for line in lines:
            terminalreporter.write_line(line)
