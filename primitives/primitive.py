"""What a primitive is: its typed signature, its constants, its torch functions.

A Primitive is a frozen record. Its torch functions are pure (they never write
into their arguments); `bind` fixes the layout, constants and execution options
once, so the interpreter's hot loop only calls plain functions.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from primitives.kinds import Kind, KindError, Layout

# ---------------------------------------------------------------------------
# Typed constants


@dataclasses.dataclass(frozen=True)
class ConstSpec:
    """A constant slot of a primitive: its meaning, valid interval and mutation scale.

    perturb says how the search perturbs a value by a factor 2^z, z ~ N(0, 1):
      "log"         multiply the value (eps, weight decay, clip thresholds)
      "complement"  multiply 1 - value (momentum coefficients: 0.9 -> 0.8 or 0.95)
      "linear"      add z (exponents)
    """

    name: str
    low: float
    high: float
    default: float
    doc: str
    low_open: bool = False
    high_open: bool = False
    perturb: str = "log"

    def contains(self, value: float) -> bool:
        lowest, highest = self.closed_bounds
        return lowest <= value <= highest  # False for NaN and, the bounds being finite, for +-inf

    @functools.cached_property
    def closed_bounds(self) -> tuple[float, float]:
        """The interval as the closed one holding the same floats: (0, 1] is [5e-324, 1], and finite.

        An open end becomes the next float inward, so that `contains` is two
        comparisons (the validator makes one per constant of every program).
        """
        lowest = math.nextafter(self.low, math.inf) if self.low_open else self.low
        highest = math.nextafter(self.high, -math.inf) if self.high_open else self.high
        return max(lowest, -sys.float_info.max), min(highest, sys.float_info.max)

    def interval(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def beta(name: str = "beta", default: float = 0.9, doc: str = "EMA coefficient") -> ConstSpec:
    return ConstSpec(name, 0.0, 1.0, default, doc, high_open=True, perturb="complement")


def positive(name: str, default: float, doc: str, high: float = 1e6) -> ConstSpec:
    return ConstSpec(name, 0.0, high, default, doc, low_open=True)


def real(name: str, default: float, doc: str, bound: float = 1e6) -> ConstSpec:
    return ConstSpec(name, -bound, bound, default, doc)


# ---------------------------------------------------------------------------
# Kind rules: map the kinds of the arguments to the kind of the result.

KindRule = Callable[[tuple[Kind, ...]], Kind]


def _common_kind(kinds: Iterable[Kind]) -> Kind:
    """All non-SCALAR kinds must agree; SCALAR broadcasts against anything."""
    shaped = {k for k in kinds if k is not Kind.SCALAR}
    if len(shaped) > 1:
        raise KindError(f"cannot combine {' and '.join(sorted(map(str, shaped)))} elementwise")
    return shaped.pop() if shaped else Kind.SCALAR


def elementwise(kinds: tuple[Kind, ...]) -> Kind:
    return _common_kind(kinds)


def reduction(kinds: tuple[Kind, ...]) -> Kind:
    _common_kind(kinds)
    return Kind.SCALAR


def last_is_scalar(kinds: tuple[Kind, ...]) -> Kind:
    """(T, ..., SCALAR) -> T: mix's weight and debias's step count."""
    if kinds[-1] is not Kind.SCALAR:
        raise KindError(f"the last argument must be SCALAR, got {kinds[-1]}")
    return _common_kind(kinds[:-1])


def fixed(arg_kinds: tuple[Kind, ...], result: Kind) -> KindRule:
    def rule(kinds: tuple[Kind, ...]) -> Kind:
        if kinds != arg_kinds:
            want = ", ".join(map(str, arg_kinds))
            raise KindError(f"expects ({want}), got ({', '.join(map(str, kinds))})")
        return result

    rule.signature = f"{', '.join(map(str, arg_kinds))} -> {result}"  # type: ignore[attr-defined]
    return rule


def _rule_signature(rule: KindRule, arity: int) -> str:
    """Readable signature; T is any one kind, and SCALAR broadcasts against it."""
    fixed_signature = getattr(rule, "signature", None)
    if fixed_signature:
        return fixed_signature
    if rule is last_is_scalar:
        return ", ".join(["T"] * (arity - 1) + ["SCALAR"]) + " -> T"
    return ", ".join(["T"] * arity) + (" -> SCALAR" if rule is reduction else " -> T")


# ---------------------------------------------------------------------------
# Execution options: how approximate primitives are computed. They are not part
# of a program's meaning (polar(x) always means U V^T); they are a property of
# the run, like a dtype.


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
    polar_backend: str = "ns"
    polar_steps: int | None = None  # None: the backend's default
    polar_dtype: str | None = None  # None: the parameter's dtype; "bfloat16" as in Muon

    def for_primitive(self, names: tuple[str, ...]) -> dict[str, Any]:
        values = {
            "backend": self.polar_backend,
            "steps": self.polar_steps,
            "compute_dtype": None if self.polar_dtype is None else getattr(torch, self.polar_dtype),
        }
        return {name: values[name] for name in names}


# ---------------------------------------------------------------------------
# The primitive record


@dataclasses.dataclass(frozen=True)
class Primitive:
    name: str
    arity: int
    kind_rule: KindRule
    matrix_fn: Callable[..., torch.Tensor]
    vector_fn: Callable[..., torch.Tensor]
    cost: float
    doc: str
    category: str
    consts: tuple[ConstSpec, ...] = ()
    commutative: bool = False
    options: tuple[str, ...] = ()  # ExecutionOptions fields the functions take
    # Its SymPy counterpart: (argument expressions..., constant expressions...) -> expression.
    # Simplification and the formulas of exports and MLflow read it; None: programs that use
    # this primitive are not simplified (primitives/simplify.py says so, naming it).
    sympy: Callable[..., Any] | None = dataclasses.field(default=None, compare=False)
    # Tables derived from the fields above, made once in __post_init__ and read
    # by the validator for every statement the search makes (plain attributes:
    # a cached_property is read at 2.5x the cost).
    # Every tuple of argument kinds the primitive accepts, with its result's kind:
    result_kinds: dict[tuple[Kind, ...], Kind] = dataclasses.field(init=False, repr=False, compare=False)
    # The closed float interval of each constant slot (see ConstSpec.closed_bounds):
    const_bounds: tuple[tuple[float, float], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = {}
        for kinds in itertools.product(Kind, repeat=self.arity):  # 6^arity questions, asked once
            try:
                table[kinds] = self.kind_rule(kinds)
            except KindError:
                continue
        object.__setattr__(self, "result_kinds", table)
        object.__setattr__(self, "const_bounds", tuple(spec.closed_bounds for spec in self.consts))

    @property
    def signature(self) -> str:
        rule = _rule_signature(self.kind_rule, self.arity)
        consts = "".join(f"; {c.name} in {c.interval()}" for c in self.consts)
        return f"{self.name}({rule}{consts})"

    def result_kind(self, kinds: tuple[Kind, ...]) -> Kind:
        """The kind of this primitive applied to `kinds`; KindError, saying why, if it does not apply."""
        answer = self.result_kinds.get(kinds)
        if answer is None:
            if len(kinds) != self.arity:
                raise KindError(f"{self.name} takes {self.arity} argument(s), got {len(kinds)}")
            try:
                self.kind_rule(kinds)
            except KindError as exc:
                raise KindError(f"{self.name}: {exc}") from None
            raise KindError(f"{self.name}: does not apply to ({', '.join(map(str, kinds))})")
        return answer

    def bind(
        self,
        layout: Layout,
        consts: Mapping[str, float] | tuple[float, ...] = (),
        options: ExecutionOptions = ExecutionOptions(),
    ) -> Callable[..., torch.Tensor]:
        """The torch function for `layout` with constants and options fixed."""
        values = tuple(consts.values()) if isinstance(consts, Mapping) else tuple(consts)
        if len(values) != len(self.consts):
            raise ValueError(f"{self.name} takes {len(self.consts)} constant(s), got {len(values)}")
        fn = self.matrix_fn if layout is Layout.MATRIX else self.vector_fn
        keywords = {spec.name: float(v) for spec, v in zip(self.consts, values)}
        keywords.update(options.for_primitive(self.options))
        return functools.partial(fn, **keywords) if keywords else fn

    def __call__(self, *args: torch.Tensor, layout: Layout = Layout.MATRIX, **consts: float) -> torch.Tensor:
        """Apply directly (tests, notebooks): primitive(x, y, beta=0.9)."""
        missing = [c.name for c in self.consts if c.name not in consts]
        if missing:
            raise TypeError(f"{self.name} needs constant(s) {', '.join(missing)}")
        return self.bind(layout, tuple(consts[c.name] for c in self.consts))(*args)


class UnknownPrimitiveError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, eq=False)  # identity equality: cheap to hash
class PrimitiveSet:
    """An ordered, named collection of primitives (the search's vocabulary).

    Two sets with the same contents have the same `version`.
    """

    name: str
    primitives: tuple[Primitive, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.primitives]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate primitive names in set {self.name!r}")

    @functools.cached_property
    def primitives_by_name(self) -> dict[str, Primitive]:
        return {p.name: p for p in self.primitives}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.primitives)

    def __contains__(self, name: object) -> bool:
        return name in self.primitives_by_name

    def __iter__(self):
        return iter(self.primitives)

    def __len__(self) -> int:
        return len(self.primitives)

    def get(self, name: str) -> Primitive:
        try:
            return self.primitives_by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownPrimitiveError(
                f"unknown primitive {name!r} in primitive set {self.name!r}{hint}"
            ) from None

    def subset(self, name: str, names: Iterable[str]) -> PrimitiveSet:
        return PrimitiveSet(name, tuple(self.get(n) for n in names))

    def extend(self, name: str, extra: Iterable[Primitive]) -> PrimitiveSet:
        return PrimitiveSet(name, self.primitives + tuple(extra))

    @functools.cached_property
    def version(self) -> str:
        """Changes whenever a name, signature or cost changes (cache keys use it)."""
        text = "\n".join(f"{p.signature}|{p.cost}|{p.options}" for p in self.primitives)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
