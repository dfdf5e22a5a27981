"""The default policy on tables of states: pure decisions, no NATS."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from wwwserve.policies import Accept, Forward, OwnState, PeerState, Reject, RequestInfo, load_policy
from wwwserve.policies.default import DefaultPolicy
from wwwserve.policies.estimate import estimate
from wwwserve.policies.isolated import IsolatedPolicy

FAST = dict(prefill_tps=10_000.0, tpot_ms=10.0)


def req(**kw: object) -> RequestInfo:
    base: dict[str, object] = dict(model="m", prompt_tokens=100, max_tokens=50, remaining_ms=60_000.0)
    base.update(kw)
    return RequestInfo(**base)  # type: ignore[arg-type]


def own(**kw: object) -> OwnState:
    base: dict[str, object] = dict(name="me", capacity=2, queue_limit=8, **FAST)
    base.update(kw)
    return OwnState(**base)  # type: ignore[arg-type]


def peer(name: str, **kw: object) -> PeerState:
    base: dict[str, object] = dict(name=name, capacity=2, queue_limit=8, **FAST)
    base.update(kw)
    return PeerState(**base)  # type: ignore[arg-type]


def decide(r: RequestInfo, o: OwnState, peers: list[PeerState], seed: int = 0) -> object:
    return DefaultPolicy().decide(r, o, peers, random.Random(seed))


def test_estimate_formula() -> None:
    e = estimate(req(), own())
    assert e.ttft_ms == pytest.approx(10.0) and e.e2e_ms == pytest.approx(10.0 + 49 * 10.0)
    busy = estimate(req(), own(running=2, queued=1, latency_ms=1000.0))
    assert busy.ttft_ms == pytest.approx(10.0 + 2 / 2 * 1000.0)


def test_estimate_counts_shared_prefill() -> None:
    """Prompts already in the engine go first and stall decodes; a prefill-busy engine decodes slower."""
    e = estimate(req(), own(prefill_backlog=5000))
    assert e.ttft_ms == pytest.approx(500.0 + 10.0) and e.e2e_ms == pytest.approx(510.0 + 490.0 + 500.0)
    busy = estimate(req(), own(prefill_busy=0.5))
    assert busy.e2e_ms == pytest.approx(10.0 + 49 * 10.0 / 0.5)
    assert estimate(req(), own(prefill_busy=1.0)).e2e_ms == pytest.approx(10.0 + 49 * 10.0 / 0.1)


CASES = [
    ("free slot, meets SLO: serve here", req(slo_ms=2000), own(), [peer("a")], Accept()),
    ("no peers, full but queue room: queue here", req(), own(running=2, queued=3), [], Accept()),
    (
        "full, idle peer: forward",
        req(slo_ms=1000),
        own(running=2, queued=2, latency_ms=500),
        [peer("a")],
        Forward("a"),
    ),
    (
        "hop limit reached: never forward",
        req(hops=2, slo_ms=100),
        own(running=2, latency_ms=500),
        [peer("a")],
        Accept(),
    ),
    (
        "everyone full, no queue: reject",
        req(),
        own(running=2, queue_limit=0),
        [peer("a", running=2, queue_limit=0)],
        Reject("overloaded", ""),
    ),
    (
        "deadline unreachable anywhere: reject",
        req(remaining_ms=50),
        own(),
        [peer("a")],
        Reject("overloaded", ""),
    ),
    (
        "forwarding disabled for own users",
        req(slo_ms=100),
        own(running=2, latency_ms=900, forward=False),
        [peer("a")],
        Accept(),
    ),
    (
        "peer without room is skipped",
        req(slo_ms=1000),
        own(running=2, latency_ms=900),
        [peer("a", running=2, queued=8, accepting=False)],
        Accept(),
    ),
    (
        "TTFT SLO missed locally: forward",
        req(slo_ttft_ms=300),
        own(running=2, queued=2, latency_ms=500),
        [peer("a")],
        Forward("a"),
    ),
    (
        "peer too expensive is skipped",
        req(slo_ms=1000, max_price=1.0),
        own(running=2, latency_ms=900),
        [peer("a", price=2.0)],
        Accept(),
    ),
    (
        "network request beyond network share: forward",
        req(own_user=False, hops=1),
        own(running=2, queued=3, network_share=0.5),
        [peer("a")],
        Forward("a"),
    ),
    (
        "forwarded to us with room: serve, do not bounce",
        req(own_user=False, hops=1, slo_ms=100),
        own(running=2, queued=1, latency_ms=500),
        [peer("a")],
        Accept(),
    ),
    (
        "SLO met after queueing: serve here",
        req(slo_ms=5000),
        own(running=2, queued=1, latency_ms=500),
        [peer("a")],
        Accept(),
    ),
]


@pytest.mark.parametrize(("case", "r", "o", "peers", "expected"), CASES, ids=[c[0] for c in CASES])
def test_default_policy_table(
    case: str, r: RequestInfo, o: OwnState, peers: list[PeerState], expected: object
) -> None:
    got = decide(r, o, peers)
    if isinstance(expected, Reject):
        assert isinstance(got, Reject) and got.code == "overloaded" and got.reason
    else:
        assert got == expected


def test_choice_is_weighted_towards_faster_peers_and_spreads() -> None:
    r = req()
    o = own(running=2, queued=4, latency_ms=3000)
    peers = [peer("fast", tpot_ms=10.0), peer("slow", tpot_ms=14.0)]
    picks = Counter(str(decide(r, o, peers, seed)) for seed in range(400))
    assert picks["Forward(peer='fast')"] > picks["Forward(peer='slow')"] > 0


def test_stale_heartbeats_and_recent_sends_count_against_a_peer() -> None:
    r = req()
    o = own(running=2, queued=4, latency_ms=3000)
    fresh, stale = peer("fresh"), peer("stale", age_s=3.0)
    picks = Counter(str(decide(r, o, [fresh, stale], s)) for s in range(300))
    assert picks["Forward(peer='fresh')"] > picks["Forward(peer='stale')"]
    herded = peer("herded", sent_since_beat=6, latency_ms=500)
    picks = Counter(str(decide(r, o, [herded, peer("calm")], s)) for s in range(300))
    assert picks["Forward(peer='calm')"] > picks["Forward(peer='herded')"]


def test_isolated_never_forwards() -> None:
    p = IsolatedPolicy()
    assert p.decide(req(slo_ms=1), own(running=2), [peer("a")], random.Random()) == Accept()
    assert isinstance(p.decide(req(), own(running=2, queue_limit=0), [peer("a")], random.Random()), Reject)


def test_load_policy_by_name_and_by_path() -> None:
    assert load_policy("default").name == "default"
    assert load_policy("isolated").name == "isolated"
    assert load_policy("wwwserve.policies.default:DefaultPolicy").name == "default"
    with pytest.raises(ValueError):
        load_policy("nope")


def test_a_request_served_locally_never_builds_its_candidates_states() -> None:
    """The candidates' states are built on first look: serving locally with room costs no O(k) work."""
    from wwwserve.agent.dispatch import CandidateStates

    builds: list[str] = []

    class Source:
        def peer_states(self, model: str, exclude: set[str], probes: list[int]) -> list[PeerState]:
            builds.append(model)
            return [peer("a", cached_tokens=64)]

    short = req(slo_ms=2000, cacheable_tokens=0)  # no checkpoint block: no peer can hold its prefix
    served_here = decide(short, own(), CandidateStates(Source(), "m", set(), []))  # type: ignore[arg-type]
    assert served_here == Accept() and builds == []
    full = decide(short, own(running=2, queue_limit=0), CandidateStates(Source(), "m", set(), []))  # type: ignore[arg-type]
    assert full == Forward("a") and builds == ["m"]


def test_a_peer_is_not_asked_about_a_prefix_we_already_hold_all_of() -> None:
    """No peer can hold more of a prompt than its advertised checkpoints: then the local slot is ours."""
    holder = peer("a", cached_tokens=256, prefill_tps=100_000.0)
    r = req(prompt_tokens=300, cacheable_tokens=256)
    assert decide(r, own(cached_tokens=0), [holder]) == Forward("a")
    assert decide(r, own(cached_tokens=256), [holder]) == Accept()


def test_a_peer_nobody_has_measured_is_not_taken_for_instant() -> None:
    """A real engine reports no speeds before its first answers; estimated as instant, it drew every
    forward. It is estimated as fast as this agent instead, so measured peers keep their share."""
    o = own(running=2, queued=8)  # no room here: every request goes to a peer
    unmeasured = peer("new", prefill_tps=0.0, tpot_ms=0.0)
    measured = peer("known")
    picks = Counter(
        d.peer for s in range(200) if isinstance(d := decide(req(), o, [unmeasured, measured], s), Forward)
    )
    assert picks["known"] > 50 and picks["new"] > 50, picks


def test_a_tpot_slo_sends_long_answers_away_from_a_slow_decoder() -> None:
    """A provider whose decode steps take longer than the user's TPOT target keeps no such request
    when a peer meets it, even though its TTFT and the deadline would be met at home."""
    slow = own(tpot_ms=60.0)  # a free slot, fast prefill, slow decode
    fast = peer("fast", tpot_ms=10.0)
    r = req(max_tokens=200, slo_ttft_ms=2000.0)
    assert isinstance(decide(r, slow, [fast]), Accept)  # no TPOT target: home is good enough
    with_tpot = req(max_tokens=200, slo_ttft_ms=2000.0, slo_tpot_ms=40.0)
    assert decide(with_tpot, slow, [fast]) == Forward("fast")
