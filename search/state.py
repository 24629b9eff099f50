"""A search's state, changed only by applying its events.

    state.apply(event)      the one way anything here changes

A live search applies each event as it appends it to events.jsonl; a resumed
search applies the recorded events, in order, through the same method. So
the population, hall of fame, caches and counters after a resume are the ones
the stopped search had, and every transition can be tested without a worker
(tests/test_state.py). The state also answers the questions the driver asks
between events: which hall-of-fame members are due for held-out scoring,
which candidates for the transfer stage, whether a plateau calls for a
restart, whether the search has reached its target.

What is not here: in-flight work (the scheduler's), the random generator
(the proposer's; it is saved in checkpoint.json), and wall-clock time.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from primitives.primitive import PrimitiveSet
from primitives.serialize import from_dict
from search.config import SearchConfig
from search.events import (
    CacheHit,
    CandidateEvaluated,
    Event,
    HeldOutRequested,
    HeldOutScored,
    Proposed,
    Restarted,
    TransferScored,
)
from search.hall_of_fame import HallOfFame
from search.individual import Individual
from search.population import Population
from search.records import Counters, Stage


@dataclasses.dataclass
class Behaviour:
    """The first evaluation of a behaviour (fingerprint): what a cache hit on it reuses."""

    id: int
    score: float
    stage: Stage
    transfer: float | None = None
    cheap_score: float | None = None


class StateError(ValueError):
    """An event that cannot follow the events before it (a damaged or spliced log)."""


class SearchState:
    def __init__(self, config: SearchConfig, primitive_set: PrimitiveSet):
        self.config = config
        self.primitive_set = primitive_set
        select_on = config.evaluation.select_on
        self.population = Population(config.evolution.population, select_on)
        self.hall_of_fame = HallOfFame(select_on)
        self.counters = Counters()
        self.recorded: set[int] = set()  # candidate ids with an event
        self.structures: set[str] = set()  # structural hashes recorded
        self.behaviours: dict[str, Behaviour] = {}  # fingerprint -> its first evaluation
        self.seq = 0
        self.next_id = 0
        self.best_score = -math.inf
        self.since_improvement = 0
        self.warm_started: set[str] = set()
        self.held_out_pending: set[int] = set()  # requested, not yet scored
        self.held_out_requested_at = 0  # counters.evaluated at the last request
        # awaiting the transfer stage: the candidate, and its tuned rate on each task at the base size
        self.transfer_due: dict[int, tuple[Individual, dict[str, float]]] = {}
        # the cheap-rung scores of the latest trained candidates: the rolling hurdle's window (search/funnel.py)
        self.rung_window: collections.deque[float] = collections.deque(maxlen=config.evaluation.window)
        # candidate id -> its chosen rate per task, in half-decades from the centre (a child's tuning brackets it)
        self.offsets: dict[int, dict[str, int]] = {}

    # ------------------------------------------------------------------ transitions

    def apply(self, event: Event) -> None:
        if event.seq != self.seq + 1:
            raise StateError(f"event {event.seq} follows event {self.seq} (expected {self.seq + 1})")
        self.seq = event.seq
        if isinstance(event, CandidateEvaluated):
            self._candidate(event)
        elif isinstance(event, CacheHit):
            self._cache_hit(event)
        elif isinstance(event, HeldOutRequested):
            self.held_out_pending.update(event.ids)
            self.held_out_requested_at = self.counters.evaluated
        elif isinstance(event, HeldOutScored):
            self._held_out(event)
        elif isinstance(event, TransferScored):
            self._transfer(event)
        elif isinstance(event, Restarted):
            self._restart(event)
        else:  # pragma: no cover -- every event type is handled above
            raise TypeError(f"no transition for {type(event).__name__}")

    def _proposed(self, event: Proposed) -> None:
        if event.id in self.recorded:
            raise StateError(f"candidate {event.id} is recorded twice")
        self.recorded.add(event.id)
        self.next_id = max(self.next_id, event.id + 1)
        self.structures.add(event.structural_hash)
        self.counters.generated += event.attempts
        self.counters.invalid += event.invalid
        self.counters.structural_hits += event.duplicates
        if event.warm_start is not None:
            self.warm_started.add(event.warm_start)

    def _individual(self, event: Proposed, score: float, stage: Stage, cheap_score: float | None = None) -> Individual:
        from primitives.analysis import complexity, state_buffers

        program = from_dict(event.program, self.primitive_set)  # validated, never run
        return Individual(event.id, program, event.structural_hash, event.fingerprint, score, stage,
                          complexity(program, self.primitive_set), state_buffers(program),
                          event.parent, event.mutation, cheap_score=cheap_score)

    def parent_offsets(self, parent: int | None) -> dict[str, int]:
        """The rate offsets a child of `parent` inherits (none for a warm start)."""
        return dict(self.offsets.get(parent, {})) if parent is not None else {}

    def _candidate(self, event: CandidateEvaluated) -> None:
        self._proposed(event)
        counters = self.counters
        counters.evaluated += 1
        if event.status.failed:
            counters.failed += 1
            return
        counters.trained += 1
        counters.cheap_only += event.stage is Stage.CHEAP
        cheap = event.cheap_score if _finite(event.cheap_score) else None
        self.behaviours.setdefault(event.fingerprint, Behaviour(event.id, event.score, event.stage, cheap_score=cheap))
        if cheap is not None:
            self.rung_window.append(cheap)
        offsets = {task: entry["offset"] for task, entry in event.tasks.items()
                   if isinstance(entry, dict) and type(entry.get("offset")) is int and abs(entry["offset"]) <= 64}
        if offsets:
            self.offsets[event.id] = offsets
        individual = self._individual(event, event.score, event.stage, cheap)
        if self._transfer_wanted(individual):
            rates = {task: entry["lr"] for task, entry in event.tasks.items() if isinstance(entry.get("lr"), float)}
            self.transfer_due[individual.id] = (individual, rates)
        self._accept(individual)

    def _cache_hit(self, event: CacheHit) -> None:
        self._proposed(event)
        self.counters.fingerprint_hits += 1
        known = self.behaviours.get(event.fingerprint)
        if known is not None and known.id in self.offsets:
            self.offsets[event.id] = self.offsets[known.id]  # the same behaviour: the same rates
        individual = self._individual(event, event.score, event.stage,
                                      known.cheap_score if known is not None else None)
        if known is not None and known.transfer is not None:
            individual = dataclasses.replace(individual, transfer=known.transfer)
        self._accept(individual)

    def _accept(self, individual: Individual) -> None:
        """A scored individual joins the population and maybe the hall of fame."""
        self.population.add(individual)
        self.hall_of_fame.consider(individual)
        self._track_best(individual)

    def _track_best(self, individual: Individual) -> None:
        fitness = individual.fitness(self.config.evaluation.select_on)
        if fitness > self.best_score + 1e-12:
            self.best_score, self.since_improvement = fitness, 0
        else:
            self.since_improvement += 1

    def _held_out(self, event: HeldOutScored) -> None:
        self.held_out_pending.discard(event.id)
        self.counters.held_out += 1
        member = self.hall_of_fame.member(event.id)
        if member is not None:
            self.hall_of_fame.update(dataclasses.replace(member, held_out=event.score))

    def _transfer(self, event: TransferScored) -> None:
        due = self.transfer_due.pop(event.id, None)
        if due is None:
            raise StateError(f"transfer score for candidate {event.id}, which was not due for one")
        individual = due[0]
        self.counters.transferred += 1
        scored = dataclasses.replace(individual, transfer=event.score)
        for known in self.behaviours.values():
            if known.id == event.id:
                known.transfer = event.score
        self.population.update(scored)
        member = self.hall_of_fame.member(event.id)
        if member is not None:
            self.hall_of_fame.update(dataclasses.replace(member, transfer=event.score))
        elif self.config.evaluation.select_on == "transfer":
            self.hall_of_fame.consider(scored)
            self._track_best(scored)

    def _restart(self, event: Restarted) -> None:
        known = {m.id: m for m in [*self.population.members, *self.hall_of_fame.members]}
        ids = event.members if event.members is not None else [event.best]
        missing = [i for i in ids if i not in known]
        if missing:
            raise StateError(f"restart from candidate(s) {missing}, in neither the population nor the hall of fame")
        self.population.reset([known[i] for i in ids])
        self.since_improvement = 0
        self.counters.restarts += 1

    def restart_members(self) -> list[int]:
        """Who a plateau restart keeps: the best alone, or the hall of fame's front (and the best)."""
        best = self.population.best()
        if self.config.evolution.restart_from == "best":
            return [best.id]
        front = [m.id for m in reversed(self.hall_of_fame.ranked()) if m.id != best.id]
        return front + [best.id]  # the best last: the youngest, the last to age out

    # ------------------------------------------------------------------ questions

    def _transfer_wanted(self, individual: Individual) -> bool:
        transfer = self.config.transfer
        return transfer.enabled and individual.stage is Stage.FULL and individual.score >= transfer.hurdle

    def held_out_due(self) -> list[int]:
        """Hall-of-fame members to send to the held-out tasks now (every meta_every evaluations)."""
        every = self.config.evaluation.meta_every
        if not every or self.counters.evaluated - self.held_out_requested_at < every:
            return []
        return self.unscored_members()

    def unscored_members(self) -> list[int]:
        """Members the hall of fame shows (ranked(): those that beat AdamW) with no held-out score yet."""
        return [m.id for m in self.hall_of_fame.ranked() if m.held_out is None and m.id not in self.held_out_pending]

    def plateau(self) -> bool:
        """Whether the population should restart from its best (evolution.plateau evaluations without progress)."""
        plateau = self.config.evolution.plateau
        return bool(plateau) and self.since_improvement >= plateau and len(self.population) > 1

    def reached_target(self) -> bool:
        target = self.config.stop.target_score
        return target is not None and self.best_score >= target

    def best(self) -> Individual | None:
        return self.population.best() if len(self.population) else None

    def summary(self) -> dict:
        """What checkpoint.json records of the state, to check a replay against."""
        return {"seq": self.seq, "next_id": self.next_id, "counters": self.counters.to_dict(),
                "population": [m.id for m in self.population.members],
                "hall_of_fame": sorted(m.id for m in self.hall_of_fame.members)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
