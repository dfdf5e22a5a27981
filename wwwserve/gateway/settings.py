"""Settings of `wwwserve gateway`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from wwwserve.config import WWWServeSettings, split_list


class GatewaySettings(WWWServeSettings):
    """Where the gateway listens, which network it fronts, and who may use it."""

    toml_table: ClassVar[str] = "gateway"

    nats_url: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], description="NATS servers of the network"
    )
    host: str = Field("127.0.0.1", description="HTTP listen address")
    port: int = Field(8000, description="HTTP port")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted bearer keys (none: no authentication)"
    )
    timeout_s: float = Field(120.0, gt=0, description="deadline of each request in the network")

    @field_validator("nats_url", "api_key", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_list(v)
