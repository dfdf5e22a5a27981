"""Owning an inference server's life: start it, wait for its health endpoint, restart it, stop it.

The child runs in its own process group (vLLM starts an engine-core process of its own, and both must
go together) and, on Linux, is told to stop if the provider dies first, so no server outlives its
provider. A child that exits, or stops answering its health endpoint, is restarted with exponential
backoff; requests it had in flight fail in the HTTP client that was reading them (the engine turns that
into an explicit `backend_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from enum import Enum

import httpx
import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class ServerState(str, Enum):
    """Where the supervised server is in its life (reported in heartbeats as `engine_state`)."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """One HTTP server as a supervised child process."""

    def __init__(
        self,
        argv: list[str],
        health_url: str,
        name: str = "server",
        start_timeout_s: float = 900.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        health_interval_s: float = 1.0,
        health_failures: int = 5,
        stop_grace_s: float = 20.0,
        on_change: Callable[[ServerState], None] | None = None,
    ) -> None:
        self.argv = argv
        self.health_url = health_url
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.health_interval_s = health_interval_s
        self.health_failures = health_failures
        self.stop_grace_s = stop_grace_s
        self.on_change = on_change
        self.state = ServerState.STOPPED
        self.restarts = 0
        self.pid: int | None = None
        self.ready = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _set(self, state: ServerState) -> None:
        if state != self.state:
            self.state = state
            log.info(
                "server.state", server=self.name, state=state.value, pid=self.pid, restarts=self.restarts
            )
            if state != ServerState.READY:
                self.ready.clear()
            else:
                self.ready.set()
            if self.on_change is not None:
                self.on_change(state)

    async def start(self) -> None:
        """Start the child and its supervision; returns at once (`ready` is set once it answers)."""
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _supervise(self) -> None:
        backoff = self.backoff_s
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0)) as http:
            while not self._stopping:
                self._set(ServerState.STARTING if self.restarts == 0 else ServerState.RESTARTING)
                self._proc = proc = await asyncio.create_subprocess_exec(
                    *self.argv, start_new_session=True, preexec_fn=_die_with_parent
                )
                self.pid = proc.pid
                log.info("server.spawned", server=self.name, pid=proc.pid, argv=" ".join(self.argv))
                if await self._wait_healthy(http, proc):
                    self._set(ServerState.READY)
                    backoff = self.backoff_s
                    await self._watch(http, proc)
                if self._stopping:
                    break
                await self._kill(proc)
                self.restarts += 1
                self._set(ServerState.RESTARTING)
                log.warning("server.restart", server=self.name, exit_code=proc.returncode, backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _healthy(self, http: httpx.AsyncClient) -> bool:
        try:
            return (await http.get(self.health_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_healthy(self, http: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> bool:
        """True once the health endpoint answers 200; False if the child exits or takes too long."""
        end = time.monotonic() + self.start_timeout_s
        while proc.returncode is None and time.monotonic() < end and not self._stopping:
            if await self._healthy(http):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.5)
        if proc.returncode is None and not self._stopping:
            log.error("server.start_timeout", server=self.name, waited_s=self.start_timeout_s)
        return False

    async def _watch(self, http: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> None:
        """Return when the child exits or fails its health check `health_failures` times in a row."""
        failures = 0
        while proc.returncode is None and not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), self.health_interval_s)
            if proc.returncode is not None or self._stopping:
                break
            failures = 0 if await self._healthy(http) else failures + 1
            if failures >= self.health_failures:
                log.error("server.unhealthy", server=self.name, failures=failures)
                break

    async def _kill(self, proc: asyncio.subprocess.Process, grace_s: float = 0.0) -> None:
        """SIGTERM the child's whole process group, SIGKILL it after `grace_s`, and reap the child."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            if sig == signal.SIGTERM and grace_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace_s)
        await proc.wait()

    async def stop(self) -> None:
        """Stop supervising and stop the child (and everything it started) for good."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None and self._proc.returncode is None:
            await self._kill(self._proc, self.stop_grace_s)
        elif self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)  # what the child left behind in its group
        self._set(ServerState.STOPPED)
