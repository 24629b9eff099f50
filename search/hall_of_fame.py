"""The hall of fame: the Pareto front over score, complexity and optimizer memory, among rules that beat AdamW.

A candidate enters the front if no member is at least as good on all three
(higher score, lower complexity, fewer bytes of optimizer state per parameter
byte: primitives.analysis.state_bytes) and strictly better on one; members it
dominates leave. Lion's practical win over AdamW was half the memory at the
same quality: a front, not a single best, keeps such trades.

Only candidates scored on everything selection uses compete: the full suite
(a cheap-tier score is not comparable), and with select_on = "transfer" the
transfer stage too, whose score is then the one ranked.

What the hall of fame shows (ranked(): show, hall_of_fame.json, the Python API,
restarts) is the part of the front that beats tuned AdamW, whose score is 0
by construction: a one-statement rule such as u = sign(-g) at -2.17 sits on
the front (nothing simpler scores higher) but is no discovery. When no
candidate beats AdamW, it shows the single best candidate, and header() says
so. The front drawn among the candidates that beat AdamW is exactly the full
front's part above 0 (whatever dominates a rule scores at least as well), so
`members` keeps the full front: what checkpoints record, and what a replay
of the events rebuilds in the same order, before and after this rule.
"""

from __future__ import annotations

from search.individual import Individual

# Tuned AdamW's score: every score is log(L_AdamW / L), so AdamW itself scores 0.
BASELINE_SCORE = 0.0


class HallOfFame:
    def __init__(self, select_on: str = "full", members: list[Individual] | None = None):
        self.select_on = select_on
        self.members: list[Individual] = list(members or [])  # the full front, in order of arrival

    def _objectives(self, m: Individual) -> tuple[float, float, float]:
        return (m.fitness(self.select_on), -m.complexity, -m.state_bytes)

    def eligible(self, candidate: Individual) -> bool:
        return candidate.stage.complete and (self.select_on != "transfer" or candidate.transfer is not None)

    def dominates(self, a: Individual, b: Individual) -> bool:
        x, y = self._objectives(a), self._objectives(b)
        return all(p >= q for p, q in zip(x, y)) and any(p > q for p, q in zip(x, y))

    def consider(self, candidate: Individual) -> bool:
        """Add `candidate` to the front if it is eligible and on it; True if it was added."""
        if not self.eligible(candidate):
            return False
        for member in self.members:
            if self.dominates(member, candidate) or self._objectives(member) == self._objectives(candidate):
                return False
        self.members = [m for m in self.members if not self.dominates(candidate, m)] + [candidate]
        return True

    def member(self, id_: int) -> Individual | None:
        return next((m for m in self.members if m.id == id_), None)

    def update(self, individual: Individual) -> None:
        """Replace the member with the same id (e.g. once its held-out score is known)."""
        self.members = [individual if m.id == individual.id else m for m in self.members]

    def beats_baseline(self, m: Individual) -> bool:
        return m.fitness(self.select_on) > BASELINE_SCORE

    def ranked(self) -> list[Individual]:
        """The hall of fame, best first: the front's members that beat AdamW, else the single best candidate."""
        order = sorted(self.members, key=lambda m: (-m.fitness(self.select_on), m.complexity, m.state_bytes, m.id))
        winners = [m for m in order if self.beats_baseline(m)]
        return winners or order[:1]


def header(members: list[Individual]) -> str:
    """The hall of fame's title line: what its (ranked) members are."""
    if members and all(max(m.score, m.transfer if m.transfer is not None else m.score) <= BASELINE_SCORE
                       for m in members):
        return (f"hall of fame: no candidate beats tuned AdamW (score {BASELINE_SCORE:g}) yet; "
                f"the best candidate so far:")
    return "hall of fame (Pareto front of the rules that beat tuned AdamW: score, complexity, state bytes " \
           "per parameter byte):"
