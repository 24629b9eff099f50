"""Factored second moment (Adafactor, Shazeer & Stern 2018).

Instead of an m x n EMA of G^2, keep its row means R (m x 1) and column means
C (1 x n); the rank-1 estimate V = R C / mean(R) is exact whenever G^2 is
rank one, and costs m + n numbers instead of m n.

A vector is read as a 1 x n row: R is then mean(x^2) (shape (1,)) and C is x^2
itself, and V = R C / R = C is Adafactor's unfactored second moment for 1-D
parameters, with no special case.
"""

from __future__ import annotations

import torch
from torch import Tensor


def row_mean_sq(x: Tensor) -> Tensor:
    """mean over columns of x^2: (..., m, 1)."""
    return torch.mean(x * x, dim=-1, keepdim=True)


def col_mean_sq(x: Tensor) -> Tensor:
    """mean over rows of x^2: (..., 1, n)."""
    return torch.mean(x * x, dim=-2, keepdim=True)


def row_mean_sq_vector(x: Tensor) -> Tensor:
    """A vector as a 1 x n row: its single row mean, mean(x^2), shape (..., 1)."""
    return torch.mean(x * x, dim=-1, keepdim=True)


def col_mean_sq_vector(x: Tensor) -> Tensor:
    """A vector as a 1 x n row: each column mean is x_j^2 itself."""
    return x * x


def factored_second_moment(R: Tensor, C: Tensor, eps: float) -> Tensor:
    """V = R C / max(mean(R), eps) (torch.optim.Adafactor's estimate), shape (..., m, n)."""
    return (R @ C) / torch.clamp(torch.mean(R, dim=-2, keepdim=True), min=eps)


def factored_second_moment_vector(R: Tensor, C: Tensor, eps: float) -> Tensor:
    """The 1 x n row case: R has one entry, so V = R C / max(R, eps)."""
    return R * C / torch.clamp(R, min=eps)
