"""Small networks on scikit-learn's bundled datasets (see proxy_tasks.data).

- logistic regression on breast_cancer: stochastic and convex;
- an MLP 64-64-64-10 on digits: plain network training;
- a small CNN on digits as 1 x 8 x 8 images: 4-D weights and biases;
- an MLP autoencoder 64-32-64 on digits (held out).

The MLP and the CNN stream: they train on digit-like images drawn from a
Gaussian per class fitted to digits (proxy_tasks.data.digits_gaussians; the
CNN's are also shifted by up to a pixel), a fresh batch every step, so their
training loss is a held-out loss. On the 1,438 digits themselves they
rewarded memorising: the fastest optimizers drove the training loss to 1e-6
while their test loss grew (the CNN's Muon: 7e-7 and 6.9).

Batches are large (256-512): with small batches the seed-to-seed noise of a
tuned run swamped the differences between optimizers (benchmarks/suite_snr.py;
BENCHMARKS.md has the numbers).

Models are pure functions of a dict of parameters (vmappable over seeds).
Initialisation is PyTorch's default for Linear/Conv2d: U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch
import torch.nn.functional as F

from proxy_tasks import data as datasets
from proxy_tasks.task import Task, generator


def uniform_fan_in(shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> torch.Tensor:
    bound = 1.0 / fan_in**0.5
    return (2 * torch.rand(shape, generator=g) - 1) * bound


def linear_layers(sizes: tuple[int, ...], g: torch.Generator, prefix: str = "") -> dict[str, torch.Tensor]:
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{prefix}W{i}"] = uniform_fan_in((fan_out, fan_in), fan_in, g)
        params[f"{prefix}b{i}"] = uniform_fan_in((fan_out,), fan_in, g)
    return params


def mlp(params, x, layers: int, prefix: str = "", final_activation: bool = False):
    for i in range(layers):
        x = x @ params[f"{prefix}W{i}"].T + params[f"{prefix}b{i}"]
        if i < layers - 1 or final_activation:
            x = torch.tanh(x)
    return x


@functools.lru_cache(maxsize=None)
def _tensors(name: str) -> dict[str, torch.Tensor]:
    arrays = getattr(datasets, name)()
    return {k: torch.as_tensor(v, dtype=torch.int64 if k.startswith("y") else torch.float32) for k, v in arrays.items()}


TEST_EXAMPLES = 2048  # a streaming task's fixed held-out sample (final losses)


@functools.lru_cache(maxsize=8)
def gaussian_digits(count: int, seed: int, salt: int, shift: int = 0) -> dict[str, torch.Tensor]:
    """`count` new digit-like images and labels from digits' class Gaussians (a few kept per process).

    Classes are balanced at random; with `shift`, each image is moved by up to
    `shift` pixels along each axis (zeros, the standardised mean, fill in).
    """
    means, chols = (torch.as_tensor(a) for a in datasets.digits_gaussians())
    g = generator(seed, salt)
    y = torch.randint(10, (count,), generator=g)
    z = torch.randn(count, 64, generator=g, dtype=torch.float64)
    x = torch.empty(count, 64, dtype=torch.float64)
    for c in range(10):
        chosen = y == c
        x[chosen] = means[c] + z[chosen] @ chols[c].T
    if shift:
        side = 8 + 2 * shift
        padded = F.pad(x.reshape(count, 8, 8), (shift,) * 4)
        dy, dx = (torch.randint(2 * shift + 1, (count,), generator=g) for _ in range(2))
        rows = (dy[:, None] + torch.arange(8))[:, :, None] * side
        cols = (dx[:, None] + torch.arange(8))[:, None, :]
        x = padded.reshape(count, side * side).gather(1, (rows + cols).reshape(count, 64))
    return {"x": x.float(), "y": y}


def _streaming_digits(pool: int, seed: int, shift: int = 0) -> dict[str, torch.Tensor]:
    train, test = gaussian_digits(pool, seed, 3, shift), gaussian_digits(TEST_EXAMPLES, seed, 4, shift)
    return {"x": train["x"], "y": train["y"], "x_test": test["x"], "y_test": test["y"]}


@dataclasses.dataclass(frozen=True)
class LogisticRegression(Task):
    name: ClassVar[str] = "logistic"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 0
    description: ClassVar[str] = "logistic regression on breast_cancer (30 features), batch 256"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")

    steps: int = 100
    batch_size: int | None = 256

    def data(self, seed):
        return _tensors("breast_cancer")

    def init(self, seed):
        g = generator(seed, salt=2)
        return {"W": uniform_fan_in((1, 30), 30, g), "b": uniform_fan_in((1,), 30, g)}

    def _loss(self, params, x, y):
        logits = (x @ params["W"].T + params["b"]).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, y.float())

    def loss(self, params, batch):
        return self._loss(params, batch["x"], batch["y"])

    def eval_loss(self, params, data):
        return self._loss(params, data["x_test"], data["y_test"])


@dataclasses.dataclass(frozen=True)
class DigitsMLP(Task):
    name: ClassVar[str] = "mlp"
    version: ClassVar[str] = "3"
    tier: ClassVar[int] = 1
    description: ClassVar[str] = "MLP 64-64-64-10 (tanh) on streamed digit-like images, batch 256"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True

    steps: int = 100
    batch_size: int | None = 256
    hidden: int = 64
    pool: int = 25_600  # examples; a run uses steps x batch_size of them, each once

    def data(self, seed):
        return _streaming_digits(self.pool, seed)

    def init(self, seed):
        return linear_layers((64, self.hidden, self.hidden, 10), generator(seed, salt=2))

    def _loss(self, params, x, y):
        return F.cross_entropy(mlp(params, x, 3), y)

    def loss(self, params, batch):
        return self._loss(params, batch["x"], batch["y"])

    def train_loss(self, params, data):
        # The training objective of a stream is the population loss: measured on fresh examples.
        return self._loss(params, data["x_test"], data["y_test"])


@dataclasses.dataclass(frozen=True)
class DigitsCNN(Task):
    name: ClassVar[str] = "cnn"
    version: ClassVar[str] = "4"
    tier: ClassVar[int] = 2
    description: ClassVar[str] = "CNN conv3x3(8)-conv3x3(16)-linear on streamed digit-like 1x8x8 images, shifted"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True
    vmap_seeds: ClassVar[bool] = False  # vmapped convolutions ran slower than a loop
    steps: int = 100
    batch_size: int | None = 256
    channels: tuple[int, int] = (8, 16)
    shift: int = 1  # pixels each image moves at most, along each axis
    pool: int = 25_600

    def data(self, seed):
        return _streaming_digits(self.pool, seed, self.shift)

    def init(self, seed):
        g = generator(seed, salt=2)
        c1, c2 = self.channels
        return {
            "conv1": uniform_fan_in((c1, 1, 3, 3), 9, g), "bias1": uniform_fan_in((c1,), 9, g),
            "conv2": uniform_fan_in((c2, c1, 3, 3), 9 * c1, g), "bias2": uniform_fan_in((c2,), 9 * c1, g),
            "W": uniform_fan_in((10, c2 * 16), c2 * 16, g), "b": uniform_fan_in((10,), c2 * 16, g),
        }

    def _logits(self, params, x):
        h = x.reshape(-1, 1, 8, 8)
        h = torch.relu(F.conv2d(h, params["conv1"], params["bias1"]))  # 6 x 6
        h = torch.relu(F.conv2d(h, params["conv2"], params["bias2"]))  # 4 x 4
        return h.flatten(1) @ params["W"].T + params["b"]

    def loss(self, params, batch):
        return F.cross_entropy(self._logits(params, batch["x"]), batch["y"])

    def train_loss(self, params, data):
        return F.cross_entropy(self._logits(params, data["x_test"]), data["y_test"])


@dataclasses.dataclass(frozen=True)
class DigitsAutoencoder(Task):
    name: ClassVar[str] = "autoencoder"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 1
    held_out: ClassVar[bool] = True
    description: ClassVar[str] = "MLP autoencoder 64-32-64 (tanh) on digits, squared error, batch 512"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x",)

    steps: int = 100
    batch_size: int | None = 512
    code: int = 32

    def data(self, seed):
        return {k: v for k, v in _tensors("digits").items() if k.startswith("x")}

    def init(self, seed):
        return linear_layers((64, self.code, 64), generator(seed, salt=2))

    def _loss(self, params, x):
        return torch.mean((mlp(params, x, 2) - x) ** 2)

    def loss(self, params, batch):
        return self._loss(params, batch["x"])

    def eval_loss(self, params, data):
        return self._loss(params, data["x_test"])
