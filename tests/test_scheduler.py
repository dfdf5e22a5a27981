"""The centralized reference scheduler: it assigns, counts exactly, and steps aside."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import nats
from nats.aio.msg import Msg

from tests.fake_openai import StallableServer
from wwwserve.broker.process import free_port
from wwwserve.client import Client
from wwwserve.errors import WWWServeError
from wwwserve.protocol import headers as h
from wwwserve.protocol import subjects
from wwwserve.protocol.messages import Reply
from wwwserve.scheduler import Scheduler, SchedulerSettings
from wwwserve.topology import LocalNetwork

MODEL = "sim-model"
SLOW = {"prefill_tps": "5000", "decode_tpot_ms": "25"}  # 40 tokens: about one second per answer


class LateBeatsScheduler(Scheduler):
    """A scheduler whose heartbeats arrive 2 s late (a slow control plane, a busy host)."""

    delay_s = 2.0

    async def _on_heartbeat(self, msg: Msg) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay_s, lambda: asyncio.ensure_future(Scheduler._on_heartbeat(self, msg)))


async def _centralized(net: LocalNetwork, names: list[str], **kw: object) -> None:
    for name in names:
        await net.add_provider(
            name,
            engine="sim",
            model=[MODEL],
            engine_opt=SLOW,
            policy="centralized",
            **kw,  # type: ignore[arg-type]
        )


async def test_a_burst_spreads_by_exact_in_flight_counts_despite_late_heartbeats(net: LocalNetwork) -> None:
    await _centralized(net, ["p1", "p2", "p3"], max_concurrency=2, max_queue=2)
    sched = await net.start_scheduler(LateBeatsScheduler(SchedulerSettings(nats_url=net.hub_url)))
    await asyncio.sleep(3.0)  # the first (late) heartbeats reach the scheduler
    assert {p.name for p in sched.peers.alive()} == {"p1", "p2", "p3"}
    async with Client(net.hub_url, timeout=30) as c:
        # 9 > one provider's 4 places; every beat the scheduler has says all three are idle
        replies = await asyncio.gather(*(c.complete(MODEL, f"burst {i}", max_tokens=40) for i in range(9)))
    assert all(isinstance(r, Reply) for r in replies)
    assert Counter(r.provider for r in replies) == {"p1": 3, "p2": 3, "p3": 3}
    assert dict(sched.assigned) == {"p1": 3, "p2": 3, "p3": 3}
    assert sched.finished == sched.assigned and not any(sched.in_flight.values())
    assert not sched.lost  # late beats never made it give up on a live provider


async def test_answers_stream_from_the_provider_not_through_the_scheduler(net: LocalNetwork) -> None:
    await _centralized(net, ["p1"], max_concurrency=2)
    sched = await net.start_scheduler()
    await asyncio.sleep(1.5)
    nc = await nats.connect(net.hub_url)
    try:
        # a plain `nats req`: JSON in, JSON out, the answer from the provider's own connection
        body = json.dumps({"prompt": "hello there", "max_tokens": 8}).encode()
        msg = await nc.request(subjects.request_subject(MODEL), body, timeout=20)
        reply = json.loads(msg.data)
        assert (msg.headers or {}).get(h.PROVIDER) == "p1" and reply["provider"] == "p1"
        assert len(reply["text"].split()) == 8
        # streaming: every chunk comes from p1 (the scheduler never writes content)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        stream = json.dumps({"prompt": "a b c", "max_tokens": 5, "stream": True}).encode()
        await nc.publish(subjects.request_subject(MODEL), stream, reply=inbox)
        seen: list[dict[str, str]] = []
        while not seen or seen[-1].get(h.FINAL) != "true":
            m = await sub.next_msg(timeout=20)
            seen.append(dict(m.headers or {}))
        assert [s[h.SEQ] for s in seen] == [str(i) for i in range(6)]
        assert {s[h.PROVIDER] for s in seen} == {"p1"}
    finally:
        await nc.close()
    assert sched.finished["p1"] == 2 and sched.in_flight["p1"] == 0


async def test_bad_input_and_unknown_models_get_explicit_errors(net: LocalNetwork) -> None:
    await _centralized(net, ["p1"], max_concurrency=1)
    await net.start_scheduler()
    await asyncio.sleep(1.5)
    nc = await nats.connect(net.hub_url)
    try:
        bad = await nc.request(subjects.request_subject(MODEL), b'{"max_tokens": "many"}', timeout=10)
        assert (bad.headers or {}).get(h.ERROR) == "bad_request"
        nobody = await nc.request(subjects.request_subject("no-such-model"), b'{"prompt": "x"}', timeout=10)
        assert (nobody.headers or {}).get(h.ERROR) == "unknown_model"
    finally:
        await nc.close()


async def test_requests_wait_centrally_when_every_provider_is_full(net: LocalNetwork) -> None:
    await _centralized(net, ["p1", "p2"], max_concurrency=1, max_queue=0)
    sched = await net.start_scheduler()
    await asyncio.sleep(1.5)
    async with Client(net.hub_url, timeout=40) as c:
        # 8 requests, 2 places: six wait at the scheduler (not rejected) and are served in turn
        replies = await asyncio.gather(*(c.complete(MODEL, f"q {i}", max_tokens=20) for i in range(8)))
    assert len(replies) == 8 and all(isinstance(r, Reply) for r in replies)
    assert sum(sched.assigned.values()) == 8 and sched.finished == sched.assigned


async def test_a_provider_that_dies_loses_nothing_that_another_could_serve(net: LocalNetwork) -> None:
    await _centralized(net, ["p1", "p2"], max_concurrency=4)
    sched = await net.start_scheduler(
        Scheduler(SchedulerSettings(nats_url=net.hub_url, peer_expiry_s=1.0, probe_timeout_s=0.5))
    )
    await asyncio.sleep(1.5)
    outcomes: list[object] = []

    async def one(c: Client, i: int) -> None:
        try:
            outcomes.append(await c.complete(MODEL, f"r {i}", max_tokens=80, timeout=30))
        except WWWServeError as exc:
            outcomes.append(exc)

    async with Client(net.hub_url, timeout=30) as c:
        burst = asyncio.gather(*(one(c, i) for i in range(6)))
        await asyncio.sleep(0.5)
        await net.providers["p1"].leaf.stop()  # p1 vanishes: no goodbye, no answers, no errors
        await burst
    assert len(outcomes) == 6  # every request ended: an answer or an explicit error
    assert all(isinstance(o, Reply | WWWServeError) for o in outcomes)
    assert any(isinstance(o, Reply) and o.provider == "p2" for o in outcomes)
    for _ in range(40):  # a provider sends its Done notice just after the final answer: it may trail it
        if not any(sched.in_flight.values()):
            break
        await asyncio.sleep(0.05)
    assert not any(sched.in_flight.values()), sched.in_flight


async def test_unmeasured_real_engines_share_a_first_burst(net: LocalNetwork) -> None:
    """Real engines report no speeds until they have answered: they must not all look instant."""
    servers = [StallableServer(free_port(), token_s=0.05) for _ in range(3)]
    for s in servers:
        await s.start()
    try:
        for i, s in enumerate(servers):
            await net.add_provider(
                f"r{i}",
                engine="openai",
                engine_url=f"http://127.0.0.1:{s.port}",
                model=[MODEL],
                policy="centralized",
                max_concurrency=2,
                max_queue=8,
            )
        sched = await net.start_scheduler()
        await asyncio.sleep(1.5)
        async with Client(net.hub_url, timeout=30) as c:
            replies = await asyncio.gather(*(c.complete(MODEL, f"cold {i}", max_tokens=10) for i in range(6)))
        assert Counter(r.provider for r in replies) == {"r0": 2, "r1": 2, "r2": 2}
        assert sched.finished == sched.assigned
    finally:
        for s in servers:
            await s.stop()


def test_placement_meets_the_slos_soonest_and_never_takes_the_unmeasured_for_instant() -> None:
    """placement.pick is pure: request and candidate states in, a provider out."""
    from wwwserve.policies.base import PeerState, RequestInfo
    from wwwserve.scheduler.placement import pick

    def state(name: str, **kw: float) -> PeerState:
        return PeerState(name=name, capacity=4, queue_limit=4, **kw)  # type: ignore[arg-type]

    info = RequestInfo(model="m", prompt_tokens=1000, max_tokens=200, remaining_ms=30_000)
    fast = state("fast", prefill_tps=20_000, tpot_ms=10)
    slow_decoder = state("slowdec", prefill_tps=40_000, tpot_ms=60)
    assert pick(info, [("fast", fast), ("slowdec", slow_decoder)], 0.8) == "fast"  # sooner end to end
    # nobody measured yet: the burst is spread by the share of slots in use, not piled on one name
    cold = [("a", state("a", running=2)), ("b", state("b", running=1))]
    assert pick(info, cold, 0.8) == "b"
    # an unmeasured provider is as fast as the measured ones' mean, not instant
    busy_known = state("known", prefill_tps=10_000, tpot_ms=10, running=4, queued=3, latency_ms=3000)
    idle_new = state("new")
    assert pick(info, [("known", busy_known), ("new", idle_new)], 0.8) == "new"  # idle wins, fairly
    idle_known = state("known", prefill_tps=10_000, tpot_ms=10)
    new_busy = state("new", running=4, queued=3)
    assert pick(info, [("known", idle_known), ("new", new_busy)], 0.8) == "known"


async def test_an_assignment_repeated_to_the_same_provider_still_reports_its_end(net: LocalNetwork) -> None:
    """A scheduler may place a request again on a provider that already has it (same id): the provider
    serves it once, and the latest assigner hears that it ended (or it would wait out the deadline)."""
    await _centralized(net, ["p1"], max_concurrency=1)
    nc = await nats.connect(net.providers["p1"].url)
    try:
        client = await nc.subscribe(nc.new_inbox())
        controls = [await nc.subscribe(nc.new_inbox()) for _ in range(3)]
        body = json.dumps({"prompt": "same request", "max_tokens": 20}).encode()
        hdrs = {h.REQUEST_ID: "rid-repeat-1", h.REPLY_TO: client.subject, h.WANT_ACK: "true"}
        direct = subjects.direct_subject("p1", MODEL)
        await nc.publish(direct, body, reply=controls[0].subject, headers=hdrs)
        await asyncio.sleep(0.2)
        await nc.publish(direct, body, reply=controls[1].subject, headers=hdrs)  # while it runs
        final = await client.next_msg(timeout=20)
        assert (final.headers or {}).get(h.FINAL) == "true"
        kinds = []
        while True:
            m = await controls[1].next_msg(timeout=5)
            kinds.append("ack" if h.ACK in (m.headers or {}) else (m.headers or {}).get(h.DONE))
            if kinds[-1] == "200":
                break
        assert kinds == ["ack", "200"]
        await nc.publish(direct, body, reply=controls[2].subject, headers=hdrs)  # after it finished
        replay = await client.next_msg(timeout=5)
        assert replay.data == final.data  # the same answer, not served twice
        m = await controls[2].next_msg(timeout=5)
        assert (m.headers or {}).get(h.DONE) == "200"
    finally:
        await nc.close()
