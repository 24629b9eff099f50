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


_NO_STATE: frozenset[str] = frozenset()


def live_mask(program: Program) -> tuple[list[bool], set[str]]:
    """(live flag per statement, state registers whose previous value is read)."""
    body = program.body
    state = {decl.name for decl in program.state} if program.state else _NO_STATE
    carried: set[str] = set()
    while True:
        live = {program.output, *carried}
        mask = [False] * len(body)
        index = len(body)
        for stmt in reversed(body):
            index -= 1
            if stmt.out in live:
                mask[index] = True
                live.discard(stmt.out)
                for arg in stmt.args:  # set.add: 4x faster than set.update with a tuple
                    live.add(arg)
        read_before_written = live & state
        if read_before_written == carried or _last_writes_live(body, mask, read_before_written - carried):
            return mask, read_before_written
        carried = read_before_written  # grows monotonically: terminates


def _last_writes_live(body: tuple, mask: list[bool], states: set[str]) -> bool:
    """Whether the last write of each of `states` (if written at all) is live already.

    Then the next round, which starts with these states live at the end of
    the step, would mark nothing new: below its last write a state is only
    read. This spares the usual stateful program (Adam, Lion) its second pass.
    """
    pending = set(states)
    for index in range(len(body) - 1, -1, -1):
        out = body[index].out
        if out in pending:
            if not mask[index]:
                return False
            pending.discard(out)
            if not pending:
                break
    return True


def prune(program: Program) -> Program:
    """The program without dead statements, unread state and unused constants."""
    mask, carried = live_mask(program)
    if False not in mask and len(carried) == len(program.state):
        if not program.constants:
            return program
        body = program.body
        used_constants = _constants_used(body)
        if len(used_constants) == len(program.constants):
            return program  # already pruned: most programs a search handles are
    else:
        body = tuple([s for s, keep in zip(program.body, mask) if keep])
        used_constants = _constants_used(body)
    return dataclasses.replace(
        program,
        state=tuple([d for d in program.state if d.name in carried]),
        constants=tuple([(k, v) for k, v in program.constants if k in used_constants]),
        body=body,
    )


def _constants_used(body: tuple) -> set[str]:
    used: set[str] = set()
    for stmt in body:
        for name in stmt.consts:
            used.add(name)
    return used


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
