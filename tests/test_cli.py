"""One source of truth for settings: every field is a flag; flags > environment > TOML > defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from wwwserve.agent.settings import ProviderSettings
from wwwserve.cli import app
from wwwserve.cli_options import build_settings, flag_name
from wwwserve.gateway.settings import GatewaySettings
from wwwserve.hub import HubSettings
from wwwserve.scheduler import SchedulerSettings

COMMANDS: dict[str, type[BaseSettings]] = {
    "provider": ProviderSettings,
    "hub": HubSettings,
    "gateway": GatewaySettings,
    "scheduler": SchedulerSettings,
}


def help_flags(command: str) -> set[str]:
    """The flags `wwwserve <command> --help` lists."""
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z0-9-]+", res.output))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_settings_field_has_its_flag(command: str) -> None:
    flags = help_flags(command)
    missing = [flag_name(f) for f in COMMANDS[command].model_fields if flag_name(f) not in flags]
    assert not missing, f"wwwserve {command} lacks {missing}"


def test_documented_provider_flags_exist() -> None:
    flags = help_flags("provider")
    for flag in ("--metrics-port", "--duel-rate", "--stake", "--price", "--data-dir", "--no-forward"):
        assert flag in flags


def test_flags_beat_environment_beat_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text('[provider]\nprice = 1.0\nstake = 5.0\nmax_queue = 7\nname = "from-toml"\n')
    monkeypatch.setenv("WWWSERVE_CONFIG", str(toml))
    monkeypatch.setenv("WWWSERVE_PRICE", "2.0")
    monkeypatch.setenv("WWWSERVE_STAKE", "6.0")
    s = build_settings(ProviderSettings, {"price": 3.0, "stake": None, "max_queue": None})
    assert (s.price, s.stake, s.max_queue, s.name) == (3.0, 6.0, 7, "from-toml")


def test_list_and_pair_flags_repeat_or_split() -> None:
    s = build_settings(ProviderSettings, {"model": ["a,b", "c"], "engine_opt": ["x=1", "y=2"]})
    assert s.model == ["a", "b", "c"] and s.engine_opt == {"x": "1", "y": "2"}
    h = build_settings(HubSettings, {"provider_users": ["alice:pw1", "bob:pw2"], "routes": ["r1,r2"]})
    assert h.provider_users == {"alice": "pw1", "bob": "pw2"} and h.routes == ["r1", "r2"]


def test_invalid_flag_value_exits_2_with_the_reason() -> None:
    res = CliRunner().invoke(app, ["provider", "--engine", "nope", "--name", "x"])
    assert res.exit_code == 2
    assert "engine" in res.output


def test_default_data_dir_is_per_name_under_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/somewhere")
    assert ProviderSettings(name="alice").state_dir == Path("/somewhere/wwwserve/providers/alice")
    assert ProviderSettings(name="bob").state_dir != ProviderSettings(name="alice").state_dir
    assert ProviderSettings(name="bob", data_dir=Path("/x")).state_dir == Path("/x")
    assert HubSettings(name="h1").state_dir == Path("/somewhere/wwwserve/hubs/h1")
