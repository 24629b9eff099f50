"""Loop-carried dead-code removal and program measures.

A statement is live if its value reaches the output in this step or, through
a state register, in some later step. Liveness is computed over the step as
a loop: the registers live at the end of the body are the output plus the
state registers that the next step reads before writing them, and that set
is iterated to a fixed point. A state write that is overwritten before it is
next read is therefore dead, as is the Lion paper's `m = cosh(update)`: the
next step assigns m before reading it. A state register whose previous value
is never read is demoted to a temporary (it needs no buffer).
"""

from __future__ import annotations

import dataclasses

from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import Program


def live_mask(program: Program) -> tuple[list[bool], set[str]]:
    """(live flag per statement, state registers whose previous value is read).

    Backward liveness over the body, iterated as a loop: the state registers
    read before they are written are live at the end of the previous step.
    The carried set only grows, so this reaches its fixed point in at most
    one round per state register.
    """
    state = {decl.name for decl in program.state}
    carried: set[str] = set()
    while True:
        live = {program.output} | carried
        mask = [False] * len(program.body)
        for index in reversed(range(len(program.body))):
            stmt = program.body[index]
            if stmt.out in live:
                mask[index] = True
                live.discard(stmt.out)
                live.update(stmt.args)
        read_before_written = live & state
        if read_before_written == carried:
            return mask, carried
        carried = read_before_written


def prune(program: Program) -> Program:
    """The program without dead statements, unread state and unused constants."""
    mask, carried = live_mask(program)
    body = tuple(s for s, keep in zip(program.body, mask) if keep)
    used_constants = {name for stmt in body for name in stmt.consts}
    pruned = dataclasses.replace(
        program,
        state=tuple(d for d in program.state if d.name in carried),
        constants=tuple((k, v) for k, v in program.constants if k in used_constants),
        body=body,
    )
    return program if pruned == program else pruned


def complexity(program: Program, primitive_set: PrimitiveSet = ALL) -> float:
    """Sum of primitive costs of the live statements."""
    mask, _ = live_mask(program)
    return sum(primitive_set.get(s.op).cost for s, keep in zip(program.body, mask) if keep)


def state_buffers(program: Program) -> int:
    """Optimizer memory: state registers whose value is carried between steps.

    A register that is read but never written holds its initial value for
    ever: a constant, not a buffer.
    """
    mask, carried = live_mask(program)
    written = {s.out for s, keep in zip(program.body, mask) if keep}
    return len(carried & written)


def uses_matrix_primitives(program: Program, primitive_set: PrimitiveSet = ALL) -> bool:
    """True if a live statement treats the parameter as a matrix (polar, Gram, norms of matrices).

    Such programs are meant for matrix parameters; purely elementwise ones
    (Lion, AdamW, Adafactor's factored moments) apply to every parameter.
    """
    mask, _ = live_mask(program)
    return any(
        primitive_set.get(s.op).category in ("matrix", "kronecker") for s, keep in zip(program.body, mask) if keep
    )
