"""Teacher-student MLP: a small-batch stream from a random teacher network.

A student MLP (in -> hidden -> out, tanh) learns a random teacher of the
same form (its hidden layer half as wide) from a stream of Gaussian inputs
with noisy targets, 16 examples a step, 800 steps: stochastic, non-convex,
with hidden units that must specialise, the regime in which momentum and
second-moment estimates pay off or fail in real training, at a per-step cost
of a few (16 x 64) products. The score uses the student's error against the
teacher's noiseless outputs on 1,024 fixed fresh inputs (the excess risk:
the targets' noise is not the optimizer's to remove).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from proxy_tasks.classification import linear_layers, mlp
from proxy_tasks.task import Task, generator

TEST_EXAMPLES = 1024


@functools.lru_cache(maxsize=8)
def _stream(inputs: int, hidden: int, outputs: int, noise: float, pool: int, seed: int) -> dict[str, torch.Tensor]:
    g = generator(seed)
    teacher = linear_layers((inputs, max(1, hidden // 2), outputs), g, prefix="t")
    # A teacher from the default (uniform fan-in) initialisation is nearly linear; 3x its first layer bends it.
    teacher["tW0"] = 3 * teacher["tW0"]
    x = torch.randn(pool + TEST_EXAMPLES, inputs, generator=g)
    clean = mlp(teacher, x, 2, prefix="t")
    y = clean + noise * torch.randn(clean.shape, generator=g)
    return {"x": x[:pool], "y": y[:pool], "x_test": x[pool:], "y_test": clean[pool:]}


@dataclasses.dataclass(frozen=True)
class TeacherStudent(Task):
    name: ClassVar[str] = "teacher_student"
    version: ClassVar[str] = "1"
    tier: ClassVar[int] = 0
    metric: ClassVar[str] = "eval"  # the error against the teacher's noiseless outputs, at the end
    description: ClassVar[str] = "MLP 32-64-8 (tanh) learning a random teacher, batch 16, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True
    width_fields: ClassVar[tuple[str, ...]] = ("hidden",)
    # Spread (standard deviation) of 9 references' log-ratios, 3 seeds (benchmarks/suite_snr.py; BENCHMARKS.md,
    # "The selection suite"): 0.137.
    score_scale: ClassVar[float] = 0.14

    steps: int = 800
    batch_size: int | None = 16
    inputs: int = 32
    hidden: int = 64
    outputs: int = 8
    noise: float = 0.3
    pool: int = 12_800  # at least steps x batch_size

    def data(self, seed):
        return _stream(self.inputs, self.hidden, self.outputs, self.noise, self.pool, seed)

    def init(self, seed):
        return linear_layers((self.inputs, self.hidden, self.outputs), generator(seed, salt=2))

    def _error(self, params, x, y):
        return 0.5 * torch.mean(torch.sum((mlp(params, x, 2) - y) ** 2, dim=-1))

    def loss(self, params, batch):
        return self._error(params, batch["x"], batch["y"])

    def train_loss(self, params, data):
        return self._error(params, data["x_test"], data["y_test"])
