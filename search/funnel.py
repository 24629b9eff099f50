"""The funnel: which stage of training follows which, and how a candidate's score is made.

    fingerprint -> cheap tier -(score >= hurdle)-> full suite -> record
                             \\-(below the hurdle)-> record (stage "cheap")
    (behaviour evaluation: fingerprint -> behaviour -> record)

Each arrow is a separate job, so the scheduler can give a free worker the
cheapest work pending (a full suite never holds up screening), and a worker
only ever trains one stage of one candidate. The score of a record is the
mean over every task it was trained on. The transfer stage and held-out
scoring come after the record, for candidates the state says are due.
"""

from __future__ import annotations

import statistics

from search.config import SearchConfig
from search.records import JobKind, Stage

# A failed or diverged task, and a candidate with no task at all, score this.
WORST = -3.0


class Funnel:
    def __init__(self, config: SearchConfig, has_full_stage: bool = True):
        self.behaviour = config.evaluation.kind == "behaviour"
        self.hurdle = config.evaluation.hurdle
        self.has_full_stage = has_full_stage

    def first(self) -> JobKind:
        return JobKind.BEHAVIOUR if self.behaviour else JobKind.CHEAP

    def after(self, kind: JobKind, tasks: dict[str, dict]) -> JobKind | None:
        """The stage that follows `kind` for a candidate with these task results, or None: record it."""
        if kind is JobKind.CHEAP and self.has_full_stage and score(tasks) >= self.hurdle:
            return JobKind.FULL
        return None

    @staticmethod
    def stage(kind: JobKind) -> Stage:
        return {JobKind.CHEAP: Stage.CHEAP, JobKind.FULL: Stage.FULL, JobKind.BEHAVIOUR: Stage.BEHAVIOUR}[kind]


def score(tasks: dict[str, dict]) -> float:
    """The mean task score (WORST for no task)."""
    return statistics.fmean(t["score"] for t in tasks.values()) if tasks else WORST
