"""The hall of fame: the Pareto front over score, complexity and optimizer memory.

A candidate enters if no member is at least as good on all three (higher
score, lower complexity, fewer bytes of optimizer state per parameter byte:
primitives.analysis.state_bytes) and strictly better on one;
members it dominates leave. Lion's practical win over AdamW was half the
memory at the same quality: a front, not a single best, keeps such trades.
Only candidates scored on everything selection uses compete: the full suite
(a cheap-tier score is not comparable), and with select_on = "transfer" the
transfer stage too, whose score is then the one ranked.
"""

from __future__ import annotations

from search.individual import Individual


class HallOfFame:
    def __init__(self, select_on: str = "full", members: list[Individual] | None = None):
        self.select_on = select_on
        self.members: list[Individual] = list(members or [])

    def _objectives(self, m: Individual) -> tuple[float, float, float]:
        return (m.fitness(self.select_on), -m.complexity, -m.state_bytes)

    def eligible(self, candidate: Individual) -> bool:
        return candidate.stage.complete and (self.select_on != "transfer" or candidate.transfer is not None)

    def dominates(self, a: Individual, b: Individual) -> bool:
        x, y = self._objectives(a), self._objectives(b)
        return all(p >= q for p, q in zip(x, y)) and any(p > q for p, q in zip(x, y))

    def consider(self, candidate: Individual) -> bool:
        """Add `candidate` if it is eligible and on the front; True if it was added."""
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

    def ranked(self) -> list[Individual]:
        return sorted(self.members, key=lambda m: (-m.fitness(self.select_on), m.complexity, m.state_bytes, m.id))
