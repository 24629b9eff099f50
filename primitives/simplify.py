"""Simplify a program with SymPy, and prove the result equivalent by running both.

    program -> SymPy:  u and every state update as expressions over g, w, t,
                       the previous state values and the named constants;
                       opaque primitives are SymPy functions carrying their
                       identities (primitives/symbolic.py)
    rewrite:           x / |x| -> sign(x), x sign(x) -> |x|, then expand and
                       collect the linear parts (nested interps become one);
                       expansion is skipped for expressions too big to expand
                       quickly (full simplify() is slow, and turns sign into
                       a Piecewise: it is never called)
    SymPy -> program:  recognise interp, add_scaled, scale, add_const, debias
                       and the opaque primitives; constant sub-expressions
                       (beta1 * beta2) become new named constants
    check:             run the original and the simplified program side by
                       side on random inputs of several shapes for many steps;
                       the simplified form is used only if they agree

Nothing is evaluated from text: expressions are built from the program's
data by the primitives' SymPy counterparts.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re

import numpy as np
import sympy
import torch

from primitives import symbolic
from primitives.analysis import prune
from primitives.interpreter import compile_program, trajectory
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program, ProgramError, StateDecl, Statement, validate

# Expressions with more operations than this are not expanded: expansion is
# where SymPy's time goes, and a formula that big is not read anyway.
EXPAND_LIMIT = 400


class Unsupported(ValueError):
    """An expression the back-translation cannot turn into statements."""


class NoCounterpart(ValueError):
    """A primitive whose row has no SymPy counterpart."""


class TooLarge(ValueError):
    """A program whose symbolic form SymPy would not finish (or not fit in the stack)."""


# Programs longer than this are not put through SymPy (the search's limit is 24).
SYMBOLIC_STATEMENTS = 200


@dataclasses.dataclass(frozen=True)
class Symbolic:
    """A program as SymPy: the update and the state updates."""

    u: sympy.Expr
    state: dict[str, sympy.Expr]  # register -> its new value (in terms of previous values)
    registers: dict[str, sympy.Symbol]  # g, w, t and the previous value of each state register
    constants: dict[sympy.Symbol, float]


def _constant_symbol(name: str, value: float) -> sympy.Symbol:
    if value > 0:
        return sympy.Symbol(name, positive=True)
    if value < 0:
        return sympy.Symbol(name, negative=True)
    return sympy.Symbol(name, real=True)


def to_sympy(program: Program, primitive_set: PrimitiveSet = ALL) -> Symbolic:
    validate(program, primitive_set)
    registers = {"g": sympy.Symbol("g", real=True), "w": sympy.Symbol("w", real=True),
                 "t": sympy.Symbol("t", positive=True)}
    for decl in program.state:
        registers[decl.name] = sympy.Symbol(decl.name, real=True)
    constants = {name: _constant_symbol(name, value) for name, value in program.constants}
    env: dict[str, sympy.Expr] = dict(registers)
    for stmt in program.body:
        counterpart = primitive_set.get(stmt.op).sympy
        if counterpart is None:
            raise NoCounterpart(f"primitive {stmt.op!r} has no SymPy counterpart (the `sympy=` of its Primitive "
                                f"row), so programs that use it are not simplified")
        env[stmt.out] = counterpart(*(env[a] for a in stmt.args), *(constants[c] for c in stmt.consts))
    state = {decl.name: env[decl.name] for decl in program.state}
    return Symbolic(env[program.output], state, registers,
                    {constants[name]: value for name, value in program.constants})


# ---------------------------------------------------------------------------
# Rewriting


def _same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.expand(a - b) == 0


def _ratios_to_signs(expr: sympy.Expr) -> sympy.Expr:
    """x / |x| -> sign(x), x sign(x) -> |x|, |x| sign(x) -> x (bottom-up)."""
    if not expr.args:
        return expr
    expr = expr.func(*(_ratios_to_signs(a) for a in expr.args))
    if not isinstance(expr, sympy.Mul):
        return expr
    factors = list(expr.args)
    changed = True
    while changed:
        changed = False
        for i, j in itertools.permutations(range(len(factors)), 2):
            a, b = factors[i], factors[j]
            inverse_abs = isinstance(b, sympy.Pow) and b.exp == -1 and isinstance(b.base, sympy.Abs)
            if inverse_abs and (_same(a, b.base.args[0]) or _same(a, -b.base.args[0])):
                sign = sympy.sign(a)
            elif isinstance(b, sympy.sign) and _same(a, b.args[0]):
                sign = sympy.Abs(a)
            elif isinstance(b, sympy.sign) and isinstance(a, sympy.Abs) and _same(a.args[0], b.args[0]):
                sign = b.args[0]
            else:
                continue
            factors = [f for k, f in enumerate(factors) if k not in (i, j)] + [sign]
            changed = True
            break
    return sympy.Mul(*factors)


def _is_constant(expr: sympy.Expr, constants: set) -> bool:
    return expr.free_symbols <= constants


def _linear(expr: sympy.Expr, constants: set) -> sympy.Expr:
    """Distribute constant factors over sums and merge like terms, at every depth.

    (1 - b) g + b ((1 - a) g + a v) becomes (1 - a b) g + a b v: nested
    interps collapse. Only constant factors are distributed, so a fraction
    (x + y) / z stays one fraction.
    """
    if not expr.args:
        return expr
    expr = expr.func(*(_linear(a, constants) for a in expr.args))
    if isinstance(expr, sympy.Mul):
        sums = [f for f in expr.args if isinstance(f, sympy.Add) and not _is_constant(f, constants)]
        others = [f for f in expr.args if f not in sums]
        if len(sums) == 1 and all(_is_constant(f, constants) for f in others):
            return _linear(sympy.Add(*(sympy.Mul(*others) * term for term in sums[0].args)), constants)
    if isinstance(expr, sympy.Add):
        groups: dict[sympy.Expr, list[sympy.Expr]] = {}
        for term in expr.args:
            factors = sympy.Mul.make_args(term)
            coefficient = sympy.Mul(*(f for f in factors if _is_constant(f, constants)))
            rest = sympy.Mul(*(f for f in factors if not _is_constant(f, constants)))
            groups.setdefault(rest, []).append(coefficient)
        merged = [sympy.factor_terms(sympy.expand(sympy.Add(*c))) * rest for rest, c in groups.items()]
        return sympy.Add(*merged)
    return expr


def canonical(expr: sympy.Expr, constants) -> sympy.Expr:
    constants = set(constants)
    expr = _ratios_to_signs(expr)
    if sympy.count_ops(expr) <= EXPAND_LIMIT:
        # then take common constant factors back out: s (sign(c) + wd w), not s sign(c) + s wd w
        expr = sympy.factor_terms(_ratios_to_signs(_linear(expr, constants)))
    return expr


def simplify_symbolic(sym: Symbolic) -> Symbolic:
    constants = set(sym.constants)
    return dataclasses.replace(sym, u=canonical(sym.u, constants),
                               state={k: canonical(v, constants) for k, v in sym.state.items()})


# ---------------------------------------------------------------------------
# Back to a program

@functools.lru_cache(maxsize=8)
def opaque_functions(primitive_set: PrimitiveSet) -> dict[type, tuple[str, int]]:
    """SymPy function class -> (primitive, how many leading arguments are tensors), read off the rows.

    A primitive is opaque when its counterpart applied to fresh symbols is one
    application of a function of primitives/symbolic.py to exactly those
    symbols (Polar(x), KronPrecondition(L, x, R, p, eps)); the back-translation
    turns such an application into that primitive's statement. A plugin's
    primitive whose counterpart is such a function is recognised the same way.
    """
    table = {}
    for prim in primitive_set:
        if prim.sympy is None:
            continue
        arguments = sympy.symbols(f"a0:{prim.arity}", real=True)
        constants = sympy.symbols(f"c0:{len(prim.consts)}", positive=True)
        expression = prim.sympy(*arguments, *constants)
        if isinstance(expression, symbolic._Real) and expression.args == (*arguments, *constants):
            table.setdefault(type(expression), (prim.name, prim.arity))
    return table


_ELEMENTARY = {sympy.sign: "sign", sympy.Abs: "abs", sympy.exp: "exp", sympy.cosh: "cosh", sympy.tanh: "tanh"}


def _describe(expr: sympy.Expr) -> str:
    """A readable identifier for a constant expression: beta1, beta1_beta2, one_minus_beta, k."""
    if isinstance(expr, sympy.Symbol):
        return expr.name
    if expr.is_Number:
        return "one" if expr == 1 else "k"
    if isinstance(expr, sympy.Mul) and expr.args[0] == -1:
        return "minus_" + _describe(sympy.Mul(*expr.args[1:]))
    if isinstance(expr, sympy.Add) and len(expr.args) == 2 and 1 in expr.args:
        other = expr.args[1] if expr.args[0] == 1 else expr.args[0]
        if isinstance(other, sympy.Mul) and other.args[0] == -1:
            return "one_minus_" + _describe(sympy.Mul(*other.args[1:]))
    name = "_".join(sorted(s.name for s in expr.free_symbols)) or "k"
    return re.sub(r"\W", "_", name)[:40]


class _Compiler:
    """Emits statements for expressions; registers are named v0, v1, ..."""

    def __init__(self, sym: Symbolic, primitive_set: PrimitiveSet):
        self.sym = sym
        self.primitive_set = primitive_set
        self.register_of = {symbol: name for name, symbol in sym.registers.items()}
        self.values = {s: v for s, v in sym.constants.items()}
        self.body: list[Statement] = []
        self.constants: dict[str, float] = {}
        self.constant_names: dict[sympy.Expr, str] = {}
        self.memo: dict[sympy.Expr, str] = {}
        self.counter = itertools.count()

    # -- constants
    def is_constant(self, expr) -> bool:
        return expr.free_symbols <= set(self.values)

    def constant(self, expr: sympy.Expr) -> str:
        expr = sympy.nsimplify(expr) if expr.is_Number else expr
        if expr in self.constant_names:
            return self.constant_names[expr]
        value = float(expr.subs(self.values))
        name = base = _describe(expr)
        while name in self.constants:
            name = f"{base}_{next(self.counter)}"
        self.constant_names[expr] = name
        self.constants[name] = value
        return name

    # -- statements
    def emit(self, op: str, args: tuple[str, ...], consts: tuple[str, ...] = ()) -> str:
        out = f"v{len(self.body)}"
        self.body.append(Statement(out, op, args, consts))
        return out

    def value(self, expr: sympy.Expr) -> str:
        if expr in self.memo:
            return self.memo[expr]
        name = self._value(expr)
        self.memo[expr] = name
        return name

    def _value(self, expr: sympy.Expr) -> str:
        if isinstance(expr, sympy.Symbol) and expr in self.register_of:
            return self.register_of[expr]
        if self.is_constant(expr):
            raise Unsupported(f"a constant {expr} used as a tensor")
        if isinstance(expr, sympy.Add):
            return self._sum(expr)
        if isinstance(expr, sympy.Mul):
            return self._product(expr)
        if isinstance(expr, sympy.Pow):
            return self._power(expr)
        func = type(expr)
        if func in _ELEMENTARY:
            return self.emit(_ELEMENTARY[func], (self.value(expr.args[0]),))
        if func is sympy.log and isinstance(expr.args[0], sympy.Abs):
            return self.emit("log", (self.value(expr.args[0].args[0]),))
        if func in (sympy.Max, sympy.Min):
            return self._extremum(expr)
        opaque = opaque_functions(self.primitive_set).get(func)
        if opaque is not None:
            op, tensors = opaque
            return self.emit(op, tuple(self.value(a) for a in expr.args[:tensors]),
                             tuple(self.constant(c) for c in expr.args[tensors:]))
        raise Unsupported(f"no primitive for {func.__name__}")

    def _split(self, term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
        """term = coefficient (constants only) * rest."""
        factors = sympy.Mul.make_args(term)
        coefficient = sympy.Mul(*(f for f in factors if self.is_constant(f)))
        rest = sympy.Mul(*(f for f in factors if not self.is_constant(f)))
        return coefficient, rest

    def _sum(self, expr: sympy.Add) -> str:
        terms = [self._split(t) for t in sympy.Add.make_args(expr)]
        offset = sympy.Add(*(c for c, rest in terms if rest == 1))
        terms = [(c, rest) for c, rest in terms if rest != 1]
        if len(terms) == 2 and _same(terms[0][0] + terms[1][0], 1):  # (1 - k) a + k b: one interp
            # k is the coefficient written without "1 -" (the EMA's beta): interp(g, m; beta)
            (_, a), (k, b) = sorted(terms, key=lambda cr: (not isinstance(cr[0], sympy.Add), sympy.count_ops(cr[0])))
            acc = self.emit("interp", (self.value(a), self.value(b)), (self.constant(k),))
        else:
            acc = None
            # a term with coefficient 1 first: a + c b is one add_scaled, c b + a two statements
            for coefficient, rest in sorted(terms, key=lambda cr: cr[0] != 1):
                operand = self.value(rest)
                if acc is None:
                    acc = operand if coefficient == 1 else self.emit("scale", (operand,), (self.constant(coefficient),))
                elif coefficient == 1:
                    acc = self.emit("add", (acc, operand))
                elif coefficient == -1:
                    acc = self.emit("sub", (acc, operand))
                else:
                    acc = self.emit("add_scaled", (acc, operand), (self.constant(coefficient),))
        if offset != 0:
            acc = self.emit("add_const", (acc,), (self.constant(offset),))
        return acc

    def _debias(self, factor: sympy.Expr):
        """(1 - beta**t)**-1 -> (beta, t) if it is debias's correction."""
        if isinstance(factor, sympy.Pow) and factor.exp == -1:
            base = factor.base
            for term in sympy.Add.make_args(base):
                if isinstance(term, sympy.Mul) and term.args[0] == -1:
                    power = sympy.Mul(*term.args[1:])
                    if isinstance(power, sympy.Pow) and self.is_constant(power.base) and \
                            power.exp in self.register_of and _same(base, 1 - power):
                        return power.base, power.exp
        return None

    def _product(self, expr: sympy.Mul) -> str:
        coefficient, rest = self._split(expr)
        numerator, denominator, debias, param_rms = [], [], [], []
        for factor in sympy.Mul.make_args(rest):
            corrected = self._debias(factor)
            if corrected is not None:
                debias.append(corrected)
            elif isinstance(factor, sympy.Max) and len(factor.args) == 2 and \
                    any(isinstance(a, symbolic.Rms) for a in factor.args) and any(self.is_constant(a) for a in factor.args):
                param_rms.append(factor)  # u max(eps, rms(w)): scale_by_param_rms
            elif isinstance(factor, sympy.Pow) and factor.exp.is_negative and factor.exp != -sympy.Rational(1, 2):
                denominator.append(factor.base ** -factor.exp)
            else:
                numerator.append(factor)
        if not numerator:
            raise Unsupported(f"{expr} has no tensor numerator")
        acc = self.value(numerator[0])
        for factor in numerator[1:]:
            acc = self.emit("mul", (acc, self.value(factor)))
        for factor in denominator:
            acc = self.emit("div", (acc, self.value(factor)))
        for beta, t in debias:
            acc = self.emit("debias", (acc, self.register_of[t]), (self.constant(beta),))
        for factor in param_rms:
            rms = next(a for a in factor.args if isinstance(a, symbolic.Rms))
            floor = next(a for a in factor.args if self.is_constant(a))
            acc = self.emit("scale_by_param_rms", (acc, self.value(rms.args[0])), (self.constant(floor),))
        if coefficient != 1:
            acc = self.emit("scale", (acc,), (self.constant(coefficient),))
        return acc

    def _power(self, expr: sympy.Pow) -> str:
        base, exponent = expr.args
        if exponent == 2:
            return self.emit("square", (self.value(base),))
        if exponent == sympy.Rational(1, 2):
            inner = base.args[0] if isinstance(base, sympy.Abs) else base
            return self.emit("sqrt", (self.value(inner),))
        if exponent == -sympy.Rational(1, 2) and isinstance(base, sympy.Max):
            tensor = [a for a in base.args if not self.is_constant(a)]
            floor = [a for a in base.args if self.is_constant(a)]
            if len(tensor) == 1 and len(floor) == 1 and (isinstance(tensor[0], sympy.Abs) or tensor[0].is_nonnegative):
                inner = tensor[0].args[0] if isinstance(tensor[0], sympy.Abs) else tensor[0]
                return self.emit("rsqrt", (self.value(inner),), (self.constant(floor[0]),))
        if self.is_constant(exponent):
            inner = base.args[0] if isinstance(base, sympy.Abs) else base
            return self.emit("abspow", (self.value(inner),), (self.constant(exponent),))
        raise Unsupported(f"no primitive for {expr}")

    def _extremum(self, expr) -> str:
        op = "max" if isinstance(expr, sympy.Max) else "min"
        tensors = [a for a in expr.args if not self.is_constant(a)]
        if len(tensors) != len(expr.args):
            raise Unsupported(f"{op} with a constant")
        acc = self.value(tensors[0])
        for other in tensors[1:]:
            acc = self.emit(op, (acc, self.value(other)))
        return acc


def from_symbolic(sym: Symbolic, template: Program, primitive_set: PrimitiveSet = ALL) -> Program:
    """Statements for u and the state updates, state registers written last."""
    compiler = _Compiler(sym, primitive_set)  # equal sub-expressions are computed once (its memo)
    output = compiler.value(sym.u)
    results = {name: compiler.value(expr) for name, expr in sym.state.items()}
    body = list(compiler.body)
    one = None
    for name, register in results.items():
        if register == name:
            continue  # the state keeps its value
        producer = next((i for i, s in enumerate(body) if s.out == register), None)
        reads_old = producer is None or any(name in s.args for s in body[producer + 1:])
        if reads_old:  # the old value is still needed (or the new one is an input): copy at the end
            one = one or compiler.constant(sympy.Integer(1))
            body.append(Statement(name, "scale", (register,), (one,)))
            continue
        # Write the state register where the value is made, and read it from there on.
        rename = lambda arg: name if arg == register else arg  # noqa: E731
        body[producer] = dataclasses.replace(body[producer], out=name)
        body[producer + 1:] = [dataclasses.replace(s, args=tuple(map(rename, s.args))) for s in body[producer + 1:]]
        output = rename(output)
        results = {k: rename(v) for k, v in results.items()}
    state = tuple(StateDecl(d.name, d.kind, d.init, d.eps) for d in template.state)
    program = Program(state, tuple(compiler.constants.items()), tuple(body), output, template.name)
    return prune(program)


# ---------------------------------------------------------------------------
# Equivalence by execution

SHAPES = [(Layout.MATRIX, 5, 3), (Layout.MATRIX, 3, 5), (Layout.MATRIX, 4, 4), (Layout.VECTOR, 1, 6)]


def run_updates(program: Program, primitive_set: PrimitiveSet, layout: Layout, m: int, n: int,
                steps: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Updates of `program` over `steps` on seeded random inputs (float64, exact polar)."""
    compiled = compile_program(program, layout, ExecutionOptions(polar_backend="svd"), primitive_set)
    g = torch.Generator().manual_seed(seed)
    shape = (2, m, n) if layout is Layout.MATRIX else (2, n)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]
    return tuple(trajectory(compiled, w, grads, 1e-3))


def equivalent(a: Program, b: Program, primitive_set: PrimitiveSet = ALL, steps: int = 50,
               rtol: float = 1e-7) -> tuple[bool, str]:
    """Run both on random inputs of several shapes; (agree, why not)."""
    for layout, m, n in SHAPES:
        for seed in (0, 1):
            with torch.no_grad():
                left = run_updates(a, primitive_set, layout, m, n, steps, seed)
                right = run_updates(b, primitive_set, layout, m, n, steps, seed)
            for step, (x, y) in enumerate(zip(left, right), start=1):
                scale = max(float(x.abs().max()), float(y.abs().max()), 1e-30)
                difference = float((x - y).abs().max()) if x.shape == y.shape else np.inf
                if not np.isfinite(difference) and bool(torch.equal(x.isnan(), y.isnan())):
                    difference = float((x - y).nan_to_num().abs().max())
                if difference > rtol * scale:
                    return False, f"differ at step {step} on a {m}x{n} {layout.name.lower()} (max diff {difference:.3g})"
    return True, ""


def equivalent_up_to_constants(program: Program, template: Program, primitive_set: PrimitiveSet = ALL
                               ) -> dict[str, float] | None:
    """Values of `template`'s constants under which `program` computes what it does, or None.

    A search finds a rule with constants of its own (Lion with beta2 = 0.987):
    whether it is that rule is equivalence for some constants. Candidates for
    each of the template's constants are the program's constants and their
    complements (interp(g, m; b) is interp(m, g; 1 - b)); constants the
    template does not need to match (a weight decay of 0) keep their values.
    """
    values = sorted({v for v in program.constant_values.values()} |
                    {1.0 - v for v in program.constant_values.values()})
    names = list(template.constant_values)
    for combination in itertools.product(values + [None], repeat=len(names)):
        chosen = {n: v for n, v in zip(names, combination) if v is not None}
        try:
            candidate = template.with_constants(**chosen)
            validate(candidate, primitive_set)
        except ProgramError:
            continue
        if equivalent(program, candidate, primitive_set, steps=20)[0]:
            return candidate.constant_values
    return None


# ---------------------------------------------------------------------------
# Front door


@dataclasses.dataclass(frozen=True)
class Simplification:
    raw: Program
    pruned: Program
    simplified: Program  # the pruned program when simplification did not survive the check
    accepted: bool
    note: str
    latex: str
    text: str


def simplify(program: Program, primitive_set: PrimitiveSet = ALL) -> Simplification:
    pruned = prune(program)
    try:
        sym = symbolic_form(pruned, primitive_set)
    except (TooLarge, NoCounterpart) as exc:
        return Simplification(program, pruned, pruned, False, f"not simplified: {exc}", "", pruned.text())
    latex, text = render(sym)
    try:
        candidate = from_symbolic(sym, pruned, primitive_set)
        validate(candidate, primitive_set)
    except (Unsupported, ProgramError, TypeError, ValueError) as exc:
        return Simplification(program, pruned, pruned, False, f"kept the pruned program: {exc}", latex, text)
    if (len(candidate.body), len(candidate.constants)) >= (len(pruned.body), len(pruned.constants)):
        # Not simpler: keep the author's form (and its constants, which derived ones would unlink).
        return Simplification(program, pruned, pruned, False, "kept the pruned program: the rewrite is no shorter",
                              latex, text)
    agree, why = equivalent(pruned, candidate, primitive_set)
    if not agree:
        return Simplification(program, pruned, pruned, False, f"rejected the rewrite: {why}", latex, text)
    return Simplification(program, pruned, candidate, True, "verified equal on random inputs", latex, text)


def render(sym: Symbolic) -> tuple[str, str]:
    """(LaTeX, plain text) of u and the state updates."""
    latex = [rf"u &= {sympy.latex(sym.u)}"]
    latex += [rf"{sympy.latex(sympy.Symbol(k))} &\leftarrow {sympy.latex(v)}" for k, v in sym.state.items()]
    text = [f"u = {sympy.sstr(sym.u)}"] + [f"{k} <- {sympy.sstr(v)}" for k, v in sym.state.items()]
    return "\\begin{aligned}\n" + " \\\\\n".join(latex) + "\n\\end{aligned}", "\n".join(text)


def symbolic_form(program: Program, primitive_set: PrimitiveSet = ALL) -> Symbolic:
    """The rewritten SymPy form of a pruned program; TooLarge where SymPy cannot be trusted to finish.

    SymPy recurses over expression trees: a long chain of statements (a
    10,000-statement add chain from a hand-written file) exhausts Python's
    stack, and the formula of anything that long is not read anyway.
    """
    if len(program.body) > SYMBOLIC_STATEMENTS:
        raise TooLarge(f"{len(program.body)} statements (the symbolic form is made for at most {SYMBOLIC_STATEMENTS})")
    try:
        return simplify_symbolic(to_sympy(program, primitive_set))
    except RecursionError:
        raise TooLarge("its expressions are nested too deeply for SymPy") from None


def formulas_of_dict(program_dict: dict, primitive_set: PrimitiveSet = ALL) -> tuple[str, str]:
    """(LaTeX, plain text) of a program given as JSON data, pruned and rewritten; ("", "") for one too large
    or with a primitive that has no SymPy counterpart. What tracking, the Python API and show's callers share."""
    from primitives.serialize import from_dict

    try:
        return render(symbolic_form(prune(from_dict(program_dict, primitive_set)), primitive_set))
    except (TooLarge, NoCounterpart):
        return "", ""


def latex_of_dict(program_dict: dict, primitive_set: PrimitiveSet = ALL) -> str:
    """LaTeX of a program given as JSON data (for tracking artifacts); "" for one too large."""
    return formulas_of_dict(program_dict, primitive_set)[0]
