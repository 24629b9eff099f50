"""What a worker does with a candidate's stage: train it on proxy tasks, or (tests) score its behaviour.

Both evaluators take a validated, pruned Program and a stage (search/records.py's
JobKind) and return a StageResult: per task, the score against tuned AdamW and
what the events record (the tuned lr, median losses, the median loss curve),
and the tasks on which every learning rate diverged. The funnel (search/funnel.py)
decides which stage follows which and makes the candidate's score.

ProxyTaskEvaluator's stages:
  cheap      the cheap tier
  full       the rest of the training suite
  held_out   the held-out tasks (meta-validation, never selection)
  transfer   the transfer tasks at 4x the steps and width (search/transfer.py)

BehaviourEvaluator scores how close a program's updates are to a target's on
the fingerprint probe: 0 is identical, lower is further. It makes the search
mechanics testable in seconds (does evolution find Lion from AdamW?).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from primitives.kinds import Layout
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.probe import probe_updates
from primitives.program import Program
from proxy_tasks.optimizers import OptimizerSpec, baseline_spec
from proxy_tasks.registry import select_tasks
from proxy_tasks.scoring import BaselineCache, entry_of, tune_and_score
from proxy_tasks.task import Task, shortened
from proxy_tasks.tuning import TuningProtocol, tune
from search.config import SearchConfig
from search.records import JobKind


@dataclasses.dataclass(frozen=True)
class StageResult:
    tasks: dict[str, dict]  # per task: score, seed_scores, lr, train_loss, eval_loss, curve
    diverged: list[str]  # tasks on which every learning rate diverged
    drift: float | None = None  # transfer stage: how far the re-tuned rate moved

    @property
    def score(self) -> float:
        from search.funnel import score

        return score(self.tasks)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ProxyTaskEvaluator:
    """Baselines are keyed by the configured device ("cuda"); runs go to `run_device`
    ("cuda:1" for the second GPU worker)."""

    def __init__(self, config: SearchConfig, primitive_set: PrimitiveSet, baseline_cache: str | Path | None,
                 run_device: str | None = None):
        evaluation = config.evaluation
        self.config = evaluation
        self.device = evaluation.device
        self.run_device = run_device or evaluation.device
        self.primitive_set = primitive_set
        self.seeds = tuple(range(evaluation.seeds))
        self.protocol = TuningProtocol(extensions=evaluation.lr_extensions, refine=evaluation.lr_refine,
                                       fresh_seeds=evaluation.lr_fresh_seeds)
        self.options = ExecutionOptions(polar_backend=evaluation.polar_backend)
        pick = lambda spec: [shortened(t, evaluation.step_fraction) for t in select_tasks(spec)]  # noqa: E731
        cheap = pick(evaluation.cheap_tasks)
        cheap_names = {t.name for t in cheap}
        self.stages: dict[JobKind, list[Task]] = {
            JobKind.CHEAP: cheap,
            JobKind.FULL: [t for t in pick(evaluation.full_tasks) if t.name not in cheap_names],
            JobKind.HELD_OUT: pick(evaluation.held_out_tasks),
        }
        self.baselines = BaselineCache(baseline_cache)
        self.transfer = None
        if config.transfer.enabled:
            from search.transfer import TransferStage

            self.transfer = TransferStage(config, primitive_set, self.baselines, self.run_device)

    @property
    def all_tasks(self) -> list[Task]:
        return [task for tasks in self.stages.values() for task in tasks]

    def warm_up(self) -> None:
        """Pay the first training's one-time costs (autograd, vmap's batching rules: ~1 s) before any job,
        so that a candidate's first stage on a fresh worker is timed like any other."""
        from primitives.known import ADAMW
        from proxy_tasks.runner import train_grid

        task = dataclasses.replace(self.all_tasks[0], steps=2)
        for spec in (baseline_spec(), OptimizerSpec.for_program(ADAMW)):
            train_grid(task, spec, (1e-3, 1e-2), (0,), self.run_device)

    @property
    def task_names(self) -> set[str]:
        return {t.name for t in self.all_tasks}

    def task(self, name: str) -> Task:
        return next(t for t in self.all_tasks if t.name == name)

    def baseline(self, name: str, transfer: bool = False) -> dict:
        """Tune AdamW on one task, at its base size or the transfer stage's (a worker's job; the coordinator
        stores it)."""
        if transfer:
            return self.transfer.baseline(name)
        result = tune(self.task(name), baseline_spec(), self.seeds, self.run_device, 1e-3, self.protocol)
        return {"task": name, **entry_of(result)}

    def baseline_curves(self, task_names) -> dict[str, list[float]]:
        """Tuned AdamW's median loss curve on each task whose baseline is cached (plots, MLflow's charts)."""
        from proxy_tasks.scoring import score_task

        curves = {}
        for name in task_names:
            base = self.baselines.get(self.task(name), self.seeds, self.device, self.protocol) \
                if name in self.task_names else None
            if base is not None:
                curves[name] = score_task(self.task(name), base.best, base.best, base.best_lr).curve
        return curves

    def evaluate(self, program: Program, stage: JobKind, base_lrs: dict[str, float] | None = None,
                 offsets: dict[str, int] | None = None) -> StageResult:
        """Train `program` on the stage's tasks; `offsets`: its parent's rate per task (the tuning brackets it)."""
        if stage is JobKind.TRANSFER:
            if self.transfer is None:
                raise RuntimeError("a transfer job, but the transfer stage is not enabled")
            return self.transfer.evaluate(program, base_lrs or {})
        spec = OptimizerSpec.for_program(program, options=self.options, primitive_set=self.primitive_set)
        tasks, diverged = {}, []
        for task in self.stages[stage]:
            offset = (offsets or {}).get(task.name)
            scored = tune_and_score(task, spec, self.seeds, self.baselines, self.device, self.protocol,
                                    run_device=self.run_device, compute_baseline=False,
                                    offset=offset if type(offset) is int else None)
            tasks[task.name] = scored.to_dict()
            if scored.diverged_everywhere:
                diverged.append(task.name)
        return StageResult(tasks, diverged)


class BehaviourEvaluator:
    """score = -mean squared difference of RMS-normalised updates on a probe (0: identical).

    The probe is the fingerprint's matrix probe made longer and wider (24
    steps, 8 matrices) and given a persistent gradient direction, so that
    momentum matters as it does in training and a program matches the
    target's updates only by computing the same thing. Normalising
    each step's update by its RMS makes the score blind to a constant factor,
    which the learning rate absorbs anyway.
    """

    def __init__(self, target: Program, primitive_set: PrimitiveSet):
        self.primitive_set = primitive_set
        self.target = self._updates(target)

    def _updates(self, program: Program) -> np.ndarray:
        updates = probe_updates(program, primitive_set=self.primitive_set, layouts=(Layout.MATRIX,),
                                steps=BEHAVIOUR_STEPS, batch=BEHAVIOUR_BATCH, drift=BEHAVIOUR_DRIFT)
        steps = updates.reshape(BEHAVIOUR_STEPS, -1)
        with np.errstate(over="ignore", invalid="ignore"):
            rms = np.sqrt(np.mean(steps**2, axis=1, keepdims=True))
            return steps / np.where(rms > 0, rms, 1.0)

    def evaluate(self, program: Program, stage: JobKind = JobKind.BEHAVIOUR, offsets=None) -> StageResult:
        with np.errstate(over="ignore", invalid="ignore"):  # a runaway program scores BEHAVIOUR_WORST
            distance = float(np.mean((self._updates(program) - self.target) ** 2))
        score = -distance if math.isfinite(distance) else -BEHAVIOUR_WORST
        return StageResult({"behaviour": {"score": score}}, [])


# Two unit-RMS updates differ by at most 4 in mean square (u = -u*); non-finite
# updates score a little worse than that.
BEHAVIOUR_WORST = 5.0
BEHAVIOUR_STEPS = 24
BEHAVIOUR_BATCH = 8
BEHAVIOUR_DRIFT = 1.0
