"""Kronecker-factored preconditioning (Shampoo, Gupta et al. 2018).

For a matrix gradient G (m x n), Shampoo keeps L ~ sum G G^T (m x m) and
R ~ sum G^T G (n x n) and steps along L^(-1/p) G R^(-1/p); p = 4 is Shampoo's
choice for matrices (the full-matrix AdaGrad preconditioner of vec(G) is
approximated by (L (x) R)^(1/2), and each factor takes the square root of that).

On a vector, diag(x) gives G G^T = G^T G = diag(x^2); statistics are then kept
as their diagonals and the preconditioner acts elementwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from primitives.finite import finite_or_zero, nan_unless


def gram_left(x: Tensor) -> Tensor:
    """x x^T (m x m): the left (row) Kronecker statistic."""
    return x @ x.mT


def gram_right(x: Tensor) -> Tensor:
    """x^T x (n x n): the right (column) Kronecker statistic."""
    return x.mT @ x


def gram_diagonal(x: Tensor) -> Tensor:
    """diag(x) diag(x)^T = diag(x^2), stored as its diagonal (vector layout)."""
    return x * x


def inverse_root(A: Tensor, p: float, eps: float) -> Tensor:
    """(A + eps I)^(-1/p) for symmetric PSD A, by an eigendecomposition.

    Computed in float64: the small eigenvalues of a Gram matrix are the ones
    the inverse root amplifies, and fp32 eigh loses them first. Eigenvalues
    below zero (round-off of a PSD matrix) are clamped to zero before eps.
    """
    work, finite = finite_or_zero(A.to(torch.float64))
    work = 0.5 * (work + work.mT)  # exact symmetry for eigh
    eigenvalues, Q = torch.linalg.eigh(work)
    scale = (torch.clamp(eigenvalues, min=0.0) + eps) ** (-1.0 / p)
    return nan_unless((Q * scale.unsqueeze(-2)) @ Q.mT, finite).to(A.dtype)


def kron_precondition(L: Tensor, x: Tensor, R: Tensor, p: float, eps: float) -> Tensor:
    """L^(-1/p) x R^(-1/p), each root of (statistic + eps I)."""
    return inverse_root(L, p, eps) @ x @ inverse_root(R, p, eps)


def _diagonal_inverse_root(d: Tensor, p: float, eps: float) -> Tensor:
    return (torch.clamp(d, min=0.0) + eps) ** (-1.0 / p)


def kron_precondition_vector(l: Tensor, x: Tensor, r: Tensor, p: float, eps: float) -> Tensor:
    """The diagonal case: x * (l + eps)^(-1/p) * (r + eps)^(-1/p)."""
    return x * _diagonal_inverse_root(l, p, eps) * _diagonal_inverse_root(r, p, eps)
