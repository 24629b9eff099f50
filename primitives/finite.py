"""Matrix decompositions on batches that may hold non-finite matrices.

torch.linalg's svd, eigh and cholesky raise on a NaN or inf anywhere in a
batch. In training that is the wrong answer twice over: a diverged run
should read as diverged (NaN loss, which the task runner records), and one
diverged seed among seeds trained side by side must not stop the others.
So the matrix primitives decompose `finite_or_zero(x)` and mark the
matrices that were not finite as NaN in the result: NaN in, NaN out, per
matrix, with no host synchronisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def finite_or_zero(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x with every matrix that holds a NaN or inf replaced by zeros, mask (..., 1, 1) of the finite ones)."""
    finite = torch.isfinite(x).all(dim=-1, keepdim=True).all(dim=-2, keepdim=True)
    return torch.where(finite, x, 0.0), finite


def nan_unless(result: Tensor, finite: Tensor) -> Tensor:
    """`result` with NaN for every matrix whose input was not finite (finite broadcasts against it)."""
    return torch.where(finite, result, math.nan)
