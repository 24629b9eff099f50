"""Norms and normalisers.

Reductions act on the trailing `core_ndim` dimensions (2 for a matrix, 1 for a
vector) and keep them as size-1 dimensions, so the result is a SCALAR value
that broadcasts against the parameter. Leading dimensions are batch dimensions.

The element statistics (rms, Frobenius, inner product) mean the same thing in
both layouts. The spectral and nuclear norms are matrix norms; on a vector they
are the norms of diag(x): max|x_i| and sum|x_i|.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from primitives.finite import finite_or_zero, nan_unless

# x / (rms(x) + NORMALIZE_EPS): the eps only matters for an all-zero input,
# which then stays zero instead of becoming NaN.
NORMALIZE_EPS = 1e-12
# Power iterations for the spectral norm. The estimate's relative error decays
# like (sigma_2 / sigma_1)^(2k); 16 steps give < 1e-3 for a gap of 20%, and it
# is always a lower bound on the true norm.
POWER_ITERATIONS = 16


def _dims(core_ndim: int) -> tuple[int, ...]:
    return tuple(range(-core_ndim, 0))


def rms(x: Tensor, core_ndim: int) -> Tensor:
    """sqrt(mean(x^2)) over the core dimensions."""
    return torch.sqrt(torch.mean(x * x, dim=_dims(core_ndim), keepdim=True))


def frobenius(x: Tensor, core_ndim: int) -> Tensor:
    """||x||_F = sqrt(sum(x^2)) over the core dimensions (||x||_2 for a vector)."""
    return torch.sqrt(torch.sum(x * x, dim=_dims(core_ndim), keepdim=True))


def inner(a: Tensor, b: Tensor, core_ndim: int) -> Tensor:
    """<a, b> = sum(a * b). With b = polar(a) this is the nuclear norm of a."""
    return torch.sum(a * b, dim=_dims(core_ndim), keepdim=True)


def normalize(x: Tensor, core_ndim: int) -> Tensor:
    """x / rms(x): unit-RMS direction (zero stays zero)."""
    return x / (rms(x, core_ndim) + NORMALIZE_EPS)


def rms_clip(x: Tensor, d: float, core_ndim: int) -> Tensor:
    """x / max(1, rms(x) / d): Adafactor's update clipping at RMS d."""
    return x / torch.clamp(rms(x, core_ndim) / d, min=1.0)


def scale_by_param_rms(u: Tensor, w: Tensor, eps: float, core_ndim: int) -> Tensor:
    """u * max(eps, rms(w)): Adafactor's relative step size (optax's scale_by_param_block_rms)."""
    return u * torch.clamp(rms(w, core_ndim), min=eps)


@functools.lru_cache(maxsize=256)
def _probe_vector(n: int, dtype: torch.dtype, device: str) -> Tensor:
    """A fixed unit start vector for power iteration (deterministic, no global RNG).

    A seeded Gaussian vector is orthogonal to the top singular vector with
    probability zero, unlike ones(n), which fails on e.g. [[1, -1]].
    """
    generator = torch.Generator().manual_seed(n)
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def spectral_norm(x: Tensor, iterations: int = POWER_ITERATIONS) -> Tensor:
    """sigma_max(x) by power iteration on x^T x, from a fixed start vector.

    Returns shape (..., 1, 1). Exact for rank-1 inputs; for zero input, 0. The
    iteration runs on x / max|x_ij| and scales back: x^T x v squares x's
    entries, which overflows from |x| ~ 1e154 in float64 (1e19 in float32)
    and would make v, and the norm, 0.
    """
    n = x.shape[-1]
    scale = torch.clamp(torch.amax(torch.abs(x), dim=(-2, -1), keepdim=True), min=torch.finfo(x.dtype).tiny)
    x = x / scale
    v = _probe_vector(n, x.dtype, str(x.device)).expand(*x.shape[:-2], n).unsqueeze(-1)
    for _ in range(iterations):
        v = x.mT @ (x @ v)
        v = v / (torch.linalg.vector_norm(v, dim=-2, keepdim=True) + torch.finfo(x.dtype).tiny)
    return scale * torch.linalg.vector_norm(x @ v, dim=-2, keepdim=True)


def spectral_norm_vector(x: Tensor) -> Tensor:
    """||diag(x)||_2 = max_i |x_i|."""
    return torch.amax(torch.abs(x), dim=-1, keepdim=True)


def nuclear_norm(x: Tensor) -> Tensor:
    """||x||_* = sum of singular values (exact, via svdvals). Shape (..., 1, 1)."""
    work, finite = finite_or_zero(x)
    return nan_unless(torch.linalg.svdvals(work).sum(dim=-1)[..., None, None], finite)


def nuclear_norm_vector(x: Tensor) -> Tensor:
    """||diag(x)||_* = sum_i |x_i|."""
    return torch.sum(torch.abs(x), dim=-1, keepdim=True)


def aspect_scale(x: Tensor) -> Tensor:
    """x * sqrt(max(1, m / n)) for an m x n matrix: Muon's shape factor.

    A semi-orthogonal m x n update has RMS 1/sqrt(max(m, n)); after this factor
    its RMS is 1/sqrt(n) whether the matrix is tall or wide, so it depends on
    the fan-in only (KellerJordan/Muon). On a vector (a square diag(x)) the
    factor is 1.
    """
    return x * aspect_factor(x.shape[-2], x.shape[-1])


def aspect_factor(rows: int, cols: int) -> float:
    """sqrt(max(1, rows / cols)), the factor of aspect_scale."""
    return max(1.0, rows / cols) ** 0.5


def aspect_scale_vector(x: Tensor) -> Tensor:
    """diag(x) is square, so Muon's shape factor is 1."""
    return x
