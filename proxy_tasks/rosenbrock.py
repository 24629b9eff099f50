"""Rosenbrock chains: curved, narrow valleys that reward momentum.

f(x) = sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 over d = 10, started near
the classic (-1.2, 1, -1.2, 1, ...); f* = 0 at x = 1. Each seed trains 64
independent chains (one vector of 640 parameters, the loss their mean): one
chain's progress depends so much on its start that the per-seed scores of a
single chain were as different as the optimizers, and with 8 chains Lion's
and SOAP's scores still varied by 0.4-0.7 from seed to seed (SNR 2.7, with
the learning rate chosen on other seeds than the scored ones; 12.3 with 64).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from proxy_tasks.task import Task, generator


@dataclasses.dataclass(frozen=True)
class RosenbrockChain(Task):
    name: ClassVar[str] = "rosenbrock"
    version: ClassVar[str] = "3"
    tier: ClassVar[int] = 2  # deterministic: a benchmark, no longer selected on
    description: ClassVar[str] = "Rosenbrock chains, d=10, 64 per seed, from near (-1.2, 1, ...)"

    steps: int = 300
    dim: int = 10
    chains: int = 64

    def data(self, seed):
        return {}

    def init(self, seed):
        start = torch.tensor([-1.2, 1.0] * (self.dim // 2) + [-1.2] * (self.dim % 2))
        x = start + 0.1 * torch.randn(self.chains, self.dim, generator=generator(seed, salt=2))
        return {"x": x.reshape(-1)}

    def loss(self, params, batch):
        x = params["x"].reshape(self.chains, self.dim)
        return torch.mean(torch.sum(100.0 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1.0 - x[:, :-1]) ** 2, dim=1))
