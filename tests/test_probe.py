"""The probe and the fingerprint: fixed inputs, the interpreter's updates, rounded and hashed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primitives import ALL, Layout
from primitives.fingerprint import fingerprint, fingerprint_of_values
from primitives.interpreter import compile_program, trajectory
from primitives.known import KNOWN_PROGRAMS
from primitives.primitive import ExecutionOptions
from primitives.probe import PROBE_LR, PROBE_OPTIONS, default_layouts, probe_inputs, probe_updates
from primitives.program import Program, ProgramError, Statement
from primitives.serialize import parse


def _by_hand(program, options=PROBE_OPTIONS) -> np.ndarray:
    """The probe written out: each layout's inputs, the interpreter's trajectory, concatenated."""
    updates = []
    with torch.inference_mode():
        for layout in default_layouts(program, ALL):
            w, grads = probe_inputs(layout)
            compiled = compile_program(program, layout, options)
            updates += [u.reshape(-1) for u in trajectory(compiled, w, list(grads), PROBE_LR)]
    return torch.cat(updates).numpy()


@pytest.mark.parametrize("name", sorted(KNOWN_PROGRAMS))
def test_probe_of_a_known_optimizer_is_its_interpreter_trajectory(name):
    np.testing.assert_array_equal(probe_updates(KNOWN_PROGRAMS[name]), _by_hand(KNOWN_PROGRAMS[name]))


def test_matrix_programs_are_probed_on_vectors_too():
    assert default_layouts(KNOWN_PROGRAMS["muon"], ALL) == (Layout.MATRIX, Layout.VECTOR)
    assert default_layouts(KNOWN_PROGRAMS["adamw"], ALL) == (Layout.MATRIX,)


def test_the_probe_uses_the_exact_polar_factor_unless_told_otherwise():
    muon = KNOWN_PROGRAMS["muon"]
    newton_schulz = probe_updates(muon, ExecutionOptions(polar_backend="ns"))
    np.testing.assert_array_equal(newton_schulz, _by_hand(muon, ExecutionOptions(polar_backend="ns")))
    assert not np.allclose(newton_schulz, probe_updates(muon))


def test_a_longer_probe_is_another_probe():
    program = KNOWN_PROGRAMS["adamw"]
    short = probe_updates(program)
    long = probe_updates(program, steps=6, batch=3, drift=0.5)
    assert long.size == short.size * 6 // 4 * 3 // 2
    np.testing.assert_array_equal(short, probe_updates(program))


def test_fingerprints_collide_for_equal_behaviour_and_differ_otherwise():
    """m / sqrt(m * m) is sign(m), x + x is 2 x; Lion with another beta is not Lion."""
    sign = parse("u = sign(g)\nreturn u")
    ratio = parse("s = mul(g, g)\nr = sqrt(s)\nu = div(g, r)\nreturn u")
    assert fingerprint(sign) == fingerprint(ratio)
    doubled = parse("const c = 2.0\nu = scale(g; c)\nreturn u")
    added = parse("u = add(g, g)\nreturn u")
    assert fingerprint(doubled) == fingerprint(added)
    lion = KNOWN_PROGRAMS["lion"]
    assert fingerprint(lion) != fingerprint(lion.with_constants(beta1=0.8))
    assert len({fingerprint(p) for p in KNOWN_PROGRAMS.values()}) == len(KNOWN_PROGRAMS)


# --- rounding ----------------------------------------------------------------


def test_fingerprint_rounds_to_twenty_significant_bits():
    values = np.array([1.0, -3.5, 1e-3, 0.25, 7.0])
    same = fingerprint_of_values(values)
    assert fingerprint_of_values(values * (1 + 2.0**-30)) == same  # far below the last kept bit
    assert fingerprint_of_values(values * (1 + 2.0**-17)) != same  # above it
    # Just below a power of two rounds up to it, with either sign: the carry reaches the exponent.
    assert fingerprint_of_values(np.array([1 - 2.0**-40, -(1 - 2.0**-40)])) == fingerprint_of_values(
        np.array([1.0, -1.0]))
    # -0 and +0 are one value; so are values below 1e-9 of the largest.
    assert fingerprint_of_values(np.array([-0.0, 1.0])) == fingerprint_of_values(np.array([0.0, 1.0]))
    assert fingerprint_of_values(np.array([-0.0, -0.0])) == fingerprint_of_values(np.array([0.0, 0.0]))
    assert fingerprint_of_values(np.array([1e-12, 1.0])) == fingerprint_of_values(np.array([0.0, 1.0]))
    assert fingerprint_of_values(np.array([np.nan, np.inf])) != fingerprint_of_values(np.array([np.inf, np.nan]))




def test_the_probe_validates_first():
    undefined = Program(state=(), constants=(), body=(Statement("u", "add", ("g", "m"), ()),))
    with pytest.raises(ProgramError, match="'m'"):
        fingerprint(undefined)
    with pytest.raises(ProgramError, match="'m'"):
        probe_updates(undefined)
