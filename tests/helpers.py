"""Shared test helpers: sample inputs for primitives, tiny training problems."""

from __future__ import annotations

import torch

from primitives import Kind, KindError, Layout, Primitive
from primitives.kinds import core_shape


def argument_kinds(prim: Primitive) -> tuple[Kind, ...]:
    """One valid tuple of argument kinds for `prim`."""
    candidates = [
        (Kind.PARAM,) * prim.arity,
        (Kind.PARAM,) * (prim.arity - 1) + (Kind.SCALAR,),
        (Kind.ROW, Kind.PARAM, Kind.COL),
        (Kind.ROWVEC, Kind.COLVEC),
    ]
    for kinds in candidates:
        if len(kinds) == prim.arity:
            try:
                prim.result_kind(kinds)
                return kinds
            except KindError:
                pass
    raise AssertionError(f"no valid argument kinds found for {prim.name}")


def sample_value(
    kind: Kind, layout: Layout, batch: tuple[int, ...], m: int, n: int, dtype, generator, scale: float = 1.0
) -> torch.Tensor:
    shape = batch + core_shape(kind, layout, m, n)
    if kind is Kind.SCALAR:
        # SCALAR arguments are step counts (debias) or weights (mix): keep them in (0, 4].
        return torch.full(shape, 3.0, dtype=dtype)
    x = scale * torch.randn(shape, dtype=dtype, generator=generator)
    if kind in (Kind.ROW, Kind.COL) and layout is Layout.MATRIX:
        return x @ x.mT  # a Gram statistic is symmetric PSD
    if kind in (Kind.ROW, Kind.COL, Kind.ROWVEC, Kind.COLVEC):
        return x * x  # diagonals and mean squares are non-negative
    return x


def sample_arguments(prim, layout, batch=(2,), m=5, n=3, dtype=torch.float64, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [sample_value(k, layout, batch, m, n, dtype, generator, scale) for k in argument_kinds(prim)]


def default_consts(prim: Primitive) -> dict[str, float]:
    return {c.name: c.default for c in prim.consts}


def train_quadratic_mlp(optimizer_factory, steps: int = 200, seed: int = 0) -> tuple[float, float]:
    """Loss before and after training a 2-layer tanh MLP on a smooth regression."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(128, 8)
    y = torch.sin(x[:, :1]) * x[:, 1:2]
    optimizer = optimizer_factory(model.parameters())
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]
