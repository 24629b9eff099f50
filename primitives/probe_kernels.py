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

A primitive with constants has a kernel factory: kernel(**constants) returns
the function of the arrays. Constants that meet arrays are made 0-d float64
arrays once, there: a ufunc takes a Python float at ~0.6 us more than an
array, half the cost of a multiply at this size. The results are bit for bit
those with Python floats (the same float64 operations).
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


def _float(value: float) -> np.ndarray:
    """value as a read-only 0-d float64 array (see the module's docstring)."""
    array = np.array(float(value), dtype=np.float64)
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=64)
def _count(n: int) -> np.ndarray:
    """A count read from a shape (a mean's divisor), as _float: one array per count, made once."""
    return _float(n)


@functools.lru_cache(maxsize=16)
def _aspect_factor(m: int, n: int) -> np.ndarray:
    return _float(normalisers.aspect_factor(m, n))


ZERO, HALF, ONE = _float(0.0), _float(0.5), _float(1.0)
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
    return np.where(finite, fn(np.where(finite, x, ZERO)), np.nan)


# --- elementwise (elementwise.py) ---------------------------------------------
DIV_FLOOR, EXP_CLAMP, LOG_FLOOR = _float(ew.DIV_FLOOR), _float(ew.EXP_CLAMP), _float(ew.LOG_FLOOR)


def div(a, b):
    return a / np.copysign(np.maximum(np.abs(b), DIV_FLOOR), b)


def sign(x):
    # torch.sign(NaN) is 0, np.sign's is NaN: fmax and fmin drop the NaN (and give +0, as torch does).
    s = np.sign(x)
    return np.fmax(s, ZERO) + np.fmin(s, ZERO)


def sqrt(x):
    return np.sqrt(np.abs(x))


def exp(x):
    return np.exp(np.minimum(x, EXP_CLAMP))


def cosh(x):
    return np.cosh(np.minimum(np.maximum(x, -EXP_CLAMP), EXP_CLAMP))


def log(x):
    return np.log(np.abs(x) + LOG_FLOOR)


def rsqrt(eps):
    eps = _float(eps)
    return lambda x: ONE / np.sqrt(np.maximum(np.abs(x), eps))


def clip(c):
    low, high = _float(-c), _float(c)
    return lambda x: np.minimum(np.maximum(x, low), high)  # np.clip's Python wrapper costs twice the work


def abspow(p):
    # The exponent stays a Python float: NumPy then takes the same shortcuts as torch (p = 2 squares,
    # p = 0.5 is sqrt).
    if p >= 0:
        return lambda x: np.abs(x) ** p
    floor = _float(ew.POW_FLOOR ** (1.0 / max(1.0, -p)))
    return lambda x: np.maximum(np.abs(x), floor) ** p


def interp(beta):
    # torch.lerp(b, a, w), w = 1 - beta, evaluated from the nearer end as torch does.
    weight = 1.0 - beta
    if abs(weight) < 0.5:
        near_b = _float(weight)
        return lambda a, b: b + near_b * (a - b)
    near_a = _float(1.0 - weight)
    return lambda a, b: a - (a - b) * near_a


def debias(beta):
    if beta == 0.0:
        return lambda x, t: x
    log_beta, floor = _float(math.log(beta)), _float(1.0 - beta)
    return lambda x, t: x / np.maximum(-np.expm1(t * log_beta), floor)


def scale(c):
    c = _float(c)
    return lambda x: x * c


def add_const(c):
    c = _float(c)
    return lambda x: x + c


def add_scaled(c):
    c = _float(c)
    return lambda a, b: a + c * b


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
    "scale": scale,
    "add_const": add_const,
    "add_scaled": add_scaled,
    "interp": interp,
    "mix": lambda a, b, s: a + s * (b - a),
    "debias": debias,
}


# --- element statistics over the core dims (normalisers.py) ------------------
NORMALIZE_EPS = _float(normalisers.NORMALIZE_EPS)


def _statistics(core_ndim: int) -> dict:
    """The statistics over the core dims of one layout, each written out (no call of another: a Python
    call costs as much as an op here). A mean divides by the count, as torch.mean does."""
    axes = MATRIX_AXES if core_ndim == 2 else -1

    def count(x):
        return _count(x.shape[-1] * x.shape[-2] if core_ndim == 2 else x.shape[-1])

    def rms(x):
        return np.sqrt(np.add.reduce(x * x, axis=axes, keepdims=True) / count(x))

    def frobenius(x):
        return np.sqrt(np.add.reduce(x * x, axis=axes, keepdims=True))

    def inner(a, b):
        return np.add.reduce(a * b, axis=axes, keepdims=True)

    def normalize(x):
        return x / (np.sqrt(np.add.reduce(x * x, axis=axes, keepdims=True) / count(x)) + NORMALIZE_EPS)

    def rms_clip(d):
        d = _float(d)
        return lambda x: x / np.maximum(np.sqrt(np.add.reduce(x * x, axis=axes, keepdims=True) / count(x)) / d, ONE)

    def scale_by_param_rms(eps):
        eps = _float(eps)
        return lambda u, w: u * np.maximum(np.sqrt(np.add.reduce(w * w, axis=axes, keepdims=True) / count(w)), eps)

    return {fn.__name__: fn for fn in (rms, frobenius, inner, normalize, rms_clip, scale_by_param_rms)}


# --- matrix primitives (normalisers.py, polar.py, kronecker.py, factored.py) --
TINY = _float(np.finfo(np.float64).tiny)
RANK_TOL = _float(SVD_RANK_TOL)


def spectral_norm(x):
    """The torch primitive's power iteration (on x / max|x_ij|, 2^k steps of v <- G v / ||G v||, G = x^T x)
    as k squarings of G, then one step: the same direction in exact arithmetic, in ~20 ops instead of ~70.

    No power of G overflows or underflows: after the scaling its largest
    eigenvalue lies in [1, m n] (a column of x has norm >= 1, and G's
    entries are at most m), so that of G^16 lies in [1, (m n)^16].
    """
    start = _power_iteration_start(x.shape[-1])
    scale = np.maximum(np.maximum.reduce(np.abs(x), axis=MATRIX_AXES, keepdims=True), TINY)
    x = x / scale
    power = x.swapaxes(-1, -2) @ x
    for _ in range(_SQUARINGS):
        power = power @ power
    v = power @ start
    v = v / (np.sqrt(np.add.reduce(v * v, axis=-2, keepdims=True)) + TINY)
    xv = x @ v
    return scale * np.sqrt(np.add.reduce(xv * xv, axis=-2, keepdims=True))


@functools.lru_cache(maxsize=None)
def _power_iteration_start(n: int) -> np.ndarray:
    return normalisers._probe_vector(n, torch.float64, "cpu").numpy()[:, None]  # the torch primitive's start


_SQUARINGS = normalisers.POWER_ITERATIONS.bit_length() - 1
assert 1 << _SQUARINGS == normalisers.POWER_ITERATIONS, "squarings reach powers of two only"


def _nuclear_norm(x):
    return np.add.reduce(_singular_values(x), axis=-1)[..., None, None]


def nuclear_norm(x):
    return _decompose(_nuclear_norm, x)


def _polar_svd(x):
    U, S, Vh = _thin_svd(x)
    keep = S > RANK_TOL * S[..., :1]
    return (U * keep[..., None, :]) @ Vh


def polar(x):
    """The exact factor (polar_svd): the probe's kernels have no other backend."""
    return _decompose(_polar_svd, x)


def nuclear_scaled_polar(x):
    u = _decompose(_polar_svd, x)
    return np.add.reduce(x * u, axis=MATRIX_AXES, keepdims=True) * u


def inverse_root(p, eps):
    exponent, eps = -1.0 / p, _float(eps)  # the exponent a Python float, as torch's (see abspow)

    def root(work):
        eigenvalues, Q = _eigh(HALF * (work + work.swapaxes(-1, -2)))
        scale = (np.maximum(eigenvalues, ZERO) + eps) ** exponent
        return (Q * scale[..., None, :]) @ Q.swapaxes(-1, -2)

    return lambda A: _decompose(root, A)


def sandwich(left, x, right):
    return left @ x @ right


def kron_precondition(p, eps):
    root = inverse_root(p, eps)
    return lambda L, x, R: sandwich(root(L), x, root(R))


# Primitives the probe runs as parts, each remembered on its own: a child that
# changes only x in kron_precondition(L, x, R) finds the roots of L and R (half
# of them are found in a search stream). A part is (kernel, positions of its
# arguments among the primitive's arguments and then the earlier parts'
# results, names of the primitive's constants it takes: a kernel with
# constants is a factory, as above); the last part's result is the primitive's.
MATRIX_PARTS = {
    "kron_precondition": ((inverse_root, (0,), ("p", "eps")),
                          (inverse_root, (2,), ("p", "eps")),
                          (sandwich, (3, 1, 4), ())),
}


def factored_second_moment(eps):
    eps = _float(eps)
    return lambda R, C: (R @ C) / np.maximum(np.add.reduce(R, axis=-2, keepdims=True) / _count(R.shape[-2]), eps)


MATRIX = {
    "spectral_norm": spectral_norm,
    "nuclear_norm": nuclear_norm,
    "aspect_scale": lambda x: x * _aspect_factor(x.shape[-2], x.shape[-1]),
    "polar": polar,
    "nuclear_scaled_polar": nuclear_scaled_polar,
    "gram_left": lambda x: x @ x.swapaxes(-1, -2),
    "gram_right": lambda x: x.swapaxes(-1, -2) @ x,
    "kron_precondition": kron_precondition,
    "row_mean_sq": lambda x: np.add.reduce(x * x, axis=-1, keepdims=True) / _count(x.shape[-1]),
    "col_mean_sq": lambda x: np.add.reduce(x * x, axis=-2, keepdims=True) / _count(x.shape[-2]),
    "factored_second_moment": factored_second_moment,
}


# --- the matrix primitives on a vector: diag(x) (their *_vector functions) ----


def _diagonal_inverse_root(p, eps):
    exponent, eps = -1.0 / p, _float(eps)
    return lambda d: (np.maximum(d, ZERO) + eps) ** exponent


def _diagonal_sandwich(left, x, right):
    return x * left * right


def _diagonal_kron_precondition(p, eps):
    root = _diagonal_inverse_root(p, eps)
    return lambda l, x, r: _diagonal_sandwich(root(l), x, root(r))


VECTOR_PARTS = {  # as MATRIX_PARTS
    "kron_precondition": ((_diagonal_inverse_root, (0,), ("p", "eps")),
                          (_diagonal_inverse_root, (2,), ("p", "eps")),
                          (_diagonal_sandwich, (3, 1, 4), ())),
}


def _nuclear_scaled_sign(x):
    return np.add.reduce(np.abs(x), axis=-1, keepdims=True) * sign(x)


def _diagonal_factored_second_moment(eps):
    eps = _float(eps)
    return lambda R, C: R * C / np.maximum(R, eps)


VECTOR = {
    "spectral_norm": lambda x: np.maximum.reduce(np.abs(x), axis=-1, keepdims=True),
    "nuclear_norm": lambda x: np.add.reduce(np.abs(x), axis=-1, keepdims=True),
    "aspect_scale": lambda x: x,
    "polar": sign,
    "nuclear_scaled_polar": _nuclear_scaled_sign,
    "gram_left": lambda x: x * x,
    "gram_right": lambda x: x * x,
    "kron_precondition": _diagonal_kron_precondition,
    "row_mean_sq": lambda x: np.add.reduce(x * x, axis=-1, keepdims=True) / _count(x.shape[-1]),
    "col_mean_sq": lambda x: x * x,
    "factored_second_moment": _diagonal_factored_second_moment,
}

MATRIX_KERNELS = {**ELEMENTWISE, **_statistics(2), **MATRIX}
VECTOR_KERNELS = {**ELEMENTWISE, **_statistics(1), **VECTOR}
