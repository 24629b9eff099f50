"""The primitive set: every operation a program may use, in one table.

Costs are rough relative compute (an elementwise op is 1) and feed program
complexity; a polar factor of an m x n matrix costs ~ 5 quintic steps of
4 m^2 n flops, i.e. far more than an elementwise op, hence 10.
"""

from __future__ import annotations

import functools

from primitives import elementwise as ew
from primitives import eigenbasis, factored, kronecker, lowbit, normalisers, polar
from primitives.kinds import Kind, KindError
from primitives.primitive import (
    ConstSpec,
    Primitive,
    PrimitiveSet,
    beta,
    elementwise,
    fixed,
    last_is_scalar,
    positive,
    real,
    reduction,
)

P, S = Kind.PARAM, Kind.SCALAR


def _same(fn):
    """Elementwise ops mean the same in both layouts."""
    return {"matrix_fn": fn, "vector_fn": fn}


def _reduce(fn):
    """Element statistics over the core dims: 2 for a matrix, 1 for a vector."""
    return {"matrix_fn": functools.partial(fn, core_ndim=2), "vector_fn": functools.partial(fn, core_ndim=1)}


def _unary(name, fn, doc, sympy, cost=1.0):
    return Primitive(name, 1, elementwise, cost=cost, doc=doc, category="elementwise", sympy=sympy, **_same(fn))


def _binary(name, fn, doc, sympy, commutative=False):
    return Primitive(name, 2, elementwise, cost=1.0, doc=doc, category="elementwise", commutative=commutative,
                     sympy=sympy, **_same(fn))


@functools.cache
def _sym():
    """primitives.symbolic (SymPy), imported on first use: only simplification needs it."""
    from primitives import symbolic

    return symbolic


_POLAR = ("backend", "steps", "compute_dtype")


def _basis_rule(kinds: tuple[Kind, ...]) -> Kind:
    """(ROW, ROW, SCALAR) -> ROW and (COL, COL, SCALAR) -> COL: a statistic, its basis, the step t."""
    statistic, basis, step = kinds
    if statistic not in (Kind.ROW, Kind.COL) or basis is not statistic or step is not Kind.SCALAR:
        raise KindError(f"expects (ROW, ROW, SCALAR) or (COL, COL, SCALAR), got ({', '.join(map(str, kinds))})")
    return statistic


_basis_rule.signature = "ROW, ROW, SCALAR -> ROW | COL, COL, SCALAR -> COL"  # type: ignore[attr-defined]


def _quantizer(bits: int) -> Primitive:
    return Primitive(
        f"quantize{bits}", 1, elementwise, cost=2.0, category="lowbit",
        doc=f"x stored at {bits} bits and read back: block-wise absmax quantisation, one float32 scale per "
            f"{lowbit.BLOCK} values (row-major over the core dims; a vector's in order), codes in "
            f"[-{lowbit.levels(bits)}, {lowbit.levels(bits)}]; a register written through it costs {bits}/32 of "
            f"a float32 buffer plus the scales (primitives/analysis.py: state_bytes)",
        sympy=lambda x: getattr(_sym(), f"Quantize{bits}")(x),
        matrix_fn=functools.partial(lowbit.quantize, bits=bits, core_ndim=2),
        vector_fn=functools.partial(lowbit.quantize, bits=bits, core_ndim=1))

ELEMENTWISE = (
    _binary("add", ew.add, "a + b", lambda a, b: a + b, commutative=True),
    _binary("sub", ew.sub, "a - b", lambda a, b: a - b),
    _binary("mul", ew.mul, "a * b", lambda a, b: a * b, commutative=True),
    _binary("div", ew.div, "a / b with |b| floored at 1e-30 (safe division)", lambda a, b: a / b),
    _binary("max", ew.maximum, "elementwise max(a, b)", lambda a, b: _sym().Max(a, b), commutative=True),
    _binary("min", ew.minimum, "elementwise min(a, b)", lambda a, b: _sym().Min(a, b), commutative=True),
    _unary("neg", ew.neg, "-x", lambda x: -x),
    _unary("abs", ew.abs_, "|x|", lambda x: _sym().Abs(x)),
    _unary("sign", ew.sign, "sign(x), sign(0) = 0", lambda x: _sym().sign(x)),
    _unary("sqrt", ew.sqrt, "sqrt(|x|)", lambda x: _sym().sqrt(_sym().Abs(x))),
    _unary("square", ew.square, "x^2", lambda x: x**2),
    _unary("exp", ew.exp, "exp(min(x, 30))", lambda x: _sym().exp(x), cost=2.0),
    _unary("cosh", ew.cosh, "cosh(clamp(x, -30, 30))", lambda x: _sym().cosh(x), cost=2.0),
    _unary("log", ew.log, "log(|x| + 1e-30)", lambda x: _sym().log(_sym().Abs(x)), cost=2.0),
    _unary("tanh", ew.tanh, "tanh(x)", lambda x: _sym().tanh(x), cost=2.0),
    Primitive("rsqrt", 1, elementwise, cost=1.0, category="elementwise", doc="1 / sqrt(max(|x|, eps)) (safe rsqrt)",
              consts=(positive("eps", 1e-16, "floor under |x|", high=1.0),), sympy=lambda x, eps: 1 / _sym().sqrt(_sym().Max(_sym().Abs(x), eps)),
              **_same(ew.rsqrt)),
    Primitive("clip", 1, elementwise, cost=1.0, category="elementwise", doc="clamp(x, -c, c)",
              consts=(positive("c", 1.0, "clipping threshold"),), sympy=lambda x, c: _sym().Clip(x, c),
              **_same(ew.clip)),
    Primitive("abspow", 1, elementwise, cost=2.0, category="elementwise", doc="|x|^p",
              consts=(ConstSpec("p", -4.0, 4.0, 0.5, "exponent", perturb="linear"),), sympy=lambda x, p: _sym().Abs(x) ** p,
              **_same(ew.abspow)),
    Primitive("scale", 1, elementwise, cost=1.0, category="elementwise", doc="c x",
              consts=(real("c", 1.0, "factor"),), sympy=lambda x, c: c * x,
              **_same(ew.scale)),
    Primitive("add_const", 1, elementwise, cost=1.0, category="elementwise", doc="x + c (Adam's eps)",
              consts=(real("c", 1e-8, "offset"),), sympy=lambda x, c: x + c,
              **_same(ew.add_const)),
    Primitive("add_scaled", 2, elementwise, cost=1.0, category="elementwise",
              doc="a + c b (decoupled weight decay: u + wd * w)",
              consts=(real("c", 0.01, "factor of b"),), sympy=lambda a, b, c: a + c * b,
              **_same(ew.add_scaled)),
    Primitive("interp", 2, elementwise, cost=1.0, category="elementwise",
              doc="(1 - beta) a + beta b: EMA (m = interp(g, m, beta)), Nesterov, extrapolation for beta > 1",
              consts=(ConstSpec("beta", 0.0, 2.0, 0.9, "weight of b", high_open=True, perturb="complement"),),
              sympy=lambda a, b, beta: (1 - beta) * a + beta * b,
              **_same(ew.interp)),
    Primitive("mix", 3, last_is_scalar, cost=1.0, category="elementwise",
              doc="(1 - s) a + s b with a computed weight s (Adafactor's decay t^-0.8)", sympy=lambda a, b, s: (1 - s) * a + s * b,
              **_same(ew.mix)),
    Primitive("debias", 2, last_is_scalar, cost=1.0, category="elementwise",
              doc="x / (1 - beta^t): Adam's bias correction (second argument: the step t)",
              consts=(beta("beta", 0.9, "EMA coefficient being corrected"),), sympy=lambda x, t, beta: x / (1 - beta**t),
              **_same(ew.debias)),
)

NORMALISERS = (
    Primitive("rms", 1, reduction, cost=2.0, category="normaliser", doc="sqrt(mean(x^2))", sympy=lambda x: _sym().Rms(x),
              **_reduce(normalisers.rms)),
    Primitive("frobenius", 1, reduction, cost=2.0, category="normaliser", doc="||x||_F = sqrt(sum(x^2))",
              sympy=lambda x: _sym().Frobenius(x),
              **_reduce(normalisers.frobenius)),
    Primitive("inner", 2, reduction, cost=2.0, category="normaliser", commutative=True,
              doc="<a, b> = sum(a * b); <x, polar(x)> is the nuclear norm", sympy=lambda a, b: _sym().Inner(a, b),
              **_reduce(normalisers.inner)),
    Primitive("normalize", 1, elementwise, cost=2.0, category="normaliser", doc="x / rms(x)",
              sympy=lambda x: x / _sym().Rms(x),
              **_reduce(normalisers.normalize)),
    Primitive("rms_clip", 1, elementwise, cost=2.0, category="normaliser",
              doc="x / max(1, rms(x) / d) (Adafactor's update clipping)",
              consts=(positive("d", 1.0, "largest RMS left unclipped"),), sympy=lambda x, d: _sym().RmsClip(x, d),
              **_reduce(normalisers.rms_clip)),
    Primitive("scale_by_param_rms", 2, fixed((P, P), P), cost=2.0, category="normaliser",
              doc="u * max(eps, rms(w)) (Adafactor's relative step size; second argument: the parameter)",
              consts=(positive("eps", 1e-3, "smallest parameter RMS used", high=1.0),),
              sympy=lambda u, w, eps: u * _sym().Max(eps, _sym().Rms(w)),
              **_reduce(normalisers.scale_by_param_rms)),
    Primitive("spectral_norm", 1, fixed((P,), S), cost=6.0, category="matrix",
              doc="sigma_max(x) by power iteration; on a vector max|x_i|",
              sympy=lambda x: _sym().SpectralNorm(x),
              matrix_fn=normalisers.spectral_norm, vector_fn=normalisers.spectral_norm_vector),
    Primitive("nuclear_norm", 1, fixed((P,), S), cost=10.0, category="matrix",
              doc="sum of singular values (exact); on a vector sum|x_i|",
              sympy=lambda x: _sym().NuclearNorm(x),
              matrix_fn=normalisers.nuclear_norm, vector_fn=normalisers.nuclear_norm_vector),
    Primitive("aspect_scale", 1, fixed((P,), P), cost=1.0, category="matrix",
              doc="x * sqrt(max(1, rows/cols)) (Muon's shape factor); identity on a vector",
              sympy=lambda x: _sym().AspectScale(x),
              matrix_fn=normalisers.aspect_scale, vector_fn=normalisers.aspect_scale_vector),
)

MATRIX = (
    Primitive("polar", 1, fixed((P,), P), cost=10.0, category="matrix", options=_POLAR,
              doc="orthogonal polar factor U V^T of x = U S V^T; on a vector sign(x)",
              sympy=lambda x: _sym().Polar(x),
              matrix_fn=polar.polar, vector_fn=polar.polar_vector),
    Primitive("nuclear_scaled_polar", 1, fixed((P,), P), cost=12.0, category="matrix", options=_POLAR,
              doc="<x, polar(x)> polar(x) (PolarGrad); on a vector sum|x_i| sign(x)",
              sympy=lambda x: _sym().Inner(x, _sym().Polar(x)) * _sym().Polar(x),
              matrix_fn=polar.nuclear_scaled_polar, vector_fn=polar.nuclear_scaled_polar_vector),
    Primitive("gram_left", 1, fixed((P,), Kind.ROW), cost=4.0, category="kronecker",
              doc="x x^T (left Kronecker statistic); on a vector x^2 (the diagonal)",
              sympy=lambda x: _sym().GramLeft(x),
              matrix_fn=kronecker.gram_left, vector_fn=kronecker.gram_diagonal),
    Primitive("gram_right", 1, fixed((P,), Kind.COL), cost=4.0, category="kronecker",
              doc="x^T x (right Kronecker statistic); on a vector x^2 (the diagonal)",
              sympy=lambda x: _sym().GramRight(x),
              matrix_fn=kronecker.gram_right, vector_fn=kronecker.gram_diagonal),
    Primitive("kron_precondition", 3, fixed((Kind.ROW, P, Kind.COL), P), cost=20.0, category="kronecker",
              doc="(L + eps I)^(-1/p) x (R + eps I)^(-1/p) (Shampoo); elementwise on a vector",
              consts=(ConstSpec("p", 1.0, 8.0, 4.0, "root order (Shampoo: 4)", perturb="linear"),
                      positive("eps", 1e-12, "damping added to each statistic", high=1.0)),
              sympy=lambda L, x, R, p, eps: _sym().KronPrecondition(L, x, R, p, eps),
              matrix_fn=kronecker.kron_precondition, vector_fn=kronecker.kron_precondition_vector),
    Primitive("row_mean_sq", 1, fixed((P,), Kind.ROWVEC), cost=2.0, category="factored",
              doc="row means of x^2 (Adafactor's R); a vector is one row",
              sympy=lambda x: _sym().RowMeanSq(x),
              matrix_fn=factored.row_mean_sq, vector_fn=factored.row_mean_sq_vector),
    Primitive("col_mean_sq", 1, fixed((P,), Kind.COLVEC), cost=2.0, category="factored",
              doc="column means of x^2 (Adafactor's C); on a vector x^2",
              sympy=lambda x: _sym().ColMeanSq(x),
              matrix_fn=factored.col_mean_sq, vector_fn=factored.col_mean_sq_vector),
    Primitive("factored_second_moment", 2, fixed((Kind.ROWVEC, Kind.COLVEC), P), cost=3.0, category="factored",
              doc="R C / max(mean(R), eps): Adafactor's rank-1 second moment",
              consts=(positive("eps", 1e-30, "floor under mean(R)", high=1.0),),
              sympy=lambda R, C, eps: _sym().FactoredSecondMoment(R, C, eps),
              matrix_fn=factored.factored_second_moment, vector_fn=factored.factored_second_moment_vector),
)

EIGENBASIS = (
    Primitive("eigenbasis", 3, _basis_rule, cost=10.0, category="kronecker",
              doc="the eigenbasis of statistic F kept in Q (SOAP): at t <= 1 the eigenvectors of F, largest "
                  "eigenvalue first; when t - 1 is a multiple of k one power-iteration step warm-started at Q "
                  "(columns ordered by Rayleigh quotient, QR, each column back in its slot); otherwise Q. "
                  "On a vector (a diagonal statistic) the identity, stored as ones",
              consts=(ConstSpec("k", 1.0, 1000.0, 10.0, "steps between refreshes (rounded to an integer)"),),
              sympy=lambda F, Q, t, k: _sym().Eigenbasis(F, Q, t, k),
              matrix_fn=eigenbasis.eigenbasis, vector_fn=eigenbasis.eigenbasis_vector),
    Primitive("rotate_in", 3, fixed((Kind.ROW, P, Kind.COL), P), cost=8.0, category="kronecker",
              doc="Q_L^T x Q_R: x in the eigenbases Q_L, Q_R; elementwise q_l x q_r on a vector",
              sympy=lambda QL, x, QR: _sym().RotateIn(QL, x, QR),
              matrix_fn=eigenbasis.rotate_in, vector_fn=eigenbasis.rotate_vector),
    Primitive("rotate_out", 3, fixed((Kind.ROW, P, Kind.COL), P), cost=8.0, category="kronecker",
              doc="Q_L x Q_R^T: x back from the eigenbases Q_L, Q_R; elementwise q_l x q_r on a vector",
              sympy=lambda QL, x, QR: _sym().RotateOut(QL, x, QR),
              matrix_fn=eigenbasis.rotate_out, vector_fn=eigenbasis.rotate_vector),
)

LOWBIT = (_quantizer(8), _quantizer(4))

ALL = PrimitiveSet("all", ELEMENTWISE + NORMALISERS + MATRIX + EIGENBASIS + LOWBIT)

# The Lion paper's space: elementwise ops and element statistics only.
ELEMENTWISE_SET = ALL.subset("elementwise", [p.name for p in ELEMENTWISE + NORMALISERS if p.category != "matrix"])

PRIMITIVE_SETS = {s.name: s for s in (ALL, ELEMENTWISE_SET)}
