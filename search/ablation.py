"""Ablation pruning: drop statements whose removal does not cost score.

Dead-code removal keeps everything that reaches the update; ablation asks
whether it matters. Statements are tried last to first: a statement is
deleted (the register it wrote then means whatever it held before, or the
program becomes invalid and the deletion is skipped) and the program is
re-scored on the given tasks; the deletion stands if the score stays within
`tolerance` of the original program's (so deletions cannot add up to more
than that). Each try costs a tuned evaluation, so it
is off unless asked for (`optsearch simplify --ablate`, `export --ablate`).
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


def proxy_task_scorer(tasks: str, seeds: int, primitive_set: PrimitiveSet, baseline_cache=None,
                      step_fraction: float = 1.0) -> Callable[[Program], float]:
    """Mean score on `tasks` against cached tuned AdamW (baselines computed on demand)."""
    from proxy_tasks.optimizers import OptimizerSpec
    from proxy_tasks.registry import select_tasks
    from proxy_tasks.scoring import BaselineCache, score_task, suite_score
    from proxy_tasks.tuning import tune
    from search.evaluation import shortened

    task_list = [shortened(t, step_fraction) for t in select_tasks(tasks)]
    cache = BaselineCache(baseline_cache)
    seed_tuple = tuple(range(seeds))

    def score(program: Program) -> float:
        spec = OptimizerSpec.for_program(program, primitive_set=primitive_set)
        results = []
        for task in task_list:
            base = cache.baseline(task, seed_tuple)
            tuned = tune(task, spec, seed_tuple, "cpu", base.best_lr)
            results.append(score_task(task, tuned.best, base.best, tuned.best_lr))
        return suite_score(results)

    return score
