"""Matrix problems from PolarGrad's experiments (Lau et al. 2025), scaled down.

They reward updates that see the parameter as a matrix: the gradient of a
matrix objective is anisotropic in its singular values, which polar-factor
methods (Muon, PolarGrad) equalise.

- matrix regression: f(X) = 1/2 ||A X B - C||_F^2, X 64 x 32, deterministic;
  scored by f - f*, with f* from the least-squares solution A^+ C B^+.
- low-rank matrix completion: M of rank 5, 200 x 160, singular values spread
  over two decades (entries of order 1), 30% of the entries observed; factors
  U, V trained on the observed entries' squared error (non-convex) for 35
  steps; the held-out loss is the error on the unobserved ones. (With a
  well-conditioned M, or run to convergence, the tuned optimizers either
  reached round-off or differed seed by seed as much as from each other;
  at 50 steps, with the rate chosen on other seeds than the scored ones,
  Muon's and Lion's scores varied by 0.3-0.6 from seed to seed: SNR 3.2,
  against 11.2 at 35 steps, 6.3 at 30 and 5.7 at 40.)
- deep linear network (held out, streaming): W3 W2 W1 x fitting y = T x +
  noise, T 32 x 32 with singular values over two decades, fresh x every
  step; from PyTorch's default initialisation the product starts near the
  saddle at 0, where the layers' singular values must grow together.

(A matrix logistic regression, X 32 x 16 on 512 fixed rows, was held out
before: every optimizer reached its optimum, within 0.001 of AdamW's score,
so it could not tell them apart; the deep linear network replaced it.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from proxy_tasks.task import Task, generator

TEST_EXAMPLES = 2048  # a streaming task's fixed held-out sample (final losses)


@dataclasses.dataclass(frozen=True)
class MatrixRegression(Task):
    name: ClassVar[str] = "matrix_regression"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 2  # deterministic, saturates for polar methods: a benchmark, no longer selected on
    description: ClassVar[str] = "1/2 ||AXB - C||^2, X 64x32, scored by f - f*"

    steps: int = 200
    shape: tuple[int, int] = (64, 32)
    rows: int = 96  # rows of A
    cols: int = 48  # columns of B

    def data(self, seed):
        g = generator(seed)
        k, r = self.shape
        # 1/sqrt(rows) keeps the objective's scale independent of the sizes.
        A = torch.randn(self.rows, k, generator=g, dtype=torch.float64) / self.rows**0.5
        B = torch.randn(r, self.cols, generator=g, dtype=torch.float64) / self.cols**0.5
        C = torch.randn(self.rows, self.cols, generator=g, dtype=torch.float64)
        X_star = torch.linalg.pinv(A) @ C @ torch.linalg.pinv(B)
        f_star = 0.5 * torch.sum((A @ X_star @ B - C) ** 2)
        return {"A": A.float(), "B": B.float(), "C": C.float(), "f_star": f_star.float()}

    def init(self, seed):
        return {"X": 2 * torch.rand(self.shape, generator=generator(seed, salt=2)) - 1}

    def loss(self, params, batch):
        # f - f*: the constant leaves gradients alone and makes the curve the suboptimality.
        return 0.5 * torch.sum((batch["A"] @ params["X"] @ batch["B"] - batch["C"]) ** 2) - batch["f_star"]


@dataclasses.dataclass(frozen=True)
class MatrixCompletion(Task):
    name: ClassVar[str] = "matrix_completion"
    version: ClassVar[str] = "4"
    tier: ClassVar[int] = 2  # full batch: a benchmark, no longer selected on
    description: ClassVar[str] = "low-rank completion, 200x160 rank 5, condition 100, 30% observed"

    steps: int = 35
    shape: tuple[int, int] = (200, 160)
    rank: int = 5
    observed: float = 0.3
    spread: float = 2.0  # decades between the largest and smallest singular value

    def data(self, seed):
        g = generator(seed)
        m, n = self.shape
        U, _ = torch.linalg.qr(torch.randn(m, self.rank, generator=g))
        V, _ = torch.linalg.qr(torch.randn(n, self.rank, generator=g))
        # Singular values scaled so that the entries are of order 1.
        sigma = torch.logspace(0, -self.spread, self.rank) * (m * n / self.rank) ** 0.5
        mask = (torch.rand(m, n, generator=g) < self.observed).float()
        return {"M": (U * sigma) @ V.T, "mask": mask}

    def init(self, seed):
        g = generator(seed, salt=2)
        m, n = self.shape
        return {"U": 2 * torch.rand(m, self.rank, generator=g) - 1, "V": 2 * torch.rand(n, self.rank, generator=g) - 1}

    def _masked_error(self, params, M, mask):
        return torch.sum(mask * (params["U"] @ params["V"].T - M) ** 2) / torch.sum(mask)

    def loss(self, params, batch):
        return self._masked_error(params, batch["M"], batch["mask"])

    def eval_loss(self, params, data):
        return self._masked_error(params, data["M"], 1.0 - data["mask"])


@functools.lru_cache(maxsize=8)
def _linear_teacher_stream(dim: int, spread: float, noise: float, pool: int, seed: int) -> dict[str, torch.Tensor]:
    g = generator(seed)
    U, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    teacher = (U * torch.logspace(0, -spread, dim, dtype=torch.float64)) @ V.T
    x = torch.randn(pool + TEST_EXAMPLES, dim, generator=g, dtype=torch.float64)
    y = x @ teacher.T + noise * torch.randn(pool + TEST_EXAMPLES, dim, generator=g, dtype=torch.float64)
    x, y = x.float(), y.float()
    return {"x": x[:pool], "y": y[:pool], "x_test": x[pool:], "y_test": y[pool:]}


@dataclasses.dataclass(frozen=True)
class DeepLinear(Task):
    name: ClassVar[str] = "deep_linear"
    version: ClassVar[str] = "1"
    tier: ClassVar[int] = 1
    held_out: ClassVar[bool] = True
    description: ClassVar[str] = "deep linear net W3 W2 W1, 32x32 each, fitting an ill-conditioned teacher, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True

    steps: int = 200
    batch_size: int | None = 64
    dim: int = 32
    depth: int = 3
    spread: float = 2.0  # decades between the teacher's largest and smallest singular value
    noise: float = 0.0  # standard deviation of the targets' noise
    pool: int = 12_800

    def data(self, seed):
        return _linear_teacher_stream(self.dim, self.spread, self.noise, self.pool, seed)

    def init(self, seed):
        g = generator(seed, salt=2)
        bound = 1.0 / self.dim**0.5  # PyTorch's Linear default: the product starts small (a saddle near 0)
        return {f"W{i}": (2 * torch.rand(self.dim, self.dim, generator=g) - 1) * bound for i in range(self.depth)}

    def _loss(self, params, x, y):
        for i in range(self.depth):
            x = x @ params[f"W{i}"].T
        return 0.5 * torch.mean(torch.sum((x - y) ** 2, dim=-1))

    def loss(self, params, batch):
        return self._loss(params, batch["x"], batch["y"])

    def train_loss(self, params, data):
        return self._loss(params, data["x_test"], data["y_test"])
