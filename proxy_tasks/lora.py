"""LoRA fine-tuning of a frozen random network (held out, streaming).

The base is a frozen MLP 32-64-32 (tanh), weights N(0, 1/fan_in): it lives in
the task's data, not in its parameters, so no optimizer can move it. The
target is the same network with a low-rank change to each weight matrix
(rank 4, singular values over a decade, Frobenius norm `delta` times the
weight's), its outputs observed with a little noise. The trainable
parameters are the LoRA factors of each layer, W + B A with A (rank x
fan_in) and B (fan_out x rank): A starts as PyTorch's Linear default, B at
zero, so training starts at the base network (Hu et al. 2021). Matrix
optimizers see A and B as matrices. Every step fits the target's outputs on
fresh Gaussian inputs (a pool of steps x batch_size of them, each used
once), so the training loss is a held-out loss.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from proxy_tasks.task import Task, generator

TEST_EXAMPLES = 2048


def _low_rank(shape: tuple[int, int], rank: int, norm: float, g: torch.Generator) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(shape[0], rank, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(shape[1], rank, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -1, rank, dtype=torch.float64)
    return (U * (norm * s / s.norm())) @ V.T


def _forward(weights, biases, x):
    for i, (W, b) in enumerate(zip(weights, biases)):
        x = x @ W.T + b
        if i < len(weights) - 1:
            x = torch.tanh(x)
    return x


@functools.lru_cache(maxsize=8)
def _lora_stream(sizes: tuple[int, ...], true_rank: int, delta: float, noise: float, pool: int,
                 seed: int) -> dict[str, torch.Tensor]:
    g = generator(seed)
    base, biases, target = [], [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) / fan_in**0.5
        base.append(W)
        biases.append(0.1 * torch.randn(fan_out, generator=g, dtype=torch.float64))
        target.append(W + _low_rank((fan_out, fan_in), true_rank, delta * W.norm().item(), g))
    x = torch.randn(pool + TEST_EXAMPLES, sizes[0], generator=g, dtype=torch.float64)
    y = _forward(target, biases, x)
    y = y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    data = {"x": x[:pool], "y": y[:pool], "x_test": x[pool:], "y_test": y[pool:]}
    data |= {f"base{i}": W for i, W in enumerate(base)} | {f"bias{i}": b for i, b in enumerate(biases)}
    return {k: v.float() for k, v in data.items()}


@dataclasses.dataclass(frozen=True)
class LoRA(Task):
    name: ClassVar[str] = "lora"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 1
    held_out: ClassVar[bool] = True
    description: ClassVar[str] = "LoRA rank 8 on a frozen MLP 32-64-32, fitting a rank-4 change, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True

    steps: int = 200
    batch_size: int | None = 64
    sizes: tuple[int, ...] = (32, 64, 32)
    rank: int = 8  # of the trained factors
    true_rank: int = 4  # of the target's change
    delta: float = 0.5  # the change's Frobenius norm, relative to the weight's
    # Standard deviation of the targets' noise: a floor of 0.5 x 32 x noise^2 = 4e-4, half AdamW's loss.
    # Without it the losses of the best optimizers neared 0, where a score varied by 0.3-0.5 from seed
    # to seed (SNR 3.7 with the rate chosen on other seeds than the scored ones; 4.9 with it).
    noise: float = 0.005
    pool: int = 12_800

    def data(self, seed):
        return _lora_stream(self.sizes, self.true_rank, self.delta, self.noise, self.pool, seed)

    def init(self, seed):
        g = generator(seed, salt=2)
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            params[f"A{i}"] = (2 * torch.rand(self.rank, fan_in, generator=g) - 1) / fan_in**0.5
            params[f"B{i}"] = torch.zeros(fan_out, self.rank)
        return params

    def _loss(self, params, data, x, y):
        layers = len(self.sizes) - 1
        weights = [data[f"base{i}"] + params[f"B{i}"] @ params[f"A{i}"] for i in range(layers)]
        out = _forward(weights, [data[f"bias{i}"] for i in range(layers)], x)
        return 0.5 * torch.mean(torch.sum((out - y) ** 2, dim=-1))

    def loss(self, params, batch):
        return self._loss(params, batch, batch["x"], batch["y"])

    def train_loss(self, params, data):
        return self._loss(params, data, data["x_test"], data["y_test"])
