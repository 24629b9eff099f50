"""Behavioural fingerprint: what a program does on a fixed probe, hashed.

The probe runs a few steps on fixed random gradients for a batch of tall
5 x 3 matrices (and, for programs with matrix primitives, a batch of
length-4 vectors, whose diag(x) semantics differ), in float64, updating the
parameters with a fixed small learning rate so that the parameter and the
state feed back. Gradient entries span four orders of magnitude across
entries and steps, so that discrete outputs (signs, clips) sit near their
decision boundaries somewhere and every constant moves some of them; four
steps let a chain of three state registers reach the output. The updates
are rounded to ~6 significant digits (binary mantissa) and hashed. Programs
that compute the same function in different ways collide, which the
structural hash cannot see: m / sqrt(m * m) and sign(m), two chained interps
and one, x + x and 2 x.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from primitives.interpreter import compile_program, trajectory
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program, validate

PROBE_STEPS = 4
PROBE_LR = 1e-2
PROBE_BATCH = 2
MATRIX_PROBE = (5, 3)  # non-square: catches transposition mix-ups
VECTOR_PROBE = 4
MANTISSA_BITS = 20  # ~6 significant decimal digits
# Values below this fraction of the largest update count as zero: two ways of
# computing zero differ by round-off (1e-17), not by behaviour.
ZERO_FRACTION = 1e-9
# The probe computes polar factors exactly: the fingerprint is about what a
# program means (polar(2 X) = polar(X)), and one SVD of a 5 x 3 matrix costs
# less than Newton-Schulz's 45 small ops.
PROBE_OPTIONS = ExecutionOptions(polar_backend="svd")


@functools.lru_cache(maxsize=8)
def _probe(layout: Layout, steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0
           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(initial parameters, gradient per step) for one layout; fixed forever.

    drift adds a persistent gradient direction (scaled by `drift`) to every
    step, as real gradients have; without it every step is independent.
    """
    generator = torch.Generator().manual_seed(20230215 + layout.value)
    shape = (batch, *MATRIX_PROBE) if layout is Layout.MATRIX else (batch, VECTOR_PROBE)


    def heavy_tailed() -> torch.Tensor:
        magnitude = 10.0 ** (3 * torch.rand(shape, generator=generator, dtype=torch.float64) - 2)
        return magnitude * torch.randn(shape, generator=generator, dtype=torch.float64)

    w0 = heavy_tailed()
    direction = heavy_tailed()
    grads = [drift * direction + heavy_tailed() for _ in range(steps)]
    return w0, grads


def probe_updates(program: Program, options: ExecutionOptions = PROBE_OPTIONS,
                  primitive_set: PrimitiveSet = ALL, layouts: tuple[Layout, ...] | None = None,
                  steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0) -> np.ndarray:
    """Every update u of the probe run, flattened (float64), step after step.

    layouts: which probes to run (default: the matrix probe, and the vector
    probe too when the program has matrix primitives). steps and batch make
    a longer or wider probe, drift a persistent gradient direction (the
    fingerprint uses the defaults).
    """
    validate(program, primitive_set)
    if layouts is None:
        layouts = (Layout.MATRIX, Layout.VECTOR) if _layout_matters(program, primitive_set) else (Layout.MATRIX,)
    outputs = []
    for layout in layouts:
        compiled = compile_program(program, layout, options, primitive_set, validated=True)
        w, grads = _probe(layout, steps, batch, drift)
        outputs += [u.reshape(-1) for u in trajectory(compiled, w, grads, PROBE_LR)]
    return torch.cat(outputs).numpy()


def _layout_matters(program: Program, primitive_set: PrimitiveSet) -> bool:
    """Elementwise ops and element statistics mean the same on a vector as on a matrix."""
    return any(primitive_set.get(s.op).category in ("matrix", "kronecker", "factored") for s in program.body)


def fingerprint_of_values(values: np.ndarray) -> str:
    if not np.isfinite(values).all():  # rare, and nan_to_num costs more than the rest of this function
        values = np.nan_to_num(values, nan=np.pi, posinf=1e300, neginf=-1e300)
    magnitude = np.abs(values)
    if values.size:
        values = np.where(magnitude < ZERO_FRACTION * magnitude.max(), 0.0, values)
    mantissa, exponent = np.frexp(values)
    rounded = np.rint(mantissa * (1 << MANTISSA_BITS)).astype(np.int64)
    # A value just below a power of two rounds up to mantissa 1.0: write it as
    # 0.5 * 2^(e+1), the form frexp gives the power of two itself.
    carry = np.abs(rounded) == (1 << MANTISSA_BITS)
    if carry.any():
        rounded = np.where(carry, rounded // 2, rounded)
        exponent = exponent + carry
    digest = hashlib.blake2b(rounded.tobytes() + exponent.astype(np.int32).tobytes(), digest_size=8)
    return digest.hexdigest()


def fingerprint(program: Program, options: ExecutionOptions = PROBE_OPTIONS,
                primitive_set: PrimitiveSet = ALL) -> str:
    """16 hex digits; equal for programs that behave alike on the probe."""
    with torch.inference_mode():
        return fingerprint_of_values(probe_updates(program, options, primitive_set))
