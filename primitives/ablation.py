"""Ablation pruning: drop statements whose removal does not cost score.

Dead-code removal keeps everything that reaches the update; ablation asks
whether it matters. Statements are tried last to first: a statement is
deleted (the register it wrote then means whatever it held before, or the
program becomes invalid and the deletion is skipped) and the program is
re-scored on the given tasks; the deletion stands if the score stays within
`tolerance` of the original program's (so deletions cannot add up to more
than that). Each try costs a tuned evaluation, so it
is off unless asked for (`optsearch simplify --ablate`, `export --ablate`).
The score is any function of a program (proxy_tasks.scoring.program_scorer
trains it on proxy tasks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from primitives.analysis import prune
from primitives.primitive import PrimitiveSet
from primitives.program import Program, ProgramError, validate


@dataclasses.dataclass(frozen=True)
class Ablation:
    program: Program
    score: float  # of the returned program
    original_score: float
    removed: tuple[str, ...]  # the statements dropped, as text
    evaluations: int


def ablate(program: Program, score: Callable[[Program], float], primitive_set: PrimitiveSet,
           tolerance: float = 0.05) -> Ablation:
    current = prune(program)
    original = best = score(current)
    removed, evaluations = [], 1
    index = len(current.body) - 1
    while index >= 0:
        statement = current.body[index]
        trial = dataclasses.replace(current, body=current.body[:index] + current.body[index + 1:])
        try:
            validate(trial, primitive_set)
            trial = prune(trial)
        except ProgramError:
            index -= 1
            continue
        value = score(trial)
        evaluations += 1
        if value >= original - tolerance:
            removed.append(statement.text())
            current, best = trial, value
            index = min(index, len(current.body)) - 1
        else:
            index -= 1
    return Ablation(current, best, original, tuple(removed), evaluations)
