"""The hall of fame: the Pareto front over score, complexity and optimizer memory.

A candidate enters if no member is at least as good on all three (higher
score, lower complexity, fewer state buffers) and strictly better on one;
members it dominates leave. Lion's practical win over AdamW was half the
memory at the same quality: a front, not a single best, keeps such trades.
Only candidates scored on the full suite compete (a cheap-tier score is not
comparable).
"""

from __future__ import annotations

from search.individual import Individual

ELIGIBLE_STAGES = ("full", "behaviour")


def _objectives(m: Individual) -> tuple[float, float, float]:
    return (m.score, -m.complexity, -m.state_buffers)


def dominates(a: Individual, b: Individual) -> bool:
    x, y = _objectives(a), _objectives(b)
    return all(p >= q for p, q in zip(x, y)) and any(p > q for p, q in zip(x, y))


class HallOfFame:
    def __init__(self, members: list[Individual] | None = None):
        self.members: list[Individual] = list(members or [])

    def consider(self, candidate: Individual) -> bool:
        """Add `candidate` if it is on the front; True if it was added."""
        if candidate.stage not in ELIGIBLE_STAGES:
            return False
        for member in self.members:
            if dominates(member, candidate) or _objectives(member) == _objectives(candidate):
                return False
        self.members = [m for m in self.members if not dominates(candidate, m)] + [candidate]
        return True

    def update(self, individual: Individual) -> None:
        """Replace the member with the same id (e.g. once its held-out score is known)."""
        self.members = [individual if m.id == individual.id else m for m in self.members]

    def ranked(self) -> list[Individual]:
        return sorted(self.members, key=lambda m: (-m.score, m.complexity, m.state_buffers, m.id))
