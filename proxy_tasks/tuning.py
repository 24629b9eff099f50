"""Learning-rate tuning: the same budget for every optimizer, baseline or candidate.

Only the learning rate is tuned. The search starts from a scale-free guess:
one step at lr = 1 on seed 0's first batch gives the size of the update, and
the centre is the lr at which that step would move the parameters by
`relative_step` of their RMS. An optimizer whose update is 100x larger gets a
100x smaller centre, so a candidate program and the same program times a
constant are tuned alike. From the centre, in two batches of training runs
(proxy_tasks/runner.py's train_grid trains a batch's rates and seeds at once):

  1. every decade from centre x 10^-(1 + extensions) to centre x 10^(1 + extensions),
     on the tuning seeds;
  2. half a decade either side of the best (`refine`), on the tuning seeds, and
     the best and its two neighbours on fresh seeds (`fresh_seeds`).

The best lr minimises the median over the tuning seeds of the task's metric
(a diverged run counts as +inf). The runs that are scored are the fresh
seeds' at that lr: a rate chosen on the very seeds it is scored on flatters
a noisy optimizer (the best of several draws of the noise), so the choice
and the score use different draws. Without fresh seeds the tuning seeds'
runs at the best lr are scored (the protocol before, kept for studies).
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch

from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.runner import minibatch_indices, train_grid
from proxy_tasks.task import RunResult, Task

FALLBACK_CENTRE = 1e-2  # used when the first update is zero or not finite
# Fresh seeds are the tuning seeds moved by this much: never a tuning seed, whatever their number.
FRESH_SEED_OFFSET = 1000


@dataclasses.dataclass(frozen=True)
class TuningProtocol:
    relative_step: float = 1e-2
    extensions: int = 2  # decades beyond +-1 around the centre, tried in the first batch
    refine: bool = True
    fresh_seeds: bool = True

    @property
    def budget(self) -> int:
        """Learning rates trained on the tuning seeds, at most."""
        return len(self.first_exponents) + (2 if self.refine else 0)

    @property
    def first_exponents(self) -> tuple[int, ...]:
        """The first batch's rates, in half-decades from the centre."""
        reach = 2 * (1 + self.extensions)
        return tuple(range(-reach, reach + 1, 2))


@dataclasses.dataclass(frozen=True)
class TuneResult:
    best_lr: float
    centre: float
    runs: dict[float, tuple[RunResult, ...]]  # every lr tried, on the tuning seeds
    scored: tuple[RunResult, ...] = ()  # the runs a score uses: fresh seeds at best_lr (or the tuning seeds')

    @property
    def best(self) -> tuple[RunResult, ...]:
        return self.scored or self.runs[self.best_lr]


def fresh(seeds: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(seed + FRESH_SEED_OFFSET for seed in seeds)


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
    batched: bool | None = None,
) -> TuneResult:
    """Tune `spec`'s lr on `task` (see the module docstring); batched=False trains run by run."""
    centre = centre_lr(task, spec, device, aux_lr, protocol.relative_step)
    rate = lambda k: centre * 10 ** (k / 2)  # noqa: E731 -- k in half-decades from the centre
    first = train_grid(task, spec, tuple(rate(k) for k in protocol.first_exponents), seeds, device, aux_lr, batched)
    scores = {k: objective(first[rate(k)], task.metric) for k in protocol.first_exponents}
    runs = {rate(k): first[rate(k)] for k in protocol.first_exponents}
    best = min(scores, key=lambda k: (scores[k], k))  # ties: the smaller rate
    settled = not math.isfinite(scores[best])  # every rate diverged: there is nothing to refine
    around = (best - 1, best, best + 1) if protocol.refine and not settled else (best,)
    # Fresh seeds even when everything diverged: the score pairs them with the baseline's fresh seeds.
    second_seeds = (seeds if len(around) > 1 else ()) + (fresh(seeds) if protocol.fresh_seeds else ())
    second = train_grid(task, spec, tuple(rate(k) for k in around), second_seeds, device, aux_lr, batched) \
        if second_seeds else {}
    for k in around:
        if k != best:
            runs[rate(k)] = tuple(r for r in second[rate(k)] if r.seed in seeds)
            scores[k] = objective(runs[rate(k)], task.metric)
    best = min(around, key=lambda k: (scores[k], k))
    scored = tuple(r for r in second.get(rate(best), ()) if r.seed not in seeds) if protocol.fresh_seeds else ()
    return TuneResult(rate(best), centre, runs, scored)


def tune_at(
    task: Task,
    spec: OptimizerSpec,
    seeds: tuple[int, ...],
    rates: tuple[float, ...],
    device: str = "cpu",
    aux_lr: float = 1e-3,
    fresh_seeds: bool = True,
    batched: bool | None = None,
) -> TuneResult:
    """The best of `rates` on the tuning seeds, then that rate on fresh seeds (the transfer stage's re-tune)."""
    runs = train_grid(task, spec, rates, seeds, device, aux_lr, batched)
    scores = {lr: objective(results, task.metric) for lr, results in runs.items()}
    best = min(scores, key=lambda lr: (scores[lr], lr))
    scored = train_grid(task, spec, (best,), fresh(seeds), device, aux_lr, batched)[best] if fresh_seeds else ()
    return TuneResult(best, rates[len(rates) // 2], runs, scored)
