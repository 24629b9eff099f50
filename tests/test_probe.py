"""The probe: NumPy kernels agree with the torch primitives; the memory changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from primitives import ALL, Kind, Layout
from primitives.fingerprint import fingerprint, fingerprint_of_values
from primitives.interpreter import compile_program, trajectory
from primitives.kinds import core_shape
from primitives.known import KNOWN_PROGRAMS
from primitives.primitive import ExecutionOptions, Primitive, elementwise
from primitives.probe import (PROBE_LR, PROBE_OPTIONS, ProbeMemo, default_layouts, probe_function, probe_inputs,
                              probe_updates)
from primitives.probe_kernels import MATRIX_KERNELS, VECTOR_KERNELS
from search.mutation import Limits, make_child
from strategies import programs

BATCH, M, N = 2, 5, 3


def _argument(kind: Kind, layout: Layout, rng: np.random.Generator, scale: float) -> np.ndarray:
    shape = (BATCH, *core_shape(kind, layout, M if layout is Layout.MATRIX else 1, N))
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-1, 1, shape)
    if layout is Layout.MATRIX and kind in (Kind.ROW, Kind.COL):  # Kronecker statistics: symmetric PSD
        x = x @ np.swapaxes(x, -1, -2) + 0.1 * np.eye(shape[-1])
    if kind is Kind.SCALAR:  # a step count (debias) or a weight (mix)
        x = np.abs(x) + 1.0
    return x * scale


def _constant_sets(primitive: Primitive) -> list[tuple[float, ...]]:
    """The defaults, then each constant moved halfway towards its upper end, then towards its lower end
    (ends capped at +-4: beta 0.95, interp's beta 1.45 extrapolating, abspow's p 2.25 and -1.75)."""
    def towards(end):
        return tuple(min(max(0.5 * spec.default + 0.5 * max(min(end, spec.closed_bounds[1]), spec.closed_bounds[0]),
                             spec.closed_bounds[0]), spec.closed_bounds[1]) for spec in primitive.consts)
    return [tuple(spec.default for spec in primitive.consts), towards(4.0), towards(-4.0)]


def _torch(primitive: Primitive, layout: Layout, consts, args):
    with torch.inference_mode():
        return primitive.bind(layout, consts, PROBE_OPTIONS)(*map(torch.from_numpy, args)).numpy()


CASES = [(p, layout, kinds) for p in ALL for layout in Layout for kinds in sorted(p.result_kinds, key=str)]


@pytest.mark.parametrize("primitive,layout,kinds", CASES,
                         ids=[f"{p.name}-{layout.name}-{'.'.join(k.name for k in kinds)}" for p, layout, kinds in CASES])
def test_kernel_equals_the_torch_primitive(primitive, layout, kinds):
    rng = np.random.default_rng(len(CASES))
    for consts in _constant_sets(primitive):
        kernel = probe_function(primitive, layout, consts, PROBE_OPTIONS)
        for scale in (1.0, 1e-100, 1e100, 0.0):
            args = [_argument(kind, layout, rng, scale) for kind in kinds]
            with np.errstate(all="ignore"):
                got = kernel(*args)
            want = _torch(primitive, layout, consts, args)
            assert got.shape == want.shape and got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.nanmax(np.abs(want), initial=0.0),
                                       equal_nan=True, err_msg=f"{primitive.name} {consts} scale {scale}")


@pytest.mark.parametrize("primitive,layout,kinds", CASES,
                         ids=[f"{p.name}-{layout.name}-{'.'.join(k.name for k in kinds)}" for p, layout, kinds in CASES])
def test_kernel_gives_nan_where_the_torch_primitive_does(primitive, layout, kinds):
    """A NaN or inf in one matrix of the batch: the same entries come out NaN, the other matrix is untouched."""
    rng = np.random.default_rng(1)
    consts = _constant_sets(primitive)[0]
    for bad in (np.nan, np.inf, -np.inf):
        args = [_argument(kind, layout, rng, 1.0) for kind in kinds]
        args[0][0].flat[0] = bad
        with np.errstate(all="ignore"):
            got = probe_function(primitive, layout, consts, PROBE_OPTIONS)(*args)
        want = _torch(primitive, layout, consts, args)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-9, equal_nan=True)


def test_every_library_primitive_has_a_kernel_in_both_layouts():
    assert set(MATRIX_KERNELS) == set(VECTOR_KERNELS) == set(ALL.names)


def test_a_primitive_from_elsewhere_runs_its_own_torch_function():
    """A kernel is chosen by the primitive itself, not its name: an extension's `sign` is not the library's."""
    doubled = Primitive("sign", 1, elementwise, matrix_fn=lambda x: 2 * x, vector_fn=lambda x: 2 * x, cost=1.0,
                        doc="not the library's sign", category="elementwise")
    x = np.array([[-3.0, 0.5]])
    np.testing.assert_array_equal(probe_function(doubled, Layout.VECTOR, (), PROBE_OPTIONS)(x), 2 * x)
    np.testing.assert_array_equal(probe_function(ALL.get("sign"), Layout.VECTOR, (), PROBE_OPTIONS)(x), np.sign(x))


def _torch_probe(program, options=PROBE_OPTIONS) -> np.ndarray:
    """The probe run by the torch interpreter (the reference the kernels stand in for)."""
    updates = []
    with torch.inference_mode():
        for layout in default_layouts(program, ALL):
            w, grads = probe_inputs(layout)
            compiled = compile_program(program, layout, options)
            updates += [u.reshape(-1) for u in trajectory(compiled, w, list(grads), PROBE_LR)]
    return torch.cat(updates).numpy()


@pytest.mark.parametrize("name", sorted(KNOWN_PROGRAMS))
def test_probe_of_a_known_optimizer_equals_the_torch_interpreter(name):
    np.testing.assert_allclose(probe_updates(KNOWN_PROGRAMS[name], memo=_fresh()), _torch_probe(KNOWN_PROGRAMS[name]),
                               rtol=1e-9, atol=1e-15)


def test_probe_with_an_iterative_polar_backend_runs_torch_for_the_polar_factor():
    """The kernels compute the exact factor only; other backends are the torch functions themselves."""
    options = ExecutionOptions(polar_backend="ns")
    muon = KNOWN_PROGRAMS["muon"]
    got = probe_updates(muon, options, memo=ProbeMemo(ALL, options, 4, 2, 0.0))
    np.testing.assert_allclose(got, _torch_probe(muon, options), rtol=1e-9, atol=1e-15)
    assert not np.allclose(got, probe_updates(muon, memo=_fresh()))  # Newton-Schulz is not the exact factor


def _fresh(**overrides) -> ProbeMemo:
    return ProbeMemo(ALL, PROBE_OPTIONS, **{"steps": 4, "batch": 2, "drift": 0.0, **overrides})


def _children(count: int, seed: int = 0) -> list:
    """Programs as a search makes them: children of a drifting population seeded with the warm starts."""
    rng = np.random.default_rng(seed)
    population = [KNOWN_PROGRAMS[name] for name in ("adamw", "lion", "muon", "shampoo", "adafactor")]
    seen, children = set(), []
    while len(children) < count:
        child = make_child(population[int(rng.integers(len(population)))], rng, ALL, lambda h: h not in seen,
                           Limits(24, 4))
        if child is not None:
            seen.add(child.structural_hash)
            children.append(child.program)
            population.append(child.program)
    return children


def test_the_memory_changes_no_value():
    """Updates found in the memory are bit for bit those of a run from nothing, and most are found."""
    shared = _fresh()
    children = _children(60)
    for program in children:
        np.testing.assert_array_equal(probe_updates(program, memo=shared), probe_updates(program, memo=_fresh()))
        assert fingerprint(program, memo=shared) == fingerprint(program, memo=_fresh())
    assert shared.statements_run < 0.8 * shared.statements_seen  # children share their parents' statements


def test_a_full_memory_starts_over_without_changing_values():
    children = _children(30, seed=1)
    unbounded, small = _fresh(), _fresh(capacity=150_000)  # the stream needs ~600 KB; one run adds < 100 KB
    prints = [fingerprint(p, memo=small) for p in children]
    for program in children:
        fingerprint(program, memo=unbounded)
    assert unbounded.size > 3 * small.capacity
    assert small.size < small.capacity + 100_000 and len(small.values) < len(unbounded.values) / 2
    assert prints == [fingerprint(p, memo=_fresh()) for p in children]


@settings(max_examples=60, deadline=None)
@given(programs())
def test_random_programs_probe_the_same_with_and_without_memory(program):
    shared = _fresh()
    first = probe_updates(program, memo=shared)
    np.testing.assert_array_equal(first, probe_updates(program, memo=shared))  # all found the second time
    np.testing.assert_array_equal(first, probe_updates(program, memo=_fresh()))


def test_probe_memories_are_per_probe():
    """A longer probe is another probe: its values never meet the fingerprint's."""
    program = KNOWN_PROGRAMS["adamw"]
    short = probe_updates(program)
    long = probe_updates(program, steps=6, batch=3, drift=0.5)
    assert long.size == short.size * 6 // 4 * 3 // 2
    np.testing.assert_array_equal(short, probe_updates(program))


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



def test_the_probe_validates_unless_told_the_program_is_valid():
    """Kernels assume a valid program: an unvalidated one is checked first and refused with the reason."""
    from primitives.program import Program, ProgramError, Statement
    undefined = Program(state=(), constants=(), body=(Statement("u", "add", ("g", "m"), ()),))
    with pytest.raises(ProgramError, match="'m'"):
        fingerprint(undefined)
    with pytest.raises(ProgramError, match="'m'"):
        probe_updates(undefined)
    program = KNOWN_PROGRAMS["adamw"]
    assert fingerprint(program, validated=True) == fingerprint(program)
