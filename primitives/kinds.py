"""Kinds of values in an optimizer program, and how a parameter is laid out.

Every value a program computes has a *kind*, inferred before anything runs.
For a parameter viewed as an m x n matrix (a conv weight (out, in, kh, kw) is
viewed as (out, in*kh*kw)) the kinds have these shapes:

    SCALAR  one number per parameter        (1, 1)
    PARAM   the shape of the parameter      (m, n)
    ROW     left Kronecker statistic        (m, m)   e.g. G G^T
    COL     right Kronecker statistic       (n, n)   e.g. G^T G
    ROWVEC  factored second moment, rows    (m, 1)   Adafactor's R
    COLVEC  factored second moment, columns (1, n)   Adafactor's C

A 1-D parameter of length n uses the VECTOR layout. Matrix primitives then act
on diag(x) (so polar(x) = sign(x) and gram_left(x) = x^2, stored as its
diagonal), while the factored second moment sees the vector as a 1 x n row
(Adafactor's unfactored case falls out exactly). Shapes in the VECTOR layout:

    SCALAR (1,)   PARAM (n,)   ROW (n,)   COL (n,)   ROWVEC (1,)   COLVEC (n,)

Every tensor also carries any number of leading batch dimensions: parameters of
one shape stacked together, or the seeds of a vmapped proxy task. Primitives
act on the trailing "core" dimensions (two for MATRIX, one for VECTOR).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch


class Kind(str, enum.Enum):  # str mixin: C-level hashing, cheap in the validator's memo keys
    SCALAR = "scalar"
    PARAM = "param"
    ROW = "row"
    COL = "col"
    ROWVEC = "rowvec"
    COLVEC = "colvec"

    def __str__(self) -> str:  # printed in error messages and listings
        return self.name


class Layout(enum.Enum):
    """How the core dimensions of a parameter are read by matrix primitives."""

    MATRIX = 2  # (..., m, n)
    VECTOR = 1  # (..., n): matrix primitives act on diag(x)

    @property
    def core_ndim(self) -> int:
        return self.value


class KindError(ValueError):
    """A primitive was applied to arguments of kinds it does not accept."""


def core_shape(kind: Kind, layout: Layout, m: int, n: int) -> tuple[int, ...]:
    """Shape of a value of `kind` for a parameter whose core view is (m, n).

    For the VECTOR layout m is 1 and n is the length of the vector.
    """
    if layout is Layout.MATRIX:
        return {
            Kind.SCALAR: (1, 1),
            Kind.PARAM: (m, n),
            Kind.ROW: (m, m),
            Kind.COL: (n, n),
            Kind.ROWVEC: (m, 1),
            Kind.COLVEC: (1, n),
        }[kind]
    return {
        Kind.SCALAR: (1,),
        Kind.PARAM: (n,),
        Kind.ROW: (n,),
        Kind.COL: (n,),
        Kind.ROWVEC: (1,),
        Kind.COLVEC: (n,),
    }[kind]


def initial_value(kind: Kind, init: str, eps: float, layout: Layout, batch: Sequence[int], m: int, n: int,
                  dtype=torch.float32, device=None) -> torch.Tensor:
    """A state register's value before the first step: zeros, or eps * I (its diagonal on a vector)."""
    shape = (*batch, *core_shape(kind, layout, m, n))
    value = torch.zeros(shape, dtype=dtype, device=device)
    if init == "eye":
        if layout is Layout.MATRIX:
            value = value + eps * torch.eye(shape[-1], dtype=dtype, device=device)
        else:  # the diagonal of eps * I
            value = value + eps
    return value
