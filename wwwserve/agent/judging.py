"""How a judge compares two answers: `replay` for reproducible requests, `llm` otherwise.

- replay: the request is greedy (temperature 0) or seeded, so an honest engine of the same model
  gives (nearly) the same text; the judge regenerates it and scores each answer by word-level
  similarity to its own (difflib ratio, 0..1).
- llm: the judge's own model is asked which answer is better, in both orders (to cancel position
  bias); each order gives one vote; the score is the share of votes.
A difference below TIE_MARGIN is a tie.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from wwwserve.engines.base import Engine, prompt_text
from wwwserve.protocol.messages import CompletionRequest

TIE_MARGIN = 0.05


@dataclass(frozen=True)
class Judgement:
    """Scores of the two answers and the method used."""

    score_a: float
    score_b: float
    method: str

    @property
    def winner(self) -> str:
        """a, b or tie."""
        if abs(self.score_a - self.score_b) < TIE_MARGIN:
            return "tie"
        return "a" if self.score_a > self.score_b else "b"


def similarity(x: str, y: str) -> float:
    """Word-level similarity of two texts, 0..1."""
    return difflib.SequenceMatcher(a=x.split(), b=y.split(), autojunk=False).ratio()


def replayable(req: CompletionRequest) -> bool:
    """Whether an honest server's answer is reproducible: greedy or seeded."""
    return req.temperature == 0 or req.seed is not None


async def _generate(engine: Engine, req: CompletionRequest, model: str) -> str:
    return "".join([d.text async for d in engine.generate(req, model)])


async def judge(
    engine: Engine, model: str, req: CompletionRequest, answer_a: str, answer_b: str
) -> Judgement:
    """Compare two answers to `req` with this judge's own engine."""
    if replayable(req):
        own = await _generate(engine, req.replace(stream=False), model)
        return Judgement(similarity(own, answer_a), similarity(own, answer_b), "replay")
    votes = {"a": 0.0, "b": 0.0}
    question = prompt_text(req)
    for first, second, labels in ((answer_a, answer_b, ("a", "b")), (answer_b, answer_a, ("b", "a"))):
        ask = CompletionRequest(
            prompt=(
                f"Question:\n{question}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
                "Which answer is better? Reply with a single letter, A or B.\nBetter answer:"
            ),
            max_tokens=3,
            temperature=0.0,
        )
        out = (await _generate(engine, ask, model)).strip().upper()
        if out.startswith("A"):
            votes[labels[0]] += 0.5
        elif out.startswith("B"):
            votes[labels[1]] += 0.5
    return Judgement(votes["a"], votes["b"], "llm")
