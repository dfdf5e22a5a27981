"""Settings of `wwwserve provider`: identity, network, engine, capacity and participation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from wwwserve.config import WWWServeSettings, parse_kv, split_list
from wwwserve.datadir import default_data_dir
from wwwserve.protocol.subjects import check_provider_name

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


class ProviderSettings(WWWServeSettings):
    """Everything a provider decides about how it runs and takes part in the network."""

    toml_table: ClassVar[str] = "provider"

    name: str = Field("provider", description="provider name, unique in the network ([A-Za-z0-9_-])")
    hub: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats-leaf://127.0.0.1:7422"],
        description="hub leafnode URLs, tried in order (failover)",
    )
    host: str = Field("127.0.0.1", description="address the provider's leaf nats-server listens on")
    port: int = Field(4222, description="client port of the provider's leaf nats-server")
    nats_url: str | None = Field(None, description="use this NATS server instead of starting a leaf")
    hub_user: str | None = Field(None, description="user the leaf logs in to the hubs with (default: --name)")
    hub_password: str | None = Field(None, description="password for the hubs (env WWWSERVE_HUB_PASSWORD)")
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_MODEL], description="models served"
    )
    engine: Literal["embedded", "openai", "sim", "vllm"] = Field("embedded", description="engine kind")
    engine_url: str = Field("http://127.0.0.1:8000", description="base URL of an OpenAI-compatible engine")
    engine_opt: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="engine options, key=value"
    )
    max_concurrency: int = Field(0, ge=0, description="requests served at once (0: 1 for embedded, else 8)")
    max_queue: int = Field(64, ge=0, description="requests waiting for a slot before `overloaded`")
    data_dir: Path | None = Field(
        None,
        description="state: keys, ledger, leaf config and log; one provider per directory "
        "(default: <user data dir>/wwwserve/providers/<name>)",
    )
    metrics_port: int = Field(0, ge=0, description="Prometheus /metrics port (0: off)")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="seconds between heartbeats")
    peer_expiry_s: float = Field(3.5, gt=0, description="a peer silent this long leaves the peer table")
    heartbeat_listen: int = Field(
        32, ge=1, description="providers per model whose beats this agent hears (a sample in big networks)"
    )
    heartbeat_budget: float = Field(
        100.0, gt=0, description="heartbeats per second each agent should receive at most (sets beat rate)"
    )
    peer_view: int = Field(
        32, ge=1, description="candidate peers per model a decision looks at (best by room + random sample)"
    )
    default_timeout_s: float = Field(60.0, gt=0, description="deadline for requests that carry none")
    max_request_bytes: int = Field(256 * 1024, ge=1024, description="largest request body accepted")
    engine_stall_s: float = Field(
        60.0, gt=0, description="no token this long: fail it, mark the engine unhealthy"
    )
    unhealthy_cooldown_s: float = Field(
        5.0, gt=0, description="after a stall, stay out this long before retrying"
    )
    drain_grace_s: float = Field(30.0, ge=0, description="SIGTERM: time to finish in-flight work")
    # Participation and dispatch (docs/policies.md).
    policy: str = Field("default", description="dispatch policy: default, noprefix, isolated, module:Class")
    network_share: float = Field(1.0, ge=0, le=1, description="share of capacity offered to peers")
    forward: bool = Field(True, description="forward own users' requests to peers when better")
    max_hops: int = Field(2, ge=0, description="hops a request may take before it must be served")
    slo_aware: bool = Field(True, description="accept only requests whose SLO it expects to meet")
    min_price: float = Field(0.0, ge=0, description="lowest price per token accepted from peers")
    price: float = Field(0.0, ge=0, description="price per token asked from peers")
    duel_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="duel rate for a server with no evidence yet or recent losses: share of own users' "
        "requests a peer served that a 2nd provider serves again and a judge compares (0: off)",
    )
    duel_rate_min: float = Field(
        0.04, ge=0, le=1, description="duel rate for a proven server (at most duel_rate): the steady cost"
    )
    canary_rate: float = Field(
        0.3,
        ge=0,
        le=1,
        description="canaries per answered user request while a provider is new or losing: a copy of a "
        "recent user request sent through --entry-url like a user's, its answer dueled (0: off)",
    )
    canary_rate_min: float = Field(
        0.01, ge=0, le=1, description="canaries per answered user request once every provider is proven"
    )
    entry_url: str | None = Field(
        None,
        description="a hub's client URL canaries enter through (default: a --hub on leaf port 7422 at its "
        "client port 4222; none: no canaries)",
    )
    judge_check_rate: float = Field(
        0.1, ge=0, le=1, description="share of tied duels also sent to a judges' panel (non-ties always are)"
    )
    stake: float = Field(0.0, ge=0, description="credits to lock as stake (peers prefer staked providers)")
    serve_without_credit: bool = Field(True, description="serve peers' requests even when they lack credit")
    checkpoint_every: int = Field(
        10_000, ge=0, description="sign a ledger checkpoint every this many stream records (0: never)"
    )
    checkpoint_quorum: int = Field(
        2, ge=1, description="distinct signers a newcomer needs to start from a checkpoint"
    )
    scheduler: str | None = Field(None, description="centralized reference only: scheduler name")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_provider_name(v)

    @field_validator("hub", "model", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_list(v)

    @field_validator("engine_opt", mode="before")
    @classmethod
    def _kv(cls, v: object) -> object:
        if isinstance(v, list):
            return parse_kv([str(i) for i in v])
        if isinstance(v, str):
            return parse_kv([p for p in v.split(",") if p])
        return v

    @model_validator(mode="after")
    def _engine_defaults(self) -> ProviderSettings:
        if self.max_concurrency == 0:
            self.max_concurrency = 1 if self.engine == "embedded" else 8
        return self

    @property
    def state_dir(self) -> Path:
        """The data directory in effect: the one given, else this provider's own default."""
        return self.data_dir or default_data_dir("providers", self.name)
