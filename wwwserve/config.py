"""Settings plumbing shared by every component: env `WWWSERVE_*`, a TOML file, then CLI flags."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "WWWSERVE_CONFIG"


class WWWServeSettings(BaseSettings):
    """Base of each component's settings; the TOML file named by $WWWSERVE_CONFIG is read too.

    Priority, highest first: CLI flags (passed as init values), environment, TOML file, defaults.
    In the TOML file a component reads its own table (`[provider]`, `[hub]`, ...) or top-level keys.
    """

    model_config = SettingsConfigDict(env_prefix="WWWSERVE_", extra="ignore", env_nested_delimiter="__")
    toml_table: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """CLI/init values win over env, env over the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(_TableSource(settings_cls, path, cls.toml_table))
        return tuple(sources)


class _TableSource(TomlConfigSettingsSource):
    """A TOML source that reads one component's table, falling back to the top level."""

    def __init__(self, settings_cls: type[BaseSettings], path: str, table: str) -> None:
        self._table = table
        super().__init__(settings_cls, toml_file=path)

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        if self._table and isinstance(data.get(self._table), dict):
            return dict(data[self._table])
        return {k: v for k, v in data.items() if not isinstance(v, dict)}


def parse_kv(items: list[str]) -> dict[str, str]:
    """Turn repeated `key=value` flags into a dict, with a clear error for a malformed one."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def split_list(v: object) -> object:
    """A comma-separated string, or repeated flags each maybe comma-separated, as one flat list."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        return [p for item in v for p in (s.strip() for s in str(item).split(",")) if p]
    return v
