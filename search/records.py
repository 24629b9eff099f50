"""The search's vocabulary: statuses, stages and job kinds, and the records that carry them.

These are the words of events.jsonl, of the tracker's tags and of the job
protocol between the coordinator and its workers. They are str enums, so a
record written as JSON holds plain strings ("ok", "cheap", ...) and reads back
as the same member.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any


class Status(enum.StrEnum):
    """How an evaluation ended."""

    OK = "ok"
    DIVERGED = "diverged"  # trained, but some task diverged at every learning rate (scored -3 there)
    ERROR = "error"  # the candidate raised (the traceback is the reason)
    TIMEOUT = "timeout"  # ran past evaluation.timeout; its worker was killed
    CRASHED = "crashed"  # its worker died (a signal, the OOM killer, os._exit)

    @property
    def failed(self) -> bool:
        """No score was measured: the candidate counts as -3 and is never selected."""
        return self in FAILED


FAILED = frozenset({Status.ERROR, Status.TIMEOUT, Status.CRASHED})


class Stage(enum.StrEnum):
    """How far through the funnel a candidate went (its score is that stage's)."""

    FINGERPRINT = "fingerprint"  # failed while its behaviour was being fingerprinted
    CHEAP = "cheap"  # scored on the cheap tier only: below the hurdle
    FULL = "full"  # scored on the full training suite
    BEHAVIOUR = "behaviour"  # scored by its distance to a target's updates (tests, mechanics)
    FAILED = "failed"  # failed while training

    @property
    def complete(self) -> bool:
        """Scored on everything selection uses: eligible for the hall of fame."""
        return self in (Stage.FULL, Stage.BEHAVIOUR)


class JobKind(enum.StrEnum):
    """What a worker is asked to do; declared cheapest first (the scheduler's priority)."""

    BASELINE = "baseline"  # tune AdamW on one task (before the search starts)
    FINGERPRINT = "fingerprint"  # a few probe steps: milliseconds
    CHEAP = "cheap"  # train on the cheap tier
    FULL = "full"  # train on the rest of the suite
    BEHAVIOUR = "behaviour"  # the behaviour score (one stage, milliseconds)
    TRANSFER = "transfer"  # train at 4x the steps and 4x the width
    HELD_OUT = "held_out"  # train on the held-out tasks (meta-validation)

    @property
    def priority(self) -> int:
        return _PRIORITY[self]


_PRIORITY = {kind: index for index, kind in enumerate(JobKind)}


@dataclasses.dataclass(frozen=True)
class Job:
    """A unit of work for a worker: only data crosses (programs as JSON dicts)."""

    id: int
    kind: JobKind
    payload: dict[str, Any]
    timed: bool = True  # subject to evaluation.timeout (a candidate's); tuning the AdamW baseline is not


@dataclasses.dataclass(frozen=True)
class Completion:
    """What came back for a job, from any execution backend."""

    job: Job
    status: Status  # OK, ERROR, TIMEOUT or CRASHED: the backend's view
    result: Any  # the job's return value when OK
    reason: str  # a traceback, or why the worker was lost
    worker: int
    seconds: float  # from the worker's start on the job to its result
    started: float = 0.0  # wall-clock times (time.time()) of that start and end
    finished: float = 0.0


@dataclasses.dataclass
class Counters:
    """What a search has done, all of it derived from its events."""

    evaluated: int = 0  # candidates with a recorded result (the budget), failures included
    generated: int = 0  # mutations tried for the candidates recorded
    invalid: int = 0  # of which invalid or over the size limits
    structural_hits: int = 0  # of which structurally known (re-mutated)
    fingerprint_hits: int = 0  # new structure, known behaviour: score reused, not trained
    trained: int = 0  # candidates trained on proxy tasks (or scored, for behaviour)
    failed: int = 0  # error, timeout or crash
    cheap_only: int = 0  # stopped by the hurdle
    restarts: int = 0
    held_out: int = 0  # hall-of-fame members scored on the held-out tasks
    transferred: int = 0  # candidates scored by the transfer stage

    @property
    def cache_hit_rate(self) -> float:
        """Fraction of valid generated programs that needed no training (Lion: 89%)."""
        valid = self.generated - self.invalid
        return (self.structural_hits + self.fingerprint_hits) / valid if valid > 0 else 0.0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def finite_number(value: Any) -> bool:
    """A JSON number usable as a float: an int or float (not a bool), finite, and not an integer beyond floats."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        return False
