"""Run one scenario under one policy: a fresh topology of real processes, the trace replayed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wwwserve.bench.planet import Planet
from wwwserve.bench.scenario import ProviderSpec, Scenario
from wwwserve.bench.workload import Arrival, answer_placeholder
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.client import Client
from wwwserve.errors import WWWServeError
from wwwserve.observe import wait_for_providers
from wwwserve.protocol.messages import Reply

POLICY_FLAGS = {
    "isolated": "isolated",
    "wwwserve": "default",
    "wwwserve-noprefix": "noprefix",
    "centralized": "centralized",
}


@dataclass
class Record:
    """What the client saw of one request."""

    index: int
    origin: str
    prompt_tokens: int
    output_tokens: int
    sent_s: float  # from replay start
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    provider: str = ""
    hops: int = 0
    error: str = ""
    cached_tokens: int = 0  # prompt tokens the server found in its prefix cache
    origin_region: str = ""  # the user's region (scenarios with [[regions]])
    provider_region: str = ""  # the region of the provider that served it


class _Procs:
    """Child processes of one run, always stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "wwwserve", "--log-level", "warning", "--json-logs", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def cpu_s(self, name: str) -> float | None:
        """CPU seconds (user + system) a running child has used so far; None where /proc cannot say."""
        p = self.procs.get(name)
        if p is None:
            return None
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def term(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)

    async def stop_all(self) -> None:
        for name in list(self.procs):
            self.term(name)
        end = time.monotonic() + 20
        for p in self.procs.values():
            while p.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                p.kill()
                p.wait()


def _provider_args(p: ProviderSpec, policy: str, hub: str, port: int, data: Path) -> list[str]:
    args = [
        "provider",
        "--name",
        p.name,
        "--hub",
        hub,
        "--port",
        str(port),
        "--engine",
        p.engine,
        "--model",
        p.model,
        "--max-concurrency",
        str(p.max_concurrency),
        "--max-queue",
        str(p.max_queue),
        "--policy",
        POLICY_FLAGS[policy],
        "--data-dir",
        str(data / p.name),
        "--drain-grace-s",
        "15",
    ]
    if p.url:
        args += ["--engine-url", p.url]
    for k, v in p.engine_opts().items():
        args += ["--engine-opt", f"{k}={v}"]
    return args


async def run_policy(
    scenario: Scenario,
    policy: str,
    arrivals: list[Arrival],
    progress: Callable[[], None] | None = None,
    logs_to: Path | None = None,
    measures: dict[str, float] | None = None,
) -> list[Record]:
    """Replay `arrivals` against a fresh network where every provider runs `policy`.

    The processes' logs are copied to `logs_to` (when given) before the run's temp dir is removed.
    `measures` receives what was measured beside the requests: the scheduler's CPU over the replay
    (`scheduler_cpu_cores`, CPU seconds per wall second) under `centralized`.
    """
    w = scenario.workload
    workdir = Path(tempfile.mkdtemp(prefix=f"wwwserve-bench-{policy}-"))
    procs = _Procs(workdir)
    ports = {p.name: free_port() for p in scenario.providers}
    clients: dict[str, Client] = {}
    hub_clients: dict[str, Client] = {}  # users at a hub: their region's ("" without regions)
    records: list[Record] = []
    answers: dict[int, tuple[str, str]] = {}  # arrival -> (its placeholder, the answer it got)
    region_of = {p.name: scenario.region_of(p) for p in scenario.providers}
    planet: Planet | None = None
    hub: NatsServer | None = None
    hubs_of: dict[str, str] = {}  # provider -> the address its leaf joins
    if scenario.regions:
        planet = Planet(scenario, workdir / "planet")
        await planet.start()
        watch_url = planet.first_hub_url
        for p in scenario.providers:
            hubs_of[p.name] = await planet.leaf_url(p.name, region_of[p.name])
        user_urls = {r.name: await planet.client_url(r.name, f"users-{r.name}") for r in scenario.regions}
        scheduler_url = await planet.client_url(scenario.regions[0].name, "scheduler")
    else:
        hub_port, leaf_port = free_port(), free_port()
        hub = NatsServer(
            HubConfig(port=hub_port, leafnode_port=leaf_port).render(),
            port=hub_port,
            workdir=workdir / "hub",
            name="hub",
        )
        await hub.start()
        watch_url = scheduler_url = hub.url
        hubs_of = {p.name: f"127.0.0.1:{leaf_port}" for p in scenario.providers}
        user_urls = {"": hub.url}
    try:
        first = [p for p in scenario.providers if p.join_at_s <= 0]
        for p in first:
            procs.start(p.name, _provider_args(p, policy, hubs_of[p.name], ports[p.name], workdir))
        if policy == "centralized":
            procs.start("scheduler", ["scheduler", "--nats-url", scheduler_url])
        await wait_for_providers(watch_url, {p.name for p in first})
        await asyncio.sleep(1.5)  # every agent (and the scheduler) has heard every heartbeat
        for region, url in user_urls.items():
            hub_clients[region] = await Client(url, timeout=w.timeout_s).connect()
        for p in first:
            clients[p.name] = await Client(
                f"nats://127.0.0.1:{ports[p.name]}", timeout=w.timeout_s, origin=p.name
            ).connect()
        present = {p.name for p in first}
        body_extra: dict[str, int] = {}
        if w.slo_e2e_ms:
            body_extra["slo_ms"] = int(w.slo_e2e_ms)
        if w.slo_ttft_ms:
            body_extra["slo_ttft_ms"] = int(w.slo_ttft_ms)
        if w.slo_tpot_ms:
            body_extra["slo_tpot_ms"] = int(w.slo_tpot_ms)
        t0 = time.monotonic()
        sched_cpu0 = procs.cpu_s("scheduler")

        async def lifecycle(p: ProviderSpec) -> None:
            if p.join_at_s > 0:
                await asyncio.sleep(max(0.0, t0 + p.join_at_s / w.time_scale - time.monotonic()))
                procs.start(p.name, _provider_args(p, policy, hubs_of[p.name], ports[p.name], workdir))
                await wait_for_providers(watch_url, {p.name})
                clients[p.name] = await Client(
                    f"nats://127.0.0.1:{ports[p.name]}", timeout=w.timeout_s, origin=p.name
                ).connect()
                present.add(p.name)
            if p.leave_at_s is not None:
                await asyncio.sleep(max(0.0, t0 + p.leave_at_s / w.time_scale - time.monotonic()))
                present.discard(p.name)
                procs.term(p.name)

        finished = {a.index: asyncio.Event() for a in arrivals if a.session is not None}

        async def send(a: Arrival) -> None:
            await asyncio.sleep(max(0.0, t0 + a.at_s - time.monotonic()))
            if a.history:  # a user sends the next turn once the last answer is in (or failed)
                await finished[a.history[-1]].wait()
            home = region_of.get(a.origin, "")
            at_origin = a.origin in present and w.entry == "origin"
            client = clients[a.origin] if at_origin else hub_clients[home]
            rec = Record(a.index, a.origin, a.prompt_tokens, a.output_tokens, time.monotonic() - t0)
            rec.origin_region = home
            prompt = a.prompt
            for k in a.history:  # the conversation so far, with the answers its users actually got
                if k in answers:
                    prompt = prompt.replace(*answers[k], 1)
            body = {
                "prompt": prompt,
                "max_tokens": a.output_tokens,
                **body_extra,
            }
            sent = time.monotonic()
            try:
                async for item in client.stream(scenario.providers[0].model, body):
                    if rec.ttft_ms is None:
                        rec.ttft_ms = (time.monotonic() - sent) * 1000
                    if isinstance(item, Reply):
                        rec.e2e_ms = (time.monotonic() - sent) * 1000
                        rec.provider, rec.hops = item.provider, item.hops
                        rec.provider_region = region_of.get(item.provider, "")
                        rec.cached_tokens = item.usage.cached_tokens
                        if len(item.text.split()) == a.output_tokens:
                            answers[a.index] = (answer_placeholder(a.index, a.output_tokens), item.text)
            except WWWServeError as exc:
                rec.error = exc.code
            except Exception as exc:
                rec.error = f"client:{type(exc).__name__}"
            records.append(rec)
            if a.index in finished:
                finished[a.index].set()
            if progress:
                progress()

        life = [asyncio.create_task(lifecycle(p)) for p in scenario.providers]
        await asyncio.gather(*(send(a) for a in arrivals))
        sched_cpu1 = procs.cpu_s("scheduler")
        if measures is not None and sched_cpu0 is not None and sched_cpu1 is not None:
            measures["scheduler_cpu_cores"] = round((sched_cpu1 - sched_cpu0) / (time.monotonic() - t0), 4)
        for t in life:
            t.cancel()
        for c in [*hub_clients.values(), *clients.values()]:
            with contextlib.suppress(Exception):
                await c.close()
    finally:
        await procs.stop_all()
        if hub is not None:
            await hub.stop()
        if planet is not None:
            await planet.stop()
        if logs_to is not None:
            logs_to.mkdir(parents=True, exist_ok=True)
            for log_file in workdir.glob("*.log"):
                shutil.copy2(log_file, logs_to / log_file.name)
        shutil.rmtree(workdir, ignore_errors=True)
    return sorted(records, key=lambda r: r.index)
