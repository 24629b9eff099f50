"""Learning-rate tuning: the same budget for every optimizer, baseline or candidate.

Only the learning rate is tuned. The search starts from a scale-free guess:
one step at lr = 1 on seed 0's first batch gives the size of the update, and
the centre is the lr at which that step would move the parameters by
`relative_step` of their RMS. An optimizer whose update is 100x larger gets a
100x smaller centre, so a candidate program and the same program times a
constant are tuned alike. From the centre:

  1. evaluate centre x 10^{-1, 0, +1};
  2. while the best is at an end of what was tried, try one decade further
     that way (at most `extensions` times);
  3. try half a decade either side of the best (`refine`).

At most 3 + extensions + 2 evaluations (7 by default), each training all
seeds. The best lr minimises the median over seeds of the task's metric;
a diverged run counts as +inf.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch

from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.runner import minibatch_indices, train
from proxy_tasks.task import RunResult, Task

FALLBACK_CENTRE = 1e-2  # used when the first update is zero or not finite


@dataclasses.dataclass(frozen=True)
class TuningProtocol:
    relative_step: float = 1e-2
    extensions: int = 2
    refine: bool = True

    @property
    def budget(self) -> int:
        return 3 + self.extensions + (2 if self.refine else 0)


@dataclasses.dataclass(frozen=True)
class TuneResult:
    best_lr: float
    centre: float
    runs: dict[float, tuple[RunResult, ...]]  # every lr tried, in order

    @property
    def best(self) -> tuple[RunResult, ...]:
        return self.runs[self.best_lr]


def objective(runs: tuple[RunResult, ...], metric: str) -> float:
    """Median over seeds of the task metric (inf for a diverged run)."""
    values = [r.metric(metric) for r in runs]
    value = statistics.median(values)
    return value if math.isfinite(value) else math.inf


def centre_lr(task: Task, spec: OptimizerSpec, device: str, aux_lr: float, relative_step: float) -> float:
    """The lr at which the first step would move the parameters by relative_step of their RMS."""
    data = {k: v.to(device) for k, v in task.data(0).items()}
    params = {k: torch.nn.Parameter(v.to(device)) for k, v in task.init(0).items()}
    index = minibatch_indices(task, data, 0)
    batch = data if index is None else task.sample(data, index[0].to(device))
    optimizer = spec.make(params, task.adamw_params, 1.0, aux_lr, batch_dims=0, device=device)
    before = {k: v.detach().clone() for k, v in params.items()}
    task.loss(params, batch).backward()
    optimizer.step()
    moved = torch.cat([(params[k].detach() - before[k]).reshape(-1) for k in params if k not in task.adamw_params])
    scale = torch.cat([before[k].reshape(-1) for k in params if k not in task.adamw_params])
    step_rms = moved.double().pow(2).mean().sqrt().item()
    param_rms = max(scale.double().pow(2).mean().sqrt().item(), 1e-3)
    if not math.isfinite(step_rms) or step_rms == 0.0:
        return FALLBACK_CENTRE
    return relative_step * param_rms / step_rms


def tune(
    task: Task,
    spec: OptimizerSpec,
    seeds: tuple[int, ...],
    device: str = "cpu",
    aux_lr: float = 1e-3,
    protocol: TuningProtocol = TuningProtocol(),
) -> TuneResult:
    centre = centre_lr(task, spec, device, aux_lr, protocol.relative_step)
    runs: dict[float, tuple[RunResult, ...]] = {}
    scores: dict[int, float] = {}  # by exponent in half-decades from the centre

    def evaluate(k: int) -> None:
        if k not in scores:
            lr = centre * 10 ** (k / 2)
            result = tuple(train(task, spec, lr, seeds, device, aux_lr))
            runs[lr] = result
            scores[k] = objective(result, task.metric)

    for k in (-2, 0, 2):
        evaluate(k)
    for _ in range(protocol.extensions):
        best = min(scores, key=lambda k: (scores[k], k))
        if best == min(scores):
            evaluate(best - 2)
        elif best == max(scores):
            evaluate(best + 2)
        else:
            break
    best = min(scores, key=lambda k: (scores[k], k))
    if protocol.refine and math.isfinite(scores[best]):
        evaluate(best - 1)
        evaluate(best + 1)
        best = min(scores, key=lambda k: (scores[k], k))
    return TuneResult(centre * 10 ** (best / 2), centre, runs)
