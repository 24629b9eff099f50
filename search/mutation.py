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
                   that a later use of its value reads: the same behaviour, now
                   free to diverge
    crossover      (two parents, make_crossover_child) the update of one parent
                   with the state of the other

insert sometimes (NEW_STATE_PROBABILITY) creates a state register instead, of
any kind the primitive set can use (reachable_state_kinds): a statistic
accumulated across steps and read by the update through the primitive that
consumes its kind (a momentum; Shampoo's Kronecker factors; Adafactor's
factored second moment).

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

from primitives.analysis import live_mask, prune
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
    """A new statement; with probability NEW_STATE_PROBABILITY (room permitting) a new state register instead."""
    if len(program.state) < limits.max_state and rng.random() < NEW_STATE_PROBABILITY:
        kinds = reachable_state_kinds(primitive_set)
        if kinds:
            return _insert_state(program, rng, primitive_set, limits, _pick(rng, kinds))
    index = int(rng.integers(len(program.body) + 1))
    env = _kinds_before(program, index, primitive_set)
    prim = primitive_set.get(_pick(rng, primitive_set.names))
    args = _args_for(prim, env, rng)
    if args is None:
        raise ProgramError("no arguments fit")
    kind = prim.result_kind(tuple(env[a] for a in args))
    consts = []
    for spec in prim.consts:
        program, name = _new_constant(program, spec, rng)
        consts.append(name)
    body = list(program.body)
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
    return dataclasses.replace(program, body=tuple(body)), f"insert: at {index + 1} `{statement.text()}`"


# --- new state registers -------------------------------------------------------
#
# A new state register is only worth anything if the update reads it: a buffer
# that nothing reads is pruned away, and the child is its parent again. So
# `insert` creates state as a whole recipe, in one edit: a statistic of a PARAM
# value, accumulated across steps in the new register, and fed into the update
# at one use of a PARAM value (a statement's argument, or the returned value),
# through the primitive that consumes that kind:
#
#     PARAM   s = acc(x, s)                                    the use reads s (momentum of x)
#     ROW     s = acc(gram_left(src), s);  y = kron_precondition(s, x, R)       (Shampoo)
#     COL     s = acc(gram_right(src), s); y = kron_precondition(L, x, s)
#     ROWVEC  s = acc(row_mean_sq(src), s); y = x * rsqrt(factored_second_moment(s, C))  (Adafactor)
#     COLVEC  s = acc(col_mean_sq(src), s); y = x * rsqrt(factored_second_moment(R, s))
#
# x is the value at the use, src the gradient or x, acc an EMA (interp, as Adam)
# or a running sum (add, as AdaGrad and Shampoo). The other factor (R, L, C)
# is a register of that kind the program already has, or else a second new
# state built the same way (Shampoo's pair, Adafactor's pair).

# kind -> (primitive making the statistic from a PARAM value (None: the value itself),
#          primitives its use needs). A kind is reachable only where the set has all of them.
STATE_RECIPES: dict[Kind, tuple[str | None, tuple[str, ...]]] = {
    Kind.PARAM: (None, ()),
    Kind.ROW: ("gram_left", ("kron_precondition",)),
    Kind.COL: ("gram_right", ("kron_precondition",)),
    Kind.ROWVEC: ("row_mean_sq", ("factored_second_moment", "rsqrt", "mul")),
    Kind.COLVEC: ("col_mean_sq", ("factored_second_moment", "rsqrt", "mul")),
}
# The other factor each consumer needs: kron_precondition(ROW, x, COL), factored_second_moment(ROWVEC, COLVEC).
PARTNER_KIND = {Kind.ROW: Kind.COL, Kind.COL: Kind.ROW, Kind.ROWVEC: Kind.COLVEC, Kind.COLVEC: Kind.ROWVEC}
ACCUMULATORS = ("interp", "add")  # an EMA (Adam, SOAP) or a running sum (AdaGrad, Shampoo)
# A Gram statistic starts at eps * I (Shampoo's 1e-6), as the kinds module allows for ROW and
# COL: positive definite from the first step, so its inverse root starts finite and moderate.
GRAM_INIT_EPS = 1e-6


def _recipe_available(kind: Kind, primitive_set: PrimitiveSet) -> bool:
    statistic, consumers = STATE_RECIPES[kind]
    return all(name in primitive_set for name in (statistic, *consumers) if name is not None)


def reachable_state_kinds(primitive_set: PrimitiveSet) -> tuple[Kind, ...]:
    """The kinds of state `insert` can create with this primitive set (the elementwise set: PARAM alone)."""
    if not any(name in primitive_set for name in ACCUMULATORS):
        return ()
    return tuple(kind for kind in STATE_RECIPES
                 if _recipe_available(kind, primitive_set)
                 and (kind not in PARTNER_KIND or _recipe_available(PARTNER_KIND[kind], primitive_set)))


def _param_uses(program: Program, primitive_set: PrimitiveSet) -> list[tuple[int, int | None, str]]:
    """(statement index, argument index, register) of every PARAM read by a live statement, and the
    returned register as (len(body), None, output). The program must be valid."""
    mask, _ = live_mask(program)
    env = {**INPUTS, **{d.name: d.kind for d in program.state}}
    uses: list[tuple[int, int | None, str]] = []
    for j, stmt in enumerate(program.body):
        if mask[j]:
            uses += [(j, a, arg) for a, arg in enumerate(stmt.args) if env[arg] is Kind.PARAM]
        env[stmt.out] = primitive_set.get(stmt.op).result_kind(tuple(env[a] for a in stmt.args))
    return uses + [(len(program.body), None, program.output)]


def _insert_state(program: Program, rng, primitive_set: PrimitiveSet, limits: Limits,
                  kind: Kind) -> tuple[Program, str]:
    """A new state register of `kind`, accumulated and read by the update (the recipes above)."""
    j, a, x = _pick(rng, _param_uses(program, primitive_set))
    env = _kinds_before(program, j, primitive_set)
    taken = _names(program)
    accumulator = primitive_set.get(_pick(rng, [n for n in ACCUMULATORS if n in primitive_set]))
    source = x if kind is Kind.PARAM else _pick(rng, ["g", x])
    state = list(program.state)
    statements: list[Statement] = []

    def call(op: str, args: tuple[str, ...], out: str | None = None) -> str:
        """Append `out = op(args; consts)`; out defaults to a new temporary.

        Each constant is a new one at its slot's default (beta 0.9, Shampoo's p = 4, the eps
        floors), not a reused one: the recipe starts as the method it is named after, where a
        shared weight decay of 0.01 as rsqrt's floor would start it broken.
        """
        nonlocal program
        consts = []
        for spec in primitive_set.get(op).consts:
            name = _fresh(spec.name, taken)
            taken.add(name)
            program = dataclasses.replace(program, constants=program.constants + ((name, float(spec.default)),))
            consts.append(name)
        if out is None:
            out = _fresh("v", taken)
            taken.add(out)
        statements.append(Statement(out, op, args, tuple(consts)))
        return out

    def new_state(of_kind: Kind) -> str:
        """Declare a register of `of_kind` and accumulate its statistic of `source` in it."""
        if len(state) >= limits.max_state:
            raise ProgramError(f"no room for a new {of_kind} state register")
        name = _fresh("s", taken)
        taken.add(name)
        gram = of_kind in (Kind.ROW, Kind.COL)
        state.append(StateDecl(name, of_kind, "eye" if gram else "zeros", GRAM_INIT_EPS if gram else 0.0))
        statistic = STATE_RECIPES[of_kind][0]
        value = source if statistic is None else call(statistic, (source,))
        call(accumulator.name, (value, name), out=name)  # interp(x, s; beta) is s <- (1 - beta) x + beta s
        return name

    created = new_state(kind)
    if kind is Kind.PARAM:
        y = created
    else:
        partner_kind = PARTNER_KIND[kind]
        existing = sorted(n for n, k in env.items() if k is partner_kind)
        partner = _pick(rng, existing) if existing else new_state(partner_kind)
        if kind in (Kind.ROW, Kind.COL):
            left, right = (created, partner) if kind is Kind.ROW else (partner, created)
            y = call("kron_precondition", (left, x, right))
        else:
            rows, cols = (created, partner) if kind is Kind.ROWVEC else (partner, created)
            v = call("factored_second_moment", (rows, cols))
            y = call("mul", (x, call("rsqrt", (v,))))
    body = list(program.body)
    output = program.output
    if a is None:  # the use is the returned value
        if kind is not Kind.PARAM and output not in INPUTS and output not in program.state_names:
            statements[-1] = dataclasses.replace(statements[-1], out=output)  # u = mul(u, n): still `return u`
        else:
            output = y
    else:
        args = list(body[j].args)
        args[a] = y
        body[j] = dataclasses.replace(body[j], args=tuple(args))
    body[j:j] = statements
    where = "the output" if a is None else f"statement {j + len(statements) + 1}"
    text = "; ".join(s.text() for s in statements)
    return (dataclasses.replace(program, state=tuple(state), body=tuple(body), output=output),
            f"insert: new {kind} state {created} at {j + 1} `{text}`, read by {where}")


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


def _reads(body: tuple[Statement, ...]):
    """(i, j, a): statement j's argument a reads the value statement i defined.

    Only up to the register's next definition: in RMSprop's `d = sqrt(v); d =
    add_const(d; eps); u = div(g, d)`, div reads the second d, not sqrt's, and
    rewiring it to a copy of sqrt's would silently drop eps. The statement
    that redefines the register still reads the old value (it reads before it
    writes), so it counts as a use.
    """
    for i, stmt in enumerate(body):
        for j in range(i + 1, len(body)):
            yield from ((i, j, a) for a, arg in enumerate(body[j].args) if arg == stmt.out)
            if body[j].out == stmt.out:
                break


def duplicate(program: Program, rng, primitive_set, limits) -> tuple[Program, str]:
    """Copy a statement, with its own copies of its constants, into a new register; one later read of
    the statement's value (_reads: before its register is redefined) reads the copy instead.

    The copy is inserted before the original, so it reads the state as the
    step began. It computes the same value, so the child behaves as its
    parent (the behavioural cache scores it without training), but its
    constants now move apart from the original's: Signum's `m = interp(g, m;
    b); u = sign(m)` becomes `c = interp(g, m; b'); m = interp(g, m; b);
    u = sign(c)`, which is Lion once b moves away from b'. A statement and
    its first use, inserted as one edit: a sub-expression.
    """
    uses = list(_reads(program.body))
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


# --- crossover -------------------------------------------------------------------
#
# Two members of the hall of fame, one child: the update of one parent with the
# state of the other. Each state register of the update's parent that is paired
# with one of the same kind in the state's parent is maintained by the state
# parent's recipe for it (the statements its end-of-step value depends on),
# placed where the update's parent last wrote it; everything that reads it is
# the update parent's. Lion's update with AdamW's state is sign(interp(g, m))
# with AdamW's m, AdamW's update with Lion's state an AdamW whose m moves at
# Lion's beta2. Not a mutation operator (it needs two parents): the proposer
# calls make_crossover_child with two members it chose.


def _state_recipe(program: Program, register: str) -> list[Statement]:
    """The statements the end-of-step value of `register` depends on within the step (empty if never written)."""
    body = program.body
    writes = [k for k, stmt in enumerate(body) if stmt.out == register]
    if not writes:
        return []
    needed = set(body[writes[-1]].args)
    picked = [writes[-1]]
    for k in range(writes[-1] - 1, -1, -1):
        if body[k].out in needed:
            needed.discard(body[k].out)
            needed.update(body[k].args)
            picked.append(k)
    return [body[k] for k in reversed(picked)]


def _state_pairs(update: Program, state: Program, rng) -> dict[str, str]:
    """A random non-empty set of (update's state register -> state parent's register of the same kind)."""
    pairs = []
    for kind in Kind:
        ours = [d.name for d in update.state if d.kind is kind]
        theirs = [d.name for d in state.state if d.kind is kind]
        theirs = [theirs[k] for k in rng.permutation(len(theirs))]
        pairs += zip(ours, theirs)
    if not pairs:
        raise ProgramError("the parents have no state of a common kind")
    order = rng.permutation(len(pairs))
    return dict(pairs[k] for k in order[: int(rng.integers(1, len(pairs) + 1))])


def crossover(first: Program, second: Program, rng, primitive_set: PrimitiveSet,
              limits: Limits = Limits()) -> tuple[Program, str]:
    """The update of one parent (drawn) with (some of) the state of the other; may be unpruned."""
    update, state = (first, second) if rng.random() < 0.5 else (second, first)
    update, state = prune(update), prune(state)  # live statements and carried state only
    pairs = _state_pairs(update, state, rng)
    ours_of = {theirs: ours for ours, theirs in pairs.items()}
    taken = _names(update)
    constants = list(update.constants)
    their_values = state.constant_values
    constant_names: dict[str, str] = {}

    def fresh(name: str, prefix: str) -> str:
        """`name` if the child does not use it yet, else a new name; taken from now on."""
        new = name if name not in taken else _fresh(prefix, taken)
        taken.add(new)
        return new

    def constant(name: str) -> str:
        if name not in constant_names:  # a copy of each of their constants, shared as it was shared there
            constant_names[name] = fresh(name, f"{name}_" if len(name) < 60 else "c")
            constants.append((constant_names[name], their_values[name]))
        return constant_names[name]

    def transplant(ours: str, theirs: str) -> list[Statement]:
        """Their recipe for `theirs`, writing `ours`, its temporaries renamed apart from the update's."""
        recipe = _state_recipe(state, theirs)
        current: dict[str, str] = {}  # their register -> the child's, as the recipe (re)defines it
        statements = []
        for k, stmt in enumerate(recipe):
            args = []
            for arg in stmt.args:
                if arg in current:
                    args.append(current[arg])
                elif arg in INPUTS:
                    args.append(arg)
                elif arg in ours_of:  # a paired state register's value from the previous step
                    args.append(ours_of[arg])
                else:
                    raise ProgramError(f"their update of {theirs} reads state {arg}, which the child does not keep")
            out = ours if k == len(recipe) - 1 else fresh(stmt.out, f"{stmt.out}_" if len(stmt.out) < 60 else "v")
            current[stmt.out] = out
            statements.append(Statement(out, stmt.op, tuple(args), tuple(constant(c) for c in stmt.consts)))
        return statements

    recipes = {ours: transplant(ours, theirs) for ours, theirs in pairs.items()}
    last_write = {stmt.out: k for k, stmt in enumerate(update.body) if stmt.out in pairs}
    body: list[Statement] = []
    for k, stmt in enumerate(update.body):
        if stmt.out in pairs:  # our writes of a paired register give way to their recipe, at our last write
            if last_write[stmt.out] == k:
                body += recipes[stmt.out]
            continue
        body.append(stmt)
    for ours in pairs:
        if ours not in last_write:  # we never wrote it (an identity statistic): their update goes last
            body += recipes[ours]
    their_decls = {d.name: d for d in state.state}
    decls = tuple(dataclasses.replace(their_decls[pairs[d.name]], name=d.name) if d.name in pairs else d
                  for d in update.state)
    child = dataclasses.replace(update, state=decls, constants=tuple(constants), body=tuple(body))
    paired = ", ".join(f"{ours} <- {theirs}" for ours, theirs in pairs.items())
    return child, (f"crossover: the update of {update.name or 'one parent'} with the state of "
                   f"{state.name or 'the other'} ({paired})")


def make_crossover_child(
    first: Program,
    second: Program,
    rng: np.random.Generator,
    primitive_set: PrimitiveSet,
    is_new: Callable[[str], bool],
    limits: Limits = Limits(),
    max_attempts: int = 50,
) -> Child | None:
    """A crossover child that is valid, pruned, within limits and structurally new; None after max_attempts."""
    invalid = duplicates = 0
    for attempt in range(1, max_attempts + 1):
        try:
            child, description = crossover(first, second, rng, primitive_set, limits)
            validate(child, primitive_set)
            pruned = prune(child)
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
