"""QDWH: the polar factor by dynamically weighted Halley iterations.

Nakatsukasa, Bai & Gygi (2010), as in JAX's lax.linalg.qdwh and timlautk/
polargrad's qdwh.py (PolarGrad's default oracle). For X with sigma_max <= 1 and
a lower bound l <= sigma_min, each step applies the rational map

    f(s) = s (a + b s^2) / (1 + c s^2)

to every singular value, with (a, b, c) chosen from l so that [l, 1] lands as
close to 1 as a degree-(3, 2) map can; l grows cubically, so from l = eps it
reaches 1 in 4 steps in fp32 and 6 in fp64. A step is evaluated as

    QR form (c > 100, where U^T U + I/c is ill-conditioned):
        [sqrt(c) U; I] = Q R,  U <- (b/c) U + (a - b/c)/sqrt(c) Q1 Q2^T
    Cholesky form:
        Z = c U^T U + I,       U <- (b/c) U + (a - b/c) U Z^-1

and one Newton-Schulz step U <- 1.5 U - 0.5 U U^T U finishes. The iteration
count is exact and data-independent (no convergence test), so it batches and
vmaps, and truncated runs reproduce PolarGrad's default (2 iterations, whose
result is *not* orthogonal: singular values land in about [0.73, 1]).
Steps past the weighted schedule are plain Halley (3, 1, 3), for which every
orthogonal U is a fixed point, so extra iterations cost time but not accuracy.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from primitives.finite import finite_or_zero, nan_unless

# Above this c the Cholesky form's Z = c U^T U + I is too ill-conditioned
# (JAX and PolarGrad switch forms at the same point).
QR_THRESHOLD = 100.0


@functools.lru_cache(maxsize=64)
def qdwh_coefficients(eps: float, iterations: int) -> tuple[tuple[float, float, float], ...]:
    """The (a, b, c) of each step, starting from the lower bound l = eps.

    Weighted steps run while l + 5 eps < 1; the rest are Halley's (3, 1, 3).
    """
    l, tol = eps, 5 * eps
    steps: list[tuple[float, float, float]] = []
    while l + tol < 1 and len(steps) < iterations:
        l2 = l * l
        d = (4.0 * (1.0 / l2 - 1.0) / l2) ** (1.0 / 3.0)
        s = math.sqrt(1.0 + d)
        a = s + math.sqrt(2.0 - d + 2.0 * (2.0 - l2) / (l2 * s))
        b = (a - 1.0) ** 2 / 4.0
        c = a + b - 1.0
        steps.append((a, b, c))
        l = l * (a + b * l2) / (1.0 + c * l2)
    steps.extend([(3.0, 1.0, 3.0)] * (iterations - len(steps)))
    return tuple(steps)


def _qr_step(U: Tensor, a: float, b: float, c: float) -> Tensor:
    n = U.shape[-1]
    eye = torch.eye(n, dtype=U.dtype, device=U.device).expand(*U.shape[:-2], n, n)
    Q, _ = torch.linalg.qr(torch.cat([math.sqrt(c) * U, eye], dim=-2), mode="reduced")
    Q1, Q2 = Q[..., : U.shape[-2], :], Q[..., U.shape[-2] :, :]
    return (b / c) * U + ((a - b / c) / math.sqrt(c)) * (Q1 @ Q2.mT)


def _cholesky_step(U: Tensor, a: float, b: float, c: float) -> Tensor:
    n = U.shape[-1]
    Z = c * (U.mT @ U) + torch.eye(n, dtype=U.dtype, device=U.device)
    L = torch.linalg.cholesky(Z)
    U_Zinv = torch.cholesky_solve(U.mT, L).mT  # Z symmetric: U Z^-1 = (Z^-1 U^T)^T
    return (b / c) * U + (a - b / c) * U_Zinv


def qdwh(x: Tensor, iterations: int = 6) -> Tensor:
    """Polar factor of x (..., m, n) by `iterations` QDWH steps in x's dtype."""
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"qdwh needs float32 or float64 input (QR has no {x.dtype} kernel), got {x.dtype}")
    x, finite = finite_or_zero(x)  # Cholesky raises on NaN: keep NaN per matrix instead
    wide = x.size(-2) < x.size(-1)
    U = x.mT if wide else x
    # alpha = sqrt(||X||_1 ||X||_inf) >= sigma_max, so U / alpha has sigma_max <= 1.
    one_norm = U.abs().sum(dim=-2).amax(dim=-1)
    inf_norm = U.abs().sum(dim=-1).amax(dim=-1)
    alpha = torch.sqrt(one_norm * inf_norm)
    alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    U = U / alpha[..., None, None]
    for a, b, c in qdwh_coefficients(torch.finfo(x.dtype).eps, iterations):
        U = _qr_step(U, a, b, c) if c > QR_THRESHOLD else _cholesky_step(U, a, b, c)
    U = 1.5 * U - 0.5 * U @ (U.mT @ U)
    return nan_unless(U.mT if wide else U, finite)
