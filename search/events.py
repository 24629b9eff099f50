"""The events of a search: what happened, one JSON record per line of events.jsonl.

A search's state (population, hall of fame, caches, counters) changes only by
applying these records (search/state.py), whether they were just made or are
read back on resume, so a resumed search is the search that was stopped.
Each record is a frozen dataclass; reading one back checks every field's type
and refuses, with the field's name, a record that is not what this version
writes. Nothing in a record is ever evaluated: programs are JSON data,
rebuilt and validated against the primitive set by whoever needs them.

    candidate          a candidate was evaluated (trained, or it failed)
    cache_hit          a new structure behaved like a known one: its score was reused
    held_out_requested the hall-of-fame members sent to the held-out tasks
    held_out           one member's held-out score
    transfer           one candidate's score at 4x the steps and width
    restart            the population was reset to its best (a plateau)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar

from search.records import Stage, Status, finite_number


class EventError(ValueError):
    """A record that is not an event this version writes (the run store says which line)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    TYPE: ClassVar[str] = ""

    seq: int

    def to_dict(self) -> dict[str, Any]:
        data = {"seq": self.seq, "type": self.TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "seq" and not (value is None and field.name in _OMIT_IF_NONE):
                data[field.name] = value
        return data


# Optional fields a deterministic search leaves out (wall-clock readings), so
# that two such runs write the same bytes.
_OMIT_IF_NONE = frozenset({"time", "seconds", "started", "finished", "warm_start", "drift", "members"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Proposed(Event):
    """Fields of every event that introduces a candidate: its program and how it was made."""

    id: int
    program: dict[str, Any]
    structural_hash: str
    fingerprint: str
    parent: int | None
    mutation: str
    attempts: int  # mutations tried to make it (rejected ones included)
    invalid: int
    duplicates: int
    warm_start: str | None = None
    time: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateEvaluated(Proposed):
    TYPE: ClassVar[str] = "candidate"

    stage: Stage
    status: Status
    score: float
    tasks: dict[str, dict[str, Any]]
    reason: str = ""
    complexity: float
    state_buffers: int
    state_bytes: float | None = None  # bytes of state per parameter byte (logs written before it have none)
    cheap_score: float | None = None  # the cheap rung's score (the rolling hurdle's window); older logs: none
    worker: int = 0
    seconds: float | None = None
    started: float | None = None
    finished: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CacheHit(Proposed):
    TYPE: ClassVar[str] = "cache_hit"

    same_as: int  # the candidate whose evaluation this behaviour had
    stage: Stage
    score: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeldOutRequested(Event):
    TYPE: ClassVar[str] = "held_out_requested"

    ids: list[int]
    time: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scored(Event):
    """A score measured after a candidate's record: on the held-out tasks, or at the transfer scale."""

    id: int
    score: float
    status: Status
    tasks: dict[str, dict[str, Any]]
    reason: str = ""
    time: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeldOutScored(Scored):
    TYPE: ClassVar[str] = "held_out"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransferScored(Scored):
    TYPE: ClassVar[str] = "transfer"

    drift: float | None = None  # median |log10| of re-tuned lr over the µP-carried lr


@dataclasses.dataclass(frozen=True, kw_only=True)
class Restarted(Event):
    TYPE: ClassVar[str] = "restart"

    best: int
    score: float
    members: list[int] | None = None  # the population it restarts from (None: the best alone)
    time: float | None = None


EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in
                                       (CandidateEvaluated, CacheHit, HeldOutRequested, HeldOutScored,
                                        TransferScored, Restarted)}


# ---------------------------------------------------------------------------
# Reading a record back


def from_dict(data: Any) -> Event:
    """The event a JSON record describes; EventError naming the field if it is not one."""
    if not isinstance(data, dict):
        raise EventError("not an event record")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"unknown event type {data.get('type')!r}")
    hints = _hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise EventError(f"{cls.TYPE} event lacks the field {field.name!r}")
            continue
        values[field.name] = _check(data[field.name], hints[field.name], field.name)
    unknown = set(data) - set(hints) - {"type"}
    if unknown:
        raise EventError(f"{cls.TYPE} event has unknown field(s) {', '.join(sorted(unknown))}")
    return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    return {k: v for k, v in typing.get_type_hints(cls).items() if typing.get_origin(v) is not ClassVar}


def _check(value: Any, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check(value, inner, name)
    if annotation is int:
        if type(value) is not int:
            raise EventError(f"field {name!r} must be an integer, got {value!r:.60}")
        return value
    if annotation is float:
        if not finite_number(value):
            raise EventError(f"field {name!r} must be a finite number, got {value!r:.60}")
        return float(value)
    if annotation is str:
        if type(value) is not str:
            raise EventError(f"field {name!r} must be a string, got {value!r:.60}")
        return value
    if isinstance(annotation, type) and issubclass(annotation, str):  # Stage, Status
        try:
            return annotation(value)
        except ValueError:
            raise EventError(f"field {name!r}: {value!r:.60} is not one of "
                             f"{', '.join(m.value for m in annotation)}") from None
    if origin is list:
        if type(value) is not list:
            raise EventError(f"field {name!r} must be a list, got {value!r:.60}")
        (inner,) = typing.get_args(annotation)
        return [_check(item, inner, name) for item in value]
    if origin is dict:
        if type(value) is not dict:
            raise EventError(f"field {name!r} must be a table, got {value!r:.60}")
        if name == "tasks":
            for task, entry in value.items():
                if type(entry) is not dict or "score" not in entry:
                    raise EventError(f"tasks[{task!r}] must be a table with a score")
                _check(entry["score"], float, f"tasks[{task!r}].score")
        return value
    raise TypeError(f"no check for {annotation!r}")  # pragma: no cover -- a field type this module lacks
