"""The `wwwserve` command line: thin wrappers that build settings and call into the package."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from wwwserve.agent.settings import ProviderSettings
from wwwserve.cli_options import settings_command
from wwwserve.gateway.settings import GatewaySettings
from wwwserve.hub import HubSettings
from wwwserve.logs import configure_logging
from wwwserve.runtime import run
from wwwserve.scheduler import SchedulerSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="wwwserve: a decentralized LLM serving network over NATS.",
)


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="log level: debug, info, warning, error")] = "info",
    json_logs: Annotated[
        bool | None,
        typer.Option("--json-logs/--pretty-logs", help="log format (default: JSON unless a terminal)"),
    ] = None,
) -> None:
    """Configure logging for every subcommand."""
    configure_logging(log_level, json_logs)


@app.command()
@settings_command(HubSettings)
def hub(
    settings: HubSettings,
    print_config: Annotated[bool, typer.Option(help="print the nats-server config and exit")] = False,
) -> None:
    """Run a hub: a public nats-server that provider leaf nodes join."""
    from wwwserve.hub import run_hub

    if print_config:
        typer.echo(settings.config().render())
        return
    run(run_hub(settings))


@app.command()
@settings_command(ProviderSettings)
def provider(settings: ProviderSettings) -> None:
    """Run a provider: its leaf nats-server joined to the hubs, its engine and its agent."""
    from wwwserve.datadir import DataDirInUse
    from wwwserve.provider import run_provider

    try:
        run(run_provider(settings))
    except (ValueError, DataDirInUse) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def request(
    model: Annotated[str, typer.Argument(help="model name")],
    prompt: Annotated[str, typer.Argument(help="the prompt")],
    nats_url: Annotated[
        str, typer.Option(help="NATS server(s) of the network, comma-separated")
    ] = "nats://127.0.0.1:4222",
    stream: Annotated[bool, typer.Option(help="print tokens as they arrive")] = False,
    max_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 64,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    chat: Annotated[bool, typer.Option(help="send the prompt as one user chat message")] = False,
    timeout: Annotated[float, typer.Option(help="deadline in seconds")] = 60.0,
    json_out: Annotated[bool, typer.Option("--json", help="print the reply as JSON")] = False,
) -> None:
    """Send one request into the network and print the answer."""
    from wwwserve.client import Client
    from wwwserve.errors import WWWServeError
    from wwwserve.protocol.messages import Reply

    body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})

    async def go() -> None:
        async with Client(nats_url, timeout=timeout) as c:
            if stream:
                async for item in c.stream(model, body):
                    if isinstance(item, Reply):
                        sys.stdout.write("\n")
                        if json_out:
                            typer.echo(item.model_dump_json())
                    else:
                        sys.stdout.write(item.delta)
                        sys.stdout.flush()
            else:
                r = await c.request(model, body)
                typer.echo(r.model_dump_json() if json_out else r.text)

    try:
        asyncio.run(go())
    except WWWServeError as exc:
        typer.echo(
            json.dumps({"code": exc.code, "message": exc.message}) if json_out else f"error: {exc}", err=True
        )
        raise typer.Exit(1) from None


@app.command()
def peers(
    nats_url: Annotated[
        str, typer.Option(help="NATS server(s) of the network, comma-separated")
    ] = "nats://127.0.0.1:4222",
    wait: Annotated[float, typer.Option(help="seconds to listen for heartbeats")] = 1.5,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON array")] = False,
) -> None:
    """List the providers whose heartbeats arrive within `--wait` seconds."""
    from wwwserve.observe import collect_heartbeats, peers_table

    beats = asyncio.run(collect_heartbeats(nats_url, wait))
    if json_out:
        typer.echo(json.dumps([b.model_dump() for b in beats]))
    else:
        from rich.console import Console

        Console().print(peers_table(beats))


@app.command()
def demo(
    providers: Annotated[int, typer.Option(help="number of providers")] = 3,
    requests: Annotated[int, typer.Option(help="requests from the providers' own users, round robin")] = 6,
    burst: Annotated[int, typer.Option(help="then this many at once at the first provider")] = 6,
    max_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 24,
    engine: Annotated[str, typer.Option(help="engine of every provider: embedded or sim")] = "embedded",
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per request")] = False,
) -> None:
    """One command: a hub and providers on free loopback ports, requests answered, all shut down."""
    from wwwserve.demo import run_demo

    code = asyncio.run(run_demo(providers, requests, max_tokens, engine, json_out, burst))
    raise typer.Exit(code)


@app.command()
@settings_command(SchedulerSettings)
def scheduler(settings: SchedulerSettings) -> None:
    """Run the centralized reference scheduler (benchmarks only; providers use --policy centralized)."""
    from wwwserve.scheduler import run_scheduler

    run(run_scheduler(settings))


@app.command()
def bench(
    scenario: Annotated[Path | None, typer.Argument(help="scenario TOML file")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[
        Path | None, typer.Option(help="write requests.csv, summary.json and PNG plots here")
    ] = None,
    policies: Annotated[
        str, typer.Option(help="comma-separated: isolated,wwwserve,centralized")
    ] = "isolated,wwwserve,centralized",
    overhead: Annotated[
        bool, typer.Option("--overhead", help="measure agent vs bare echo responder instead")
    ] = False,
    gateway_load: Annotated[
        bool,
        typer.Option("--gateway", help="measure concurrent OpenAI streams through the gateway vs direct"),
    ] = False,
    duels: Annotated[
        bool,
        typer.Option("--duels", help="duels until a 100%% and a 10%% cheater starve; a lying judge"),
    ] = False,
    sim: Annotated[
        bool,
        typer.Option("--sim", help="sim engine: calibration vs published vLLM numbers, and its CPU cost"),
    ] = False,
    decision: Annotated[
        bool,
        typer.Option("--decision", help="time one dispatch decision at 10, 100 and 1,000 peers"),
    ] = False,
    swarm: Annotated[
        int,
        typer.Option(
            "--swarm",
            help="N real agents on one hub under steady load, then a newcomer's catch-up on 10^6 receipts",
        ),
    ] = 0,
    swarm_seconds: Annotated[float, typer.Option(help="--swarm: seconds of steady load")] = 20.0,
    swarm_rate: Annotated[float, typer.Option(help="--swarm: requests per second")] = 40.0,
    receipts: Annotated[
        int, typer.Option(help="--swarm: receipts in the catch-up ledger (0: skip)")
    ] = 1_000_000,
    checkpoint_every: Annotated[
        int, typer.Option(help="--swarm: ledger records between two checkpoints")
    ] = 10_000,
    concurrency: Annotated[int, typer.Option(help="--gateway: streams in flight")] = 64,
    requests: Annotated[int, typer.Option(help="--gateway: requests per path")] = 640,
) -> None:
    """Benchmark: the same trace through isolated providers, wwwserve dispatch and a central scheduler."""
    if sim:
        from wwwserve.bench.calibration import run_sim_bench

        res = asyncio.run(run_sim_bench())
        typer.echo(json.dumps(res) if json_out else json.dumps(res, indent=2))
        return
    if swarm:
        from wwwserve.bench.swarm import run_swarm

        res = asyncio.run(
            run_swarm(
                swarm,
                seconds=swarm_seconds,
                rate=swarm_rate,
                receipts=receipts,
                checkpoint_every=checkpoint_every,
            )
        )
        typer.echo(json.dumps(res) if json_out else json.dumps(res, indent=2))
        return
    if decision:
        from wwwserve.bench.decision import run_decision_bench

        res = run_decision_bench()
        typer.echo(json.dumps(res) if json_out else json.dumps(res, indent=2))
        return
    if duels:
        from wwwserve.bench.duels import run_duels

        res = asyncio.run(run_duels())
        typer.echo(json.dumps(res) if json_out else json.dumps(res, indent=2))
        return
    if overhead or gateway_load:
        from wwwserve.bench.gateway_load import run_gateway_load
        from wwwserve.bench.overhead import run_overhead

        res = asyncio.run(run_overhead() if overhead else run_gateway_load(requests, concurrency))
        typer.echo(json.dumps(res) if json_out else json.dumps(res, indent=2))
        return
    if scenario is None:
        typer.echo("error: give a scenario file, or --overhead", err=True)
        raise typer.Exit(2)
    from wwwserve.bench.run import run_bench

    try:
        asyncio.run(run_bench(scenario, [p.strip() for p in policies.split(",") if p.strip()], json_out, out))
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
@settings_command(GatewaySettings)
def gateway(settings: GatewaySettings) -> None:
    """Run the OpenAI-compatible HTTP gateway (/v1/chat/completions, /v1/completions, /v1/models)."""
    from wwwserve.gateway.app import run_gateway

    run(run_gateway(settings))


@app.command()
def top(
    nats_url: Annotated[
        str, typer.Option(help="NATS server(s) of the network, comma-separated")
    ] = "nats://127.0.0.1:4222",
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option(help="print one table and exit")] = False,
) -> None:
    """A live view of the network: providers, models, load, latency, from their heartbeats."""
    from rich.console import Console
    from rich.live import Live

    from wwwserve.observe import collect_heartbeats, peers_table

    async def go() -> None:
        if once:
            Console().print(peers_table(await collect_heartbeats(nats_url, max(interval, 1.2))))
            return
        with Live(peers_table([]), refresh_per_second=4) as live:
            while True:
                live.update(peers_table(await collect_heartbeats(nats_url, interval)))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


@app.command()
def ledger(
    provider: Annotated[str, typer.Option(help="whose view of the ledger to show")],
    nats_url: Annotated[
        str, typer.Option(help="NATS server(s) of the network, comma-separated")
    ] = "nats://127.0.0.1:4222",
    json_out: Annotated[bool, typer.Option("--json", help="print the view as JSON")] = False,
) -> None:
    """A provider's view of the credit ledger: balances, stakes, reputation, duel quality, judge weight."""
    import nats as nats_client
    from rich.console import Console
    from rich.table import Table

    from wwwserve.agent.credits import view_subject

    async def go() -> dict[str, Any]:
        nc = await nats_client.connect(servers=[u.strip() for u in nats_url.split(",")])
        try:
            msg = await nc.request(view_subject(provider), b"", timeout=5)
        finally:
            await nc.close()
        if msg.headers and msg.headers.get("Status") == "503":
            raise LookupError(f"provider {provider!r} does not answer (no responders)")
        result: dict[str, Any] = json.loads(msg.data)
        return result

    try:
        view = asyncio.run(go())
    except (LookupError, Exception) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(json.dumps(view))
        return
    t = Table(title=f"ledger as {provider} sees it ({view['receipts']} receipts)")
    for col in ("provider", "balance", "stake", "reputation", "quality", "judge weight"):
        t.add_column(col)
    for name, bal in view["balances"].items():
        t.add_row(
            name,
            f"{bal:.2f}",
            f"{view['stakes'].get(name, 0):.2f}",
            str(view["reputation"].get(name, "")),
            str(view.get("quality", {}).get(name, "")),
            str(view.get("judge_weight", {}).get(name, "")),
        )
    Console().print(t)
