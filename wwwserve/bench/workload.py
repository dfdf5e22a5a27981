"""Turn a trace (TIMESTAMP, ContextTokens, GeneratedTokens) into timed arrivals with an origin and a prompt.

Prompts are words (the sim counts whitespace words as tokens), unique per request unless the scenario
has `[workload.sessions]`: then an arrival either opens a session (a tenant's shared system prompt plus
the user's message) or, with probability `continue_share`, is the next turn of an open session of the
same provider's users: the previous prompt + the previous answer + the new message, whose length is the
trace row's context tokens minus the history (at least 16). A session closes after `max_turns` turns, or
when its history would pass `max_prompt_tokens`. Answers are placeholders here: the runner sends a next
turn no earlier than its trace time and no earlier than the previous turn's answer (a user reads the
answer before writing the next message), with the real answer text in the placeholder's place.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, replace
from datetime import datetime

from wwwserve.bench.scenario import Scenario, Workload


@dataclass(frozen=True)
class Arrival:
    """One request to send: when (seconds from replay start), whose user, and its sizes."""

    index: int
    at_s: float
    origin: str
    prompt_tokens: int
    output_tokens: int
    prompt: str = ""
    session: int | None = None  # the conversation it belongs to, if any
    turn: int = 0
    history: tuple[int, ...] = ()  # earlier turns whose answers the prompt embeds (as placeholders)


@dataclass
class _Session:
    id: int
    words: list[str]  # the whole history: system prompt, messages and answers so far
    answered: list[int]  # arrivals whose answers are in `words` (one per turn so far)


def _words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{j:x}" for j in range(n)]


def answer_placeholder(index: int, output_tokens: int) -> str:
    """The words standing for arrival `index`'s answer in later turns, until the real answer is known."""
    return " ".join(_words(f"a{index}.", output_tokens))


def _with_prompts(picked: list[Arrival], w: Workload) -> list[Arrival]:
    """Give every arrival its prompt text (sessions: shared prefixes; otherwise unique words)."""
    s = w.sessions
    if s is None:
        return [replace(a, prompt=" ".join(_words(f"m{a.index}.", a.prompt_tokens))) for a in picked]
    rng = random.Random(w.seed + 1)
    system = [_words(f"s{k}.", s.system_prompt_tokens) for k in range(s.system_prompts)]
    open_by_origin: dict[str, list[_Session]] = {}
    out: list[Arrival] = []
    next_id = 0
    for a in picked:
        mine = open_by_origin.setdefault(a.origin, [])
        sess = rng.choice(mine) if mine and rng.random() < s.continue_share else None
        if sess is not None:
            new = max(16, a.prompt_tokens - len(sess.words))
            if len(sess.words) + new > w.max_prompt_tokens:
                mine.remove(sess)
                sess = None
        if sess is None:
            sess = _Session(next_id, list(rng.choice(system)), [])
            next_id += 1
            mine.append(sess)
            new = max(16, a.prompt_tokens - len(sess.words))
        sess.words += _words(f"u{a.index}.", new)
        prompt = " ".join(sess.words)
        out.append(
            replace(
                a,
                prompt=prompt,
                prompt_tokens=len(sess.words),
                session=sess.id,
                turn=len(sess.answered),
                history=tuple(sess.answered),
            )
        )
        sess.words += answer_placeholder(a.index, a.output_tokens).split()  # the answer joins the history
        sess.answered.append(a.index)
        if len(sess.answered) >= s.max_turns:
            mine.remove(sess)
    return out


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
    timed = [
        Arrival(
            index=i,
            at_s=rel / w.time_scale,
            origin=origin,
            prompt_tokens=max(1, min(ctx, w.max_prompt_tokens)),
            output_tokens=max(1, min(gen, w.max_output_tokens)),
        )
        for i, (rel, origin, ctx, gen) in enumerate(picked)
    ]
    return _with_prompts(timed, w)
