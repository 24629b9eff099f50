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

from primitives.kinds import Kind
from primitives.library import ALL
from primitives.lowbit import stored_bytes
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


# The matrices state_bytes measures a program on: one transformer block of width
# d = 1024 (qkv 3072 x 1024, attention output 1024 x 1024, MLP in 4096 x 1024, MLP
# out 1024 x 4096), i.e. the char_lm task's block (d = 48, the proxy suite's
# transformer) at GPT-2-medium width. For ROW and COL statistics only the aspect
# ratios matter (any width gives the same numbers): a ROW register costs
# sum m^2 / sum m n = 27/12 = 2.25 values per parameter, a COL register
# sum n^2 / sum m n = 19/12 ~ 1.583, a ROWVEC 9/12288 and a COLVEC 7/12288 (so
# Adafactor's factored moment costs ~0.0013 where Adam's v costs 1). The proxy
# suite's own matrices would weigh tiny, oddly shaped ones (matrix completion's
# 200 x 5 factor: a ROW statistic 40 times the parameter) that no real model has.
REFERENCE_SHAPES: tuple[tuple[int, int], ...] = ((3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096))
PARAMETER_BYTES = 4  # float32 parameters; state is kept in the parameter's dtype
QUANTISER_BITS = {"quantize8": 8, "quantize4": 4}


def _values(kind: Kind, m: int, n: int) -> int:
    return {Kind.SCALAR: 1, Kind.PARAM: m * n, Kind.ROW: m * m, Kind.COL: n * n, Kind.ROWVEC: m,
            Kind.COLVEC: n}[kind]


def state_bytes(program: Program, shapes: tuple[tuple[int, int], ...] = REFERENCE_SHAPES) -> float:
    """Optimizer memory: bytes of state per parameter byte, on the matrices `shapes` (REFERENCE_SHAPES).

    The buffers are state_buffers' (registers carried between steps). What a
    register carries is its last write in the step: if that write is
    quantize8(...) (quantize4(...)) it costs 8 (4) bits a value plus a float32
    scale per block of 64 values, otherwise the parameter's own bytes. So a
    PARAM register costs 1 (AdamW: 2, Lion: 1), a quantize8 one 0.2656 and a
    quantize4 one 0.1406; a ROW (COL) register costs m^2 (n^2) values per m n
    parameters, summed over the shapes (Shampoo's L and R: 3.83 besides its momentum).
    """
    mask, carried = live_mask(program)
    last_write = {s.out: s.op for s, keep in zip(program.body, mask) if keep}
    kinds = {decl.name: decl.kind for decl in program.state}
    total = 0.0
    for name in sorted(carried & last_write.keys()):
        bits = QUANTISER_BITS.get(last_write[name])
        for m, n in shapes:
            values = _values(kinds[name], m, n)
            total += values * PARAMETER_BYTES if bits is None else stored_bytes(values, bits)
    return total / (PARAMETER_BYTES * sum(m * n for m, n in shapes))


def uses_matrix_primitives(program: Program, primitive_set: PrimitiveSet = ALL) -> bool:
    """True if a live statement treats the parameter as a matrix (polar, Gram, norms of matrices).

    Such programs are meant for matrix parameters; purely elementwise ones
    (Lion, AdamW, Adafactor's factored moments) apply to every parameter.
    """
    mask, _ = live_mask(program)
    return any(
        primitive_set.get(s.op).category in ("matrix", "kronecker") for s, keep in zip(program.body, mask) if keep
    )
