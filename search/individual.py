"""An evaluated candidate: its program, identity, scores and costs (a frozen record)."""

from __future__ import annotations

import dataclasses
from typing import Any

from primitives.primitive import PrimitiveSet
from primitives.program import Program
from primitives.serialize import from_dict, to_dict
from search.records import Stage


@dataclasses.dataclass(frozen=True)
class Individual:
    id: int
    program: Program  # pruned
    structural_hash: str
    fingerprint: str
    score: float  # mean task score against tuned AdamW (or behaviour score)
    stage: Stage  # how far through the funnel it went
    complexity: float  # sum of primitive costs
    state_buffers: int  # optimizer memory, in parameter-sized buffers
    parent: int | None = None
    mutation: str = ""
    held_out: float | None = None  # meta-validation score, once measured
    transfer: float | None = None  # score at 4x the steps and width, once measured
    # optimizer memory: bytes of state per parameter byte (primitives.analysis.state_bytes); None: from the program
    state_bytes: float | None = None
    cheap_score: float | None = None  # the cheap rung's score (every trained candidate has one)

    def __post_init__(self) -> None:
        if self.state_bytes is None:  # records and checkpoints written before this field have none
            from primitives.analysis import state_bytes

            object.__setattr__(self, "state_bytes", state_bytes(self.program))

    def rung_score(self) -> float:
        """The cheap rung's score: what every trained candidate can be compared on."""
        return self.cheap_score if self.cheap_score is not None else self.score

    def beats(self, other: Individual, select_on: str) -> bool:
        """Compared on the highest rung both reached (ties: the younger, the higher id, wins)."""
        if self.stage is other.stage or select_on == "transfer" and self.transfer is not None \
                and other.transfer is not None:
            mine, theirs = self.fitness(select_on), other.fitness(select_on)
        else:
            mine, theirs = self.rung_score(), other.rung_score()
        return (mine, self.id) > (theirs, other.id)

    def fitness(self, select_on: str) -> float:
        """What selection ranks by: the suite score, or the transfer score once there is one."""
        if select_on == "transfer" and self.transfer is not None:
            return self.transfer
        return self.score

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["program"] = to_dict(self.program)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], primitive_set: PrimitiveSet) -> Individual:
        """Rebuild from JSON; the program is validated, never executed."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        return cls(**{**values, "stage": Stage(values["stage"]), "program": from_dict(data["program"], primitive_set)})
