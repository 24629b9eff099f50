"""Learning-rate tuning: the same budget for every optimizer, baseline or candidate.

Only the learning rate is tuned. The search starts from a scale-free guess:
one step at lr = 1 on seed 0's first batch gives the size of the update, and
the centre is the lr at which that step would move the parameters by
`relative_step` of their RMS. An optimizer whose update is 100x larger gets a
100x smaller centre, so a candidate program and the same program times a
constant are tuned alike. Rates are counted in half-decades from the centre
(the *offset*: lr = centre x 10^(offset / 2)).

Every batch trains only rates not trained before (proxy_tasks/runner.py's
train_grid trains one batch's rates and seeds at once):

  wide search (a program with no known offset: a warm start, a baseline)
    1. every decade from offset `low` to `high` on the tuning seeds (measured:
       the chosen offset was 1 to 5 half-decades above the centre in about 85
       tunings of the quickstart's programs, so the old grid's rates 2, 4 and 6
       half-decades below it never mattered); a best rate at an edge extends
       the range by a decade, at most `extensions` times;
    2. half a decade either side of the best (`refine`), on the tuning seeds.
  bracket (a child: its parent's offset on this task, inherited)
    1. the parent's offset and `bracket` half-decades either side, on the
       tuning seeds; a best rate at an edge extends by half a decade, at most
       `extensions` times. (A child's constants barely move its optimum: the
       per-task offsets were nearly constant across 7 programs.)
  then: the best rate, and only it, on fresh seeds (`fresh_seeds`).

The best lr minimises the median over the tuning seeds of the task's metric
(a diverged run counts as +inf; ties go to the smaller rate). The runs that
are scored are the fresh seeds' at that lr: a rate chosen on the very seeds
it is scored on flatters a noisy optimizer (the best of several draws of the
noise), so the choice and the score use different draws. Without fresh seeds
the tuning seeds' runs at the best lr are scored (the protocol before, kept
for studies).

Runs per task and candidate with S tuning seeds: a child 3S + S (plus S per
extension), a wide search 5S + 2S + S; the protocol before this one trained
7S + 3S + 3S, of which 3S were never used.
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
    low: int = -2  # the wide search's first rates, in half-decades from the centre: low, low + 2, ..., high
    high: int = 6
    extensions: int = 2  # steps beyond an edge at which the best rate sits, at most
    refine: bool = True  # the wide search also tries half a decade either side of its best
    fresh_seeds: bool = True
    bracket: int = 1  # half-decades either side of an inherited offset

    def __post_init__(self) -> None:
        if self.low > self.high or (self.high - self.low) % 2:
            raise ValueError(f"TuningProtocol: low ({self.low}) and high ({self.high}) must be whole decades apart")
        if self.extensions < 0 or self.bracket < 1:
            raise ValueError("TuningProtocol: extensions >= 0 and bracket >= 1")

    @property
    def first_exponents(self) -> tuple[int, ...]:
        """The wide search's first batch of rates, in half-decades from the centre."""
        return tuple(range(self.low, self.high + 1, 2))

    def first_batch(self, offset: int | None) -> tuple[tuple[int, ...], int]:
        """The first batch's offsets and the step of an extension: the wide grid, or a bracket."""
        if offset is None:
            return self.first_exponents, 2
        return tuple(range(offset - self.bracket, offset + self.bracket + 1)), 1

    @property
    def budget(self) -> int:
        """Learning rates trained on the tuning seeds by a wide search, at most."""
        return len(self.first_exponents) + self.extensions + (2 if self.refine else 0)


@dataclasses.dataclass(frozen=True)
class TuneResult:
    best_lr: float
    centre: float
    runs: dict[float, tuple[RunResult, ...]]  # every lr tried, on the tuning seeds
    scored: tuple[RunResult, ...] = ()  # the runs a score uses: fresh seeds at best_lr (or the tuning seeds')

    @property
    def best(self) -> tuple[RunResult, ...]:
        return self.scored or self.runs[self.best_lr]

    @property
    def offset(self) -> int:
        """The best rate in half-decades from the centre (what a child inherits)."""
        return offset_of(self.best_lr, self.centre)

    @property
    def run_count(self) -> int:
        """Training runs this tuning cost: every (rate, seed) trained, the scored ones included."""
        return sum(len(r) for r in self.runs.values()) + len(self.scored)


def offset_of(lr: float, centre: float) -> int:
    if not (lr > 0 and centre > 0 and math.isfinite(lr) and math.isfinite(centre)):
        return 0
    return round(2 * math.log10(lr / centre))


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
    offset: int | None = None,
) -> TuneResult:
    """Tune `spec`'s lr on `task` (see the module docstring): a wide search, or a bracket around `offset`.

    batched=False trains run by run.
    """
    centre = centre_lr(task, spec, device, aux_lr, protocol.relative_step)
    rate = lambda k: centre * 10 ** (k / 2)  # noqa: E731 -- k in half-decades from the centre
    runs: dict[int, tuple[RunResult, ...]] = {}

    def train(offsets) -> None:
        new = tuple(k for k in offsets if k not in runs)  # never a rate already trained on these seeds
        if new:
            grid = train_grid(task, spec, tuple(rate(k) for k in new), seeds, device, aux_lr, batched)
            runs.update({k: grid[rate(k)] for k in new})

    def best() -> int:
        return min(runs, key=lambda k: (objective(runs[k], task.metric), k))

    first, step = protocol.first_batch(offset)
    train(first)
    for _ in range(protocol.extensions):
        k = best()
        if k == min(runs):
            train((k - step,))
        elif k == max(runs) and math.isfinite(objective(runs[k], task.metric)):
            train((k + step,))
        else:
            break
    k = best()
    if offset is None and protocol.refine and math.isfinite(objective(runs[k], task.metric)):
        train((k - 1, k + 1))
        k = best()
    # Fresh seeds even when everything diverged: the score pairs them with the baseline's fresh seeds.
    scored = train_grid(task, spec, (rate(k),), fresh(seeds), device, aux_lr, batched)[rate(k)] \
        if protocol.fresh_seeds else ()
    return TuneResult(rate(k), centre, {rate(j): runs[j] for j in sorted(runs)}, scored)


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
