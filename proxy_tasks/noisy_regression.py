"""Noisy matrix regression: a noisy quadratic with Kronecker curvature, streamed in minibatches.

The noisy quadratic model (Zhang et al. 2019, "Which algorithmic choices
matter at which batch sizes?") is the smallest task on which momentum,
preconditioning and averaging behave as in real training: the curvature is
spread over decades and the gradient is noisy, so a rule must trade speed
along the flat directions against noise along the sharp ones. Here it is
written as a linear model trained on a stream, with a matrix parameter:

    x ~ N(0, S),  y = W* x + sigma e,  loss(W) = 1/2 mean_batch (W x - y)^T D (W x - y)

with W, W* of shape (out, in), S = R diag(s) R^T (eigenvalues log-spaced
over `spread_in` decades, a random rotation R) and D = U diag(d) U^T
(`spread_out` decades, rotation U). The Hessian is the Kronecker product
S (x) D: Shampoo- and SOAP-style preconditioning can undo it, a diagonal
one (Adam) cannot undo the rotations, and polar methods equalise only the
gradient's singular values. Every step draws fresh examples (streaming), so
the training loss is a held-out loss. The score uses the exact excess risk
at the end of training,

    f(W) - f(W*) = 1/2 || D^(1/2) (W - W*) S^(1/2) ||_F^2,

(no noise of its own: what remains is the optimizer's). Per-step cost is a
few (8 x 24) matrix products: 1,000 steps are cheap, long enough for the
memories of interest (10 / (1 - beta2) steps for beta2 = 0.99).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from proxy_tasks.task import Task, generator


def _rotated_root(dim: int, spread: float, g: torch.Generator) -> torch.Tensor:
    """Q diag(sqrt(lambda)) Q^T with lambda log-spaced over `spread` decades from 1 down, Q a random rotation."""
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    roots = torch.logspace(0, -spread / 2, dim, dtype=torch.float64)
    return (Q * roots) @ Q.T


@functools.lru_cache(maxsize=8)
def _stream(rows: int, cols: int, spread_in: float, spread_out: float, noise: float, pool: int, seed: int):
    g = generator(seed)
    input_root = _rotated_root(cols, spread_in, g)  # S^(1/2)
    output_root = _rotated_root(rows, spread_out, g)  # D^(1/2)
    teacher = torch.randn(rows, cols, generator=g, dtype=torch.float64) / cols**0.5
    x = torch.randn(pool, cols, generator=g, dtype=torch.float64) @ input_root
    y = x @ teacher.T + noise * torch.randn(pool, rows, generator=g, dtype=torch.float64)
    return {"x": x.float(), "y": y.float(), "input_root": input_root.float(), "output_root": output_root.float(),
            "teacher": teacher.float()}


@dataclasses.dataclass(frozen=True)
class NoisyRegression(Task):
    name: ClassVar[str] = "noisy_regression"
    version: ClassVar[str] = "1"
    tier: ClassVar[int] = 0
    metric: ClassVar[str] = "eval"  # the exact excess risk at the end
    description: ClassVar[str] = "noisy matrix regression 16x24, Kronecker curvature (2+1 decades), batch 8, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True
    width_fields: ClassVar[tuple[str, ...]] = ("rows", "cols")
    # Spread (standard deviation) of 9 references' log-ratios, 3 seeds (benchmarks/suite_snr.py; BENCHMARKS.md,
    # "The selection suite"): 0.233.
    score_scale: ClassVar[float] = 0.23

    steps: int = 1000
    batch_size: int | None = 8
    rows: int = 16
    cols: int = 24
    spread_in: float = 2.0  # decades of the input covariance's eigenvalues
    spread_out: float = 1.0  # decades of the output metric's
    noise: float = 0.5  # standard deviation of the targets' noise
    pool: int = 8000  # at least steps x batch_size

    def data(self, seed):
        return _stream(self.rows, self.cols, self.spread_in, self.spread_out, self.noise, self.pool, seed)

    def init(self, seed):
        g = generator(seed, salt=2)
        return {"W": 0.5 * torch.randn(self.rows, self.cols, generator=g) / self.cols**0.5}

    def loss(self, params, batch):
        residual = (batch["x"] @ params["W"].T - batch["y"]) @ batch["output_root"]
        return 0.5 * torch.mean(torch.sum(residual**2, dim=-1))

    def train_loss(self, params, data):
        error = data["output_root"] @ (params["W"] - data["teacher"]) @ data["input_root"]
        return 0.5 * torch.sum(error**2)
