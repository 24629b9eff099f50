"""NumPy twins of the primitives, for the probe's tiny float64 arrays.

The probe (probe.py) runs every new program on 2 x 5 x 3 matrices and length-4
vectors. At that size a torch op is all launch overhead (5-15 us on a CPU
core) and a NumPy ufunc costs ~1 us, so the probe runs these kernels instead
of the torch functions. They compute the same math (the torch function's
docstring is the specification, and its constants are imported, not
repeated; a comment says where NumPy needs another spelling), and
tests/test_probe.py checks every kernel against its torch function to
round-off on random, zero, tiny, huge and non-finite inputs. A primitive without a kernel (an extension's) runs its torch function
on the probe, converted on the way in and out.

Arrays carry one leading batch dimension; SCALAR values have shape (b, 1, 1)
(matrix layout) or (b, 1) (vector layout), as in the torch primitives.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from primitives import elementwise as ew
from primitives import normalisers
from primitives.polar import SVD_RANK_TOL

MATRIX_AXES = (-2, -1)
# Throughout: ufunc methods (np.add.reduce) and array methods (x.swapaxes), not
# np.sum, np.mean or np.swapaxes, whose Python wrappers cost more than the work
# on arrays this small.

# np.linalg.eigh and svd spend half of their ~30 us on a 2 x 5 x 5 batch
# checking and converting arguments, which here are always stacked float64
# and finite (see _decompose). Their gufuncs are called directly where this
# NumPy has them under these names (2.x); the public functions otherwise.
try:
    from numpy.linalg._umath_linalg import eigh_lo as _eigh
    from numpy.linalg._umath_linalg import svd as _singular_values
    from numpy.linalg._umath_linalg import svd_s as _thin_svd
except ImportError:  # pragma: no cover - NumPy 1.x
    _eigh = np.linalg.eigh

    def _thin_svd(x):
        return np.linalg.svd(x, full_matrices=False)

    def _singular_values(x):
        return np.linalg.svd(x, compute_uv=False)


# --- non-finite matrices ------------------------------------------------------
# The torch decompositions run on finite_or_zero(x) and mark non-finite inputs
# NaN (finite.py). On the host the common case, all finite, needs no masking.


def _finite(x: np.ndarray) -> np.ndarray | None:
    """None when every matrix is finite, else the (b, 1, 1) mask of the finite ones."""
    if math.isfinite(np.add.reduce(x, axis=None)):  # one op; a sum that overflows is checked below
        return None
    finite = np.logical_and.reduce(np.isfinite(x), axis=MATRIX_AXES, keepdims=True)
    return None if np.logical_and.reduce(finite, axis=None) else finite


def _decompose(fn, x: np.ndarray) -> np.ndarray:
    """fn(x) with NaN for every matrix of x that is not finite (fn's result has x's batch)."""
    finite = _finite(x)
    if finite is None:
        return fn(x)
    return np.where(finite, fn(np.where(finite, x, 0.0)), np.nan)


# --- elementwise (elementwise.py) ---------------------------------------------


def div(a, b):
    return a / np.copysign(np.maximum(np.abs(b), ew.DIV_FLOOR), b)


def sign(x):
    # torch.sign(NaN) is 0, np.sign's is NaN: fmax and fmin drop the NaN (and give +0, as torch does).
    s = np.sign(x)
    return np.fmax(s, 0.0) + np.fmin(s, 0.0)


def sqrt(x):
    return np.sqrt(np.abs(x))


def rsqrt(x, eps):
    return 1.0 / np.sqrt(np.maximum(np.abs(x), eps))


def exp(x):
    return np.exp(np.minimum(x, ew.EXP_CLAMP))


def cosh(x):
    return np.cosh(np.minimum(np.maximum(x, -ew.EXP_CLAMP), ew.EXP_CLAMP))


def log(x):
    return np.log(np.abs(x) + ew.LOG_FLOOR)


def clip(x, c):
    return np.minimum(np.maximum(x, -c), c)  # np.clip's Python wrapper costs twice the work


def interp(a, b, beta):
    # torch.lerp(b, a, w), w = 1 - beta, evaluated from the nearer end as torch does.
    weight = 1.0 - beta
    if abs(weight) < 0.5:
        return b + weight * (a - b)
    return a - (a - b) * (1.0 - weight)


def abspow(x, p):
    base = np.abs(x)
    if p < 0:
        base = np.maximum(base, ew.POW_FLOOR ** (1.0 / max(1.0, -p)))
    return base**p


def debias(x, t, beta):
    if beta == 0.0:
        return x
    return x / np.maximum(-np.expm1(t * math.log(beta)), 1.0 - beta)


ELEMENTWISE = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": div,
    "max": np.maximum,
    "min": np.minimum,
    "neg": np.negative,
    "abs": np.abs,
    "sign": sign,
    "sqrt": sqrt,
    "square": lambda x: x * x,
    "exp": exp,
    "cosh": cosh,
    "log": log,
    "tanh": np.tanh,
    "rsqrt": rsqrt,
    "clip": clip,
    "abspow": abspow,
    "scale": lambda x, c: x * c,
    "add_const": lambda x, c: x + c,
    "add_scaled": lambda a, b, c: a + c * b,
    "interp": interp,
    "mix": lambda a, b, s: a + s * (b - a),
    "debias": debias,
}


# --- element statistics over the core dims (normalisers.py) ------------------


def _axes(core_ndim: int) -> tuple[int, ...] | int:
    return MATRIX_AXES if core_ndim == 2 else -1


def rms(x, core_ndim):
    count = x.shape[-1] * x.shape[-2] if core_ndim == 2 else x.shape[-1]
    return np.sqrt(np.add.reduce(x * x, axis=_axes(core_ndim), keepdims=True) / count)


def frobenius(x, core_ndim):
    return np.sqrt(np.add.reduce(x * x, axis=_axes(core_ndim), keepdims=True))


def inner(a, b, core_ndim):
    return np.add.reduce(a * b, axis=_axes(core_ndim), keepdims=True)


def normalize(x, core_ndim):
    return x / (rms(x, core_ndim) + normalisers.NORMALIZE_EPS)


def rms_clip(x, d, core_ndim):
    return x / np.maximum(rms(x, core_ndim) / d, 1.0)


def scale_by_param_rms(u, w, eps, core_ndim):
    return u * np.maximum(rms(w, core_ndim), eps)


def _statistics(core_ndim: int) -> dict:
    return {fn.__name__: functools.partial(fn, core_ndim=core_ndim)
            for fn in (rms, frobenius, inner, normalize, rms_clip, scale_by_param_rms)}


# --- matrix primitives (normalisers.py, polar.py, kronecker.py, factored.py) --


def spectral_norm(x):
    """The torch primitive's power iteration (on x / max|x_ij|, 2^k steps of v <- G v / ||G v||, G = x^T x)
    as k squarings of G, then one step: the same direction in exact arithmetic, in ~20 ops instead of ~70.

    No power of G overflows or underflows: after the scaling its largest
    eigenvalue lies in [1, m n] (a column of x has norm >= 1, and G's
    entries are at most m), so that of G^16 lies in [1, (m n)^16].
    """
    n = x.shape[-1]
    start = normalisers._probe_vector(n, torch.float64, "cpu").numpy()[:, None]  # the torch primitive's start
    tiny = np.finfo(x.dtype).tiny
    scale = np.maximum(np.maximum.reduce(np.abs(x), axis=MATRIX_AXES, keepdims=True), tiny)
    x = x / scale
    power = x.swapaxes(-1, -2) @ x
    for _ in range(_SQUARINGS):
        power = power @ power
    v = power @ start
    v = v / (np.sqrt(np.add.reduce(v * v, axis=-2, keepdims=True)) + tiny)
    xv = x @ v
    return scale * np.sqrt(np.add.reduce(xv * xv, axis=-2, keepdims=True))


_SQUARINGS = normalisers.POWER_ITERATIONS.bit_length() - 1
assert 1 << _SQUARINGS == normalisers.POWER_ITERATIONS, "squarings reach powers of two only"


def nuclear_norm(x):
    return _decompose(lambda y: np.add.reduce(_singular_values(y), axis=-1)[..., None, None], x)


def _polar_svd(x):
    U, S, Vh = _thin_svd(x)
    keep = S > SVD_RANK_TOL * S[..., :1]
    return (U * keep[..., None, :]) @ Vh


def polar(x):
    """The exact factor (polar_svd): the probe's kernels have no other backend."""
    return _decompose(_polar_svd, x)


def nuclear_scaled_polar(x):
    u = polar(x)
    return np.add.reduce(x * u, axis=MATRIX_AXES, keepdims=True) * u


def inverse_root(A, p, eps):
    def root(work):
        work = 0.5 * (work + work.swapaxes(-1, -2))
        eigenvalues, Q = _eigh(work)
        scale = (np.maximum(eigenvalues, 0.0) + eps) ** (-1.0 / p)
        return (Q * scale[..., None, :]) @ Q.swapaxes(-1, -2)

    return _decompose(root, A)


def sandwich(left, x, right):
    return left @ x @ right


def kron_precondition(L, x, R, p, eps):
    return sandwich(inverse_root(L, p, eps), x, inverse_root(R, p, eps))


# Primitives the probe runs as parts, each remembered on its own: a child that
# changes only x in kron_precondition(L, x, R) finds the roots of L and R (half
# of them are found in a search stream). A part is (kernel, positions of its
# arguments among the primitive's arguments and then the earlier parts'
# results, names of the primitive's constants it takes); the last part's
# result is the primitive's.
MATRIX_PARTS = {
    "kron_precondition": ((inverse_root, (0,), ("p", "eps")),
                          (inverse_root, (2,), ("p", "eps")),
                          (sandwich, (3, 1, 4), ())),
}


def factored_second_moment(R, C, eps):
    return (R @ C) / np.maximum(np.add.reduce(R, axis=-2, keepdims=True) / R.shape[-2], eps)


MATRIX = {
    "spectral_norm": spectral_norm,
    "nuclear_norm": nuclear_norm,
    "aspect_scale": lambda x: x * normalisers.aspect_factor(x.shape[-2], x.shape[-1]),
    "polar": polar,
    "nuclear_scaled_polar": nuclear_scaled_polar,
    "gram_left": lambda x: x @ x.swapaxes(-1, -2),
    "gram_right": lambda x: x.swapaxes(-1, -2) @ x,
    "kron_precondition": kron_precondition,
    "row_mean_sq": lambda x: np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1],
    "col_mean_sq": lambda x: np.add.reduce(x * x, axis=-2, keepdims=True) / x.shape[-2],
    "factored_second_moment": factored_second_moment,
}


# --- the matrix primitives on a vector: diag(x) (their *_vector functions) ----


def _diagonal_inverse_root(d, p, eps):
    return (np.maximum(d, 0.0) + eps) ** (-1.0 / p)


def _diagonal_sandwich(left, x, right):
    return x * left * right


def _diagonal_kron_precondition(l, x, r, p, eps):
    return _diagonal_sandwich(_diagonal_inverse_root(l, p, eps), x, _diagonal_inverse_root(r, p, eps))


VECTOR_PARTS = {  # as MATRIX_PARTS
    "kron_precondition": ((_diagonal_inverse_root, (0,), ("p", "eps")),
                          (_diagonal_inverse_root, (2,), ("p", "eps")),
                          (_diagonal_sandwich, (3, 1, 4), ())),
}


def _nuclear_scaled_sign(x):
    return np.add.reduce(np.abs(x), axis=-1, keepdims=True) * sign(x)


VECTOR = {
    "spectral_norm": lambda x: np.maximum.reduce(np.abs(x), axis=-1, keepdims=True),
    "nuclear_norm": lambda x: np.add.reduce(np.abs(x), axis=-1, keepdims=True),
    "aspect_scale": lambda x: x,
    "polar": sign,
    "nuclear_scaled_polar": _nuclear_scaled_sign,
    "gram_left": lambda x: x * x,
    "gram_right": lambda x: x * x,
    "kron_precondition": _diagonal_kron_precondition,
    "row_mean_sq": lambda x: np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1],
    "col_mean_sq": lambda x: x * x,
    "factored_second_moment": lambda R, C, eps: R * C / np.maximum(R, eps),
}

MATRIX_KERNELS = {**ELEMENTWISE, **_statistics(2), **MATRIX}
VECTOR_KERNELS = {**ELEMENTWISE, **_statistics(1), **VECTOR}
