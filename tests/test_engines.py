"""Engines without NATS: the sim timing model and text, option parsing, the OpenAI metrics parser."""

from __future__ import annotations

import time

import pytest

from wwwserve.engines.factory import create_engine
from wwwserve.engines.openai import OpenAIOptions, parse_metrics
from wwwserve.engines.sim import SimEngine, SimOptions
from wwwserve.protocol.messages import CompletionRequest


def test_options_refuse_unknown_keys_and_bad_values() -> None:
    assert SimOptions.from_opts({"decode_tpot_ms": "5"}).decode_tpot_ms == 5.0
    with pytest.raises(ValueError, match="unknown sim engine option"):
        SimOptions.from_opts({"decode_tmop_ms": "5"})
    with pytest.raises(ValueError, match=">= 0"):
        SimOptions.from_opts({"prefill_tps": "-1"})
    with pytest.raises(ValueError, match="timeout_s"):
        OpenAIOptions.from_opts({"timeout_s": "soon"})
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tpu")


async def test_sim_is_deterministic_exact_length_and_timed() -> None:
    engine = SimEngine(SimOptions(prefill_tps=1000, decode_tpot_ms=10))
    req = CompletionRequest(prompt=" ".join(["w"] * 100), max_tokens=5, seed=3)
    t0 = time.monotonic()
    first = [d async for d in engine.generate(req, "m")]
    elapsed = time.monotonic() - t0
    second = [d async for d in engine.generate(req, "m")]
    assert [d.text for d in first] == [d.text for d in second]
    assert (
        first[-1].finish_reason == "length"
        and first[-1].completion_tokens == 5
        and first[-1].prompt_tokens == 100
    )
    # the prefill step (100 tokens at 1000/s) also samples the first token; then 4 decode steps of 10 ms
    assert elapsed >= 0.1 + 4 * 0.010 - 0.005


async def test_sim_corruption_only_changes_the_corrupted_answers() -> None:
    honest, cheater = SimEngine(), SimEngine(SimOptions(corrupt=0.5))
    same = garbage = 0
    for i in range(40):
        req = CompletionRequest(prompt=f"q{i}", max_tokens=6)
        a = "".join([d.text async for d in honest.generate(req, "m")])
        b = "".join([d.text async for d in cheater.generate(req, "m")])
        same += a == b
        garbage += "#" in b or "@" in b or "%" in b
    assert same + garbage == 40 and 8 < garbage < 32


async def test_sim_stop_sequences_cut_the_answer() -> None:
    engine = SimEngine()
    req = CompletionRequest(prompt="x", max_tokens=50)
    text = "".join([d.text async for d in engine.generate(req, "m")])
    word = text.split()[3]
    cut = [d async for d in engine.generate(req.replace(stop=[word]), "m")]
    assert cut[-1].finish_reason == "stop" and word not in "".join(d.text for d in cut)


def test_prometheus_metrics_are_summed_over_labels() -> None:
    text = (
        'vllm:num_requests_running{model="a"} 2\nvllm:num_requests_running{model="b"} 3\n# HELP x\nfoo 1.5\n'
    )
    assert parse_metrics(text) == {"vllm:num_requests_running": 5.0, "foo": 1.5}
