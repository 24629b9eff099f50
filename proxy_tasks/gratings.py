"""A small CNN classifying the orientation of noisy gratings (held out, streaming).

Each image (1 x 12 x 12) is a sinusoidal grating under a Gaussian envelope,
plus white noise: orientation one of `classes` directions (the label), jittered
by up to a quarter of the gap between them; spatial frequency, phase, the
envelope's centre and width drawn at random. A different dataset from the
training CNN's digits, with the same layer types (3 x 3 convolutions, ReLU,
average pooling, a linear head). Images are generated in advance (a pool of
steps x batch_size, each used once): the task streams.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from proxy_tasks.classification import uniform_fan_in
from proxy_tasks.task import Task, generator

TEST_EXAMPLES = 2048


def gratings(count: int, side: int, classes: int, noise: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    y = torch.randint(classes, (count,), generator=g)

    def uniform(low, high):
        return low + (high - low) * torch.rand(count, 1, 1, generator=g, dtype=torch.float64)

    gap = math.pi / classes
    theta = y.reshape(-1, 1, 1) * gap + uniform(-gap / 4, gap / 4)
    frequency, phase = uniform(0.12, 0.3), uniform(0, 2 * math.pi)
    cy, cx, width = uniform(0.3 * side, 0.7 * side), uniform(0.3 * side, 0.7 * side), uniform(0.15 * side, 0.3 * side)
    r = torch.arange(side, dtype=torch.float64)
    rows, cols = r.reshape(1, -1, 1), r.reshape(1, 1, -1)
    wave = torch.cos(2 * math.pi * frequency * (cols * torch.cos(theta) + rows * torch.sin(theta)) + phase)
    envelope = torch.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * width**2))
    x = envelope * wave + noise * torch.randn(count, side, side, generator=g, dtype=torch.float64)
    return {"x": x.reshape(count, 1, side, side).float(), "y": y}


@functools.lru_cache(maxsize=8)
def _stream(count, side, classes, noise, seed) -> dict[str, torch.Tensor]:
    train = gratings(count, side, classes, noise, generator(seed, salt=3))
    test = gratings(TEST_EXAMPLES, side, classes, noise, generator(seed, salt=4))
    return {"x": train["x"], "y": train["y"], "x_test": test["x"], "y_test": test["y"]}


@dataclasses.dataclass(frozen=True)
class GratingsCNN(Task):
    name: ClassVar[str] = "gratings_cnn"
    version: ClassVar[str] = "2"
    tier: ClassVar[int] = 2
    held_out: ClassVar[bool] = True
    description: ClassVar[str] = "CNN conv3x3(8)-conv3x3(16)-avgpool-linear, orientation of 12x12 gratings, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("x", "y")
    streaming: ClassVar[bool] = True
    vmap_seeds: ClassVar[bool] = False  # as the digits CNN: vmapped convolutions ran slower than a loop

    steps: int = 100
    batch_size: int | None = 512  # at 128 and 256, SGD's and SGDM's seed-to-seed noise hid the others (SNR 2.5, 3.3)
    side: int = 12
    classes: int = 6
    noise: float = 0.5
    channels: tuple[int, int] = (8, 16)
    pool: int = 51_200

    def data(self, seed):
        return _stream(self.pool, self.side, self.classes, self.noise, seed)

    def init(self, seed):
        g = generator(seed, salt=2)
        c1, c2 = self.channels
        features = c2 * ((self.side - 4) // 2) ** 2
        return {
            "conv1": uniform_fan_in((c1, 1, 3, 3), 9, g), "bias1": uniform_fan_in((c1,), 9, g),
            "conv2": uniform_fan_in((c2, c1, 3, 3), 9 * c1, g), "bias2": uniform_fan_in((c2,), 9 * c1, g),
            "W": uniform_fan_in((self.classes, features), features, g),
            "b": uniform_fan_in((self.classes,), features, g),
        }

    def _logits(self, params, x):
        h = torch.relu(F.conv2d(x, params["conv1"], params["bias1"]))
        h = torch.relu(F.conv2d(h, params["conv2"], params["bias2"]))
        h = F.avg_pool2d(h, 2)
        return h.flatten(1) @ params["W"].T + params["b"]

    def loss(self, params, batch):
        return F.cross_entropy(self._logits(params, batch["x"]), batch["y"])

    def train_loss(self, params, data):
        return F.cross_entropy(self._logits(params, data["x_test"]), data["y_test"])
