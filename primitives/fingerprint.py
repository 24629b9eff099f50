"""Behavioural fingerprint: what a program does on a fixed probe, hashed.

The probe (probe.py) runs a few steps on fixed random gradients for a batch of
tall 5 x 3 matrices (and, for programs with matrix primitives, a batch of
length-4 vectors, whose diag(x) semantics differ), in float64, updating the
parameters with a fixed small learning rate so that the parameter and the
state feed back; four steps let a chain of three state registers reach the
output. The updates are rounded to ~6 significant digits (binary mantissa)
and hashed. Programs that compute the same function in different ways
collide, which the structural hash cannot see: m / sqrt(m * m) and sign(m),
two chained interps and one, x + x and 2 x.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.probe import PROBE_OPTIONS, probe_updates
from primitives.program import Program

MANTISSA_BITS = 20  # significant bits kept: ~6 decimal digits
# Values below this fraction of the largest update count as zero: two ways of
# computing zero differ by round-off (1e-17), not by behaviour.
ZERO_FRACTION = 1e-9
# Rounding on the bit pattern of a float64 (52 stored fraction bits after an
# implicit leading 1): add half of the dropped part, then clear it. A carry out
# of the fraction raises the exponent, which is exactly rounding up to the next
# power of two, and the sign bit is never reached by a finite value.
_DROPPED_BITS = 53 - MANTISSA_BITS
_HALF = np.array(1 << (_DROPPED_BITS - 1), dtype=np.uint64)  # 0-d arrays: a ufunc takes them faster than scalars
_KEEP = np.array(~((1 << _DROPPED_BITS) - 1) & 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)


def fingerprint_of_values(values: np.ndarray) -> str:
    """16 hex digits of `values` rounded to MANTISSA_BITS significant bits, tiny ones to zero."""
    values = np.ascontiguousarray(values, dtype=np.float64)  # the bit pattern below is float64's
    # A ufunc reduction, not .max(): its Python wrapper costs more than the work here.
    magnitude = np.abs(values)
    peak = np.maximum.reduce(magnitude, axis=None) if values.size else 0.0
    if not peak < math.inf:  # a NaN (which compares false) or an inf: rare
        values = np.nan_to_num(values, nan=np.pi, posinf=1e300, neginf=-1e300)
        magnitude = np.abs(values)
        peak = np.maximum.reduce(magnitude, axis=None)
    # <=, and 0.0 not -0.0: an all-zero update is +0 whichever way it was computed
    values = np.where(magnitude <= ZERO_FRACTION * peak, 0.0, values)
    rounded = (values.view(np.uint64) + _HALF) & _KEEP
    return hashlib.blake2b(rounded.tobytes(), digest_size=8).hexdigest()


def fingerprint(program: Program, options: ExecutionOptions = PROBE_OPTIONS,
                primitive_set: PrimitiveSet = ALL) -> str:
    """16 hex digits; equal for programs that behave alike on the probe."""
    with np.errstate(all="ignore"):  # a runaway program overflows: that is its behaviour, not a warning
        return fingerprint_of_values(probe_updates(program, options, primitive_set))
