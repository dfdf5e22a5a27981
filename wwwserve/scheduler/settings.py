"""Settings of the centralized reference scheduler (`wwwserve scheduler`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from wwwserve.config import WWWServeSettings


class SchedulerSettings(WWWServeSettings):
    """Settings of the centralized reference scheduler."""

    toml_table: ClassVar[str] = "scheduler"

    name: str = Field("scheduler", description="name in replies and logs")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server (a hub)")
    default_timeout_s: float = Field(60.0, gt=0, description="deadline for requests that carry none")
    peer_expiry_s: float = Field(
        3.5, gt=0, description="a provider silent this long is probed; it is lost only if it does not answer"
    )
    ack_timeout_s: float = Field(2.0, gt=0, description="a provider must acknowledge an assignment this fast")
    probe_timeout_s: float = Field(2.0, gt=0, description="how long a liveness probe waits for its answer")
    slo_margin: float = Field(0.8, gt=0, le=1, description="an SLO counts as met with this margin")
