"""The transfer stage: does a candidate's win survive a longer horizon and a wider model?

A score earned in 100 steps on a model of 2,000 parameters rewards what pays
off in 100 steps (a lower momentum, Wu et al. 2018's short-horizon bias), and
speed-ups shrink with scale. So a candidate that clears transfer.hurdle on
the full suite is trained again on transfer.tasks with transfer.steps_factor
times the steps and transfer.width_factor times the width (Task.scaled), and
scored there against AdamW treated exactly the same way:

  1. carry the learning rate tuned at the base size to the wider model by
     muP's rule for its kind of update (Yang et al.; "Hyperparameter Transfer
     Enables Consistent Gains of Matrix-Preconditioned Optimizers Across
     Scales"): an elementwise update (Adam, Lion, sign) moves a hidden matrix
     by ~sqrt(fan-in) more in spectral norm as the model widens, so its rate
     shrinks as 1/width; an update normalised as a matrix (polar factors,
     Kronecker preconditioning: Muon, Shampoo, SOAP) keeps its size, so its
     rate carries as it is;
  2. re-tune `retune` half-decades either side of the carried rate on the
     tuning seeds, and score the best on fresh seeds (proxy_tasks.tuning.tune_at);
  3. record the transfer score (mean over tasks) and the drift, the median
     over tasks of |log10(re-tuned rate / carried rate)| in decades: a rate
     that drifts does not transfer, a warning sign in itself.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from primitives.analysis import uses_matrix_primitives
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program
from proxy_tasks.optimizers import OptimizerSpec, baseline_spec
from proxy_tasks.registry import select_tasks
from proxy_tasks.scoring import BaselineCache, entry_of, score_task
from proxy_tasks.task import Task, shortened
from proxy_tasks.tuning import TuneResult, TuningProtocol, tune_at
from search.config import SearchConfig


@dataclasses.dataclass(frozen=True)
class TransferProtocol:
    """How a transfer-stage rate is found (part of the baseline cache's key)."""

    base: TuningProtocol
    steps_factor: int
    width_factor: int
    retune: int
    fresh_seeds: bool


def carried_rate(base_lr: float, width_factor: int, matrix_update: bool) -> float:
    """muP's rule: a matrix-normalised update keeps its rate, an elementwise one divides it by the width factor."""
    return base_lr if matrix_update else base_lr / width_factor


class TransferStage:
    def __init__(self, config: SearchConfig, primitive_set: PrimitiveSet, baselines: BaselineCache,
                 run_device: str | None = None):
        evaluation, transfer = config.evaluation, config.transfer
        self.primitive_set = primitive_set
        self.baselines = baselines
        self.device = evaluation.device
        self.run_device = run_device or evaluation.device
        self.seeds = tuple(range(evaluation.seeds))
        self.base_protocol = TuningProtocol(extensions=evaluation.lr_extensions, refine=evaluation.lr_refine,
                                            fresh_seeds=evaluation.lr_fresh_seeds)
        self.protocol = TransferProtocol(self.base_protocol, transfer.steps_factor, transfer.width_factor,
                                         transfer.retune, evaluation.lr_fresh_seeds)
        self.options = ExecutionOptions(polar_backend=evaluation.polar_backend)
        self.width_factor = transfer.width_factor
        self.retune = transfer.retune
        base = [shortened(t, evaluation.step_fraction) for t in select_tasks(transfer.tasks)]
        self.tasks: dict[str, tuple[Task, Task]] = {
            t.name: (t, t.scaled(transfer.steps_factor, transfer.width_factor)) for t in base}

    def _rates(self, carried: float) -> tuple[float, ...]:
        return tuple(carried * 10 ** (k / 2) for k in range(-self.retune, self.retune + 1))

    def _tune(self, task: Task, spec: OptimizerSpec, carried: float, aux_lr: float) -> TuneResult:
        return tune_at(task, spec, self.seeds, self._rates(carried), self.run_device, aux_lr,
                       fresh_seeds=self.protocol.fresh_seeds)

    # ------------------------------------------------------------------ AdamW, treated the same way

    def baseline_key(self, name: str) -> str:
        return self.baselines.key(self.tasks[name][1], self.seeds, self.device, self.protocol)

    def baseline(self, name: str) -> dict:
        """AdamW at the transfer scale: its base-size tuned rate carried and re-tuned (a worker's job)."""
        base_task, task = self.tasks[name]
        base = self.baselines.get(base_task, self.seeds, self.device, self.base_protocol)
        if base is None:
            raise RuntimeError(f"no base-size AdamW baseline for {name}: the coordinator computes it first")
        result = self._tune(task, baseline_spec(), carried_rate(base.best_lr, self.width_factor, False), 1e-3)
        return {"task": name, **entry_of(result)}

    def missing_baselines(self) -> list[str]:
        return [name for name in self.tasks if self.baselines.get(self.tasks[name][1], self.seeds, self.device,
                                                                  self.protocol) is None]

    # ------------------------------------------------------------------ a candidate

    def evaluate(self, program: Program, base_lrs: dict[str, float]):
        """The candidate's transfer scores (a StageResult: per-task entries, diverged tasks, drift)."""
        from search.evaluation import StageResult

        spec = OptimizerSpec.for_program(program, options=self.options, primitive_set=self.primitive_set)
        matrix = uses_matrix_primitives(program, self.primitive_set)
        tasks, diverged, drifts = {}, [], []
        for name, (base_task, task) in self.tasks.items():
            baseline = self.baselines.get(task, self.seeds, self.device, self.protocol)
            base_baseline = self.baselines.get(base_task, self.seeds, self.device, self.base_protocol)
            if baseline is None or base_baseline is None:
                raise RuntimeError(f"no transfer baseline for {name}: the coordinator computes them first")
            if name not in base_lrs:
                raise RuntimeError(f"the candidate has no base-size rate on {name} (transfer tasks must be "
                                   f"among the tasks it was scored on)")
            carried = carried_rate(base_lrs[name], self.width_factor, matrix)
            # Non-matrix parameters of Muon-style rules take AdamW's transfer-scale rate, as at base size.
            result = self._tune(task, spec, carried, baseline.best_lr)
            scored = score_task(task, result.best, baseline.best, result.best_lr)
            if all(r.diverged_step is not None for runs in result.runs.values() for r in runs):
                diverged.append(name)
            drift = abs(math.log10(result.best_lr / carried))
            drifts.append(drift)
            tasks[name] = {**scored.to_dict(), "carried_lr": carried, "drift": drift,
                           "steps": task.steps, "width_factor": self.width_factor}
        return StageResult(tasks, diverged, statistics.median(drifts) if drifts else None)
