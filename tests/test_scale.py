"""What keeps a big network cheap: scoped and sampled heartbeats, the directory, bounded beat rates."""

from __future__ import annotations

import asyncio
import random
import time

import nats

from wwwserve.agent.beats import BeatScope, shards_wanted
from wwwserve.agent.peers import PeerTable
from wwwserve.directory import read_directory
from wwwserve.protocol import subjects
from wwwserve.protocol.messages import Heartbeat
from wwwserve.topology import LocalNetwork

SIM = {"decode_tpot_ms": "5"}


def test_shards_heard_shrink_as_the_model_grows() -> None:
    assert shards_wanted(0, 64, 32) == 64  # nothing heard yet: hear everything
    assert shards_wanted(20, 64, 32) == 64  # a small model: every provider
    assert shards_wanted(1000, 64, 32) == 3  # ~1,000 providers: 3 of 64 shards hold ~47
    assert shards_wanted(50, 3, 32) == 2  # hearing 50 in 3 shards: ~1,067 providers, 2 will do
    assert shards_wanted(5, 3, 32) == 20  # hearing 5 in 3 shards: ~107 providers, widen


def test_beat_rate_is_bounded_by_the_budget_whatever_the_size() -> None:
    scope = BeatScope(
        None,  # type: ignore[arg-type]  # no connection: only the rate arithmetic is used
        "me",
        ["m"],
        None,  # type: ignore[arg-type]
        listen_target=32,
        budget=100.0,
        rng=random.Random(0),
    )
    for heard in (3, 30, 50):  # what a listener hears is bounded by the listen target (sampled shards)
        gap, keep = scope.min_gap(heard, 1.0), scope.keepalive(heard, 1.0)
        assert heard / gap <= 100.0 or gap == 0.05  # changes: at most the budget
        assert heard / keep <= 10.0 or keep == 1.0  # idle: a tenth of it
        assert 0.05 <= gap <= 1.0 <= keep <= 5.0


def test_a_peer_that_beats_slowly_is_given_three_of_its_intervals() -> None:
    table = PeerTable("me", expiry_s=0.2)
    slow = table.update(Heartbeat(name="slow", models=["m"], engine="sim", capacity=1, interval_s=0.5))
    fast = table.update(Heartbeat(name="fast", models=["m"], engine="sim", capacity=1, interval_s=0.05))
    assert slow is not None and fast is not None
    later = time.monotonic() + 0.4
    table._last_heard = later
    assert table._expired(fast, later) and not table._expired(slow, later)


async def test_heartbeats_are_scoped_by_model_and_the_directory_lists_everyone(net: LocalNetwork) -> None:
    for name, model in (("a1", "model-a"), ("a2", "model-a"), ("b1", "model-b")):
        await net.add_provider(name, engine="sim", model=[model], engine_opt=SIM)
    seen: list[str] = []
    nc = await nats.connect(net.hub_url)
    sub = await nc.subscribe(subjects.heartbeat_filter(subjects.model_token("model-b")))
    await asyncio.sleep(2.5)
    while True:
        try:
            seen.append((await sub.next_msg(timeout=0.1)).subject)
        except nats.errors.TimeoutError:
            break
    listed = await read_directory(nc)
    await nc.close()
    a1 = net.providers["a1"].agent
    assert {p.beat.name for p in a1.peers.alive()} == {"a2"}  # never hears model-b's provider
    assert {s.split(".")[2] for s in seen} == {"b1"}  # model-b's subject carries b1 only
    assert listed is not None and {b.name: b.models for b in listed} == {
        "a1": ["model-a"],
        "a2": ["model-a"],
        "b1": ["model-b"],
    }
    assert all(b.prefix_filter == "" for b in listed)  # the directory leaves the big field out


async def test_a_big_model_is_heard_through_a_sample_of_shards(net: LocalNetwork) -> None:
    for i in range(6):
        await net.add_provider(
            f"p{i}", engine="sim", model=["m"], engine_opt=SIM, heartbeat_listen=2, wait_peers=False
        )
    await asyncio.sleep(5.0)  # two resizes
    agent = net.providers["p0"].agent
    assert agent.beats is not None
    assert agent.beats.listening(subjects.model_token("m")) < subjects.HEARTBEAT_SHARDS
    assert len(agent.peers.alive()) < 5  # hears a sample, not everyone


async def test_swarm_bench_reports_the_named_json_fields(tmp_path: object) -> None:
    """A small swarm end to end: agents, load, hub counters, then a newcomer from a checkpoint."""
    import json
    import subprocess
    import sys

    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "wwwserve", "--log-level", "warning", "bench", "--swarm", "6",
            "--swarm-seconds", "3", "--swarm-rate", "10", "--receipts", "3000",
            "--checkpoint-every", "1000", "--json",
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )  # fmt: skip
    doc = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert set(doc) >= {
        "providers",
        "requests",
        "lost",
        "hub_msgs_in_per_s",
        "hub_msgs_out_per_s",
        "heartbeat_deliveries_per_agent_per_s",
        "decision_p50_us",
        "decision_p99_us",
        "ledger_catchup_s",
    }
    assert doc["providers"] == 6 and doc["requests"] > 0 and doc["lost"] == 0
    assert 0 < doc["heartbeat_deliveries_per_agent_per_s"] <= 100
    assert doc["hub_msgs_out_per_s"] > 0 and doc["decision_p50_us"] > 0
    assert doc["ledger_receipts"] == 3500 and doc["ledger_same_balances"] is True
    assert doc["ledger_newcomer_started_at_seq"] == 3000  # from the checkpoint, then 500 replayed
    assert doc["ledger_catchup_s"] is not None and doc["ledger_catchup_s"] < 30
