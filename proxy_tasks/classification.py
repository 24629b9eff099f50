"""Small networks on scikit-learn's bundled datasets (see proxy_tasks.data).

- logistic regression on breast_cancer: stochastic and convex;
- an MLP 64-64-64-10 (tanh) distilling a teacher MLP on digit-like images;
- a small CNN (3 x 3 convolutions: 4-D weights, biases) distilling a teacher
  CNN on the same images, as 1 x 8 x 8;
- an MLP autoencoder 64-32-64 on digits (held out).

The MLP and the CNN stream: their images are drawn from a Gaussian per class
fitted to digits (proxy_tasks.data.digits_gaussians), a fresh batch every
step, so their training loss is a held-out loss. On the 1,438 digits
themselves they rewarded memorising: the fastest optimizers drove the
training loss to 1e-6 while their test loss grew (the CNN's Muon: 7e-7 and
6.9). Each image's target is a teacher's class probabilities (a random
network of the student's architecture, logits scaled to a standard deviation
of `sharpness`), fitted in KL divergence: 0 is reachable and no image is a
rare, decisive mistake. With the images' sampled classes as labels instead,
the classes barely overlap (the Bayes classifier's loss is ~0.001), so the
last steps' loss was set by a few misclassified images and the seed-to-seed
noise of a score was 2-3x larger (SNR 3.4 for the MLP, 2.1 for the CNN
shifted by up to a pixel; BENCHMARKS.md has the suite's numbers now).

Batches are large (256-512): with small batches the seed-to-seed noise of a
tuned run swamped the differences between optimizers (benchmarks/suite_snr.py).

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
def gaussian_digits(count: int, seed: int, salt: int) -> torch.Tensor:
    """`count` new digit-like images (count, 64) from digits' class Gaussians, classes balanced at random.

    A few calls are kept per process (a streaming task's pool is drawn once).
    """
    means, chols = (torch.as_tensor(a) for a in datasets.digits_gaussians())
    g = generator(seed, salt)
    y = torch.randint(10, (count,), generator=g)
    z = torch.randn(count, 64, generator=g, dtype=torch.float64)
    x = torch.empty(count, 64, dtype=torch.float64)
    for c in range(10):
        chosen = y == c
        x[chosen] = means[c] + z[chosen] @ chols[c].T
    return x.float()


def teacher_stream(logits_fn, teacher: dict[str, torch.Tensor], pool: int, seed: int,
                   sharpness: float) -> dict[str, torch.Tensor]:
    """Digit-like images labelled by a teacher network's class probabilities.

    The teacher's logits are scaled to a standard deviation of `sharpness`
    (measured on the test images), so that its labels are confident but soft:
    the student, of the teacher's architecture, can fit them exactly (a loss
    of 0) and no image is a rare, decisive mistake.
    """
    x, x_test = gaussian_digits(pool, seed, 3), gaussian_digits(TEST_EXAMPLES, seed, 4)
    with torch.no_grad():
        logits, logits_test = logits_fn(teacher, x), logits_fn(teacher, x_test)
        scale = sharpness / logits_test.std()
    return {"x": x, "p": torch.softmax(scale * logits, dim=-1),
            "x_test": x_test, "p_test": torch.softmax(scale * logits_test, dim=-1)}


def distillation_loss(logits, p):
    """KL(p || softmax(logits)), mean over examples: 0 when the student matches the teacher."""
    # Written out: F.kl_div has no vmap batching rule (a slow fallback).
    return torch.mean(torch.sum(torch.special.xlogy(p, p) - p * F.log_softmax(logits, dim=-1), dim=-1))


@dataclasses.dataclass(frozen=True)
class LogisticRegression(Task):
    name: ClassVar[str] = "logistic"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 1
    # Spread (standard deviation) of 9 references' log-ratios, 3 seeds (benchmarks/suite_snr.py; BENCHMARKS.md,
    # "The selection suite"): 0.230. Scores are standardised by it (proxy_tasks/scoring.py).
    score_scale: ClassVar[float] = 0.23
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


@functools.lru_cache(maxsize=8)
def _mlp_stream(pool: int, hidden: int, sharpness: float, seed: int) -> dict[str, torch.Tensor]:
    # The teacher: the student's architecture, weights N(0, 1/fan_in)-like (3x the variance of its init).
    teacher = {k: 3**0.5 * v for k, v in linear_layers((64, hidden, hidden, 10), generator(seed, salt=5)).items()}
    return teacher_stream(lambda p, x: mlp(p, x, 3), teacher, pool, seed, sharpness)


@dataclasses.dataclass(frozen=True)
class DigitsMLP(Task):
    name: ClassVar[str] = "mlp"
    version: ClassVar[str] = "5"
    tier: ClassVar[int] = 1
    description: ClassVar[str] = "MLP 64-64-64-10 (tanh) distilling a teacher MLP on streamed digit-like images"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "p")
    streaming: ClassVar[bool] = True
    width_fields: ClassVar[tuple[str, ...]] = ("hidden",)  # the student's and its teacher's
    # Spread (standard deviation) of 9 references' log-ratios, 3 seeds (benchmarks/suite_snr.py; BENCHMARKS.md,
    # "The selection suite"): 0.086. Scores are standardised by it (proxy_tasks/scoring.py).
    score_scale: ClassVar[float] = 0.086

    steps: int = 200  # at 100, SNR 3.6 (10.1 at 200)
    batch_size: int | None = 256
    hidden: int = 64
    sharpness: float = 6.0  # standard deviation of the teacher's logits
    pool: int = 51_200  # examples; a run uses steps x batch_size of them, each once

    def data(self, seed):
        return _mlp_stream(self.pool, self.hidden, self.sharpness, seed)

    def init(self, seed):
        return linear_layers((64, self.hidden, self.hidden, 10), generator(seed, salt=2))

    def loss(self, params, batch):
        return distillation_loss(mlp(params, batch["x"], 3), batch["p"])

    def train_loss(self, params, data):
        # The training objective of a stream is the population loss: measured on fresh examples.
        return distillation_loss(mlp(params, data["x_test"], 3), data["p_test"])


def _cnn_init(channels: tuple[int, int], g: torch.Generator) -> dict[str, torch.Tensor]:
    c1, c2 = channels
    return {
        "conv1": uniform_fan_in((c1, 1, 3, 3), 9, g), "bias1": uniform_fan_in((c1,), 9, g),
        "conv2": uniform_fan_in((c2, c1, 3, 3), 9 * c1, g), "bias2": uniform_fan_in((c2,), 9 * c1, g),
        "W": uniform_fan_in((10, c2 * 16), c2 * 16, g), "b": uniform_fan_in((10,), c2 * 16, g),
    }


def _cnn_logits(params, x):
    h = x.reshape(-1, 1, 8, 8)
    h = torch.relu(F.conv2d(h, params["conv1"], params["bias1"]))  # 6 x 6
    h = torch.relu(F.conv2d(h, params["conv2"], params["bias2"]))  # 4 x 4
    return h.flatten(1) @ params["W"].T + params["b"]


@functools.lru_cache(maxsize=8)
def _cnn_stream(pool: int, channels: tuple[int, int], sharpness: float, seed: int):
    teacher = {k: 3**0.5 * v for k, v in _cnn_init(channels, generator(seed, salt=5)).items()}
    return teacher_stream(_cnn_logits, teacher, pool, seed, sharpness)


@dataclasses.dataclass(frozen=True)
class DigitsCNN(Task):
    name: ClassVar[str] = "cnn"
    version: ClassVar[str] = "5"
    tier: ClassVar[int] = 2
    description: ClassVar[str] = "CNN conv3x3(8)-conv3x3(16)-linear distilling a teacher CNN, streamed digit-like 8x8s"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "p")
    streaming: ClassVar[bool] = True
    vmap_seeds: ClassVar[bool] = False  # vmapped convolutions ran slower than a loop
    width_fields: ClassVar[tuple[str, ...]] = ("channels",)  # the student's and its teacher's
    steps: int = 100
    batch_size: int | None = 512
    channels: tuple[int, int] = (8, 16)
    sharpness: float = 6.0
    pool: int = 51_200

    def scaled(self, steps_factor: int, width_factor: int) -> DigitsCNN:
        """More channels in each layer (student and teacher) and longer, the pool grown with the steps."""
        return dataclasses.replace(self, steps=self.steps * steps_factor, pool=self.pool * steps_factor,
                                   channels=tuple(c * width_factor for c in self.channels))

    def data(self, seed):
        return _cnn_stream(self.pool, self.channels, self.sharpness, seed)

    def init(self, seed):
        return _cnn_init(self.channels, generator(seed, salt=2))

    def loss(self, params, batch):
        return distillation_loss(_cnn_logits(params, batch["x"]), batch["p"])

    def train_loss(self, params, data):
        return distillation_loss(_cnn_logits(params, data["x_test"]), data["p_test"])


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
