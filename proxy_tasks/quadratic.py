"""Rotated ill-conditioned quadratic: curvature that is not aligned with the axes.

f(X) = 1/2 (x - x*)^T Q diag(lambda) Q^T (x - x*), x = vec(X) for a 10 x 10
parameter matrix, eigenvalues log-spaced over [1/condition, 1], a random
rotation Q per seed. A diagonal preconditioner (Adam) cannot undo the
rotation; momentum helps with the spread of curvatures; f* = 0.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from proxy_tasks.task import Task, generator


@dataclasses.dataclass(frozen=True)
class RotatedQuadratic(Task):
    name: ClassVar[str] = "quadratic"
    version: ClassVar[str] = "1"
    tier: ClassVar[int] = 2  # deterministic: a benchmark, no longer selected on
    description: ClassVar[str] = "rotated ill-conditioned quadratic, d=100 (10x10), condition 1e4"

    steps: int = 200
    side: int = 10
    condition: float = 1e4

    def data(self, seed):
        g = generator(seed)
        d = self.side * self.side
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        eigenvalues = torch.logspace(0, -torch.log10(torch.tensor(self.condition)).item(), d, dtype=torch.float64)
        H = (Q * eigenvalues) @ Q.T
        return {"H": H.float(), "x_star": torch.randn(d, generator=g)}

    def init(self, seed):
        return {"X": torch.randn(self.side, self.side, generator=generator(seed, salt=2))}

    def loss(self, params, batch):
        r = params["X"].reshape(-1) - batch["x_star"]
        return 0.5 * r @ (batch["H"] @ r)
