"""The task suite: training tasks (the search selects on them) and held-out tasks.

Tiers order tasks by cost on one CPU core; the search's cheap tier is tier 0.
"""

from __future__ import annotations

import difflib

from primitives.errors import OptsearchError
from proxy_tasks.char_lm import CharTransformer
from proxy_tasks.classification import DigitsAutoencoder, DigitsCNN, DigitsMLP, LogisticRegression
from proxy_tasks.gratings import GratingsCNN
from proxy_tasks.lora import LoRA
from proxy_tasks.matrix_problems import DeepLinear, MatrixCompletion, MatrixRegression
from proxy_tasks.noisy_regression import NoisyRegression
from proxy_tasks.quadratic import RotatedQuadratic
from proxy_tasks.rescaled import Rescaled
from proxy_tasks.rosenbrock import RosenbrockChain
from proxy_tasks.synthetic_language import SyntheticLanguage
from proxy_tasks.teacher_student import TeacherStudent
from proxy_tasks.task import Task

_ALL: tuple[Task, ...] = (
    NoisyRegression(),
    TeacherStudent(),
    RotatedQuadratic(),
    MatrixRegression(),
    LogisticRegression(),
    RosenbrockChain(),
    MatrixCompletion(),
    DigitsMLP(),
    DigitsCNN(),
    CharTransformer(),
    # held out
    LoRA(),
    DeepLinear(),
    GratingsCNN(),
    SyntheticLanguage(),
    DigitsAutoencoder(),
    Rescaled.of(RotatedQuadratic(), 100.0),
    Rescaled.of(DigitsMLP(), 10.0),
)
TASKS: dict[str, Task] = {t.name: t for t in _ALL}
TRAINING = tuple(t.name for t in _ALL if not t.held_out)
HELD_OUT = tuple(t.name for t in _ALL if t.held_out)


class UnknownTaskError(OptsearchError):
    pass


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}.{hint} Valid: {', '.join(TASKS)}") from None


def select_tasks(spec: str) -> list[Task]:
    """'all' (training tasks), 'held-out', 'tier0' ... 'tier3', or comma-separated names."""
    if spec == "all":
        return [TASKS[n] for n in TRAINING]
    if spec in ("held-out", "held_out"):
        return [TASKS[n] for n in HELD_OUT]
    if spec.startswith("tier") and spec[4:].isdigit():
        return [TASKS[n] for n in TRAINING if TASKS[n].tier <= int(spec[4:])]
    return [get_task(name.strip()) for name in spec.split(",") if name.strip()]
