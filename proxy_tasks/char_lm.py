"""A character-level transformer language model on the stdlib's help text.

2 pre-norm blocks, width 48, 4 heads, context 32, GELU MLP of width 192,
learned positions, untied embedding and head (which Muon-style optimizers
give to AdamW, as their users do). The task streams: the first 80% of
pydoc_data.topics (proxy_tasks.data) is cut into non-overlapping windows of
context + 1 characters and a run reads each window at most once, so its
training loss is a held-out loss. The final losses are measured on 64 fixed
windows of the last 20% of the text.

The model is written as pure functions (transformer_init, transformer_loss)
that other language tasks share (proxy_tasks.synthetic_language).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch
import torch.nn.functional as F

from proxy_tasks import data as datasets
from proxy_tasks.task import Task, generator

EVAL_WINDOWS = 64


@functools.lru_cache(maxsize=None)
def _text(context: int) -> dict[str, torch.Tensor]:
    train, test, _ = datasets.python_help_text()
    train, test = torch.as_tensor(train), torch.as_tensor(test)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(len(test) - context - 1, (EVAL_WINDOWS,), generator=g)
    return {"ids": train, "test_windows": test[starts[:, None] + torch.arange(context + 1)]}


def _layer_norm(x, gain, bias):
    return F.layer_norm(x, x.shape[-1:], gain, bias)


def transformer_init(g: torch.Generator, vocab: int, width: int, context: int, layers: int) -> dict[str, torch.Tensor]:
    """GPT-2 style initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."""
    d = width

    def normal(*shape, std=0.02):
        return std * torch.randn(shape, generator=g)

    params = {"embed": normal(vocab, d), "pos": normal(context, d),
              "head": normal(vocab, d), "ln_gain": torch.ones(d), "ln_bias": torch.zeros(d)}
    for i in range(layers):
        params |= {
            f"ln1_gain{i}": torch.ones(d), f"ln1_bias{i}": torch.zeros(d),
            f"qkv{i}": normal(3 * d, d), f"proj{i}": normal(d, d, std=0.02 / (2 * layers) ** 0.5),
            f"ln2_gain{i}": torch.ones(d), f"ln2_bias{i}": torch.zeros(d),
            f"fc{i}": normal(4 * d, d), f"fc_proj{i}": normal(d, 4 * d, std=0.02 / (2 * layers) ** 0.5),
        }
    return params


def transformer_loss(params, windows, layers: int, heads: int):
    """Mean next-token cross-entropy of a causal transformer on (batch, length + 1) token windows."""
    x_ids, targets = windows[:, :-1], windows[:, 1:]
    batch, length = x_ids.shape
    d = params["embed"].shape[-1]
    h = heads
    x = params["embed"][x_ids] + params["pos"][:length]
    causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    for i in range(layers):
        y = _layer_norm(x, params[f"ln1_gain{i}"], params[f"ln1_bias{i}"])
        q, k, v = (y @ params[f"qkv{i}"].T).reshape(batch, length, 3, h, d // h).unbind(2)
        scores = torch.einsum("bqhc,bkhc->bhqk", q, k) / (d // h) ** 0.5
        attention = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = torch.einsum("bhqk,bkhc->bqhc", attention, v).reshape(batch, length, d)
        x = x + y @ params[f"proj{i}"].T
        y = _layer_norm(x, params[f"ln2_gain{i}"], params[f"ln2_bias{i}"])
        x = x + F.gelu(y @ params[f"fc{i}"].T) @ params[f"fc_proj{i}"].T
    logits = _layer_norm(x, params["ln_gain"], params["ln_bias"]) @ params["head"].T
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclasses.dataclass(frozen=True)
class CharTransformer(Task):
    name: ClassVar[str] = "char_lm"
    version: ClassVar[str] = "3"
    tier: ClassVar[int] = 3
    description: ClassVar[str] = "char transformer LM, 2 layers d=48, streamed windows of pydoc_data.topics"
    adamw_params: ClassVar[tuple[str, ...]] = ("embed", "pos", "head")
    streaming: ClassVar[bool] = True
    width_fields: ClassVar[tuple[str, ...]] = ("width",)

    steps: int = 200
    batch_size: int | None = 16
    width: int = 48
    layers: int = 2
    heads: int = 4
    context: int = 32

    @property
    def vocab(self) -> int:
        return len(datasets.python_help_text()[2])

    def data(self, seed):
        return _text(self.context)

    def example_count(self, data):
        """Non-overlapping windows of context + 1 characters in the training text."""
        return len(data["ids"]) // (self.context + 1)

    def sample(self, data, index):
        span = self.context + 1
        return {"windows": data["ids"][index[:, None] * span + torch.arange(span, device=index.device)]}

    def init(self, seed):
        return transformer_init(generator(seed, salt=2), self.vocab, self.width, self.context, self.layers)

    def scaled(self, steps_factor: int, width_factor: int) -> CharTransformer:
        """Wider and longer, with batches cut to what the text holds: a stream never repeats a window."""
        wider = super().scaled(steps_factor, width_factor)
        windows = self.example_count(self.data(0))
        return dataclasses.replace(wider, batch_size=min(wider.batch_size, windows // wider.steps))

    def loss(self, params, batch):
        return transformer_loss(params, batch["windows"], self.layers, self.heads)

    def train_loss(self, params, data):
        # A stream's training objective is the loss on text it has not read: the held-out windows.
        return self.loss(params, {"windows": data["test_windows"]})
