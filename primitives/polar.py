"""The orthogonal polar factor polar(X) = U V^T of X = U S V^T, by four backends.

    ns             Newton-Schulz quintic with Muon's coefficients (KellerJordan/Muon)
    polar_express  the Polar Express schedule (Amsel et al. 2025, arXiv 2505.16932)
    qdwh           dynamically weighted Halley (Nakatsukasa et al. 2010), see qdwh.py
    svd            exact, from a singular value decomposition

The polynomial backends (ns, polar_express) only approximate U V^T: they map
every singular value of the Frobenius-normalised input through a fixed scalar
polynomial, so the result is U phi(S / ||X||_F) V^T. Muon is designed around
this: phi lands in roughly [0.5, 1.2] after 5 steps, which trains as well as the
exact factor and costs a handful of matmuls (in bfloat16 on a GPU).

All backends take (..., m, n) with any leading batch dimensions, handle tall
and wide matrices, and map zero singular values to zero (a zero or rank-
deficient input gives no NaN; the exact factor is then the partial isometry).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from primitives.finite import finite_or_zero, nan_unless
from primitives.qdwh import qdwh

Coefficients = tuple[float, float, float]

# KellerJordan/Muon: coefficients chosen to maximise the slope at zero, so that
# small singular values grow fast; 5 steps map [1e-3, 1] into [0.47, 1.20].
MUON_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)
# timlautk/polargrad's PolarGrad class default (c = 2.031, not 2.0315).
POLARGRAD_NS_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.031)
# KJ normalises by ||X||_F + 1e-7 so that sigma_max <= 1 and zero stays zero.
NS_EPS = 1e-7

# Polar Express, paper Algorithm 1 (NoahAmsel/PolarExpress polar_express/basic.py).
# Each step's quintic is the minimax-optimal odd polynomial for the interval
# that the previous steps leave; the last entry is the limit (15/8, -10/8, 3/8).
_POLAR_EXPRESS_RAW: tuple[Coefficients, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
# Safety factor 1.01: each non-final polynomial is evaluated at x / 1.01
# (a / s, b / s^3, c / s^5), so round-off that pushes a singular value slightly
# past the interval the polynomial was fitted on cannot blow it up.
PE_SAFETY = 1.01
POLAR_EXPRESS_COEFFICIENTS: tuple[Coefficients, ...] = tuple(
    (a / PE_SAFETY, b / PE_SAFETY**3, c / PE_SAFETY**5) for a, b, c in _POLAR_EXPRESS_RAW[:-1]
) + (_POLAR_EXPRESS_RAW[-1],)

BACKENDS = ("ns", "polar_express", "qdwh", "svd")
# Iterations when the caller does not say: Muon's 5; 5 for Polar Express (its
# authors suggest 5-8); 6 for QDWH, which converges from eps in fp64 in 6.
DEFAULT_STEPS = {"ns": 5, "polar_express": 5, "qdwh": 6, "svd": 0}


def coefficient_schedule(
    coefficients: Coefficients | Sequence[Coefficients], steps: int
) -> list[Coefficients]:
    """One (a, b, c) per step: a single triple repeats; a schedule repeats its last entry."""
    if len(coefficients) == 3 and all(isinstance(c, (int, float)) for c in coefficients):
        return [tuple(coefficients)] * steps  # type: ignore[list-item]
    table = list(coefficients)
    return [table[min(k, len(table) - 1)] for k in range(steps)]  # type: ignore[misc]


def newton_schulz(
    x: Tensor,
    coefficients: Coefficients | Sequence[Coefficients] = MUON_COEFFICIENTS,
    steps: int = 5,
    *,
    compute_dtype: torch.dtype | None = torch.bfloat16,
    norm_scale: float = 1.0,
    eps: float = NS_EPS,
) -> Tensor:
    """Odd quintic iteration X <- a X + (b A + c A^2) X with A = X X^T.

    Same operations in the same order as KellerJordan/Muon's
    zeropower_via_newtonschulz5: cast, transpose tall inputs so that A is the
    small Gram matrix, normalise by norm_scale * ||X||_F + eps. The result is in
    compute_dtype (None keeps the input dtype).
    """
    X = x if compute_dtype is None else x.to(compute_dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * norm_scale + eps)
    for a, b, c in coefficient_schedule(coefficients, steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X


def polar_express(x: Tensor, steps: int = 5, *, compute_dtype: torch.dtype | None = torch.bfloat16) -> Tensor:
    """Polar Express: the quintic schedule above after X / (1.01 ||X||_F + 1e-7)."""
    return newton_schulz(
        x, POLAR_EXPRESS_COEFFICIENTS, steps, compute_dtype=compute_dtype, norm_scale=PE_SAFETY
    )


# Singular values below this fraction of the largest count as zero in the exact
# factor, so that it is the partial isometry (what ns and qdwh converge to)
# rather than arbitrary directions for the null space.
SVD_RANK_TOL = 1e-12


def polar_svd(x: Tensor) -> Tensor:
    """Exact U V^T from a thin SVD, computed in at least float64 precision on CPU."""
    work, finite = finite_or_zero(x.to(torch.float64) if x.device.type == "cpu" else x)
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    keep = (S > SVD_RANK_TOL * S[..., :1]).to(work.dtype)
    return nan_unless((U * keep.unsqueeze(-2)) @ Vh, finite).to(x.dtype)


def polar(
    x: Tensor,
    backend: str = "ns",
    steps: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """polar(x) by `backend` with `steps` iterations (default DEFAULT_STEPS[backend]).

    compute_dtype applies to the polynomial backends (None: the input dtype);
    QDWH works in the input dtype (QR has no bf16 kernel) and SVD in float64.
    The result has the input's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown polar backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    steps = DEFAULT_STEPS[backend] if steps is None else steps
    if backend == "ns":
        out = newton_schulz(x, MUON_COEFFICIENTS, steps, compute_dtype=compute_dtype)
    elif backend == "polar_express":
        out = polar_express(x, steps, compute_dtype=compute_dtype)
    elif backend == "qdwh":
        out = qdwh(x, steps)
    else:
        out = polar_svd(x)
    return out.to(x.dtype)


def nuclear_scaled_polar(x: Tensor, **polar_options) -> Tensor:
    """<x, polar(x)> polar(x): PolarGrad's step, the nuclear norm times the factor.

    <X, U V^T> = tr(S) = ||X||_* for the exact factor; with an approximate
    factor it is the same estimate PolarGrad uses (timlautk/polargrad).
    """
    u = polar(x, **polar_options)
    return torch.sum(x * u, dim=(-2, -1), keepdim=True) * u


def polar_vector(x: Tensor, **_backend_options) -> Tensor:
    """polar(diag(x)) = diag(sign(x)), exactly, whatever the backend."""
    return torch.sign(x)


def nuclear_scaled_polar_vector(x: Tensor, **_backend_options) -> Tensor:
    """<diag(x), sign(diag(x))> sign(x) = sum|x_i| sign(x)."""
    return torch.sum(torch.abs(x), dim=-1, keepdim=True) * torch.sign(x)
