"""One provider per data directory: the lock, the private key file, and the CLI's refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wwwserve_cmd
from wwwserve.datadir import DataDirInUse, DataDirLock
from wwwserve.ledger.identity import load_or_create


def test_second_lock_on_a_directory_fails_naming_the_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path, "provider alice")
    with pytest.raises(DataDirInUse, match=rf"pid {os.getpid()} .*provider alice"):
        DataDirLock(tmp_path, "provider bob")
    first.release()
    DataDirLock(tmp_path, "provider bob").release()  # free again once released


def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    code = f"import pathlib, wwwserve.datadir as d; d.DataDirLock(pathlib.Path({str(tmp_path)!r}), 'x')"
    subprocess.run([sys.executable, "-c", code], check=True)  # exits without releasing
    DataDirLock(tmp_path, "next").release()


def test_identity_seed_is_private_and_stable(tmp_path: Path) -> None:
    a = load_or_create(tmp_path / "d", "alice")
    seed = tmp_path / "d" / "identity.seed"
    assert seed.stat().st_mode & 0o777 == 0o600
    assert load_or_create(tmp_path / "d", "alice").public_key == a.public_key
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["identity.seed"], "temporary file left behind"


def test_cli_refuses_a_directory_in_use(tmp_path: Path) -> None:
    held = DataDirLock(tmp_path / "state", "provider p1 (another process)")
    try:
        res = subprocess.run(
            wwwserve_cmd(
                "provider",
                "--name",
                "p2",
                "--engine",
                "sim",
                "--data-dir",
                str(tmp_path / "state"),
                "--nats-url",
                "nats://127.0.0.1:1",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.release()
    assert res.returncode == 2, res.stdout + res.stderr
    assert "in use by pid" in res.stderr and "provider p1" in res.stderr
