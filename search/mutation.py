"""Mutations: small random edits of a program (AutoML-Zero, the Lion search).

    insert         a new statement that overwrites a register or feeds a later use
    delete         remove a statement
    change_arg     rewire one argument (or constant) of a statement
    change_op      replace a statement's op, keeping what arguments still fit
    perturb_const  multiply a constant by 2^z, z ~ N(0, 1), in its natural scale
                   (1 - beta for momentum coefficients; a zero moves from the
                   slot's default, e.g. a weight decay of 0)
    swap           exchange two statements
    duplicate      copy a statement (its constants copied too) into a new register
                   that a later use reads: the same behaviour, now free to diverge

A mutation may produce an invalid program; `make_child` re-mutates until the
child is valid, within the size limits, and structurally new, or gives up
after `max_attempts`. Every random draw comes from the numpy Generator passed
in, so a search seeded alike makes the same children.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from primitives.analysis import prune
from primitives.hashing import structural_hash
from primitives.kinds import Kind, KindError
from primitives.primitive import PrimitiveSet
from primitives.program import INPUTS, Program, ProgramError, StateDecl, Statement, validate

MUTATIONS = ("insert", "delete", "change_arg", "change_op", "perturb_const", "swap", "duplicate")  # all of them
# Probability that an inserted statement writes a new state register (a new
# buffer, e.g. a second moment), when the program has room for one.
NEW_STATE_PROBABILITY = 0.15


@dataclasses.dataclass(frozen=True)
class Limits:
    max_statements: int = 24
    max_state: int = 4


@dataclasses.dataclass(frozen=True)
class Child:
    program: Program  # pruned: dead statements, unread state and unused constants removed
    structural_hash: str
    mutation: str  # what was done, e.g. "change_op: statement 3 sign -> tanh"
    attempts: int  # mutations tried, rejected ones included
    invalid: int  # of which invalid
    duplicates: int  # of which structurally known


def _fresh(prefix: str, taken: set[str]) -> str:
    i = 0
    while f"{prefix}{i}" in taken:
        i += 1
    return f"{prefix}{i}"


def _names(program: Program) -> set[str]:
    return set(INPUTS) | set(program.state_names) | {s.out for s in program.body} | set(program.constant_values)


def _kinds_before(program: Program, index: int, primitive_set: PrimitiveSet) -> dict[str, Kind]:
    """Registers defined before statement `index`, with their kinds (program must be valid up to there)."""
    env = {**INPUTS, **{d.name: d.kind for d in program.state}}
    for stmt in program.body[:index]:
        prim = primitive_set.get(stmt.op)
        env[stmt.out] = prim.result_kind(tuple(env[a] for a in stmt.args))
    return env


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _new_constant(program: Program, spec, rng) -> tuple[Program, str]:
    """A constant for a slot: reuse a declared one that fits (half the time) or declare the default."""
    fitting = [name for name, value in program.constants if spec.contains(value)]
    if fitting and rng.random() < 0.5:
        return program, _pick(rng, fitting)
    name = _fresh("c", _names(program))
    return dataclasses.replace(program, constants=program.constants + ((name, float(spec.default)),)), name


def _args_for(prim, env: dict[str, Kind], rng, tries: int = 20) -> tuple[str, ...] | None:
    """Random arguments of kinds the primitive accepts, from the registers in `env`."""
    names = sorted(env)
    for _ in range(tries):
        args = tuple(_pick(rng, names) for _ in range(prim.arity))
        try:
            prim.result_kind(tuple(env[a] for a in args))
            return args
        except KindError:
            continue
    return None


def insert(program: Program, rng, primitive_set: PrimitiveSet, limits: Limits) -> tuple[Program, str]:
    index = int(rng.integers(len(program.body) + 1))
    env = _kinds_before(program, index, primitive_set)
    prim = primitive_set.get(_pick(rng, primitive_set.names))
    state = program.state
    new_state = None
    if len(state) < limits.max_state and rng.random() < NEW_STATE_PROBABILITY:
        new_state = _fresh("s", _names(program))
        env = {**env, new_state: Kind.PARAM}
    args = _args_for(prim, env, rng)
    if args is None:
        raise ProgramError("no arguments fit")
    kind = prim.result_kind(tuple(env[a] for a in args))
    consts = []
    for spec in prim.consts:
        program, name = _new_constant(program, spec, rng)
        consts.append(name)
    body = list(program.body)
    if new_state is not None:
        if kind is not Kind.PARAM:
            raise ProgramError("new state must be a PARAM")
        state = state + (StateDecl(new_state, Kind.PARAM),)
        out = new_state
    else:
        # Overwrite a register of the same kind, or define a fresh one and
        # make a later statement read it; otherwise the insert would be dead.
        same_kind = [n for n, k in env.items() if k is kind and n not in INPUTS]
        later_uses = [(j, a) for j in range(index, len(body)) for a, name in enumerate(body[j].args)
                      if env.get(name) is kind]
        if same_kind and (not later_uses or rng.random() < 0.5):
            out = _pick(rng, same_kind)
        else:
            out = _fresh("v", _names(program))
            if later_uses:
                j, a = _pick(rng, later_uses)
                args_j = list(body[j].args)
                args_j[a] = out
                body[j] = dataclasses.replace(body[j], args=tuple(args_j))
    statement = Statement(out, prim.name, args, tuple(consts))
    body.insert(index, statement)
    return dataclasses.replace(program, state=state, body=tuple(body)), f"insert: at {index + 1} `{statement.text()}`"


def delete(program: Program, rng, primitive_set, limits) -> tuple[Program, str]:
    if not program.body:
        raise ProgramError("nothing to delete")
    index = int(rng.integers(len(program.body)))
    body = program.body[:index] + program.body[index + 1 :]
    return dataclasses.replace(program, body=body), f"delete: statement {index + 1} `{program.body[index].text()}`"


def change_arg(program: Program, rng, primitive_set, limits) -> tuple[Program, str]:
    if not program.body:
        raise ProgramError("no statements")
    index = int(rng.integers(len(program.body)))
    stmt = program.body[index]
    slots = len(stmt.args) + len(stmt.consts)
    if slots == 0:
        raise ProgramError("statement has no arguments")
    slot = int(rng.integers(slots))
    if slot < len(stmt.args):
        env = _kinds_before(program, index, primitive_set)
        args = list(stmt.args)
        args[slot] = _pick(rng, sorted(env))
        new = dataclasses.replace(stmt, args=tuple(args))
    else:
        spec = primitive_set.get(stmt.op).consts[slot - len(stmt.args)]
        program, name = _new_constant(program, spec, rng)
        consts = list(stmt.consts)
        consts[slot - len(stmt.args)] = name
        new = dataclasses.replace(stmt, consts=tuple(consts))
    body = program.body[:index] + (new,) + program.body[index + 1 :]
    return dataclasses.replace(program, body=body), f"change_arg: statement {index + 1} `{stmt.text()}` -> `{new.text()}`"


def change_op(program: Program, rng, primitive_set: PrimitiveSet, limits) -> tuple[Program, str]:
    if not program.body:
        raise ProgramError("no statements")
    index = int(rng.integers(len(program.body)))
    stmt = program.body[index]
    prim = primitive_set.get(_pick(rng, [n for n in primitive_set.names if n != stmt.op]))
    env = _kinds_before(program, index, primitive_set)
    args = list(stmt.args[: prim.arity])
    while len(args) < prim.arity:
        args.append(_pick(rng, sorted(env)))
    consts = []
    for i, spec in enumerate(prim.consts):
        # keep a constant in the same position if it fits, else a new one
        if i < len(stmt.consts) and spec.contains(program.constant_values[stmt.consts[i]]):
            consts.append(stmt.consts[i])
        else:
            program, name = _new_constant(program, spec, rng)
            consts.append(name)
    new = Statement(stmt.out, prim.name, tuple(args), tuple(consts))
    body = program.body[:index] + (new,) + program.body[index + 1 :]
    return dataclasses.replace(program, body=body), f"change_op: statement {index + 1} `{stmt.text()}` -> `{new.text()}`"


def perturb_const(program: Program, rng, primitive_set: PrimitiveSet, limits) -> tuple[Program, str]:
    used = [(c, primitive_set.get(s.op).consts[i]) for s in program.body for i, c in enumerate(s.consts)]
    if not used:
        raise ProgramError("no constants")
    name, spec = used[int(rng.integers(len(used)))]
    value = program.constant_values[name]
    factor = 2.0 ** rng.normal()
    if value == 0.0 and spec.perturb == "log":
        value = spec.default  # a multiple of zero is zero: restart from the slot's typical value
    if spec.perturb == "complement":
        new = 1.0 - (1.0 - value) * factor
    elif spec.perturb == "linear":
        new = value + math.log2(factor)
    else:
        new = value * factor
    old = program.constant_values[name]
    return program.with_constants(**{name: new}), f"perturb_const: {name} {old:.6g} -> {new:.6g}"


def duplicate(program: Program, rng, primitive_set, limits) -> tuple[Program, str]:
    """Copy a statement, with its own copies of its constants, into a new register that one later use reads.

    The copy is inserted before the original, so it reads the state as the
    step began. It computes the same value, so the child behaves as its
    parent (the behavioural cache scores it without training), but its
    constants now move apart from the original's: Signum's `m = interp(g, m;
    b); u = sign(m)` becomes `c = interp(g, m; b'); m = interp(g, m; b);
    u = sign(c)`, which is Lion once b moves away from b'. A statement and
    its first use, inserted as one edit: a sub-expression.
    """
    uses = [(i, j, a) for i, stmt in enumerate(program.body) for j in range(i + 1, len(program.body))
            for a, arg in enumerate(program.body[j].args) if arg == stmt.out]
    if not uses:
        raise ProgramError("no statement whose value is used later")
    i, j, a = _pick(rng, uses)
    original = program.body[i]
    names = _names(program)
    out = _fresh("v", names)
    consts = []
    for name in original.consts:
        copy = _fresh("c", names | set(consts))
        consts.append(copy)
        program = dataclasses.replace(program, constants=program.constants + ((copy, program.constant_values[name]),))
    copy_stmt = Statement(out, original.op, original.args, tuple(consts))
    body = list(program.body)
    args = list(body[j].args)
    args[a] = out
    body[j] = dataclasses.replace(body[j], args=tuple(args))
    body.insert(i, copy_stmt)
    return dataclasses.replace(program, body=tuple(body)), \
        f"duplicate: statement {i + 1} as `{copy_stmt.text()}`, read by statement {j + 2}"


def swap(program: Program, rng, primitive_set, limits) -> tuple[Program, str]:
    if len(program.body) < 2:
        raise ProgramError("nothing to swap")
    i, j = sorted(int(x) for x in rng.choice(len(program.body), size=2, replace=False))
    body = list(program.body)
    body[i], body[j] = body[j], body[i]
    return dataclasses.replace(program, body=tuple(body)), f"swap: statements {i + 1} and {j + 1}"


OPERATORS: dict[str, Callable] = {
    "insert": insert, "delete": delete, "change_arg": change_arg,
    "change_op": change_op, "perturb_const": perturb_const, "swap": swap, "duplicate": duplicate,
}


def mutate(program: Program, rng: np.random.Generator, primitive_set: PrimitiveSet,
           limits: Limits = Limits(), operators: tuple[str, ...] = MUTATIONS) -> tuple[Program, str]:
    """One random mutation of one of `operators` (the result may be invalid: callers validate)."""
    kind = operators[int(rng.integers(len(operators)))]
    return OPERATORS[kind](program, rng, primitive_set, limits)


def within_limits(program: Program, limits: Limits) -> bool:
    return len(program.body) <= limits.max_statements and len(program.state) <= limits.max_state


def make_child(
    parent: Program,
    rng: np.random.Generator,
    primitive_set: PrimitiveSet,
    is_new: Callable[[str], bool],
    limits: Limits = Limits(),
    max_attempts: int = 200,
    operators: tuple[str, ...] = MUTATIONS,
    extra_edit: float = 0.0,
) -> Child | None:
    """Mutate until valid, within limits and structurally new; None after max_attempts.

    extra_edit: the probability of each further edit on top of the first (the
    number of edits is 1 + a geometric count, mean 1 / (1 - extra_edit)). Two
    edits that only pay off together (a new statement and its first use, a
    new momentum and its constant moved) then happen in one child, across a
    valley that single edits must cross one worse child at a time.
    """
    invalid = duplicates = 0
    for attempt in range(1, max_attempts + 1):
        try:
            child, descriptions = parent, []
            while True:
                child, description = mutate(child, rng, primitive_set, limits, operators)
                validate(child, primitive_set)
                descriptions.append(description)
                if extra_edit <= 0.0 or rng.random() >= extra_edit:
                    break
            pruned = prune(child)
            description = " | ".join(descriptions)
        except (ProgramError, KindError):
            invalid += 1
            continue
        if not within_limits(pruned, limits):
            invalid += 1
            continue
        digest = structural_hash(pruned, primitive_set, pruned=True)
        if not is_new(digest):
            duplicates += 1
            continue
        return Child(pruned, digest, description, attempt, invalid, duplicates)
    return None
