"""Evidence from duels: how often a provider's answers lose, and how often a judge is outvoted.

Both are folded from verdicts in canonical order (wwwserve/ledger/book.py), so every ledger with the
same records agrees. Formulas (docs/duels.md, "Starving cheaters"):

- A provider's *bad-answer rate* is `bad / (fought + PRIOR_DUELS)`: `fought` and `bad` count the
  verdicts of its duels, each weighted by its judge's weight and decayed by DECAY per new one, so old
  evidence fades and a provider that answers well again recovers. The prior is optimistic (PRIOR_DUELS
  duels without a loss): a newcomer starts with full weight and gets traffic, and duels are aimed at it
  until there is evidence (adaptive duel rate).
- Its *quality* factor for routing is `(1 - rate) ** QUALITY_EXPONENT`: 1.0 for no losses, 0.04 after
  one lost duel of a newcomer, 0.10 for a steady 25% of verdicts lost, below 0.001 for a provider that
  lost most of its recent duels. Proportional weighting (Elo alone) left a 100% cheater a quarter of the
  traffic; a steep power makes the user's expected harm, not the rating gap, drive the weight.
- A duel whose first verdict is not a tie (or, sometimes, one that is) goes to two more judges: a panel
  of three. Each verdict counts with its judge's weight as it arrives; once the panel is full the
  majority decides: the outvoted verdict is taken back and its judge *dissents*. Unanimous ties are
  not counted for the judges (a judge that lies only when its partner is a duelist would otherwise dilute
  its dissent with easy agreement). A judge's weight is
  `(1 - dissent / (panels + PRIOR_PANELS)) ** JUDGE_EXPONENT`, decayed like the duels: a judge that
  always votes against the majority drops below WEIGHT_LOST within a few panels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DECAY = 0.97  # per verdict of the provider's own duels: evidence halves over ~23 verdicts
PRIOR_DUELS = 2.0  # pseudo-verdicts without a loss: a newcomer starts at full weight
QUALITY_EXPONENT = 8.0
JUDGE_DECAY = 0.97
PRIOR_PANELS = 4.0
JUDGE_EXPONENT = 6.0
PANEL_SIZE = 3
WEIGHT_LOST = 0.1  # a judge below this weight has lost its judging weight
# A provider is *proven bad* once it lost at least BAN_BAD_RATE of its recent duels over at least
# BAN_MIN_FOUGHT judge-weighted verdicts (a 100% cheater: its fourth lost verdict). Hubs then stop
# routing user requests to it (wwwserve/hubguard.py); answering well in later duels lifts it again.
PROVEN_UNCERTAINTY = 0.1  # below this (about 18 recent verdicts) a provider's answers are known
BAN_BAD_RATE = 0.5
BAN_MIN_FOUGHT = 3.0
OPEN_PANELS = 10_000  # duels whose panel may still be filled


@dataclass
class DuelEvidence:
    """A provider's decayed duel record."""

    fought: float = 0.0
    bad: float = 0.0
    verdicts: int = 0  # verdicts counted (undecayed, outvoted ones taken back): what `ledger` shows
    lost: int = 0

    @property
    def bad_rate(self) -> float:
        """Estimated share of its answers that lose a duel (0 with no evidence)."""
        return self.bad / (self.fought + PRIOR_DUELS)

    @property
    def quality(self) -> float:
        """Routing factor: 1.0 with no losses, falling steeply with evidence of bad answers."""
        return float((1.0 - self.bad_rate) ** QUALITY_EXPONENT)

    @property
    def uncertainty(self) -> float:
        """1.0 for a newcomer, towards 0 as verdicts accumulate: how much a duel would teach us."""
        return PRIOR_DUELS / (PRIOR_DUELS + self.fought)

    @property
    def unproven(self) -> float:
        """1.0 for a newcomer, 0 once its answers are known (PROVEN_UNCERTAINTY): how much the
        adaptive duel and canary rates still want to learn about it."""
        return max(0.0, self.uncertainty - PROVEN_UNCERTAINTY) / (1.0 - PROVEN_UNCERTAINTY)

    @property
    def proven_bad(self) -> bool:
        """Enough recent evidence that most of its answers lose: no user traffic for it (docs/duels.md)."""
        return self.fought >= BAN_MIN_FOUGHT and self.bad_rate >= BAN_BAD_RATE

    def add(self, weight: float, lost: bool) -> None:
        """Count one verdict of this provider's duel, given by a judge of `weight`."""
        self.fought = self.fought * DECAY + weight
        self.bad = self.bad * DECAY + (weight if lost else 0.0)
        self.verdicts += 1
        self.lost += lost

    def undo(self, weight: float, lost: bool) -> None:
        """Take back a verdict a panel outvoted (its decayed remainder is taken back in full)."""
        self.fought = max(0.0, self.fought - weight)
        self.verdicts -= 1
        if lost:
            self.bad = max(0.0, self.bad - weight)
            self.lost -= 1


@dataclass
class JudgeEvidence:
    """A judge's decayed panel record, and how many verdicts it signed."""

    panels: float = 0.0
    dissent: float = 0.0
    verdicts: int = 0

    @property
    def weight(self) -> float:
        """Judging weight: 1.0 for a judge never outvoted, towards 0 for one often in the minority."""
        return float((1.0 - self.dissent / (self.panels + PRIOR_PANELS)) ** JUDGE_EXPONENT)

    def add_panel(self, dissented: bool) -> None:
        """Count one panel this judge sat on."""
        self.panels = self.panels * JUDGE_DECAY + 1.0
        self.dissent = self.dissent * JUDGE_DECAY + (1.0 if dissented else 0.0)


@dataclass
class Evidence:
    """Duel and judge evidence for every provider, plus the votes of panels still being filled."""

    duels: dict[str, DuelEvidence] = field(default_factory=dict)
    judges: dict[str, JudgeEvidence] = field(default_factory=dict)
    # duel id -> [(judge, winner, weight counted)] until its panel is full
    votes: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)

    def duel(self, name: str) -> DuelEvidence:
        """`name`'s duel record (an empty one, not stored, for a provider never dueled)."""
        return self.duels.get(name) or DuelEvidence()

    def quality(self, name: str) -> float:
        """Routing quality factor of `name` (1.0 without evidence)."""
        return self.duel(name).quality

    def uncertainty(self, name: str) -> float:
        """How little is known about `name`'s answers (1.0: nothing)."""
        return self.duel(name).uncertainty

    def unproven(self, name: str) -> float:
        """How much the adaptive rates still want to learn about `name` (1.0 new, 0 proven)."""
        return self.duel(name).unproven

    def bad_rate(self, name: str) -> float:
        """Estimated share of `name`'s answers that lose duels."""
        return self.duel(name).bad_rate

    def proven_bad(self, name: str) -> bool:
        """Whether the evidence proves `name`'s answers bad (hubs stop routing users to it)."""
        return self.duel(name).proven_bad

    def judge_weight(self, name: str) -> float:
        """Judging weight of `name` (1.0 for a judge never outvoted)."""
        j = self.judges.get(name)
        return j.weight if j else 1.0

    def add_verdict(self, duel_id: str, judge: str, a: str, b: str, winner: str) -> float:
        """Count one judge's verdict; returns the judge's weight it was counted with."""
        weight = self.judge_weight(judge)
        jr = self.judges.setdefault(judge, JudgeEvidence())
        jr.verdicts += 1
        self.duels.setdefault(a, DuelEvidence()).add(weight, lost=winner == "b")
        self.duels.setdefault(b, DuelEvidence()).add(weight, lost=winner == "a")
        votes = self.votes.setdefault(duel_id, [])
        votes.append((judge, winner, weight))
        if len(self.votes) > OPEN_PANELS:  # forget the oldest duel judged once (insertion: canonical order)
            del self.votes[next(iter(self.votes))]
        if len(votes) == PANEL_SIZE:
            majority, count = Counter(w for _, w, _ in votes).most_common(1)[0]
            # a unanimous tie says nothing about the judges (any judge gets easy cases right): only
            # panels that found a winner, or where someone was outvoted, count for their records
            informative = majority != "tie" or count < PANEL_SIZE
            for j, w, counted in votes:
                dissented = count > 1 and w != majority
                if informative:
                    self.judges.setdefault(j, JudgeEvidence()).add_panel(dissented)
                if dissented:  # the majority decides the duel: the outvoted verdict no longer counts
                    self.duels[a].undo(counted, lost=w == "b")
                    self.duels[b].undo(counted, lost=w == "a")
            del self.votes[duel_id]
        return weight
