"""Regularized (aging) evolution: the population is a queue, the oldest dies.

Real et al. 2019: a child joins the population when it has been evaluated
and the oldest member leaves, however good it is, so no lucky early score
dominates forever. Parents are chosen by tournament: sample `tournament`
members at random and take the fittest, comparing two members on the
highest rung both reached (a cheap-rung-only member and a full-rung one on
their cheap-rung scores: a score over more tasks is not on the same scale).
"""

from __future__ import annotations

import collections

import numpy as np

from search.individual import Individual


class Population:
    def __init__(self, capacity: int, select_on: str = "full"):
        self.capacity = capacity
        self.select_on = select_on
        self.members: collections.deque[Individual] = collections.deque()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, individual: Individual) -> Individual | None:
        """Append; return the member that aged out, if any."""
        self.members.append(individual)
        return self.members.popleft() if len(self.members) > self.capacity else None

    def select(self, rng: np.random.Generator, tournament: int) -> Individual:
        """The fittest of `tournament` members drawn without replacement (ties: the younger)."""
        size = min(tournament, len(self.members))
        picks = sorted(int(i) for i in rng.choice(len(self.members), size=size, replace=False))
        winner = self.members[picks[0]]
        for i in picks[1:]:  # each pair compared on the highest rung both reached (search/individual.py)
            if self.members[i].beats(winner, self.select_on):
                winner = self.members[i]
        return winner

    def best(self) -> Individual:
        return max(self.members, key=lambda m: (m.fitness(self.select_on), -m.id))

    def update(self, individual: Individual) -> None:
        """Replace the member with the same id, where it stands in the queue."""
        for index, member in enumerate(self.members):
            if member.id == individual.id:
                self.members[index] = individual

    def reset(self, members: list[Individual]) -> None:
        self.members = collections.deque(members[-self.capacity:])
