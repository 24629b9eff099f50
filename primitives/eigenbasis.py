"""Eigenbases of Kronecker statistics, kept as state, and rotations into and out of them.

SOAP (Vyas et al. 2024) and eigenvalue-corrected Shampoo (George et al. 2018)
run a diagonal method (Adam, Adafactor) in the eigenbasis of Shampoo's
statistics L ~ E[G G^T] (m x m) and R ~ E[G^T G] (n x n) instead of taking
their inverse roots. The basis is state: it is computed exactly once, then
refreshed cheaply every k steps by one step of subspace iteration:

    eigenbasis(F, Q, t; k)
        t <= 1                  the eigenvectors of F (eigh), largest eigenvalue first
        t - 1 a multiple of k   one power-iteration step warm-started at Q:
                                Q's columns ordered by Rayleigh quotient diag(Q^T F Q),
                                largest first, F Q orthonormalised by QR, and each new
                                column put back in the slot its old column came from
        otherwise               Q, unchanged

    rotate_in(Q_L, X, Q_R)  = Q_L^T X Q_R      X in the eigenbasis
    rotate_out(Q_L, X, Q_R) = Q_L X Q_R^T      back

Columns keep their slots across refreshes, so values kept in the basis (the
second moment v, entry (i, j) belonging to column i of Q_L and column j of
Q_R) stay attached to their directions without being moved. SOAP instead
leaves the refreshed columns in the sorted order and permutes v to follow;
the two are the same numbers in other places (the same QR of the same
sorted matrix), so a program agrees with SOAP to round-off.

Signs are fixed so that the basis does not depend on the LAPACK build or the
device: after eigh the entry of largest magnitude of every column is
positive, after QR every column has a positive inner product with the column
of F Q it orthonormalises (diag(R) >= 0, the Gram-Schmidt convention). A
sign changes nothing an Adam-in-the-basis rule computes: flipping column i
flips row i of the rotated values and of m, and leaves v and the rotated-back
step as they were, bit for bit.

A register of bases starts at zero (nothing rotates before the first step
computes one): SOAP's first step, which only builds its preconditioner and
does not move, falls out of that.

Decompositions run in float32 (float64 for float64 values), with upstream
SOAP's 1e-30 I added before eigh and a float64 retry if eigh fails. A matrix
with a NaN or inf gives a NaN basis (per matrix, with no exception, as the
other matrix primitives). Whether any matrix of a batch needs a decomposition
this step is decided on the host (one synchronisation per call), so a step
that neither starts nor refreshes costs nothing.

On a vector (the VECTOR layout) a statistic is diagonal: its eigenvectors are
the coordinate axes, each in its own slot. The basis is then the identity,
stored as its diagonal (ones), and the rotations are elementwise products
(diag(q_l) diag(x) diag(q_r)); SOAP's 1-D parameters (no precondition_1d)
get exactly Adam from that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from primitives.finite import finite_or_zero, nan_unless

# Added to a statistic before eigh (upstream SOAP's guard; a no-op unless the statistic is zero).
EIGH_JITTER = 1e-30


def refresh_schedule(t: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """(first, refresh) masks: t <= 1, and t > 1 with t - 1 a multiple of round(k) (k at least 1)."""
    every = max(1, round(k))
    first = t <= 1
    refresh = (t > 1) & (torch.remainder(t - 1, every) == 0)
    return first, refresh


def _decomposition_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def exact_eigenbasis(F: Tensor) -> Tensor:
    """Eigenvectors of symmetric F (..., m, m) as columns, largest eigenvalue first, signs fixed."""
    work, finite = finite_or_zero(F.to(_decomposition_dtype(F)))
    eye = torch.eye(work.shape[-1], dtype=work.dtype, device=work.device)
    try:
        _, Q = torch.linalg.eigh(work + EIGH_JITTER * eye)
    except RuntimeError:  # torch.linalg.LinAlgError: eigh did not converge
        _, Q = torch.linalg.eigh(work.double() + EIGH_JITTER * eye.double())
        Q = Q.to(work.dtype)
    Q = Q.flip(-1)
    largest = torch.gather(Q, -2, Q.abs().argmax(dim=-2, keepdim=True))
    Q = Q * torch.where(largest < 0, -1.0, 1.0)
    return nan_unless(Q, finite).to(F.dtype)


def power_step(F: Tensor, Q: Tensor) -> Tensor:
    """One warm-started subspace-iteration step: orth(F Q), columns in Q's slots, Rayleigh order for the QR."""
    dtype = _decomposition_dtype(F)
    work_F, finite_F = finite_or_zero(F.to(dtype))
    work_Q, finite_Q = finite_or_zero(Q.to(dtype))
    FQ = work_F @ work_Q
    rayleigh = (work_Q * FQ).sum(dim=-2)  # diag(Q^T F Q): the eigenvalues Q's columns stand for
    order = torch.argsort(rayleigh, dim=-1, descending=True).unsqueeze(-2).expand_as(FQ)
    basis, R = torch.linalg.qr(torch.gather(FQ, -1, order))
    basis = basis * torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).unsqueeze(-2)
    in_slots = torch.empty_like(basis).scatter_(-1, order, basis)  # column i goes back to slot order[i]
    return nan_unless(in_slots, finite_F & finite_Q).to(F.dtype)


def eigenbasis(F: Tensor, Q: Tensor, t: Tensor, k: float) -> Tensor:
    """The eigenbasis of the statistic F kept in Q: exact at t <= 1, refreshed when t - 1 is a multiple of k.

    F, Q: (..., m, m); t: (..., 1, 1). Between refreshes Q is returned as it is.
    """
    first, refresh = refresh_schedule(t, k)
    basis = Q
    if bool(refresh.any()):
        basis = torch.where(refresh, power_step(F, Q), basis)
    if bool(first.any()):
        basis = torch.where(first, exact_eigenbasis(F), basis)
    return basis


def eigenbasis_vector(f: Tensor, q: Tensor, t: Tensor, k: float) -> Tensor:
    """A diagonal statistic's eigenbasis is the identity: ones (NaN for a non-finite f) at t <= 1 and on refreshes."""
    first, refresh = refresh_schedule(t, k)
    identity = nan_unless(torch.ones_like(q), torch.isfinite(f).all(dim=-1, keepdim=True))
    return torch.where(first | refresh, identity, q)


def rotate_in(QL: Tensor, x: Tensor, QR: Tensor) -> Tensor:
    """Q_L^T x Q_R: x in the bases Q_L (rows) and Q_R (columns)."""
    return QL.mT @ x @ QR


def rotate_out(QL: Tensor, x: Tensor, QR: Tensor) -> Tensor:
    """Q_L x Q_R^T: x, given in the bases Q_L and Q_R, back in the parameter's coordinates."""
    return QL @ x @ QR.mT


def rotate_vector(ql: Tensor, x: Tensor, qr: Tensor) -> Tensor:
    """diag(q_l) diag(x) diag(q_r), stored as its diagonal: q_l * x * q_r (both directions on a vector)."""
    return ql * x * qr
