"""Where a component keeps its state, and the lock that gives one process a data directory at a time.

Two providers started from the same directory used to share one identity and one SQLite ledger; the
default is now per name under the user's data directory (XDG, via platformdirs), and a second process
on a directory that is in use stops at once with an error naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

import platformdirs

LOCK_FILE = "lock"


def default_data_dir(kind: str, name: str) -> Path:
    """`<user data dir>/wwwserve/<kind>/<name>`: e.g. ~/.local/share/wwwserve/providers/alice."""
    return platformdirs.user_data_path("wwwserve", appauthor=False) / kind / name


class DataDirInUse(RuntimeError):
    """Another live process holds the data directory's lock."""


class DataDirLock:
    """An exclusive `flock` on `<dir>/lock`, held for as long as the process uses the directory.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock behind; the
    file's text (pid, host, who) only serves the error message of the next process that tries.
    """

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        lock_path = path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 512, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {path} is in use by {other}; give each provider its own --data-dir "
                "(or a different --name)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({holder})\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the directory up (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
