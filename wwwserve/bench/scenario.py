"""Benchmark scenario files (TOML): the workload, its SLOs, and the providers."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Sessions(BaseModel):
    """Multi-turn conversations and shared system prompts over the trace's arrivals (prefix locality)."""

    model_config = ConfigDict(extra="forbid")

    continue_share: float = Field(
        0.7, ge=0, le=1, description="share of arrivals that are the next turn of an open session"
    )
    system_prompts: int = Field(20, ge=1, description="distinct shared system prompts (tenants)")
    system_prompt_tokens: int = Field(800, ge=0, description="tokens of each system prompt")
    max_turns: int = Field(8, ge=1, description="a session closes after this many turns")


class Workload(BaseModel):
    """Which slice of which trace to replay, how fast, and whose users send each arrival."""

    model_config = ConfigDict(extra="forbid")

    trace: Path
    start_s: float = Field(0.0, ge=0, description="offset into the trace")
    duration_s: float = Field(60.0, gt=0, description="trace seconds to replay")
    time_scale: float = Field(1.0, gt=0, description="replay speed-up: 2 sends the slice in half the time")
    split: Literal["round-robin", "weighted", "shifted"] = Field(
        "round-robin",
        description="round-robin/weighted: one slice, arrivals dealt to providers; shifted: provider i's "
        "users replay their own slice, starting at start_s + i x shift_s (peaks that do not coincide)",
    )
    weights: list[float] = Field(default_factory=list, description="share of arrivals per provider")
    shift_s: float = Field(600.0, ge=0, description="split = shifted: trace offset between providers' users")
    seed: int = 0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_e2e_ms: float | None = None
    max_prompt_tokens: int = Field(8000, description="longer trace prompts are cut to this")
    max_output_tokens: int = Field(2048, description="longer trace outputs are cut to this")
    timeout_s: float = Field(120.0, gt=0, description="each request's deadline")
    entry: Literal["origin", "hub"] = Field(
        "origin",
        description="where users' requests enter: their provider's leaf (origin), or the hub, as from a "
        "gateway or a plain NATS client there (the queue group hands each to some agent)",
    )
    sessions: Sessions | None = Field(
        None, description="multi-turn sessions: a next turn is the previous prompt + answer + a message"
    )


class Region(BaseModel):
    """A region: one hub, its providers and their users; distance to the other regions."""

    model_config = ConfigDict(extra="forbid")

    name: str
    access_rtt_ms: float = Field(0.0, ge=0, description="a provider (or user) <-> its region's hub")
    rtt_ms: dict[str, float] = Field(
        default_factory=dict, description="region <-> region round trips, symmetric: each pair given once"
    )


class NetworkShape(BaseModel):
    """What every emulated WAN link adds (wwwserve/bench/wan.py)."""

    model_config = ConfigDict(extra="forbid")

    jitter_ms: float = Field(0.0, ge=0, description="each chunk's one-way delay varies by up to this")
    loss: float = Field(
        0.0, ge=0, le=1, description="share of chunks that need a TCP retransmission (~1 RTT + 200 ms more)"
    )


class ProviderSpec(BaseModel):
    """One provider of the scenario; engine options are the remaining keys (sim: prefill_tps, ...)."""

    model_config = ConfigDict(extra="allow")

    name: str
    engine: str = "sim"
    url: str = Field("", description="engine = openai: the server's base URL (a real vLLM, say)")
    model: str = "bench-model"
    max_concurrency: int = 16
    max_queue: int = 256
    region: str | None = Field(None, description="its region (and its users'); default: the first")
    join_at_s: float = Field(0.0, ge=0, description="replay second at which it joins")
    leave_at_s: float | None = Field(None, description="replay second at which it leaves (SIGTERM)")

    def engine_opts(self) -> dict[str, str]:
        """Engine options: every extra key of the table."""
        return {k: str(v) for k, v in (self.model_extra or {}).items()}


class Scenario(BaseModel):
    """A whole benchmark scenario."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    workload: Workload
    providers: list[ProviderSpec]
    regions: list[Region] = Field(default_factory=list, description="absent: everything on loopback")
    network: NetworkShape = Field(default_factory=NetworkShape)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if not self.providers:
            raise ValueError("a scenario needs at least one [[providers]] table")
        if self.workload.split == "weighted" and len(self.workload.weights) != len(self.providers):
            raise ValueError("workload.weights needs one weight per provider, in [[providers]] order")
        if len({p.model for p in self.providers}) != 1:
            raise ValueError("all providers of a scenario serve the same model")
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError("region names must be unique")
        for p in self.providers:
            if p.region is not None and p.region not in names:
                raise ValueError(f"provider {p.name}: region {p.region!r} is not in [[regions]]")
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                self.rtt_ms(a, b)  # every pair has a distance
        return self

    def region_of(self, provider: ProviderSpec) -> str:
        """The provider's region: its own, else the first (empty without regions)."""
        return provider.region or (self.regions[0].name if self.regions else "")

    def rtt_ms(self, a: str, b: str) -> float:
        """Round trip between regions `a` and `b` (given once, either way round)."""
        if a == b:
            return 0.0
        ra = next(r for r in self.regions if r.name == a)
        rb = next(r for r in self.regions if r.name == b)
        given = [x for x in (ra.rtt_ms.get(b), rb.rtt_ms.get(a)) if x is not None]
        if not given:
            raise ValueError(f"no rtt_ms between regions {a!r} and {b!r}")
        if len(given) == 2 and given[0] != given[1]:
            raise ValueError(f"regions {a!r} and {b!r} give two different rtt_ms")
        return given[0]


def load_scenario(path: Path) -> Scenario:
    """Read a scenario; relative paths resolve from the file's own folder."""
    data = tomllib.loads(path.read_text())
    scenario = Scenario.model_validate(data)
    trace = scenario.workload.trace
    if not trace.is_absolute():
        scenario.workload.trace = (path.parent / trace).resolve()
    if not scenario.name:
        scenario.name = path.stem
    return scenario
