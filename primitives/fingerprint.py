"""Behavioural fingerprint: what a program does on a fixed probe, hashed.

The probe runs a few steps on fixed random gradients for a batch of tall
5 x 3 matrices and a batch of length-4 vectors, in float64, updating the
parameters with a fixed small learning rate so that the parameter and the
state feed back. The updates are rounded to ~6 significant digits (binary
mantissa) and hashed. Programs that compute the same function in different
ways collide, which the structural hash cannot see: m / sqrt(m * m) and
sign(m), two chained interps and one, x + x and 2 x.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from primitives.interpreter import compile_program
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program

PROBE_STEPS = 3
PROBE_LR = 1e-2
PROBE_BATCH = 2
MATRIX_PROBE = (5, 3)  # non-square: catches transposition mix-ups
VECTOR_PROBE = 4
MANTISSA_BITS = 20  # ~6 significant decimal digits
# Values below this fraction of the largest update count as zero: two ways of
# computing zero differ by round-off (1e-17), not by behaviour.
ZERO_FRACTION = 1e-9


@functools.lru_cache(maxsize=2)
def _probe(layout: Layout) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(initial parameters, gradient per step) for one layout; fixed forever."""
    generator = torch.Generator().manual_seed(20230215 + layout.value)
    shape = (PROBE_BATCH, *MATRIX_PROBE) if layout is Layout.MATRIX else (PROBE_BATCH, VECTOR_PROBE)
    w0 = torch.randn(shape, generator=generator, dtype=torch.float64)
    grads = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(PROBE_STEPS)]
    return w0, grads


def probe_updates(program: Program, options: ExecutionOptions = ExecutionOptions(),
                  primitive_set: PrimitiveSet = ALL) -> np.ndarray:
    """Every update u of the probe run, flattened (float64)."""
    outputs = []
    for layout in Layout:
        compiled = compile_program(program, layout, options, primitive_set)
        w, grads = _probe(layout)
        m, n = (MATRIX_PROBE if layout is Layout.MATRIX else (1, VECTOR_PROBE))
        state = compiled.init_state((PROBE_BATCH,), m, n, dtype=torch.float64)
        for step, g in enumerate(grads, start=1):
            t = torch.full((PROBE_BATCH,) + (1,) * layout.core_ndim, float(step), dtype=torch.float64)
            u, state = compiled.step(g, w, t, state)
            u = torch.broadcast_to(u, w.shape)
            outputs.append(u.reshape(-1))
            w = w - PROBE_LR * u
    return torch.cat(outputs).numpy()


def fingerprint_of_values(values: np.ndarray) -> str:
    values = np.nan_to_num(values, nan=np.pi, posinf=1e300, neginf=-1e300)
    scale = np.max(np.abs(values)) if values.size else 0.0
    values = np.where(np.abs(values) < ZERO_FRACTION * scale, 0.0, values)
    mantissa, exponent = np.frexp(values)
    rounded = np.round(mantissa * (1 << MANTISSA_BITS)).astype(np.int64)
    # A value just below a power of two rounds up to mantissa 1.0: write it as
    # 0.5 * 2^(e+1), the form frexp gives the power of two itself.
    carry = np.abs(rounded) == (1 << MANTISSA_BITS)
    rounded = np.where(carry, rounded // 2, rounded)
    exponent = exponent + carry
    digest = hashlib.blake2b(rounded.tobytes() + exponent.astype(np.int32).tobytes(), digest_size=8)
    return digest.hexdigest()


def fingerprint(program: Program, options: ExecutionOptions = ExecutionOptions(),
                primitive_set: PrimitiveSet = ALL) -> str:
    """16 hex digits; equal for programs that behave alike on the probe."""
    with torch.no_grad():
        return fingerprint_of_values(probe_updates(program, options, primitive_set))
