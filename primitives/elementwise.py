"""Elementwise primitives: pure functions that never write into their inputs.

Each function broadcasts its arguments (a SCALAR value has shape (..., 1, 1) or
(..., 1) and broadcasts against anything of the same layout). Every guard
constant below is chosen so that no finite input produces inf or NaN in fp32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# |b| is floored at this before dividing. Small enough never to change a
# meaningful quotient (Adam's denominators are >= eps ~ 1e-8), large enough
# that 1 / DIV_FLOOR = 1e30 is finite in fp32 (max ~3.4e38).
DIV_FLOOR = 1e-30
# log(|x| + LOG_FLOOR): log(0) becomes log(1e-30) ~ -69, finite in fp32.
LOG_FLOOR = 1e-30
# exp and cosh clamp their argument here: e^30 ~ 1e13 leaves room for one
# square (1e26) before fp32 overflows at ~3.4e38.
EXP_CLAMP = 30.0
# |x| ** p for p < 0 floors |x| at POW_FLOOR ** (1 / max(1, -p)), so that the
# result never exceeds 1 / POW_FLOOR = 1e30 (finite in fp32) for any p >= -4.
POW_FLOOR = 1e-30


def add(a: Tensor, b: Tensor) -> Tensor:
    """a + b"""
    return a + b


def sub(a: Tensor, b: Tensor) -> Tensor:
    """a - b"""
    return a - b


def mul(a: Tensor, b: Tensor) -> Tensor:
    """a * b (elementwise)"""
    return a * b


def div(a: Tensor, b: Tensor) -> Tensor:
    """a / b with |b| floored at DIV_FLOOR (sign kept; +0 counts as positive)."""
    return a / torch.copysign(torch.clamp(torch.abs(b), min=DIV_FLOOR), b)


def neg(x: Tensor) -> Tensor:
    """-x"""
    return -x


def abs_(x: Tensor) -> Tensor:
    """|x|"""
    return torch.abs(x)


def sign(x: Tensor) -> Tensor:
    """sign(x), with sign(0) = 0 (torch.sign; Lion leaves such coordinates alone)."""
    return torch.sign(x)


def sqrt(x: Tensor) -> Tensor:
    """sqrt(|x|)"""
    return torch.sqrt(torch.abs(x))


def rsqrt(x: Tensor, eps: float) -> Tensor:
    """1 / sqrt(max(|x|, eps)) (Adafactor's clamp-then-rsqrt)."""
    return torch.rsqrt(torch.clamp(torch.abs(x), min=eps))


def square(x: Tensor) -> Tensor:
    """x^2"""
    return x * x


def exp(x: Tensor) -> Tensor:
    """exp(min(x, EXP_CLAMP))"""
    return torch.exp(torch.clamp(x, max=EXP_CLAMP))


def cosh(x: Tensor) -> Tensor:
    """cosh(clamp(x, -EXP_CLAMP, EXP_CLAMP)) (it appears in the Lion paper's raw program)."""
    return torch.cosh(torch.clamp(x, -EXP_CLAMP, EXP_CLAMP))


def log(x: Tensor) -> Tensor:
    """log(|x| + LOG_FLOOR)"""
    return torch.log(torch.abs(x) + LOG_FLOOR)


def tanh(x: Tensor) -> Tensor:
    """tanh(x)"""
    return torch.tanh(x)


def clip(x: Tensor, c: float) -> Tensor:
    """clamp(x, -c, c), c > 0"""
    return torch.clamp(x, -c, c)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """max(a, b) (elementwise)"""
    return torch.maximum(a, b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """min(a, b) (elementwise)"""
    return torch.minimum(a, b)


def interp(a: Tensor, b: Tensor, beta: float) -> Tensor:
    """(1 - beta) a + beta b.

    The momentum building block: m <- interp(g, m, beta) is an EMA of the
    gradient, interp(g, m, beta) after that update is Nesterov's look-ahead
    (Muon), and beta > 1 extrapolates (the Lion paper's raw program used 1.109).
    Evaluated as lerp(b, a, 1 - beta) = b + (1 - beta)(a - b), the form
    torch.optim uses for its EMAs (m.lerp_(g, 1 - beta)): the same rounding.
    """
    return torch.lerp(b, a, 1.0 - beta)


def mix(a: Tensor, b: Tensor, s: Tensor) -> Tensor:
    """(1 - s) a + s b with a weight s computed by the program (a SCALAR value).

    Adafactor's time-dependent decay R <- mix(R, rowmean(G^2), t^-0.8) needs it.
    """
    return a + s * (b - a)


def scale(x: Tensor, c: float) -> Tensor:
    """c x"""
    return x * c


def add_scaled(a: Tensor, b: Tensor, c: float) -> Tensor:
    """a + c b (axpy): decoupled weight decay is u <- add_scaled(u, w, wd)."""
    return a + c * b


def add_const(x: Tensor, c: float) -> Tensor:
    """x + c: Adam's denominator is add_const(sqrt(v_hat), eps)."""
    return x + c


def abspow(x: Tensor, p: float) -> Tensor:
    """|x|^p; for p < 0, |x| is floored first so that the result is at most 1e30."""
    base = torch.abs(x)
    if p < 0:
        base = torch.clamp(base, min=POW_FLOOR ** (1.0 / max(1.0, -p)))
    return base**p


def debias(x: Tensor, t: Tensor, beta: float) -> Tensor:
    """x / (1 - beta^t): Adam's bias correction of an EMA started at zero.

    1 - beta^t is evaluated as -expm1(t log(beta)) with log(beta) in double:
    subtracting from 1 in float32 would keep only ~3 digits of 1 - 0.999^1.
    The correction is floored at 1 - beta, its value at t = 1: steps count from
    1, and a computed "t" below 1 (0, negative) then stays finite.
    """
    if beta == 0.0:
        return x
    correction = -torch.expm1(t * math.log(beta))
    return x / torch.clamp(correction, min=1.0 - beta)
