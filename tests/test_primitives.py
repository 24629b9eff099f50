"""Every primitive against its mathematical definition, written independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import helpers
from helpers import default_consts
from primitives import ALL, ExecutionOptions, Kind, KindError, Layout
from primitives.polar import BACKENDS

# --- arguments: helpers' kinds, and a statistic with its basis and the step t --


def argument_kinds(prim):
    """One valid tuple of argument kinds (helpers' candidates, then the eigenbasis primitives')."""
    try:
        return helpers.argument_kinds(prim)
    except AssertionError:
        for kinds in [(Kind.ROW, Kind.ROW, Kind.SCALAR)]:
            try:
                prim.result_kind(kinds)
                return kinds
            except KindError:
                pass
        raise


def sample_arguments(prim, layout, batch=(2,), m=5, n=3, dtype=torch.float64, seed=0, scale=1.0):
    """helpers.sample_arguments for every primitive; an eigenbasis gets a step that refreshes it (t = k + 1)."""
    generator = torch.Generator().manual_seed(seed)
    args = [helpers.sample_value(k, layout, batch, m, n, dtype, generator, scale) for k in argument_kinds(prim)]
    if prim.name == "eigenbasis":
        args[-1] = torch.full_like(args[-1], default_consts(prim)["k"] + 1)
    return args


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


def _np_eigenbasis(F, Q, t, k):
    """The eigenbasis primitive's definition, one matrix at a time (numpy: LAPACK through another build)."""
    t, every = float(np.reshape(t, -1)[0]), max(1, round(k))
    if t <= 1:
        _, V = np.linalg.eigh(F + 1e-30 * np.eye(len(F)))
        V = V[:, ::-1]
        largest = V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])]
        return V * np.where(largest < 0, -1.0, 1.0)
    if (t - 1) % every:
        return Q
    FQ = F @ Q
    order = np.argsort(-np.sum(Q * FQ, axis=0), kind="stable")
    q, r = np.linalg.qr(FQ[:, order])
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    out = np.empty_like(q)
    out[:, order] = q  # each refreshed column back in the slot its old column held
    return out


def _np_quantize(x, bits):
    top = 2 ** (bits - 1) - 1
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, 64):
        block = flat[start:start + 64]
        scale = np.abs(block).max() / top
        out[start:start + 64] = 0.0 if scale == 0 else np.clip(np.round(block / scale), -top, top) * scale
    return out.reshape(x.shape)


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
    "eigenbasis": _per_matrix(_np_eigenbasis),
    "rotate_in": _per_matrix(lambda QL, x, QR: QL.T @ x @ QR),
    "rotate_out": _per_matrix(lambda QL, x, QR: QL @ x @ QR.T),
    "quantize8": _per_matrix(lambda x: _np_quantize(x, 8)),
    "quantize4": _per_matrix(lambda x: _np_quantize(x, 4)),
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


# --- eigenbases, rotations and low-bit state ------------------------------------


def _psd(batch, m, seed, dtype=torch.float64):
    x = torch.randn(*batch, m, m + 2, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return x @ x.mT


def test_eigenbasis_is_exact_at_the_start_kept_between_refreshes_and_refreshed_every_k():
    eigenbasis = ALL.get("eigenbasis")
    F = _psd((2,), 6, seed=7)
    step = lambda value: torch.full((2, 1, 1), float(value), dtype=torch.float64)  # noqa: E731
    Q = eigenbasis(F, torch.zeros_like(F), step(1), k=3)
    torch.testing.assert_close(Q.mT @ Q, torch.eye(6, dtype=torch.float64).expand(2, 6, 6))
    rotated = Q.mT @ F @ Q
    eigenvalues = torch.diagonal(rotated, dim1=-2, dim2=-1)
    torch.testing.assert_close(rotated, torch.diag_embed(eigenvalues), atol=1e-12, rtol=0)
    assert (eigenvalues[..., :-1] >= eigenvalues[..., 1:]).all()  # largest first
    torch.testing.assert_close(eigenvalues, torch.linalg.eigvalsh(F).flip(-1))
    G = _psd((2,), 6, seed=8)
    for t in (2, 3, 5, 6):  # t - 1 not a multiple of 3: Q as it is
        assert torch.equal(eigenbasis(G, Q, step(t), k=3), Q)
    refreshed = eigenbasis(G, Q, step(4), k=3)
    expected = np.stack([_np_eigenbasis(G[i].numpy(), Q[i].numpy(), 4.0, 3) for i in range(2)])
    np.testing.assert_allclose(refreshed.numpy(), expected, rtol=1e-9, atol=1e-12)
    # an exact eigenbasis is a fixed point of the refresh; k is rounded to an integer
    torch.testing.assert_close(eigenbasis(F, Q, step(4), k=3), Q, rtol=0, atol=1e-12)
    assert torch.equal(eigenbasis(F, Q, step(4), k=3.4), eigenbasis(F, Q, step(4), k=3))


def test_refreshes_converge_to_the_new_eigenbasis_and_columns_keep_their_slots():
    eigenbasis = ALL.get("eigenbasis")
    one = torch.ones(1, 1, dtype=torch.float64)
    F0 = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    Q = eigenbasis(F0, torch.zeros(3, 3, dtype=torch.float64), one, k=1)
    torch.testing.assert_close(Q, torch.eye(3, dtype=torch.float64))
    # The eigenvalues change order: SOAP would sort the columns and permute v; here each stays in its slot.
    F1 = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.equal(eigenbasis(F1, Q, 2 * one, k=1), Q)
    # Repeated refreshes are subspace iteration: they find the eigenvectors of a new statistic.
    F2 = _psd((), 5, seed=9)
    Q = eigenbasis(_psd((), 5, seed=10), torch.zeros(5, 5, dtype=torch.float64), one, k=1)
    for t in range(2, 400):
        Q = eigenbasis(F2, Q, t * one, k=1)
    rotated = Q.mT @ F2 @ Q
    off_diagonal = rotated - torch.diag_embed(torch.diagonal(rotated))
    assert off_diagonal.abs().max() < 1e-8 * rotated.abs().max()


def test_eigenbasis_kinds_and_vector_layout():
    prim = ALL.get("eigenbasis")
    assert prim.result_kind((Kind.ROW, Kind.ROW, Kind.SCALAR)) is Kind.ROW
    assert prim.result_kind((Kind.COL, Kind.COL, Kind.SCALAR)) is Kind.COL
    for bad in [(Kind.ROW, Kind.COL, Kind.SCALAR), (Kind.PARAM, Kind.PARAM, Kind.SCALAR), (Kind.ROW, Kind.ROW, Kind.ROW)]:
        with pytest.raises(KindError):
            prim.result_kind(bad)
    # A vector's statistic is diagonal: its basis is the identity (ones), computed at the start and on refreshes.
    f, q = torch.rand(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    t = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    out = prim(f, q, t, layout=Layout.VECTOR, k=10.0)
    assert torch.equal(out[0], torch.ones(6, dtype=torch.float64)) and torch.equal(out[1], q[1])
    assert torch.equal(prim(f, q, torch.full((2, 1), 11.0, dtype=torch.float64), layout=Layout.VECTOR, k=10.0),
                       torch.ones(2, 6, dtype=torch.float64))


@pytest.mark.parametrize("name", ["rotate_in", "rotate_out"])
def test_rotations_invert_each_other_and_act_on_a_vector_as_on_diag(name):
    g = torch.Generator().manual_seed(11)
    QL = torch.linalg.qr(torch.randn(2, 5, 5, dtype=torch.float64, generator=g)).Q
    QR = torch.linalg.qr(torch.randn(2, 3, 3, dtype=torch.float64, generator=g)).Q
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    rotate_in, rotate_out = ALL.get("rotate_in"), ALL.get("rotate_out")
    torch.testing.assert_close(rotate_out(QL, rotate_in(QL, x, QR), QR), x)
    torch.testing.assert_close(rotate_in(QL, rotate_out(QL, x, QR), QR), x)
    prim = ALL.get(name)
    ql, v, qr = (torch.randn(6, dtype=torch.float64, generator=g) for _ in range(3))
    torch.testing.assert_close(torch.diag(prim(ql, v, qr, layout=Layout.VECTOR)),
                               prim(torch.diag(ql), torch.diag(v), torch.diag(qr)))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantizers_round_trip_blocks_of_64_values(bits):
    prim = ALL.get(f"quantize{bits}")
    top = 2 ** (bits - 1) - 1
    x = torch.randn(3, 10, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    x[1, 4:, :] *= 1000  # blocks of very different scales
    q = prim(x)
    np.testing.assert_array_equal(q.numpy(), np.stack([_np_quantize(m, bits) for m in x.numpy()]))
    for flat, original in zip(q.reshape(3, -1), x.reshape(3, -1)):
        for start in range(0, 130, 64):  # blocks of 64 values, the last one 2 long
            block, exact = flat[start:start + 64], original[start:start + 64]
            scale = exact.abs().max() / top
            assert (block - exact).abs().max() <= scale / 2 * (1 + 1e-12)
            assert len(torch.unique(block)) <= 2 * top + 1
            assert (block / scale - torch.round(block / scale)).abs().max() < 1e-9  # multiples of the scale
    torch.testing.assert_close(prim(q), q, rtol=1e-12, atol=0)  # a stored value stores as itself
    assert torch.equal(prim(torch.zeros(4, 7)), torch.zeros(4, 7))
    # each matrix of a batch is quantised alone; a vector as the 1 x n row
    torch.testing.assert_close(q[1], prim(x[1]))
    v = x[0].reshape(-1)
    torch.testing.assert_close(prim(v, layout=Layout.VECTOR), prim(v[None, :]).reshape(-1))


def test_sympy_counterparts_of_the_basis_and_low_bit_primitives_carry_their_identities():
    import sympy

    from primitives import symbolic
    from primitives.simplify import opaque_functions

    F, Q, X, QL, QR, t = sympy.symbols("F Q X QL QR t", real=True)
    c, k = sympy.symbols("c k", positive=True)
    assert symbolic.Eigenbasis(c * F, Q, t, k) == symbolic.Eigenbasis(F, Q, t, k)
    assert symbolic.RotateIn(QL, -3 * X, QR) == -3 * symbolic.RotateIn(QL, X, QR)
    assert symbolic.RotateOut(QL, c * X, QR) == c * symbolic.RotateOut(QL, X, QR)
    assert symbolic.RotateIn(QL, sympy.S.Zero, QR) == 0
    assert symbolic.Quantize8(symbolic.Quantize8(X)) == symbolic.Quantize8(X)
    assert symbolic.Quantize4(sympy.S.Zero) == 0
    recognised = {name for name, _ in opaque_functions(ALL).values()}
    assert {"eigenbasis", "rotate_in", "rotate_out", "quantize8", "quantize4"} <= recognised
    assert sympy.latex(symbolic.RotateIn(QL, X, QR) ** 2)  # printed raised to a power


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
