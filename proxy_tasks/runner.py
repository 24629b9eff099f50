"""Train a task with an optimizer: several seeds side by side when possible.

Every run follows the same schedule: the learning rate warms up linearly over
the first 5% of steps and then decays to zero along a cosine. With a
constant rate the final loss mostly measures the noise floor that rate
leaves (and a tuned rate sits near the edge of stability, where it differs
from seed to seed); annealed, it measures progress, as in real training.

With `batched` (the default when both the task and the optimizer allow it),
the seeds' parameters are stacked along a leading dimension and the task's
pure loss runs under torch.func.vmap; the optimizer is told that dimension is
a batch (batch_dims=1), so each seed is updated as if alone. Otherwise seeds
run one after another. Either way each seed draws its own minibatches from its
own generator, so a seed's run does not depend on which seeds run with it.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.task import CURVE_POINTS, DIVERGENCE_FACTOR, TAIL_FRACTION, RunResult, Task, generator


def _to(tensors: dict[str, Tensor], device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


def _stack(dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def _downsample(curve: Tensor, points: int = CURVE_POINTS) -> list[tuple[float, ...]]:
    """(seeds, steps) -> per seed, the mean of each of <= `points` windows of steps."""
    seeds, steps = curve.shape
    windows = torch.tensor_split(curve, min(points, steps), dim=1)
    means = torch.stack([w.mean(dim=1) for w in windows], dim=1)
    return [tuple(row) for row in means.tolist()]


WARMUP_FRACTION = 0.05
SCHEDULES = ("cosine", "constant")


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    return schedule


def lr_factor(step: int, steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the learning rate at `step` (0-based) of `steps`.

    "cosine" (every search and bench run): linear warmup, then cosine to 0.
    "constant": 1 throughout, for studies of an optimizer's own step-size
    control (benchmarks/matrix_polar_check.py).
    """
    if check_schedule(schedule) == "constant":
        return 1.0
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class PoolTooSmallError(ValueError):
    """A streaming task's pool holds fewer examples than its steps x batch size."""


def minibatch_indices(task: Task, data: dict[str, Tensor], seed: int) -> Tensor | None:
    """(steps, batch) example indices for one seed, or None for full-batch tasks.

    A task that repeats a dataset draws with replacement. A streaming task
    never shows a run the same example twice: its indices are the first
    steps x batch entries of a permutation of its pool drawn from the seed's
    generator, row t being step t's batch. So a task shortened to fewer steps
    sees the first batches of the full run, and a seed trained beside others
    (vmapped) sees what it sees alone (indices are made per seed, then stacked).
    """
    g = generator(seed, salt=1)
    if task.batch_size is None:
        if task.streaming:
            raise ValueError(f"streaming task {task.name!r} needs a batch size (a full batch would repeat)")
        return None
    count = task.example_count(data)
    if not task.streaming:
        return torch.randint(count, (task.steps, task.batch_size), generator=g)
    needed = task.steps * task.batch_size
    if count < needed:
        raise PoolTooSmallError(
            f"streaming task {task.name!r}: {task.steps} steps x batch {task.batch_size} need {needed} examples "
            f"never seen before, but its pool holds {count}; enlarge the pool or shorten the run")
    return torch.randperm(count, generator=g)[:needed].reshape(task.steps, task.batch_size)


def train(
    task: Task,
    spec: OptimizerSpec,
    lr: float,
    seeds: tuple[int, ...],
    device: str = "cpu",
    aux_lr: float = 1e-3,
    batched: bool | None = None,
    schedule: str = "cosine",
) -> list[RunResult]:
    """One run per seed at learning rate `lr` (seeds vmapped together when task and optimizer allow)."""
    return list(train_grid(task, spec, (lr,), seeds, device, aux_lr, batched, schedule)[float(lr)])


def train_grid(
    task: Task,
    spec: OptimizerSpec,
    lrs: tuple[float, ...],
    seeds: tuple[int, ...],
    device: str = "cpu",
    aux_lr: float = 1e-3,
    batched: bool | None = None,
    schedule: str = "cosine",
) -> dict[float, tuple[RunResult, ...]]:
    """One run per (learning rate, seed), all trained as one batch when task and optimizer allow.

    Batched, the parameters are stacked (rates, seeds, ...): the task's loss
    is vmapped over seeds (each seed its own data and batches) and over rates
    (the same data), and the optimizer is told both leading dimensions are
    batches. The rate is per instance: the optimizer steps at the largest
    rate r_max, and each instance's step is then scaled to its own rate,
    w <- w + (r / r_max) (w_stepped - w), exact for an optimizer whose step is
    linear in the rate (OptimizerSpec.lr_linear: every torch.optim rule that
    multiplies its update and its decay by lr, and every program). Scaling
    down from the largest rate keeps the round-off of the difference below
    that of the step itself. An instance that diverges is recorded as such
    and trains on, independent of the others; training stops when all have.
    """
    check_schedule(schedule)  # before any training
    lrs = tuple(dict.fromkeys(float(lr) for lr in lrs))
    if batched is None:
        batched = spec.batchable and task.vmap_seeds
    if not batched:
        return {lr: tuple(r for seed in seeds for r in _train(task, spec, (lr,), (seed,), device, aux_lr, schedule,
                                                                stacked=False)) for lr in lrs}
    if len(lrs) > 1 and not spec.lr_linear:
        return {lr: tuple(_train(task, spec, (lr,), seeds, device, aux_lr, schedule, stacked=True)) for lr in lrs}
    results = _train(task, spec, lrs, seeds, device, aux_lr, schedule, stacked=True)
    return {lr: tuple(r for r in results if r.lr == lr) for lr in lrs}


def _rate_scaled(optimizer) -> list[Tensor]:
    """The parameters whose step is the optimizer's lr times its update (not a built-in AdamW's)."""
    from discovered._contract import MatrixOptimizer

    scaled = []
    for group in optimizer.param_groups:
        if group.get("route") == "adamw":
            continue
        for p in group["params"]:
            if not isinstance(optimizer, MatrixOptimizer) or optimizer.uses_rule(p, group):
                scaled.append(p)
    return scaled


def _train(task, spec, lrs, seeds, device, aux_lr, schedule: str, stacked: bool) -> list[RunResult]:
    start = time.perf_counter()
    grid = stacked and len(lrs) > 1
    datas = [task.data(s) for s in seeds]
    indices = [minibatch_indices(task, d, s) for d, s in zip(datas, seeds)]
    inits = [task.init(s) for s in seeds]
    if stacked:
        data = _to(_stack(datas), device)
        init = _to(_stack(inits), device)
        if grid:  # (rates, seeds, ...): every rate starts from each seed's initial parameters
            init = {k: v.unsqueeze(0).expand(len(lrs), *v.shape).clone() for k, v in init.items()}
        params = {k: torch.nn.Parameter(v) for k, v in init.items()}
        index = None if indices[0] is None else torch.stack(indices).to(device)  # (seeds, steps, batch)
        per_seed = torch.func.vmap(task.loss)
        loss_fn = torch.func.vmap(per_seed, in_dims=(0, None)) if grid else per_seed
        sample_fn = torch.func.vmap(task.sample)
    else:
        data = _to(datas[0], device)
        params = {k: torch.nn.Parameter(v) for k, v in _to(inits[0], device).items()}
        index = None if indices[0] is None else indices[0].to(device)
        loss_fn = lambda p, b: task.loss(p, b).unsqueeze(0)  # noqa: E731 -- shape (1,) like the stacked case
        sample_fn = task.sample
    top = max(lrs)
    batch_dims = (2 if grid else 1) if stacked else 0
    optimizer = spec.make(params, task.adamw_params, top, aux_lr, batch_dims=batch_dims, device=device)
    # Every learning rate in every group follows the schedule (a Muon-style
    # optimizer's built-in AdamW too).
    scheduled = [(group, key, group[key]) for group in optimizer.param_groups for key in ("lr", "adamw_lr")
                 if key in group]
    scaled = _rate_scaled(optimizer) if grid else []
    ratios = torch.tensor([lr / top for lr in lrs], device=device)

    n = len(lrs) * len(seeds)
    curve = torch.full((n, task.steps), math.nan, dtype=torch.float64)
    diverged_at: list[int | None] = [None] * n
    first: list[float] = []
    for step in range(task.steps):
        if index is None:
            batch = data
        else:
            batch = sample_fn(data, index[:, step] if stacked else index[step])
        optimizer.zero_grad(set_to_none=True)
        losses = loss_fn(params, batch)
        losses.sum().backward()
        values = losses.detach().double().cpu().reshape(-1)
        curve[:, step] = values
        if step == 0:
            first = [abs(v) + 1e-12 for v in values.tolist()]
        for i, value in enumerate(values.tolist()):
            if diverged_at[i] is None and not (math.isfinite(value) and value <= DIVERGENCE_FACTOR * first[i]):
                diverged_at[i] = step
        if all(d is not None for d in diverged_at):
            break
        factor = lr_factor(step, task.steps, schedule)
        for group, key, base in scheduled:
            group[key] = base * factor
        before = [p.detach().clone() for p in scaled]
        optimizer.step()
        with torch.no_grad():
            for p, old in zip(scaled, before):
                p.copy_(torch.lerp(old, p, ratios.to(p.dtype).view(-1, *([1] * (p.ndim - 1)))))

    with torch.no_grad():
        if stacked:
            per_seed_train, per_seed_eval = torch.func.vmap(task.train_loss), torch.func.vmap(task.eval_loss)
            if grid:
                per_seed_train = torch.func.vmap(per_seed_train, in_dims=(0, None))
                per_seed_eval = torch.func.vmap(per_seed_eval, in_dims=(0, None))
            train_losses = per_seed_train(params, data).reshape(-1)
            eval_losses = per_seed_eval(params, data).reshape(-1)
        else:
            train_losses = task.train_loss(params, data).unsqueeze(0)
            eval_losses = task.eval_loss(params, data).unsqueeze(0)
    seconds = time.perf_counter() - start
    tail = curve[:, -max(1, round(TAIL_FRACTION * task.steps)):].mean(dim=1)
    results = []
    for i, (lr, seed) in enumerate((lr, seed) for lr in lrs for seed in seeds):
        values = [float(tail[i]), float(eval_losses[i]), float(train_losses[i])]
        if diverged_at[i] is None and not all(math.isfinite(v) for v in values):
            diverged_at[i] = task.steps
        if diverged_at[i] is not None:
            values = [math.inf] * 3
        results.append(RunResult(
            seed=seed, lr=lr, train_loss=values[0], eval_loss=values[1],
            curve=_downsample(curve[i : i + 1].nan_to_num(nan=math.inf))[0], diverged_step=diverged_at[i],
            seconds=seconds, final_loss=values[2],
        ))
    return results
