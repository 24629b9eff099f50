"""Observers: what watches a search (the MLflow tracker, the live display, the plots).

An observer receives read-only snapshots and the events as they are recorded;
it never reaches into the engine, and the engine does not care what it does.
A failing observer is the observer's problem: the tracker, for one, catches
its own errors, because events.jsonl, not MLflow, is the record.

    on_start(snapshot)                 the run directory is ready (new or resumed)
    on_phase(phase, snapshot)          "baselines", "starting workers", "searching", "final scoring"
    on_event(event, snapshot)          an event was recorded and applied
    on_checkpoint(snapshot, final)     checkpoint.json was written
    on_end(snapshot, stopped_by)       the search stopped (max_evals, wall_time, target_score,
                                       exhausted, interrupted)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from search.config import SearchConfig
from search.events import Event
from search.individual import Individual
from search.records import Counters


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A search as observers see it, at one moment."""

    run_id: str
    run_dir: Path
    config: SearchConfig
    phase: str
    counters: Counters  # a copy
    best_score: float
    best: Individual | None
    hall_of_fame: tuple[Individual, ...]  # ranked
    elapsed: float  # seconds, earlier sessions of a resumed run included
    in_progress: int  # candidates proposed and not yet recorded
    baselines_left: int = 0

    @property
    def rate(self) -> float:
        """Candidates evaluated per second."""
        return self.counters.evaluated / self.elapsed if self.elapsed > 0 else 0.0


class Observer:
    """Base class: every hook does nothing unless overridden."""

    def on_start(self, snapshot: Snapshot) -> None:
        pass

    def on_phase(self, phase: str, snapshot: Snapshot) -> None:
        pass

    def on_event(self, event: Event, snapshot: Snapshot) -> None:
        pass

    def on_checkpoint(self, snapshot: Snapshot, final: bool) -> None:
        pass

    def on_end(self, snapshot: Snapshot, stopped_by: str) -> None:
        pass
