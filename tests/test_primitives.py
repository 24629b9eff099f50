"""Every primitive against its mathematical definition, written independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import argument_kinds, default_consts, sample_arguments
from primitives import ALL, ExecutionOptions, Kind, Layout
from primitives.polar import BACKENDS

# --- independent definitions (numpy, float64, one matrix at a time) ----------


def _svd_polar(x):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def _inv_root(a, p, eps):
    w, q = np.linalg.eigh(a)
    return q @ np.diag((np.maximum(w, 0) + eps) ** (-1.0 / p)) @ q.T


def _per_matrix(fn):
    """Apply fn to each matrix of a batch (the primitives' leading dims)."""

    def apply(*args, **consts):
        batch = args[0].shape[:-2]
        out = [fn(*(a[idx] for a in args), **consts) for idx in np.ndindex(*batch)]
        return np.stack(out).reshape(*batch, *np.shape(out[0]))

    return apply


MATRIX_REFERENCE = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "max": np.maximum,
    "min": np.minimum,
    "neg": lambda x: -x,
    "abs": np.abs,
    "sign": np.sign,
    "sqrt": lambda x: np.sqrt(np.abs(x)),
    "square": lambda x: x * x,
    "exp": np.exp,
    "cosh": np.cosh,
    "log": lambda x: np.log(np.abs(x)),
    "tanh": np.tanh,
    "rsqrt": lambda x, eps: 1 / np.sqrt(np.maximum(np.abs(x), eps)),
    "clip": lambda x, c: np.clip(x, -c, c),
    "abspow": lambda x, p: np.abs(x) ** p,
    "scale": lambda x, c: c * x,
    "add_const": lambda x, c: x + c,
    "add_scaled": lambda a, b, c: a + c * b,
    "interp": lambda a, b, beta: (1 - beta) * a + beta * b,
    "mix": lambda a, b, s: (1 - s) * a + s * b,
    "debias": lambda x, t, beta: x / (1 - beta**t),
    "rms": _per_matrix(lambda x: np.sqrt(np.mean(x**2)).reshape(1, 1)),
    "frobenius": _per_matrix(lambda x: np.linalg.norm(x, "fro").reshape(1, 1)),
    "inner": _per_matrix(lambda a, b: np.sum(a * b).reshape(1, 1)),
    "normalize": _per_matrix(lambda x: x / np.sqrt(np.mean(x**2))),
    "rms_clip": _per_matrix(lambda x, d: x / max(1.0, np.sqrt(np.mean(x**2)) / d)),
    "scale_by_param_rms": _per_matrix(lambda u, w, eps: u * max(eps, np.sqrt(np.mean(w**2)))),
    "spectral_norm": _per_matrix(lambda x: np.linalg.norm(x, 2).reshape(1, 1)),
    "nuclear_norm": _per_matrix(lambda x: np.linalg.norm(x, "nuc").reshape(1, 1)),
    "aspect_scale": _per_matrix(lambda x: x * np.sqrt(max(1, x.shape[0] / x.shape[1]))),
    "polar": _per_matrix(_svd_polar),
    "nuclear_scaled_polar": _per_matrix(lambda x: np.linalg.norm(x, "nuc") * _svd_polar(x)),
    "gram_left": _per_matrix(lambda x: x @ x.T),
    "gram_right": _per_matrix(lambda x: x.T @ x),
    "kron_precondition": _per_matrix(lambda L, x, R, p, eps: _inv_root(L, p, eps) @ x @ _inv_root(R, p, eps)),
    "row_mean_sq": _per_matrix(lambda x: np.mean(x**2, axis=1, keepdims=True)),
    "col_mean_sq": _per_matrix(lambda x: np.mean(x**2, axis=0, keepdims=True)),
    "factored_second_moment": _per_matrix(lambda R, C, eps: R @ C / max(np.mean(R), eps)),
}

EXACT = ExecutionOptions(polar_backend="svd")


def test_every_primitive_has_a_reference_counterpart_doc_and_valid_defaults():
    assert set(MATRIX_REFERENCE) == set(ALL.names)
    assert all(prim.sympy is not None for prim in ALL)
    for prim in ALL:
        assert prim.doc and prim.cost > 0
        for fn in (prim.matrix_fn, prim.vector_fn):
            assert getattr(fn, "func", fn).__doc__, f"{prim.name}: torch function without a docstring"
        for spec in prim.consts:
            assert spec.contains(spec.default), (prim.name, spec)


@pytest.mark.parametrize("name", ALL.names)
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)], ids=["tall", "wide", "square"])
def test_matrix_layout_matches_definition(name, shape):
    prim = ALL.get(name)
    args = sample_arguments(prim, Layout.MATRIX, batch=(2,), m=shape[0], n=shape[1], seed=1)
    consts = default_consts(prim)
    if name == "spectral_norm":  # power iteration needs a spectral gap: make one
        args[0][..., 0, :] *= 4
    out = prim.bind(Layout.MATRIX, consts, EXACT)(*args)
    expected = MATRIX_REFERENCE[name](*(a.numpy() for a in args), **consts)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected, out.shape), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype,huge", [(torch.float64, 1e200), (torch.float32, 1e30)])
def test_spectral_norm_of_a_huge_matrix_does_not_overflow(dtype, huge):
    """Power iteration squares x's entries; on x / max|x| it scales: 1e200 x has norm 1e200 ||x||, not 0."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x[..., 0, :] *= 4  # a spectral gap
    spectral_norm = ALL.get("spectral_norm")
    exact = torch.linalg.matrix_norm(x, ord=2)[..., None, None]
    torch.testing.assert_close(spectral_norm(x.to(dtype) * huge).double() / huge, exact, rtol=1e-5, atol=0)
    assert torch.equal(spectral_norm(torch.zeros(2, 5, 3, dtype=dtype)), torch.zeros(2, 1, 1, dtype=dtype))


# A vector is diag(x) for matrix primitives: check against the matrix definition.
DIAGONAL_PRIMITIVES = ["spectral_norm", "nuclear_norm", "polar", "nuclear_scaled_polar", "aspect_scale",
                       "gram_left", "gram_right"]


@pytest.mark.parametrize("name", DIAGONAL_PRIMITIVES)
def test_vector_layout_is_the_diagonal_matrix(name):
    prim = ALL.get(name)
    x = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[0] = 4.0  # a spectral gap, so that power iteration converges to 1e-9
    on_vector = prim.bind(Layout.VECTOR, {}, EXACT)(x)
    on_diag = prim.bind(Layout.MATRIX, {}, EXACT)(torch.diag(x))
    if on_vector.shape == (1,):  # a SCALAR
        torch.testing.assert_close(on_vector, on_diag.reshape(1), rtol=1e-9, atol=1e-12)
    else:
        torch.testing.assert_close(torch.diag(on_vector), on_diag, rtol=1e-9, atol=1e-12)


def test_vector_layout_kron_and_factored_match_matrix_definitions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, dtype=torch.float64, generator=g)
    l, r = torch.rand(6, dtype=torch.float64, generator=g), torch.rand(6, dtype=torch.float64, generator=g)
    kron = ALL.get("kron_precondition")
    on_vector = kron(l, x, r, layout=Layout.VECTOR, p=4.0, eps=1e-6)
    on_diag = kron(torch.diag(l), torch.diag(x), torch.diag(r), p=4.0, eps=1e-6)
    torch.testing.assert_close(torch.diag(on_vector), on_diag)
    # Factored moments read a vector as a 1 x n row: V = x^2 exactly (Adafactor's 1-D case).
    R = ALL.get("row_mean_sq")(x, layout=Layout.VECTOR)
    C = ALL.get("col_mean_sq")(x, layout=Layout.VECTOR)
    V = ALL.get("factored_second_moment")(R, C, layout=Layout.VECTOR, eps=1e-30)
    torch.testing.assert_close(V, x * x)
    torch.testing.assert_close(R, ALL.get("row_mean_sq")(x[None, :]).reshape(1))
    torch.testing.assert_close(C, ALL.get("col_mean_sq")(x[None, :]).reshape(6))


@pytest.mark.parametrize("name", ALL.names)
@pytest.mark.parametrize("layout", list(Layout))
def test_batched_equals_per_slice(name, layout):
    prim = ALL.get(name)
    args = sample_arguments(prim, layout, batch=(3, 2), m=4, n=6, seed=4)
    fn = prim.bind(layout, default_consts(prim), ExecutionOptions(polar_backend="ns"))
    batched = fn(*args)
    for i in range(3):
        for j in range(2):
            single = fn(*(a[i, j] for a in args))
            torch.testing.assert_close(batched[i, j], single, rtol=1e-10, atol=1e-12)


# The polar backend only matters to primitives that take execution options.
NAME_BACKEND = [(p.name, b) for p in ALL for b in (BACKENDS if p.options else ("ns",))]


@pytest.mark.parametrize("name,backend", NAME_BACKEND)
@pytest.mark.parametrize("layout", list(Layout))
def test_never_writes_into_inputs(name, layout, backend):
    prim = ALL.get(name)
    args = sample_arguments(prim, layout, seed=5, dtype=torch.float32)
    before = [a.clone() for a in args]
    prim.bind(layout, default_consts(prim), ExecutionOptions(polar_backend=backend))(*args)
    for a, b in zip(args, before):
        assert torch.equal(a, b)


def _degenerate_inputs(prim, layout, dtype):
    """All-zero inputs, and rank-1 (rank-deficient) matrices."""
    zero = [torch.zeros_like(a) for a in sample_arguments(prim, layout, dtype=dtype)]
    g = torch.Generator().manual_seed(6)
    low_rank = []
    for a, kind in zip(sample_arguments(prim, layout, dtype=dtype), argument_kinds(prim)):
        if kind is Kind.PARAM and layout is Layout.MATRIX:
            u = torch.randn(*a.shape[:-1], 1, dtype=dtype, generator=g)
            v = torch.randn(*a.shape[:-2], 1, a.shape[-1], dtype=dtype, generator=g)
            a = u @ v
        low_rank.append(a)
    return zero, low_rank


@pytest.mark.parametrize("name,backend", NAME_BACKEND)
@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_and_rank_deficient_inputs_give_finite_outputs(name, layout, backend, dtype):
    prim = ALL.get(name)
    fn = prim.bind(layout, default_consts(prim), ExecutionOptions(polar_backend=backend))
    for args in _degenerate_inputs(prim, layout, dtype):
        assert torch.isfinite(fn(*args)).all(), (name, backend)


@pytest.mark.parametrize("name,backend", NAME_BACKEND)
@pytest.mark.parametrize("layout", list(Layout))
def test_a_non_finite_matrix_in_a_batch_leaves_the_others_alone(name, layout, backend):
    """A diverged seed trained beside others: no exception, the healthy seed's result unchanged."""
    prim = ALL.get(name)
    fn = prim.bind(layout, default_consts(prim), ExecutionOptions(polar_backend=backend))
    args = sample_arguments(prim, layout, batch=(2,))
    clean = fn(*args)
    poisoned_args = [a.clone() for a in args]
    for value in (float("nan"), float("inf")):
        for a in poisoned_args:
            if a.shape[0] == 2:  # every argument batched along dim 0 holds a bad entry in element 1
                a[1].reshape(-1)[0] = value
        poisoned = fn(*poisoned_args)
        if clean.shape[0] == 2:
            torch.testing.assert_close(poisoned[0], clean[0], equal_nan=True)


def test_guards_keep_extreme_inputs_finite():
    huge = torch.tensor([1e30, -1e30, 0.0, 100.0])
    for name in ("exp", "cosh", "log", "sqrt", "tanh", "sign"):
        assert torch.isfinite(ALL.get(name)(huge)).all(), name
    assert torch.isfinite(ALL.get("div")(torch.ones(3), torch.tensor([0.0, -0.0, 1e-40]))).all()
    assert torch.isfinite(ALL.get("abspow")(torch.zeros(3), p=-2.0)).all()
    assert torch.isfinite(ALL.get("rsqrt")(torch.zeros(3), eps=1e-16)).all()


def test_interp_mix_and_debias_are_the_momentum_building_blocks():
    g, m = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(ALL.get("interp")(g, m, beta=0.9), 0.1 * g + 0.9 * m)
    s = torch.full((1, 1), 0.25)
    torch.testing.assert_close(ALL.get("mix")(g, m, s), 0.75 * g + 0.25 * m)
    t = torch.tensor(1.0)
    torch.testing.assert_close(ALL.get("debias")(m, t, beta=0.9), m / 0.1)


def test_kind_rules_reject_mismatched_kinds():
    from primitives import KindError

    with pytest.raises(KindError, match="cannot combine"):
        ALL.get("add").result_kind((Kind.ROW, Kind.PARAM))
    with pytest.raises(KindError, match="expects"):
        ALL.get("polar").result_kind((Kind.ROW,))
    with pytest.raises(KindError, match="takes 2"):
        ALL.get("add").result_kind((Kind.PARAM,))
    assert ALL.get("add").result_kind((Kind.SCALAR, Kind.ROW)) is Kind.ROW
    assert ALL.get("rms").result_kind((Kind.COL,)) is Kind.SCALAR


def test_unknown_primitive_suggests_close_names():
    from primitives import UnknownPrimitiveError

    with pytest.raises(UnknownPrimitiveError, match="did you mean polar"):
        ALL.get("polr")


def test_primitive_set_version_changes_with_contents():
    smaller = ALL.subset("smaller", ALL.names[:-1])
    assert smaller.version != ALL.version
    assert ALL.subset("same", ALL.names).version == ALL.version


ELEMENTWISE_NAMES = [p.name for p in ALL if p.category == "elementwise"]


@pytest.mark.parametrize("name", ELEMENTWISE_NAMES)
def test_the_sympy_counterpart_on_the_row_computes_what_the_torch_function_does(name):
    """Simplification rewrites the counterparts: they must mean what the torch functions compute
    (away from the clamps and floors that only guard overflow)."""
    import sympy

    prim = ALL.get(name)
    generator = torch.Generator().manual_seed(3)
    consts = default_consts(prim)
    for _ in range(5):
        args = [torch.rand((), generator=generator, dtype=torch.float64) * 4 - 2 for _ in range(prim.arity)]
        if name == "debias":
            args[-1] = torch.tensor(3.0, dtype=torch.float64)  # the step count t
        expected = float(prim(*[a.reshape(1) for a in args], layout=Layout.VECTOR, **consts))
        expression = sympy.N(prim.sympy(*[sympy.Float(float(a)) for a in args],
                                        *[sympy.Float(v) for v in consts.values()]))
        if not expression.is_Number:
            pytest.skip(f"{name}'s counterpart is an opaque function (primitives/symbolic.py), not arithmetic")
        assert float(expression) == pytest.approx(expected, rel=1e-9, abs=1e-12), name
