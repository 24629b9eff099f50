"""What a proxy task is, and what one training run of it returns.

A task is a small, deterministic training problem written as pure functions
of a dict of parameter tensors, so that several seeds can be trained side by
side with torch.func.vmap (tiny tasks are launch-bound: three seeds cost about
what one does). A task provides, for one seed:

    data(seed)             dict of tensors (train split under minibatch_keys)
    init(seed)             dict of parameter tensors
    loss(params, batch)    the training loss on a minibatch (a scalar)
    train_loss(params, d)  the full training objective
    eval_loss(params, d)   the held-out loss (the training objective if no split)

and declares its number of steps, batch size, the metric its score uses
("train": optimisation speed at a fixed budget, the training loss averaged
over the last 10% of steps; "eval": generalisation, the held-out loss), a
cost tier, whether it is held out from selection, and a version that changes
whenever the task changes (baselines are cached under it).

A streaming task (`streaming = True`) never repeats an example within a run:
its data hold a pool of at least steps x batch_size examples (synthetic, or
non-overlapping windows of a text) and every step draws examples the run has
not seen (proxy_tasks.runner.minibatch_indices), so its training loss is a
held-out loss and memorising cannot score.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

# A run has diverged when its loss is not finite or exceeds this multiple of
# its first loss: nothing useful comes back from there, so it stops early.
DIVERGENCE_FACTOR = 10.0
CURVE_POINTS = 50
# The "train" metric is the training loss averaged over the last 10% of steps:
# the last point alone jumps with each minibatch (and, at a tuned learning
# rate near the edge of stability, with each step), which made per-seed
# scores far noisier than the differences between optimizers.
TAIL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One training run: one seed, one learning rate."""

    seed: int
    lr: float
    train_loss: float  # training loss averaged over the last TAIL_FRACTION of steps; inf if diverged
    eval_loss: float  # final held-out loss; inf if the run diverged
    curve: tuple[float, ...]  # minibatch loss, averaged into <= CURVE_POINTS windows
    diverged_step: int | None
    seconds: float  # wall time of the run (seeds trained together share it)
    final_loss: float = float("nan")  # the full training objective at the end
    def metric(self, which: str) -> float:
        return self.train_loss if which == "train" else self.eval_loss

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunResult:
        return cls(**{**data, "curve": tuple(data["curve"])})


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class of proxy tasks; subclasses are frozen dataclasses of their settings."""

    name: ClassVar[str]
    version: ClassVar[str]
    tier: ClassVar[int]  # 0: cheapest; the search's cheap tier runs tier-0 tasks
    held_out: ClassVar[bool] = False  # never used for selection, only meta-validation
    metric: ClassVar[str] = "train"
    description: ClassVar[str] = ""
    minibatch_keys: ClassVar[tuple[str, ...]] = ()  # data entries sampled along dim 0 per step
    # Every step draws examples never seen before in the run (no repetition).
    streaming: ClassVar[bool] = False
    # Parameters that Muon-style optimizers should hand to AdamW, as users do.
    adamw_params: ClassVar[tuple[str, ...]] = ()
    # Train seeds side by side under vmap (False where that measured slower than
    # a loop: benchmarks/task_costs.py).
    vmap_seeds: ClassVar[bool] = True
    # The settings that make the model wider (the transfer stage scales them: scaled()).
    width_fields: ClassVar[tuple[str, ...]] = ()
    # The reference panel's spread (standard deviation across optimizers) of log(L_AdamW / L) on this
    # task, measured by benchmarks/suite_snr.py: scores are divided by it so every task counts alike
    # (proxy_tasks/scoring.py). 1.0: not standardised (held-out tasks, the earlier suite).
    score_scale: ClassVar[float] = 1.0

    steps: int = 200
    batch_size: int | None = None  # None: full batch

    @property
    def key(self) -> str:
        """Identity for caches: name, version and every setting."""
        settings = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.name}/v{self.version}({settings})"

    def scaled(self, steps_factor: int, width_factor: int) -> Task:
        """This task trained `steps_factor` times longer on a model `width_factor` times wider.

        A streaming task's `pool` (if it has one) grows with the steps: a longer stream never repeats.
        """
        if not self.width_fields:
            raise ValueError(f"task {self.name!r} has no width to scale (its width_fields are empty)")
        wider = {name: getattr(self, name) * width_factor for name in self.width_fields}
        if self.streaming and "pool" in {f.name for f in dataclasses.fields(self)}:
            wider["pool"] = getattr(self, "pool") * steps_factor
        return dataclasses.replace(self, steps=self.steps * steps_factor, **wider)

    def data(self, seed: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def init(self, seed: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, params: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def train_loss(self, params: dict[str, Tensor], data: dict[str, Tensor]) -> Tensor:
        return self.loss(params, data)

    def eval_loss(self, params: dict[str, Tensor], data: dict[str, Tensor]) -> Tensor:
        return self.train_loss(params, data)

    def example_count(self, data: dict[str, Tensor]) -> int:
        return len(data[self.minibatch_keys[0]]) if self.minibatch_keys else 1

    def sample(self, data: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """The minibatch at `index` (a LongTensor of example indices)."""
        return {k: (v[index] if k in self.minibatch_keys else v) for k, v in data.items()}


def generator(seed: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for one seed (salt separates independent streams)."""
    return torch.Generator().manual_seed(1_000_003 * seed + salt)


def shortened(task: Task, fraction: float) -> Task:
    """`task` with `fraction` of its steps (at least 4): smoke runs, on the same code path."""
    if fraction >= 1.0:
        return task
    return dataclasses.replace(task, steps=max(4, round(task.steps * fraction)))
