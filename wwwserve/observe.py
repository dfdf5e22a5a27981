"""Watching the network from outside: read the directory (or raw heartbeats) and render it for people."""

from __future__ import annotations

import asyncio

import nats
from rich.table import Table

from wwwserve.client import heartbeat_from
from wwwserve.directory import read_directory
from wwwserve.protocol import subjects
from wwwserve.protocol.messages import Heartbeat


async def collect_heartbeats(nats_url: str, wait_s: float) -> list[Heartbeat]:
    """Every provider the directory lists, sorted by name (each refreshed within 10 s); without
    JetStream on the hubs, the raw heartbeats heard within `wait_s` seconds instead."""
    nc = await nats.connect(servers=[u.strip() for u in nats_url.split(",")], name="wwwserve-peers")
    try:
        listed = await read_directory(nc, wait_s)
        if listed is not None:
            return listed
        seen: dict[str, Heartbeat] = {}
        sub = await nc.subscribe(f"{subjects.HEARTBEAT_PREFIX}.>")
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while (left := end - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            beat = heartbeat_from(msg)
            if beat is not None and beat.models:
                seen[beat.name] = beat
    finally:
        await nc.close()
    return sorted(seen.values(), key=lambda b: b.name)


async def wait_for_providers(nats_url: str, names: set[str], timeout: float = 60.0) -> None:
    """Return once every provider in `names` heartbeats at `nats_url`; TimeoutError otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if names <= {b.name for b in await collect_heartbeats(nats_url, 0.5)}:
            return
    raise TimeoutError(f"providers {sorted(names)} did not all come up")


def peers_table(beats: list[Heartbeat]) -> Table:
    """A rich table of providers, one row each."""
    t = Table(title="wwwserve providers")
    for col in ("name", "models", "engine", "load", "accepting", "ttft ms", "latency ms", "tok/s"):
        t.add_column(col)
    for b in beats:
        t.add_row(
            b.name,
            ", ".join(b.models),
            b.engine,
            f"{b.running}+{b.queued}/{b.capacity}",
            "yes" if b.accepting else "no",
            f"{b.ttft_ms:.0f}",
            f"{b.latency_ms:.0f}",
            f"{b.tokens_per_s:.1f}",
        )
    return t
