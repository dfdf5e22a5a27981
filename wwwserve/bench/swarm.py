"""`wwwserve bench --swarm N`: N real agents on one hub under a steady request load, then a newcomer's
catch-up on a ledger of 10⁶ receipts.

Phase 1 (swarm): one hub (JetStream on), N agents (the real `Agent`, sim engine) spread over worker
processes and connected straight to the hub (no leaf each: 1,000 nats-servers would not fit in 2 cores;
the hub sees the same subjects and interest either way). After every agent is up and a warm-up (their
heartbeat scopes settle), a Poisson load runs for `seconds`. Measured over that window: the hub's
messages in/out per second (its /varz), heartbeats each agent received per second, every dispatch
decision's time, and each request's fate: served, failed explicitly, or lost (no answer by its deadline).

Phase 2 (ledger): a generator signs `receipts` receipts between 100 identities (two processes),
publishes them into the ledger stream after what phase 1 left there, folds them as everyone does, and
signs checkpoint votes as three of those identities at the last `checkpoint_every` boundary. Then a
fresh agent starts, and `ledger_catchup_s` is the time from its start until its view equals the
generator's (same balances, same stream sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nats

from wwwserve.agent import Agent, ProviderSettings
from wwwserve.agent.credits import read_ledger
from wwwserve.broker.config import HubConfig
from wwwserve.broker.process import NatsServer, free_port
from wwwserve.broker.streams import create_when_ready, jetstream
from wwwserve.client import Client
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.errors import DeadlineExceeded, WWWServeError
from wwwserve.ledger.book import LedgerView, apply
from wwwserve.ledger.checkpoint import CheckpointVote, digest, encode_state, state_of
from wwwserve.ledger.identity import Identity, new_identity
from wwwserve.ledger.records import Receipt
from wwwserve.logs import configure_logging
from wwwserve.policies import load_policy
from wwwserve.protocol import subjects
from wwwserve.protocol.headers import now_ms

MODEL = "swarm-model"
SIM = SimOptions(prefill_tps=20000.0, decode_tpot_ms=5.0)
_WARMUP_S = 8.0


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else 0.0


# ---- phase 1: the swarm --------------------------------------------------------------------------


async def _start_agent(name: str, hub_url: str, workdir: Path) -> tuple[Agent, asyncio.Task[None]]:
    settings = ProviderSettings(
        name=name,
        nats_url=hub_url,
        data_dir=workdir / name,
        engine="sim",
        model=[MODEL],
        max_concurrency=4,
        drain_grace_s=1.0,
    )
    agent = Agent(settings, SimEngine(SIM), load_policy("default"))
    task = asyncio.create_task(agent.run())
    ready = asyncio.create_task(agent.wait_ready())
    await asyncio.wait({task, ready}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return agent, task


async def _worker(cfg: dict[str, Any]) -> None:
    """One worker process: run its share of agents and of the load; talk to the parent by lines."""
    workdir = Path(cfg["workdir"])
    names = [f"s{i:04d}" for i in range(cfg["first"], cfg["first"] + cfg["count"])]
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []
    for i in range(0, len(names), 20):  # a few at a time: startup is a burst of JetStream API calls
        started = await asyncio.gather(*(_start_agent(n, cfg["hub"], workdir) for n in names[i : i + 20]))
        agents += [a for a, _ in started]
        tasks += [t for _, t in started]
    print(json.dumps({"ready": len(agents)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # "go": the load starts
    beats0 = [a.stats.beats_heard for a in agents]
    for a in agents:
        a.stats.decision_us.clear()
    t0, cpu0 = time.monotonic(), time.process_time()
    lags: list[float] = []
    lag_task = asyncio.create_task(_watch_lag(lags))
    await reader.readline()  # "report": the load ended
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    lag_task.cancel()
    beats = [(a.stats.beats_heard - b) / elapsed for a, b in zip(agents, beats0, strict=True)]
    decisions = [d for a in agents for d in a.stats.decision_us]
    print(
        json.dumps(
            {
                "beats_per_agent_per_s": beats,
                "decision_us": decisions,
                "cpu_share": cpu / elapsed,
                "loop_lag_ms": lags,
                "listening_shards": statistics.mean(
                    a.beats.listening(next(iter(a.models))) for a in agents if a.beats
                ),
            }
        ),
        flush=True,
    )
    await reader.readline()  # "stop"
    for a in agents:
        a.stop()
    await asyncio.wait(tasks, timeout=20)


async def _watch_lag(lags: list[float], every_s: float = 0.1) -> None:
    """How late the event loop wakes up (ms), every `every_s`: a busy process answers late."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(every_s)
        lags.append((time.monotonic() - t - every_s) * 1000.0)


async def _load(hub: str, rate: float, seconds: float, rng: random.Random) -> dict[str, Any]:
    """Poisson arrivals at `rate` per second for `seconds`; every request's fate and latency."""
    served: list[float] = []
    failed: dict[str, int] = {}
    lost = 0
    async with Client(hub, timeout=15.0) as client:
        await client.watch_network()

        async def one(i: int) -> None:
            nonlocal lost
            t = time.monotonic()
            try:
                await client.complete(MODEL, f"swarm request {i} " + "word " * 60, max_tokens=16)
                served.append((time.monotonic() - t) * 1000.0)
            except DeadlineExceeded as exc:
                if exc.remote:
                    failed[exc.code] = failed.get(exc.code, 0) + 1
                else:
                    lost += 1
            except WWWServeError as exc:
                failed[exc.code] = failed.get(exc.code, 0) + 1

        pending: list[asyncio.Task[None]] = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            pending.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*pending)
    return {"sent": i, "served": len(served), "failed": failed, "lost": lost, "latency_ms": served}


async def _varz(client: httpx.AsyncClient, port: int) -> dict[str, Any]:
    r = await client.get(f"http://127.0.0.1:{port}/varz")
    return dict(r.json())


async def _phase_swarm(
    n: int, hub: NatsServer, http_port: int, workdir: Path, seconds: float, rate: float, workers: int
) -> dict[str, Any]:
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    procs = []
    first = 0
    for i, count in enumerate(per):
        cfg = {
            "hub": hub.url,
            "workdir": str(workdir / "agents"),
            "first": first,
            "count": count,
        }
        first += count
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wwwserve.bench.swarm",
                json.dumps(cfg),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=(workdir / f"worker{i}.log").open("ab"),
            )
        )
    started = time.monotonic()
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 900)
        if not line:
            raise RuntimeError("a swarm worker died while starting its agents")
    startup_s = time.monotonic() - started
    await asyncio.sleep(_WARMUP_S)
    async with httpx.AsyncClient() as http:
        v0, t0 = await _varz(http, http_port), time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outcomes = await _load(hub.url, rate, seconds, random.Random(n))
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"report\n")
            await p.stdin.drain()
        results = []
        for p in procs:
            assert p.stdout is not None
            results.append(json.loads(await asyncio.wait_for(p.stdout.readline(), seconds + 120)))
        v1, t1 = await _varz(http, http_port), time.monotonic()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"stop\n")
        await p.stdin.drain()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), 60)
        except TimeoutError:
            p.kill()
    dt = t1 - t0
    beats = [b for r in results for b in r["beats_per_agent_per_s"]]
    decisions = [d for r in results for d in r["decision_us"]]
    latency = outcomes["latency_ms"]
    return {
        "providers": n,
        "requests": outcomes["sent"],
        "served": outcomes["served"],
        "failed": outcomes["failed"],
        "lost": outcomes["lost"],
        "hub_msgs_in_per_s": round((v1["in_msgs"] - v0["in_msgs"]) / dt, 1),
        "hub_msgs_out_per_s": round((v1["out_msgs"] - v0["out_msgs"]) / dt, 1),
        "heartbeat_deliveries_per_agent_per_s": round(statistics.mean(beats), 2),
        "heartbeat_deliveries_per_agent_per_s_max": round(max(beats), 2),
        "heartbeat_shards_heard": round(statistics.mean(r["listening_shards"] for r in results), 1),
        "decision_p50_us": round(_percentile(decisions, 50), 1),
        "decision_p99_us": round(_percentile(decisions, 99), 1),
        "decisions": len(decisions),
        "worker_cpu_share": [round(r["cpu_share"], 2) for r in results],
        "loop_lag_p99_ms": round(_percentile([x for r in results for x in r["loop_lag_ms"]], 99), 1),
        "request_p50_ms": round(_percentile(latency, 50), 1),
        "request_p99_ms": round(_percentile(latency, 99), 1),
        "startup_s": round(startup_s, 1),
        "window_s": round(dt, 1),
    }


# ---- phase 2: a newcomer's ledger catch-up ------------------------------------------------------

_PARTIES = 100
_SPACING_MS = 100  # 10 receipts a second: 10⁶ of them span the last ~28 hours, ending now


def _sign_batch(args: tuple[list[bytes], int, int, int]) -> list[bytes]:
    """Receipts [start, start+count) between the identities with these seeds (a pool worker)."""
    seeds, start, count, ts0 = args
    ids = [Identity(f"g{i:03d}", s) for i, s in enumerate(seeds)]
    rng = random.Random(start)
    out = []
    for k in range(start, start + count):
        s, o = rng.sample(ids, 2)
        r = Receipt(
            request_id=f"gen-{k}",
            model=MODEL,
            prompt_tokens=rng.randrange(10, 2000),
            completion_tokens=rng.randrange(1, 500),
            price=0.0001,
            server=s.name,
            server_key=s.public_key,
            origin=o.name,
            ts_ms=ts0 + k * _SPACING_MS,
        )
        out.append(r.signed_by_server(s).countersigned_by(o).model_dump_json().encode())
    return out


async def _phase_ledger(hub: NatsServer, workdir: Path, receipts: int, every: int) -> dict[str, Any]:
    nc = await nats.connect(hub.url, pending_size=64 * 1024 * 1024)
    js = jetstream(nc)
    # everyone's view: fold what the stream holds already (phase 1's receipts), then what we add
    view = LedgerView()
    for r in await read_ledger(nc):
        apply(view, r)
    seq = (await js.stream_info(subjects.LEDGER_STREAM)).state.last_seq
    ids = [new_identity(f"g{i:03d}") for i in range(_PARTIES)]
    seeds = [i.seed for i in ids]
    receipts += every // 2  # the newest checkpoint is then half an interval behind: a tail to replay
    ts0 = max(view.max_ts + 1, now_ms() - receipts * _SPACING_MS)  # never older than what is there
    gen_started = time.monotonic()
    chunk = 20_000
    batches = [(seeds, k, min(chunk, receipts - k), ts0) for k in range(0, receipts, chunk)]
    checkpoint: tuple[int, bytes] | None = None
    loop = asyncio.get_running_loop()
    with multiprocessing.get_context("spawn").Pool(max(1, (os.cpu_count() or 2))) as pool:
        for bodies in await loop.run_in_executor(None, lambda: pool.imap(_sign_batch, batches)):
            for body in bodies:
                await nc.publish(subjects.LEDGER_RECEIPT, body)
                seq += 1
                r = Receipt.model_validate_json(body)
                apply(view, r, signature_checked=True)  # we signed it
                if seq % every == 0:
                    checkpoint = (seq, encode_state(state_of(view, seq)))
            await nc.flush(timeout=60)
    generate_s = time.monotonic() - gen_started
    for _ in range(600):
        info = await js.stream_info(subjects.LEDGER_STREAM)
        if info.state.last_seq >= seq:
            break
        await asyncio.sleep(0.1)
    if info.state.last_seq != seq:
        raise RuntimeError(f"the stream holds {info.state.last_seq} records, {seq} were sent")
    if checkpoint is not None:
        cseq, state = checkpoint
        d = digest(state)
        await js.publish(f"{subjects.LEDGER_STATE_PREFIX}.{d}", state, headers={"Nats-Msg-Id": d})
        for ident in ids[:3]:
            vote = CheckpointVote(seq=cseq, digest=d, signer=ident.name, key=ident.public_key, ts_ms=now_ms())
            await js.publish(
                f"{subjects.LEDGER_CHECKPOINT_PREFIX}.{ident.name}",
                vote.signed(ident).model_dump_json().encode(),
            )
    await nc.close()

    # the newcomer: a real agent with an empty data directory
    settings = ProviderSettings(
        name="newcomer", nats_url=hub.url, data_dir=workdir / "newcomer", engine="sim", model=["other-model"]
    )
    agent = Agent(settings, SimEngine(SIM), load_policy("default"))
    started = time.monotonic()
    task = asyncio.create_task(agent.run())
    caught_up: float | None = None
    while time.monotonic() - started < 600:
        if agent.credits.ledger.applied_seq >= seq:
            caught_up = time.monotonic() - started
            break
        await asyncio.sleep(0.05)
    same = (
        agent.credits.ledger.view.balances == view.balances
        and agent.credits.ledger.view.receipts == view.receipts
    )
    from_checkpoint = agent.credits.checkpoint_seq
    agent.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    return {
        "ledger_receipts": seq,
        "ledger_catchup_s": round(caught_up, 2) if caught_up is not None else None,
        "ledger_same_balances": same,
        "ledger_checkpoint_seq": checkpoint[0] if checkpoint else None,
        "ledger_replayed_after_checkpoint": seq - (checkpoint[0] if checkpoint else 0),
        "ledger_generate_s": round(generate_s, 1),
        "ledger_newcomer_started_at_seq": from_checkpoint,
    }


# ---- the whole bench ---------------------------------------------------------------------------


async def run_swarm(
    n: int,
    seconds: float = 20.0,
    rate: float = 40.0,
    workers: int = 4,
    receipts: int = 1_000_000,
    checkpoint_every: int = 10_000,
) -> dict[str, Any]:
    """Both phases on one hub; the JSON the issue names, plus detail. The load comes from this process
    (the agents run in `workers` processes), so a busy agent process does not slow the load down."""
    workdir = Path(tempfile.mkdtemp(prefix="wwwserve-swarm-"))
    port, leaf_port, http_port = free_port(), free_port(), free_port()
    hub = NatsServer(
        HubConfig(
            port=port, leafnode_port=leaf_port, http_port=http_port, max_payload=8 * 1024 * 1024
        ).render(),
        port=port,
        workdir=workdir / "hub",
        name="hub",
    )
    async with hub:
        await create_when_ready(hub.url, 1)
        out = await _phase_swarm(n, hub, http_port, workdir, seconds, rate, min(workers, n))
        out["ledger_catchup_s"] = None  # phase 2 skipped (--receipts 0)
        if receipts:
            out.update(await _phase_ledger(hub, workdir, receipts, checkpoint_every))
    return out


if __name__ == "__main__":
    from wwwserve.runtime import run

    configure_logging("warning", json_logs=True)
    run(_worker(json.loads(sys.argv[1])))  # the event loop `wwwserve provider` runs its agent on
