"""SymPy functions for the opaque primitives (imported lazily: only simplification needs SymPy).

Each primitive's counterpart is on its row (primitives/library.py: `sympy=`);
the opaque ones build the functions defined here.

Values are treated as commuting symbols: every elementwise operation on arrays
is a commutative algebra, and all matrix products happen inside opaque
functions (Polar, GramLeft, ...). Those functions carry the identities the
search relies on in their `eval` classmethods, so SymPy applies them whenever
an expression is built:

    sign(c x) = sign(x), c > 0           (SymPy's own sign)
    Polar(c X) = Polar(X), c > 0         Polar(Polar(X)) = Polar(X)
    Rms(c X) = |c| Rms(X)                Frobenius(c X) = |c| Frobenius(X)
    Inner(X, Polar(X)) = NuclearNorm(X)  AspectScale(c X) = c AspectScale(X)
    NuclearNorm(c X) = |c| NuclearNorm(X), SpectralNorm likewise
    Eigenbasis(c F, Q, t) = Eigenbasis(F, Q, t), c > 0
    RotateIn(Q_L, c X, Q_R) = c RotateIn(Q_L, X, Q_R), RotateOut likewise
    Quantize8(Quantize8(X)) = Quantize8(X), Quantize4 likewise
"""

from __future__ import annotations

import sympy
from sympy import Abs, Function, Max, Min, cosh, exp, log, sign, sqrt, tanh  # noqa: F401 -- the rows use them


class _Real(Function):
    """Every primitive's value is real (SymPy assumes complex otherwise).

    `latex` is a format string over the printed arguments.
    """

    latex = r"\operatorname{{{name}}}\left({args}\right)"

    def _eval_is_real(self):
        return True

    def _latex(self, printer, exp=None):
        args = [printer._print(a) for a in self.args]
        body = self.latex.format(*args, name=type(self).__name__.lower(), args=", ".join(args))
        # SymPy's printer hands the exponent of f(...)^e to f's own printer.
        return body if exp is None else rf"\left({body}\right)^{{{exp}}}"


class _NonNegative(_Real):
    """Norms, Gram statistics and mean squares."""

    def _eval_is_nonnegative(self):
        return True


def _split_positive_factor(x: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """x = c * rest with c a positive number or positive symbol product; else None."""
    if not isinstance(x, sympy.Mul):
        return None
    positive = [f for f in x.args if f.is_positive]
    if not positive:
        return None
    rest = [f for f in x.args if not f.is_positive]
    return sympy.Mul(*positive), sympy.Mul(*rest)


class _ScaleInvariant(_Real):
    """f(c X) = f(X) for c > 0."""

    @classmethod
    def eval(cls, x):
        split = _split_positive_factor(x)
        if split is not None:
            return cls(split[1])
        if isinstance(x, cls):
            return x
        return None


class _AbsHomogeneous(_NonNegative):
    """f(c X) = |c| f(X) for any number c; f(0) = 0."""

    @classmethod
    def eval(cls, x):
        if x == 0:
            return sympy.S.Zero
        if isinstance(x, sympy.Mul):
            coefficient, rest = x.as_coeff_Mul()
            if coefficient != 1:
                return Abs(coefficient) * cls(rest)
            split = _split_positive_factor(x)
            if split is not None:
                return split[0] * cls(split[1])
        return None


class Polar(_ScaleInvariant):
    """polar(X) = U V^T."""

    latex = r"\operatorname{{polar}}\left({0}\right)"

    @classmethod
    def eval(cls, x):
        if x == 0:
            return sympy.S.Zero
        if isinstance(x, sympy.Mul):
            coefficient, rest = x.as_coeff_Mul()
            if coefficient.is_negative:
                return -cls(-x)
        return super().eval(x)


class Rms(_AbsHomogeneous):
    """sqrt(mean(X^2))."""

    latex = r"\operatorname{{rms}}\left({0}\right)"


class Frobenius(_AbsHomogeneous):
    """||X||_F."""

    latex = r"\left\|{0}\right\|_F"


class SpectralNorm(_AbsHomogeneous):
    """sigma_max(X)."""

    latex = r"\left\|{0}\right\|_2"


class NuclearNorm(_AbsHomogeneous):
    """sum of singular values."""

    latex = r"\left\|{0}\right\|_*"


class Inner(_Real):
    """<A, B> = sum(A * B), bilinear and symmetric."""

    latex = r"\left\langle {0}, {1} \right\rangle"

    @classmethod
    def eval(cls, a, b):
        if a == 0 or b == 0:
            return sympy.S.Zero
        if isinstance(b, Polar) and b.args[0] == a or isinstance(a, Polar) and a.args[0] == b:
            return NuclearNorm(b if isinstance(a, Polar) else a)
        for i, x in enumerate((a, b)):
            if isinstance(x, sympy.Mul):
                coefficient, rest = x.as_coeff_Mul()
                if coefficient != 1:
                    other = b if i == 0 else a
                    return coefficient * cls(rest, other)
        if sympy.default_sort_key(a) > sympy.default_sort_key(b):
            return cls(b, a)
        return None


class AspectScale(_Real):
    """X sqrt(max(1, rows/cols)): linear in X."""

    latex = r"\sqrt{{\max(1, m/n)}}\,\left({0}\right)"

    @classmethod
    def eval(cls, x):
        if x == 0:
            return sympy.S.Zero
        if isinstance(x, sympy.Mul):
            coefficient, rest = x.as_coeff_Mul()
            if coefficient != 1:
                return coefficient * cls(rest)
        return None


class Clip(_Real):
    """clamp(x, -c, c)."""

    latex = r"\operatorname{{clip}}\left({0}, {1}\right)"


class RmsClip(_Real):
    """x / max(1, rms(x)/d)."""

    latex = r"\frac{{{0}}}{{\max\left(1, \operatorname{{rms}}({0}) / {1}\right)}}"


class GramLeft(_NonNegative):
    """X X^T."""

    latex = r"\left({0}\right)\left({0}\right)^\top"


class GramRight(_NonNegative):
    """X^T X."""

    latex = r"\left({0}\right)^\top\left({0}\right)"


class KronPrecondition(_Real):
    """(L + eps I)^(-1/p) X (R + eps I)^(-1/p)."""

    latex = r"\left({0} + {4} I\right)^{{-1/{3}}} \left({1}\right) \left({2} + {4} I\right)^{{-1/{3}}}"


class RowMeanSq(_NonNegative):
    """row means of X^2."""

    latex = r"\operatorname{{rowmean}}\left(({0})^2\right)"


class ColMeanSq(_NonNegative):
    """column means of X^2."""

    latex = r"\operatorname{{colmean}}\left(({0})^2\right)"


class FactoredSecondMoment(_NonNegative):
    """R C / max(mean(R), eps)."""

    latex = r"\frac{{{0}\,{1}}}{{\max(\overline{{{0}}}, {2})}}"


class Eigenbasis(_Real):
    """The eigenbasis of F kept in Q, exact at t <= 1 and refreshed every k steps: the same for c F, c > 0."""

    latex = r"\operatorname{{eigenbasis}}_{{{3}}}\left({0}; {1}, {2}\right)"

    @classmethod
    def eval(cls, F, Q, t, k):
        split = _split_positive_factor(F)
        if split is not None:
            return cls(split[1], Q, t, k)
        return None


class _Rotation(_Real):
    """Linear in the rotated value: f(Q_L, c X, Q_R) = c f(Q_L, X, Q_R); f(Q_L, 0, Q_R) = 0."""

    @classmethod
    def eval(cls, QL, x, QR):
        if x == 0:
            return sympy.S.Zero
        if isinstance(x, sympy.Mul):
            coefficient, rest = x.as_coeff_Mul()
            if coefficient != 1:
                return coefficient * cls(QL, rest, QR)
            split = _split_positive_factor(x)  # positive constants and t are scalars
            if split is not None:
                return split[0] * cls(QL, split[1], QR)
        return None


class RotateIn(_Rotation):
    """Q_L^T X Q_R."""

    latex = r"{0}^\top \left({1}\right) {2}"


class RotateOut(_Rotation):
    """Q_L X Q_R^T."""

    latex = r"{0} \left({1}\right) {2}^\top"


class _Quantized(_Real):
    """A block-wise absmax round trip: q(q(X)) = q(X), q(0) = 0."""

    @classmethod
    def eval(cls, x):
        if x == 0:
            return sympy.S.Zero
        if isinstance(x, cls):
            return x
        return None


class Quantize8(_Quantized):
    """X stored at 8 bits and read back."""

    latex = r"\left[{0}\right]_{{8}}"


class Quantize4(_Quantized):
    """X stored at 4 bits and read back."""

    latex = r"\left[{0}\right]_{{4}}"
