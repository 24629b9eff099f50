"""The funnel: which stage of training follows which, and how a candidate's score is made.

    fingerprint -> cheap rung -(promoted)-> full rung -> record
                             \\-(not promoted)-> record (stage "cheap")
    (behaviour evaluation: fingerprint -> behaviour -> record)

Promotion is a rolling hurdle (AutoML-Zero, Real et al. 2020): a candidate
climbs to the full rung when its cheap-rung score is among the top
`evaluation.promote` fraction of the last `evaluation.window` cheap-rung
scores. An absolute hurdle judged every rule against AdamW at the cheap
rung's horizon, and so screened out rules whose advantage comes later
(Lion (0.9, 0.99) scored -0.82 on the old cheap tier and +1.51 at 4x the
steps); a rolling one judges a rule against the search's own recent
candidates, whatever the level. Warm starts always climb (they are the
references the search must improve on), and so does every candidate while
the window is still short (`evaluation.min_window`).

Each arrow is a separate job, so the scheduler can give a free worker the
cheapest work pending (a full suite never holds up screening), and a worker
only ever trains one stage of one candidate. The score of a record is the
mean over every task it was trained on. The transfer stage and held-out
scoring come after the record, for candidates the state says are due.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from proxy_tasks.scoring import SCORE_CLIP
from search.config import SearchConfig
from search.records import JobKind, Stage

# A failed or diverged task, and a candidate with no task at all, score this (the score clip).
WORST = -SCORE_CLIP


class Funnel:
    def __init__(self, config: SearchConfig, has_full_stage: bool = True):
        evaluation = config.evaluation
        self.behaviour = evaluation.kind == "behaviour"
        self.hurdle = evaluation.hurdle
        self.promote = evaluation.promote
        self.min_window = evaluation.min_window
        self.has_full_stage = has_full_stage

    def first(self) -> JobKind:
        return JobKind.BEHAVIOUR if self.behaviour else JobKind.CHEAP

    def after(self, kind: JobKind, tasks: dict[str, dict], window: Sequence[float] = (),
              warm_start: bool = False) -> JobKind | None:
        """The stage that follows `kind` for a candidate with these task results, or None: record it.

        `window`: the cheap-rung scores of the most recent candidates (the state's rung window).
        """
        if kind is not JobKind.CHEAP or not self.has_full_stage:
            return None
        cheap = score(tasks)
        if cheap < self.hurdle:
            return None
        if warm_start or promoted(cheap, window, self.promote, self.min_window):
            return JobKind.FULL
        return None

    @staticmethod
    def stage(kind: JobKind) -> Stage:
        return {JobKind.CHEAP: Stage.CHEAP, JobKind.FULL: Stage.FULL, JobKind.BEHAVIOUR: Stage.BEHAVIOUR}[kind]


def promoted(value: float, window: Sequence[float], fraction: float, min_window: int = 0) -> bool:
    """Is `value` among the top `fraction` of `window` and itself? (Always, while the window is short.)

    With n scores in the window, value climbs when fewer than ceil(fraction * (n + 1)) of them are
    strictly better: ties go to the newcomer, so a window of equal scores never blocks the search.
    """
    if len(window) < min_window:
        return True
    better = sum(1 for other in window if other > value)
    return better < math.ceil(fraction * (len(window) + 1))


def score(tasks: dict[str, dict]) -> float:
    """The mean task score (WORST for no task)."""
    return statistics.fmean(t["score"] for t in tasks.values()) if tasks else WORST
