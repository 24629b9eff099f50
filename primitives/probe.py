"""The probe: a program run for a few steps on fixed inputs, through the interpreter.

The fingerprint (fingerprint.py) and the behaviour score (search/evaluation.py)
run programs on the same fixed inputs: a batch of small matrices (and, for
programs with matrix primitives, of vectors, whose diag(x) semantics differ),
in float64, with the parameters updated by a fixed small learning rate so
that the parameter and the state feed back. The program runs through the
same interpreter that trains it (primitives/interpreter.py), so there is one
definition of what every primitive computes. A probe costs about 2 ms of a
worker's time (BENCHMARKS.md): nothing next to the seconds a candidate's
training costs, which is why it needs no faster twin.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from primitives.interpreter import compile_program, trajectory
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program

PROBE_STEPS = 4
PROBE_LR = 1e-2
PROBE_BATCH = 2
MATRIX_PROBE = (5, 3)  # non-square: catches transposition mix-ups
VECTOR_PROBE = 4
# The probe computes polar factors exactly: the fingerprint is about what a
# program means (polar(2 X) = polar(X)), and one SVD of a 5 x 3 matrix costs
# less than Newton-Schulz's 45 small ops.
PROBE_OPTIONS = ExecutionOptions(polar_backend="svd")


@functools.lru_cache(maxsize=8)
def probe_inputs(layout: Layout, steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0
                 ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(initial parameters, gradient per step) for one layout; fixed forever.

    Gradient entries span four orders of magnitude across entries and steps, so
    that discrete outputs (signs, clips) sit near their decision boundaries
    somewhere and every constant moves some of them. drift adds a persistent
    gradient direction (scaled by `drift`) to every step, as real gradients
    have; without it every step is independent.
    """
    generator = torch.Generator().manual_seed(20230215 + layout.value)
    shape = (batch, *MATRIX_PROBE) if layout is Layout.MATRIX else (batch, VECTOR_PROBE)

    def heavy_tailed() -> Tensor:
        magnitude = 10.0 ** (3 * torch.rand(shape, generator=generator, dtype=torch.float64) - 2)
        return magnitude * torch.randn(shape, generator=generator, dtype=torch.float64)

    with torch.inference_mode(False):  # ordinary tensors, usable inside and outside inference mode
        w0 = heavy_tailed()
        direction = heavy_tailed()
        return w0, tuple(drift * direction + heavy_tailed() for _ in range(steps))


def default_layouts(program: Program, primitive_set: PrimitiveSet) -> tuple[Layout, ...]:
    """The matrix probe, and the vector probe too when the program has matrix primitives.

    Elementwise ops and element statistics mean the same on a vector as on a
    matrix; the matrix primitives act on a vector as on diag(x).
    """
    matrix = any(primitive_set.get(s.op).category in ("matrix", "kronecker", "factored") for s in program.body)
    return (Layout.MATRIX, Layout.VECTOR) if matrix else (Layout.MATRIX,)


def probe_updates(program: Program, options: ExecutionOptions = PROBE_OPTIONS,
                  primitive_set: PrimitiveSet = ALL, layouts: tuple[Layout, ...] | None = None,
                  steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0) -> np.ndarray:
    """Every update u of the probe run, flattened (float64), layout after layout, step after step.

    layouts: which probes to run (default_layouts unless given). steps and
    batch make a longer or wider probe, drift a persistent gradient direction
    (the fingerprint uses the defaults). Validates the program first.
    """
    updates: list[Tensor] = []
    with torch.no_grad():
        for layout in layouts or default_layouts(program, primitive_set):
            compiled = compile_program(program, layout, options, primitive_set)
            w, grads = probe_inputs(layout, steps, batch, drift)
            updates += trajectory(compiled, w, grads, PROBE_LR)
    return torch.cat([u.reshape(-1) for u in updates]).numpy()
