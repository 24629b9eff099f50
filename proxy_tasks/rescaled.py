"""Rescaled reparameterisations of training tasks (held out).

The optimizer sees theta = w / scale and the loss is the base task's loss at
w = scale * theta: gradients grow by `scale` and curvature by scale^2, the
optimum is the same point. Adam-style and sign-style updates are invariant to
the gradient's scale but not to the parameter's; plain SGD is invariant to
neither. A discovered optimizer that only works at one parameterisation
shows it here, where the search never looked.
"""

from __future__ import annotations

import dataclasses

from proxy_tasks.task import Task


@dataclasses.dataclass(frozen=True)
class Rescaled(Task):
    base: Task | None = None
    scale: float = 10.0

    # Identity follows the base task, so each rescaling is its own task.
    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.base.name}_x{self.scale:g}"

    @property
    def version(self) -> str:  # type: ignore[override]
        return f"{self.base.version}.r1"

    @property
    def tier(self) -> int:  # type: ignore[override]
        return self.base.tier

    @property
    def held_out(self) -> bool:  # type: ignore[override]
        return True

    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.base.metric

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.base.description}, parameters rescaled by 1/{self.scale:g}"

    @property
    def minibatch_keys(self):  # type: ignore[override]
        return self.base.minibatch_keys

    @property
    def streaming(self):  # type: ignore[override]
        return self.base.streaming

    @property
    def adamw_params(self):  # type: ignore[override]
        return self.base.adamw_params

    @property
    def vmap_seeds(self):  # type: ignore[override]
        return self.base.vmap_seeds

    @classmethod
    def of(cls, base: Task, scale: float) -> Rescaled:
        """`base` rescaled, with its number of steps and batch size."""
        return cls(steps=base.steps, batch_size=base.batch_size, base=base, scale=scale)

    def _original(self, params):
        return {k: self.scale * v for k, v in params.items()}

    def data(self, seed):
        return self.base.data(seed)

    def init(self, seed):
        return {k: v / self.scale for k, v in self.base.init(seed).items()}

    def example_count(self, data):
        return self.base.example_count(data)

    def sample(self, data, index):
        return self.base.sample(data, index)

    def loss(self, params, batch):
        return self.base.loss(self._original(params), batch)

    def train_loss(self, params, data):
        return self.base.train_loss(self._original(params), data)

    def eval_loss(self, params, data):
        return self.base.eval_loss(self._original(params), data)
