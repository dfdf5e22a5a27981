"""Prefix identity, the advertised filter, the sim's prefix cache, and prefix-aware dispatch."""

from __future__ import annotations

import random

from wwwserve.engines.prefix_cache import PrefixCache
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.policies.base import Forward, OwnState, PeerState, RequestInfo
from wwwserve.policies.default import DefaultPolicy
from wwwserve.protocol.messages import Heartbeat
from wwwserve.protocol.prefix import (
    BLOCK_TOKENS,
    FILTER_ENTRIES,
    PrefixFilter,
    block_hashes,
    checkpoints,
    matched_tokens,
)


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_block_hashes_are_a_chain_equal_exactly_for_equal_prefixes() -> None:
    system = words("s", 64)
    a, b = block_hashes(f"{system} {words('x', 40)}"), block_hashes(f"{system} {words('y', 40)}")
    assert len(a) == (64 + 40) // BLOCK_TOKENS == len(b)
    assert a[:4] == b[:4] and a[4] != b[4]  # the shared 64 words are 4 equal blocks, then they differ
    assert block_hashes(words("x", 15)) == []  # no full block, nothing to reuse
    prompt = f"{system} {words('x', 40)}"
    assert block_hashes(f"{prompt} {words('ans', 30)}", known=a) == block_hashes(
        f"{prompt} {words('ans', 30)}"
    )
    later = block_hashes(f"{words('z', 16)} {system}")
    assert not set(later) & set(a)  # the same words later in a prompt are another prefix


def test_the_filter_finds_what_was_cached_and_fits_a_heartbeat() -> None:
    prompt = block_hashes(words("p", 16 * 40))
    f = PrefixFilter.of(checkpoints(prompt[:24]))  # a server that holds the first 24 blocks
    assert matched_tokens(f, checkpoints(prompt)) == 24 * BLOCK_TOKENS
    assert matched_tokens(f, checkpoints(block_hashes(words("q", 16 * 40)))) == 0
    assert matched_tokens(None, checkpoints(prompt)) == 0
    full = PrefixFilter.of(range(1, FILTER_ENTRIES + 1))
    text = full.encode()
    assert len(text) <= 2000  # the summary is at most ~2 KB per beat
    beat = Heartbeat(name="p", models=["m"], engine="sim", capacity=1, prefix_filter=text)
    assert len(beat.model_dump_json()) < 2600
    assert PrefixFilter.decode(text) is not None and PrefixFilter.decode("not base64!") is None
    rng = random.Random(1)
    false_hits = sum(rng.getrandbits(64) in full for _ in range(5000))
    assert false_hits / 5000 < 0.02  # ~0.5% expected at 1,200 entries


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=8)
    old, new = block_hashes(words("o", 16 * 6)), block_hashes(words("n", 16 * 6))
    cache.insert(old)
    assert cache.match(old) == 6
    cache.insert(new)
    assert len(cache) == 8 and cache.match(new) == 6 and cache.match(old) == 0  # old's head was evicted


def test_a_cached_prefix_skips_its_prefill_in_the_engine() -> None:
    engine = SimEngine(SimOptions.from_opts({"gpu": "a10g"}))
    prompt = words("w", 2000)

    def ttft(text: str) -> float:
        seq = engine.submit(len(text.split()), 1, block_hashes(text))
        clock = max((t for t, _ in engine.virtual_steps()), default=0.0)
        assert seq.done
        return clock

    cold = ttft(prompt)
    warm = ttft(prompt + " " + words("next", 100))  # the next turn: the whole first prompt is cached
    assert engine.cached_tokens == 2000 - 2000 % BLOCK_TOKENS
    assert warm < cold / 5, (cold, warm)
    blind = SimEngine(SimOptions.from_opts({"gpu": "a10g", "prefix_caching": "0"}))
    assert blind.load().prefix_filter is None and engine.load().prefix_filter is not None


def test_the_policy_sends_a_turn_where_its_prefix_is_and_the_blind_one_does_not() -> None:
    req = RequestInfo(model="m", prompt_tokens=3000, max_tokens=50, remaining_ms=30_000, slo_ttft_ms=2000)
    speeds = dict(capacity=16, prefill_tps=4000.0, tpot_ms=30.0)
    own = OwnState(name="me", **speeds)  # free and meets the SLO, but holds nothing of the prompt
    warm = PeerState(name="warm", cached_tokens=2800, **speeds)
    cold = PeerState(name="cold", **speeds)
    rng = random.Random(0)
    aware = [DefaultPolicy().decide(req, own, [warm, cold], rng) for _ in range(200)]
    assert sum(d == Forward("warm") for d in aware) > 180, aware[:10]
    blind = [DefaultPolicy(prefix_aware=False).decide(req, own, [warm, cold], rng) for _ in range(200)]
    assert sum(d == Forward("warm") for d in blind) == 0  # it serves locally: nothing tells it better


def test_the_openai_engine_reads_vllm_prefix_cache_counters() -> None:
    from wwwserve.engines.openai import parse_metrics, prefix_hit_rate

    v1 = parse_metrics(
        'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 4000.0\n'
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 3000.0\n'
    )
    assert prefix_hit_rate(v1) == 0.75
    assert prefix_hit_rate(parse_metrics("vllm:gpu_prefix_cache_hit_rate 0.5\n")) == 0.5
    assert prefix_hit_rate(parse_metrics("vllm:num_requests_running 3\n")) is None


async def test_a_next_turn_that_resends_the_answer_finds_it_cached() -> None:
    from wwwserve.protocol.messages import CompletionRequest

    engine = SimEngine(SimOptions.from_opts({"prefill_tps": "100000", "decode_tpot_ms": "1"}))
    try:
        first = CompletionRequest(prompt=words("p", 64), max_tokens=32)
        deltas = [d async for d in engine.generate(first, "m")]
        answer = "".join(d.text for d in deltas)
        assert len(answer.split()) == 32 and deltas[-1].cached_tokens == 0
        turn = CompletionRequest(prompt=f"{first.prompt} {answer} {words('n', 20)}", max_tokens=4)
        final = [d async for d in engine.generate(turn, "m")][-1]
        assert final.cached_tokens == 64 + 32  # the prompt's and the answer's six full blocks
        assert final.prompt_tokens == 64 + 32 + 20
    finally:
        await engine.close()
