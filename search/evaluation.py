"""Scoring a candidate: the funnel of proxy tasks, or (for tests) its behaviour.

Both evaluators take a validated, pruned Program and return an Evaluation,
a plain record that goes into events.jsonl as it is.

ProxyTaskEvaluator runs the funnel's training stages:
  cheap tier   the cheap tasks; a candidate whose mean score stays below the
               hurdle stops here (stage "cheap", score = that mean);
  full suite   the remaining training tasks (stage "full", score = the mean
               over all of them).
and, on request, the held-out tasks (meta-validation, never selection).

BehaviourEvaluator scores how close a program's updates are to a target's on
the fingerprint probe: 0 is identical, lower is further. It makes the search
mechanics testable in seconds (does evolution find Lion from AdamW?).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np

from primitives.probe import probe_updates
from primitives.kinds import Layout
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program
from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.registry import select_tasks
from proxy_tasks.scoring import BaselineCache, score_task
from proxy_tasks.task import Task, shortened
from proxy_tasks.tuning import TuningProtocol, tune
from search.config import EvaluationConfig


@dataclasses.dataclass(frozen=True)
class Evaluation:
    status: str  # "ok" | "diverged" (some task diverged at every lr); failures are set by the pool
    stage: str  # "cheap" | "full" | "held_out" | "behaviour"
    score: float
    tasks: dict[str, dict]  # per task: score, seed_scores, lr, train_loss, eval_loss
    seconds: float
    reason: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ProxyTaskEvaluator:
    """The funnel. Baselines are keyed by the configured device ("cuda"); runs go to
    `run_device` ("cuda:1" for the second GPU worker)."""

    def __init__(self, config: EvaluationConfig, primitive_set: PrimitiveSet, baseline_cache: str | Path | None,
                 run_device: str | None = None):
        self.config = config
        self.run_device = run_device or config.device
        self.primitive_set = primitive_set
        self.seeds = tuple(range(config.seeds))
        self.protocol = TuningProtocol(extensions=config.lr_extensions, refine=config.lr_refine)
        self.options = ExecutionOptions(polar_backend=config.polar_backend)
        pick = lambda spec: [shortened(t, config.step_fraction) for t in select_tasks(spec)]  # noqa: E731
        self.cheap = pick(config.cheap_tasks)
        cheap_names = {t.name for t in self.cheap}
        self.full = [t for t in pick(config.full_tasks) if t.name not in cheap_names]
        self.held_out = pick(config.held_out_tasks)
        self.baselines = BaselineCache(baseline_cache)

    @property
    def all_tasks(self) -> list[Task]:
        return self.cheap + self.full + self.held_out

    def task(self, name: str) -> Task:
        return next(t for t in self.all_tasks if t.name == name)

    def baseline(self, name: str) -> dict:
        """Tune AdamW on one task (a job for a worker; the coordinator stores it)."""
        task = self.task(name)
        result = tune(task, _adamw(), self.seeds, self.run_device, 1e-3, self.protocol)
        return {"task": name, "best_lr": result.best_lr, "centre": result.centre,
                "runs": [[lr, [r.to_dict() for r in runs]] for lr, runs in result.runs.items()]}

    def _score(self, program: Program, tasks: list[Task]) -> tuple[dict[str, dict], list[str]]:
        spec = OptimizerSpec.for_program(program, options=self.options, primitive_set=self.primitive_set)
        scores, diverged = {}, []
        for task in tasks:
            base = self.baselines.get(task, self.seeds, self.config.device, self.protocol)
            if base is None:
                raise RuntimeError(f"no AdamW baseline for task {task.name}: the coordinator computes them first")
            result = tune(task, spec, self.seeds, self.run_device, base.best_lr, self.protocol)
            scored = score_task(task, result.best, base.best, result.best_lr)
            if all(r.diverged_step is not None for runs in result.runs.values() for r in runs):
                diverged.append(task.name)
            scores[task.name] = {
                "score": scored.score, "seed_scores": list(scored.seed_scores), "lr": result.best_lr,
                "train_loss": statistics.median(r.train_loss for r in result.best),
                "eval_loss": statistics.median(r.eval_loss for r in result.best),
                "curve": median_curve(result.best),
            }
        return scores, diverged

    def evaluate(self, program: Program) -> Evaluation:
        start = time.perf_counter()
        tasks, diverged = self._score(program, self.cheap)
        stage = "cheap"
        if _mean(tasks) >= self.config.hurdle and self.full:
            more, more_diverged = self._score(program, self.full)
            tasks.update(more)
            diverged += more_diverged
            stage = "full"
        reason = f"diverged at every learning rate on {', '.join(diverged)}" if diverged else ""
        return Evaluation("diverged" if diverged else "ok", stage, _mean(tasks), tasks,
                          time.perf_counter() - start, reason)

    def evaluate_held_out(self, program: Program) -> Evaluation:
        start = time.perf_counter()
        tasks, diverged = self._score(program, self.held_out)
        return Evaluation("diverged" if diverged else "ok", "held_out", _mean(tasks), tasks,
                          time.perf_counter() - start, ", ".join(diverged))


def median_curve(runs) -> list[float]:
    """The seeds' loss curves, median at each point (inf where a run had stopped)."""
    return [statistics.median(points) for points in zip(*(r.curve for r in runs))]


def _adamw() -> OptimizerSpec:
    from proxy_tasks.optimizers import baseline_spec

    return baseline_spec()


def _mean(tasks: dict[str, dict]) -> float:
    return statistics.fmean(t["score"] for t in tasks.values()) if tasks else -3.0


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

    def evaluate(self, program: Program) -> Evaluation:
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # a runaway program scores BEHAVIOUR_WORST
            distance = float(np.mean((self._updates(program) - self.target) ** 2))
        score = -distance if math.isfinite(distance) else -BEHAVIOUR_WORST
        return Evaluation("ok", "behaviour", score, {"behaviour": {"score": score}}, time.perf_counter() - start)

    def evaluate_held_out(self, program: Program) -> Evaluation:
        return self.evaluate(program)


# Two unit-RMS updates differ by at most 4 in mean square (u = -u*); non-finite
# updates score a little worse than that.
BEHAVIOUR_WORST = 5.0
BEHAVIOUR_STEPS = 24
BEHAVIOUR_BATCH = 8
BEHAVIOUR_DRIFT = 1.0
