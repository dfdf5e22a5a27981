"""Turn a trace (TIMESTAMP, ContextTokens, GeneratedTokens) into timed arrivals with an origin."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime

from wwwserve.bench.scenario import Scenario


@dataclass(frozen=True)
class Arrival:
    """One request to send: when (seconds from replay start), whose user, and its sizes."""

    index: int
    at_s: float
    origin: str
    prompt_tokens: int
    output_tokens: int


def _ts(text: str) -> float:
    # The Azure traces carry 7 fractional digits; datetime takes at most 6.
    head, _, frac = text.strip().partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}").timestamp()


def arrivals(scenario: Scenario) -> list[Arrival]:
    """The scenario's arrivals, in time order, with origins split as the scenario says."""
    w = scenario.workload
    with w.trace.open(newline="") as f:
        rows = [
            (_ts(r["TIMESTAMP"]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(f)
        ]
    if not rows:
        raise ValueError(f"trace {w.trace} is empty")
    rows.sort()
    names = [p.name for p in scenario.providers]
    rng = random.Random(w.seed)
    picked: list[tuple[float, str, int, int]] = []  # (seconds into the replay, origin, prompt, output)
    if w.split == "shifted":
        for k, name in enumerate(names):
            t0 = rows[0][0] + w.start_s + k * w.shift_s
            picked += [(ts - t0, name, ctx, gen) for ts, ctx, gen in rows if 0 <= ts - t0 < w.duration_s]
        picked.sort(key=lambda p: p[0])
    else:
        t0 = rows[0][0] + w.start_s
        for ts, ctx, gen in rows:
            if 0 <= ts - t0 < w.duration_s:
                i = len(picked)
                if w.split == "round-robin":
                    origin = names[i % len(names)]
                else:
                    origin = rng.choices(names, weights=w.weights)[0]
                picked.append((ts - t0, origin, ctx, gen))
    return [
        Arrival(
            index=i,
            at_s=rel / w.time_scale,
            origin=origin,
            prompt_tokens=max(1, min(ctx, w.max_prompt_tokens)),
            output_tokens=max(1, min(gen, w.max_output_tokens)),
        )
        for i, (rel, origin, ctx, gen) in enumerate(picked)
    ]
