"""Where new candidates come from: warm starts first, then the configured strategy.

    evolution   regularized evolution: the fittest of `tournament` random members
                of the population is mutated (re-mutated until valid and new)
    random      the same mutation operators applied 1, 2, 3, ... times (a
                geometric number, mean RANDOM_MEAN_EDITS) to a uniformly chosen
                warm start; no selection (the Lion paper's random-search baseline)
    constants   only constant perturbations of a uniformly chosen warm start: a
                hyperparameter search at the same budget, the baseline a
                discovery must beat

Every strategy shares the rest of the search (funnel, caches, tracking). All
randomness comes from one numpy Generator, saved in the checkpoint, so a
deterministic search proposes the same children after a resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from primitives.analysis import prune
from primitives.hashing import structural_hash
from primitives.primitive import PrimitiveSet
from primitives.program import Program
from search.config import ConfigError, SearchConfig
from search.mutation import Limits, make_child
from search.state import SearchState

# The random strategy's number of edits is 1 + Geometric: mean RANDOM_MEAN_EDITS, so
# single edits are the most common and long chains occur.
RANDOM_MEAN_EDITS = 3.0
# Tournaments tried before the evolution strategy gives up on finding a new child.
PARENT_TRIES = 20


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A candidate about to be evaluated, and how it was made."""

    id: int
    program: Program  # pruned
    structural_hash: str
    parent: int | None
    mutation: str
    warm_start: str | None
    attempts: int  # mutations tried (rejected ones included)
    invalid: int
    duplicates: int


class PopulationConverged(RuntimeError):
    """No valid, structurally new child after PARENT_TRIES parents."""


class Proposer:
    def __init__(self, config: SearchConfig, primitive_set: PrimitiveSet, warm_programs: dict[str, Program]):
        self.config = config
        self.primitive_set = primitive_set
        self.rng = np.random.default_rng(config.seed)
        self.limits = Limits(config.evolution.max_statements, config.evolution.max_state)
        self.warm: list[tuple[str, Program, str]] = []
        for name, program in warm_programs.items():
            pruned = prune(program)
            self.warm.append((name, pruned, structural_hash(pruned, primitive_set, pruned=True)))
        self.strategy = config.evolution.strategy
        if self.strategy == "constants" and not any(p.constants for _, p, _ in self.warm):
            raise ConfigError("evolution.strategy = \"constants\" needs a warm start with constants")

    def propose(self, state: SearchState, next_id: int, taken: Callable[[str], bool],
                warm_in_flight: set[str]) -> Proposal | None:
        """The next candidate, or None until a warm start has been scored (nothing to mutate yet)."""
        for name, program, digest in self.warm:
            if name not in state.warm_started and name not in warm_in_flight:
                return Proposal(next_id, program, digest, None, f"warm start {name}", name, 0, 0, 0)
        if not len(state.population):
            return None
        if self.strategy == "evolution":
            return self._evolve(state, next_id, taken)
        return self._from_warm_start(next_id, taken)

    def _evolve(self, state: SearchState, next_id: int, taken: Callable[[str], bool]) -> Proposal:
        attempts = invalid = duplicates = 0
        evolution = self.config.evolution
        for _ in range(PARENT_TRIES):
            parent = state.population.select(self.rng, evolution.tournament)
            child = make_child(parent.program, self.rng, self.primitive_set, lambda h: not taken(h),
                               self.limits, evolution.max_attempts, evolution.operators, evolution.extra_edit)
            if child is None:
                attempts += evolution.max_attempts
                continue
            return Proposal(next_id, child.program, child.structural_hash, parent.id, child.mutation, None,
                            attempts + child.attempts, invalid + child.invalid, duplicates + child.duplicates)
        raise PopulationConverged(f"no valid new child after {PARENT_TRIES} parents: the population has "
                                  f"converged; raise evolution.max_attempts or enable evolution.plateau restarts")

    def _from_warm_start(self, next_id: int, taken: Callable[[str], bool]) -> Proposal:
        evolution = self.config.evolution
        constants_only = self.strategy == "constants"
        starts = [w for w in self.warm if w[1].constants] if constants_only else self.warm
        operators = ("perturb_const",) if constants_only else evolution.operators
        attempts = invalid = duplicates = 0
        for _ in range(PARENT_TRIES):
            name, program, _ = starts[int(self.rng.integers(len(starts)))]
            edits = int(self.rng.geometric(1.0 / RANDOM_MEAN_EDITS))
            descriptions = []
            for edit in range(edits):
                last = edit == edits - 1  # only the final program must be new
                child = make_child(program, self.rng, self.primitive_set,
                                   (lambda h: not taken(h)) if last else (lambda h: True),
                                   self.limits, evolution.max_attempts, operators)
                if child is None:
                    attempts += evolution.max_attempts
                    break
                attempts, invalid, duplicates = (attempts + child.attempts, invalid + child.invalid,
                                                 duplicates + child.duplicates)
                program = child.program
                descriptions.append(child.mutation)
                if last:
                    mutation = f"{self.strategy}: {edits} edit(s) of {name}: " + "; ".join(descriptions)
                    return Proposal(next_id, program, child.structural_hash, None, mutation[:2000], None,
                                    attempts, invalid, duplicates)
        raise PopulationConverged(f"no valid new {self.strategy} candidate after {PARENT_TRIES} tries")
