"""Hypothesis strategies: random valid programs over a primitive set."""

from __future__ import annotations

import dataclasses

from hypothesis import assume
from hypothesis import strategies as st

from primitives import ALL, Kind, KindError
from primitives.program import INPUTS, Program, StateDecl, Statement, is_valid

STATE_KINDS = [Kind.PARAM, Kind.PARAM, Kind.ROW, Kind.COL, Kind.ROWVEC, Kind.COLVEC]


@st.composite
def programs(draw, primitive_set=ALL, max_statements=8, max_state=2) -> Program:
    state = []
    for i in range(draw(st.integers(0, max_state))):
        kind = draw(st.sampled_from(STATE_KINDS))
        eye = kind in (Kind.ROW, Kind.COL) and draw(st.booleans())
        state.append(StateDecl(f"s{i}", kind, "eye" if eye else "zeros", 1e-3 if eye else 0.0))
    env = {**INPUTS, **{s.name: s.kind for s in state}}
    constants: list[tuple[str, float]] = []
    body = []
    for i in range(draw(st.integers(1, max_statements))):
        prim = primitive_set.get(draw(st.sampled_from(primitive_set.names)))
        args = tuple(draw(st.sampled_from(sorted(env))) for _ in range(prim.arity))
        try:
            kind = prim.result_kind(tuple(env[a] for a in args))
        except KindError:
            continue
        consts = []
        for spec in prim.consts:
            if constants and draw(st.booleans()):  # share an existing constant if it fits
                name, value = draw(st.sampled_from(constants))
                if spec.contains(value):
                    consts.append(name)
                    continue
            low = spec.low if not spec.low_open else spec.low + abs(spec.low) * 1e-6 + 1e-12
            high = min(spec.high, 10.0) if not spec.high_open else spec.high - 1e-6
            value = draw(st.floats(max(low, -10.0), high, allow_nan=False))
            name = f"c{len(constants)}"
            constants.append((name, value))
            consts.append(name)
        same_kind_state = [s.name for s in state if s.kind is kind]
        out = draw(st.sampled_from([f"v{i}"] + same_kind_state))
        body.append(Statement(out, prim.name, args, tuple(consts)))
        env[out] = kind
    # Prefer the most recently computed PARAM as the output (hypothesis draws,
    # and shrinks towards, the first entry), so that most statements are live.
    assigned = [s.out for s in body if env[s.out] is Kind.PARAM]
    outputs = list(dict.fromkeys(assigned[::-1] + sorted(n for n, k in env.items() if k is Kind.PARAM)))
    program = Program(tuple(state), tuple(constants), tuple(body), draw(st.sampled_from(outputs)), "random")
    assume(is_valid(program, primitive_set))
    return program


def rename(program: Program, prefix: str = "r_") -> Program:
    """The same program with every state register and temporary renamed."""
    names = {s.name for s in program.state} | {s.out for s in program.body}
    mapping = {n: prefix + n for n in names if n not in INPUTS}
    new = lambda n: mapping.get(n, n)  # noqa: E731
    return dataclasses.replace(
        program,
        state=tuple(dataclasses.replace(s, name=new(s.name)) for s in program.state),
        body=tuple(dataclasses.replace(s, out=new(s.out), args=tuple(map(new, s.args))) for s in program.body),
        output=new(program.output),
    )


@st.composite
def raw_programs(draw, primitive_set=ALL, max_statements=6) -> Program:
    """Well-formed but often invalid programs: any op, any register (defined or not), any constant value."""
    names = ["g", "w", "t", "s0", "s1", "a", "b", "u"]
    state = tuple(StateDecl(name, draw(st.sampled_from(STATE_KINDS))) for name in ("s0", "s1")[: draw(st.integers(0, 2))])
    constants = (("c0", draw(st.sampled_from([0.5, 0.9, -1.0, 2.0, 1e-8, 1e7]))),)
    body = []
    for _ in range(draw(st.integers(1, max_statements))):
        prim = primitive_set.get(draw(st.sampled_from(primitive_set.names)))
        arity = prim.arity + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes a wrong arity
        args = tuple(draw(st.sampled_from(names)) for _ in range(arity))
        consts = tuple(draw(st.sampled_from(["c0", "c0", "c1"])) for _ in prim.consts)  # c1 is undeclared
        body.append(Statement(draw(st.sampled_from(["a", "b", "u", "s0", "s1"])), prim.name, args, consts))
    return Program(state, constants, tuple(body), output=draw(st.sampled_from(["u", "u", "a"])))


@st.composite
def corrupted_programs(draw, primitive_set=ALL) -> Program:
    """A valid program with one random change that may or may not make it invalid."""
    program = draw(programs(primitive_set))
    body = list(program.body)
    if not body:
        return dataclasses.replace(program, output="nowhere")
    index = draw(st.integers(0, len(body) - 1))
    stmt = body[index]
    how = draw(st.sampled_from(["constant", "argument", "op", "output", "state", "write"]))
    if how == "constant" and program.constants:
        name, _ = draw(st.sampled_from(program.constants))
        value = draw(st.sampled_from([-1.0, 0.0, 1.0, 2.0, 1e7, float("inf")]))
        return program.with_constants(**{name: value})
    if how == "argument" and stmt.args:
        args = list(stmt.args)
        args[draw(st.integers(0, len(args) - 1))] = draw(st.sampled_from(["undefined", "g", "t", stmt.out]))
        body[index] = dataclasses.replace(stmt, args=tuple(args))
    elif how == "op":
        prim = primitive_set.get(draw(st.sampled_from(primitive_set.names)))
        if len(prim.consts) == len(stmt.consts):
            body[index] = dataclasses.replace(stmt, op=prim.name)
    elif how == "output":
        return dataclasses.replace(program, output=draw(st.sampled_from(["g", "t", "nowhere", stmt.out])))
    elif how == "write" and program.state:  # store the value in a state register, whatever its kind
        body[index] = dataclasses.replace(stmt, out=draw(st.sampled_from(program.state)).name)
    elif how == "state" and program.state:
        decl = dataclasses.replace(program.state[0], kind=draw(st.sampled_from(STATE_KINDS)), init="zeros", eps=0.0)
        return dataclasses.replace(program, state=(decl, *program.state[1:]))
    return dataclasses.replace(program, body=tuple(body))
