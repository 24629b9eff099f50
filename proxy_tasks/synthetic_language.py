"""A transformer language model on a synthetic language (held out).

The language is a random second-order Markov chain over `vocab` tokens: after
each pair of tokens (a, b), the next token is one of `branching` tokens chosen
at random for that pair, with probabilities from a softmax of Gaussian
logits (one language per seed). Predicting it well takes attention to the
two previous positions and a table of vocab^2 contexts; its entropy is the
loss floor. Sequences of context + 1 tokens are generated in advance (a pool
of steps x batch_size of them) and a run reads each once: the task streams,
so its training loss is a held-out loss. The final losses are measured on 64
further sequences.

The model is the char LM's transformer (proxy_tasks.char_lm), smaller.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import torch

from proxy_tasks.char_lm import transformer_init, transformer_loss
from proxy_tasks.task import Task, generator

EVAL_SEQUENCES = 64


@functools.lru_cache(maxsize=8)
def markov_language(vocab: int, branching: int, sharpness: float, seed: int) -> torch.Tensor:
    """(vocab, vocab, vocab) next-token probabilities given the two previous tokens."""
    g = generator(seed, salt=3)
    logits = torch.full((vocab * vocab, vocab), float("-inf"))
    allowed = torch.rand(vocab * vocab, vocab, generator=g).argsort(dim=1)[:, :branching]
    logits.scatter_(1, allowed, sharpness * torch.randn(vocab * vocab, branching, generator=g))
    return torch.softmax(logits, dim=1).reshape(vocab, vocab, vocab)


def sample_sequences(table: torch.Tensor, count: int, length: int, g: torch.Generator) -> torch.Tensor:
    """`count` sequences of `length` tokens from the chain, each started by two uniform tokens."""
    vocab = table.shape[0]
    tokens = torch.empty(count, length, dtype=torch.int64)
    tokens[:, :2] = torch.randint(vocab, (count, 2), generator=g)
    for t in range(2, length):
        probs = table[tokens[:, t - 2], tokens[:, t - 1]]
        tokens[:, t] = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return tokens


@functools.lru_cache(maxsize=8)
def _pool(vocab, branching, sharpness, length, pool, seed) -> dict[str, torch.Tensor]:
    table = markov_language(vocab, branching, sharpness, seed)
    return {"windows": sample_sequences(table, pool, length, generator(seed, salt=4)),
            "test_windows": sample_sequences(table, EVAL_SEQUENCES, length, generator(seed, salt=5))}


@dataclasses.dataclass(frozen=True)
class SyntheticLanguage(Task):
    name: ClassVar[str] = "synthetic_lm"
    version: ClassVar[str] = "1"
    tier: ClassVar[int] = 3
    held_out: ClassVar[bool] = True
    description: ClassVar[str] = "transformer LM, 2 layers d=32, on a random 2nd-order Markov language, streamed"
    minibatch_keys: ClassVar[tuple[str, ...]] = ("windows",)
    adamw_params: ClassVar[tuple[str, ...]] = ("embed", "pos", "head")
    streaming: ClassVar[bool] = True

    steps: int = 200
    batch_size: int | None = 16
    width: int = 32
    layers: int = 2
    heads: int = 4
    context: int = 32
    vocab: int = 16
    branching: int = 3  # possible next tokens after each pair
    sharpness: float = 1.0  # scale of their logits
    pool: int = 3_200  # sequences; a run reads steps x batch_size of them, each once

    def data(self, seed):
        return _pool(self.vocab, self.branching, self.sharpness, self.context + 1, self.pool, seed)

    def init(self, seed):
        return transformer_init(generator(seed, salt=2), self.vocab, self.width, self.context, self.layers)

    def loss(self, params, batch):
        return transformer_loss(params, batch["windows"], self.layers, self.heads)

    def train_loss(self, params, data):
        return self.loss(params, {"windows": data["test_windows"]})
