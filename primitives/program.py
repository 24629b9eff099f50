"""Optimizer programs: the body of one optimizer step for one parameter tensor.

A program reads the inputs

    g  the gradient (PARAM)    w  the parameter (PARAM)    t  the step, from 1 (SCALAR)

and its declared state registers, runs statements `out = op(args; consts)` in
order, and returns the register `output` (PARAM): the outer loop applies
w <- w - lr * u, with the learning rate outside the program. A state register
read before it is written in a step sees the previous step's value; whatever
it holds at the end of the step is carried to the next. Every other register
is a temporary, defined before it is used. Constants are named and shared by
the statements that use them (Adam's beta1 feeds both its EMA and its bias
correction), so a mutation changes them together and an export turns them
into constructor arguments.

Programs are frozen, hashable values. Nothing here runs code: a program is
data, and `validate` checks it by abstract execution (kinds, definitions,
constant ranges) against a primitive set before anything runs.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Mapping

from primitives.errors import OptsearchError
from primitives.kinds import Kind, KindError
from primitives.library import ALL
from primitives.primitive import PrimitiveSet, UnknownPrimitiveError

INPUTS: Mapping[str, Kind] = {"g": Kind.PARAM, "w": Kind.PARAM, "t": Kind.SCALAR}
STATE_INITS = ("zeros", "eye")  # eye: eps * I, for Gram statistics (ROW, COL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


# ---------------------------------------------------------------------------
# Errors: one class per kind of malformation, each with a precise message.


class ProgramError(OptsearchError):
    """A program is not valid; the message says where and why."""


class MalformedProgramError(ProgramError):
    """The structure is wrong: missing fields, wrong types, bad JSON, bad names."""


class UnknownOpError(ProgramError):
    """A statement uses an op that is not in the primitive set."""


class ArityError(ProgramError):
    """A statement passes the wrong number of arguments or constants."""


class UndefinedRegisterError(ProgramError):
    """A register or constant is used before (or without) being defined."""


class ProgramKindError(ProgramError):
    """Kinds do not fit: an op's arguments, a state's declared kind, the output."""


class ConstantRangeError(ProgramError):
    """A constant lies outside the interval a primitive accepts."""


class UnreachableOutputError(ProgramError):
    """The output register is never defined."""


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise MalformedProgramError(
            f"invalid {what} name {name!r}: names are identifiers of letters, digits and _ (at most 64), not keywords"
        )
    return name


# ---------------------------------------------------------------------------
# The representation


@dataclasses.dataclass(frozen=True)
class StateDecl:
    """A state register: its kind and how it starts (zeros, or eps * I)."""

    name: str
    kind: Kind
    init: str = "zeros"
    eps: float = 0.0  # the scale of "eye"

    def text(self) -> str:
        start = "0" if self.init == "zeros" else f"{self.eps!r} * I"
        return f"{self.name}: {self.kind} = {start}"


@dataclasses.dataclass(frozen=True)
class Statement:
    out: str
    op: str
    args: tuple[str, ...]
    consts: tuple[str, ...] = ()

    def text(self) -> str:
        consts = f"; {', '.join(self.consts)}" if self.consts else ""
        return f"{self.out} = {self.op}({', '.join(self.args)}{consts})"


@dataclasses.dataclass(frozen=True)
class Program:
    state: tuple[StateDecl, ...]
    constants: tuple[tuple[str, float], ...]
    body: tuple[Statement, ...]
    output: str = "u"
    name: str = ""

    @property
    def constant_values(self) -> dict[str, float]:
        return dict(self.constants)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.state)

    def with_constants(self, **values: float) -> Program:
        """A copy with some constants changed (unknown names are an error)."""
        unknown = set(values) - set(self.constant_values)
        if unknown:
            raise UndefinedRegisterError(f"program has no constant(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, constants=tuple((k, float(values.get(k, v))) for k, v in self.constants))

    def text(self) -> str:
        """Readable form, in the style of the Lion paper's programs."""
        lines = [f"program {self.name or '(unnamed)'}"]
        if self.state:
            lines.append("  state " + ", ".join(s.text() for s in self.state))
        if self.constants:
            # repr: the shortest text that reads back as the same float
            lines.append("  const " + ", ".join(f"{k} = {v!r}" for k, v in self.constants))
        lines += [f"  {s.text()}" for s in self.body]
        lines.append(f"  return {self.output}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


# ---------------------------------------------------------------------------
# Validation by abstract execution


def _where(index: int, stmt: Statement) -> str:
    return f"statement {index + 1} `{stmt.text()}`"


def _check_structure(program: Program) -> None:
    body, state, constants = program.body, program.state, program.constants
    if not (isinstance(body, tuple) and isinstance(state, tuple) and isinstance(constants, tuple)):
        raise MalformedProgramError("a program's state, constants and body must be tuples")
    if not isinstance(program.name, str) or (program.name and not _PROGRAM_NAME.match(program.name)):
        raise MalformedProgramError(f"invalid program name {program.name!r}: letters, digits, '_', '.' and '-' "
                                    f"(at most 64), or empty")
    names = [getattr(decl, "name", None) for decl in state]
    if len(set(names)) != len(names):
        raise MalformedProgramError(f"a state register is declared twice ({', '.join(map(str, names))})")
    for decl in state:
        _check_state(decl)
    for entry in constants:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise MalformedProgramError(f"constants are (name, value) pairs, got {entry!r}")
        name, value = entry
        check_name(name, "constant")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MalformedProgramError(f"constant {name!r} must be a number, got {value!r}")
    if len({name for name, _ in constants}) != len(constants):
        raise MalformedProgramError("a constant is declared twice")
    check_name(program.output, "output")
    for index, stmt in enumerate(body):
        _check_statement(index, stmt)


def _check_state(decl: StateDecl) -> None:
    if not isinstance(decl, StateDecl):
        raise MalformedProgramError(f"state entries must be StateDecl records, got {decl!r}")
    check_name(decl.name, "state register")
    if decl.name in INPUTS:
        raise MalformedProgramError(f"state register {decl.name!r} shadows the input of that name")
    if not isinstance(decl.kind, Kind):
        raise MalformedProgramError(f"state register {decl.name!r} has no valid kind ({decl.kind!r})")
    if decl.init not in STATE_INITS:
        raise MalformedProgramError(f"state register {decl.name!r}: init must be one of {STATE_INITS}, got {decl.init!r}")
    if decl.init == "eye":
        if decl.kind not in (Kind.ROW, Kind.COL):
            raise ProgramKindError(f"state register {decl.name!r}: init 'eye' needs kind ROW or COL, not {decl.kind}")
        if not (isinstance(decl.eps, (int, float)) and 0 < decl.eps <= 1):
            raise ConstantRangeError(f"state register {decl.name!r}: eye scale must be in (0, 1], got {decl.eps!r}")


def _check_statement(index: int, stmt: Statement) -> None:
    if not isinstance(stmt, Statement) or not isinstance(stmt.args, tuple) or not isinstance(stmt.consts, tuple):
        raise MalformedProgramError(f"statement {index + 1} is not a Statement with tuple args and consts")
    check_name(stmt.out, "register")
    for a in stmt.args:
        check_name(a, "register")
    for c in stmt.consts:
        check_name(c, "constant")
    if stmt.out in INPUTS:
        raise MalformedProgramError(f"{_where(index, stmt)}: the input {stmt.out!r} cannot be assigned")


def validate(program: Program, primitive_set: PrimitiveSet = ALL) -> tuple[Kind, ...]:
    """Check a program before anything runs; raise a ProgramError saying why it is invalid.

    Returns what abstract execution learned: the kind of each statement's result.
    """
    _check_structure(program)
    return _abstract_execution(program, primitive_set)


def _abstract_execution(program: Program, primitive_set: PrimitiveSet) -> tuple[Kind, ...]:
    """Abstract execution, statement by statement, raising at the first problem with its reason."""
    constants = program.constant_values
    state_kinds = {d.name: d.kind for d in program.state}
    env: dict[str, Kind] = {**INPUTS, **state_kinds}
    kinds = []
    for index, stmt in enumerate(program.body):
        try:
            prim = primitive_set.get(stmt.op)
        except UnknownPrimitiveError as exc:
            raise UnknownOpError(f"{_where(index, stmt)}: {exc}") from None
        if len(stmt.args) != prim.arity or len(stmt.consts) != len(prim.consts):
            raise ArityError(
                f"{_where(index, stmt)}: {prim.name} takes {prim.arity} argument(s) and "
                f"{len(prim.consts)} constant(s), got {len(stmt.args)} and {len(stmt.consts)} ({prim.signature})"
            )
        for arg in stmt.args:
            if arg not in env:
                raise UndefinedRegisterError(f"{_where(index, stmt)}: register {arg!r} is used before it is defined")
        for spec, const in zip(prim.consts, stmt.consts):
            if const not in constants:
                raise UndefinedRegisterError(f"{_where(index, stmt)}: constant {const!r} is not declared")
            if not spec.contains(constants[const]):
                raise ConstantRangeError(
                    f"{_where(index, stmt)}: constant {const} = {constants[const]!r} is outside "
                    f"{spec.name} in {spec.interval()} ({spec.doc})"
                )
        try:
            kind = prim.result_kind(tuple(env[a] for a in stmt.args))
        except KindError as exc:
            raise ProgramKindError(f"{_where(index, stmt)}: {exc}") from None
        if stmt.out in state_kinds and kind is not state_kinds[stmt.out]:
            raise ProgramKindError(
                f"{_where(index, stmt)}: state register {stmt.out!r} is declared {state_kinds[stmt.out]} "
                f"but would hold a {kind}"
            )
        env[stmt.out] = kind
        kinds.append(kind)
    if program.output not in env:
        raise UnreachableOutputError(f"output register {program.output!r} is never defined")
    if env[program.output] is not Kind.PARAM:
        raise ProgramKindError(f"output register {program.output!r} is a {env[program.output]}, not a PARAM")
    return tuple(kinds)


def is_valid(program: Program, primitive_set: PrimitiveSet = ALL) -> bool:
    try:
        validate(program, primitive_set)
    except ProgramError:
        return False
    return True
