"""Canonical structural hash of a program.

Invariant to register names, dead statements, the order of independent
statements, the order of arguments of commutative ops, and constant noise
below 3 significant digits (of 1 - beta for momentum-like constants); it
differs whenever the computation differs.

Each value is hashed from its op, its arguments' hashes and its rounded
constants (a Merkle DAG), with inputs as fixed leaves. A state register's
previous value is a leaf labelled by the register's kind and its *update
expression*, found by refinement: start from the kind alone, hash the body,
relabel every state from the hash of its end-of-step value, repeat (as in
Weisfeiler-Lehman graph hashing), so names and declaration order drop out.
Refinement stops as soon as every state has a label of its own: the labels
then name the registers canonically, and the set of (label, end-of-step
value) pairs spells out the whole recurrence. Most programs get there at
once (one state, or states of different kinds) or after one relabelling
(Adam's m and v); registers that stay alike (symmetric states) get
n_states + 1 rounds.

Hashes are built from Python's hash of tuples of ints and floats, which is
the same in every process (only str hashes are salted per process): op names
enter as their CRC32.
"""

from __future__ import annotations

import functools
import zlib

from primitives.analysis import prune
from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import Program, lookup

_INPUT_TAG, _STATE_TAG = zlib.crc32(b"input"), zlib.crc32(b"state")
_INPUT_LEAVES = {"g": hash((_INPUT_TAG, 1)), "w": hash((_INPUT_TAG, 2)), "t": hash((_INPUT_TAG, 3))}
SIGNIFICANT_DIGITS = 3


@functools.lru_cache(maxsize=None)
def _code(text: str) -> int:
    return zlib.crc32(text.encode())


@functools.lru_cache(maxsize=65536)
def round_constant(value: float, perturb: str) -> float:
    """Round to SIGNIFICANT_DIGITS, in the quantity a mutation perturbs (1 - beta for betas)."""
    if perturb == "complement":
        return 1.0 - float(f"{1.0 - value:.{SIGNIFICANT_DIGITS}g}")
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@functools.lru_cache(maxsize=None)
def _state_key(kind, init: str, eps: float) -> int:
    return hash((_code(kind.value), _code(init), eps))


@functools.lru_cache(maxsize=65536)
def _head(primitive_set: PrimitiveSet, op: str, values: tuple[float, ...]) -> tuple[int, bool]:
    """(hash of an op with its rounded constants, whether its arguments commute)."""
    prim = primitive_set.get(op)
    consts = tuple([round_constant(v, spec.perturb) for v, spec in zip(values, prim.consts)])
    return hash((_code(op), consts)), prim.commutative


def _merkle(code: list[tuple[str, tuple[str, ...], int, bool]], env: dict[str, int]) -> dict[str, int]:
    """Hash every statement's value from its op head and its arguments' hashes, in order."""
    for out, args, head, commutative in code:
        if len(args) == 1:
            env[out] = hash((head, env[args[0]]))
        elif len(args) == 2:
            first, second = env[args[0]], env[args[1]]
            if commutative and second < first:
                first, second = second, first
            env[out] = hash((head, first, second))
        else:
            arg_hashes = [env[a] for a in args]
            if commutative:
                arg_hashes.sort()
            env[out] = hash((head, *arg_hashes))
    return env


def structural_hash(program: Program, primitive_set: PrimitiveSet = ALL, pruned: bool = False) -> str:
    """16 hex digits. Pass pruned=True if `program` is already pruned."""
    if not pruned:
        program = prune(program)
    # (Comprehensions cost a function call each in Python 3.11: this is written
    # to make none it does not need, since most programs are small and stateless.)
    constants = dict(program.constants) if program.constants else None
    code = [
        (stmt.out, stmt.args, *_head(primitive_set, stmt.op, lookup(constants, stmt.consts) if stmt.consts else ()))
        for stmt in program.body
    ]
    if not program.state:
        return _digest(_merkle(code, _INPUT_LEAVES.copy())[program.output], ())
    names = [decl.name for decl in program.state]
    keys = [_state_key(decl.kind, decl.init, decl.eps) for decl in program.state]
    leaves = [hash((_STATE_TAG, key)) for key in keys]
    env = _merkle(code, {**_INPUT_LEAVES, **dict(zip(names, leaves))})
    for _ in range(len(keys)):  # at most one relabelling per state (each splits a class, or nothing will)
        if len(set(leaves)) == len(leaves):
            break
        leaves = [hash((_STATE_TAG, hash((key, env[name])))) for key, name in zip(keys, names)]
        env = _merkle(code, {**_INPUT_LEAVES, **dict(zip(names, leaves))})
    # (label, end-of-step value) per carried state: the recurrence, whatever the names
    return _digest(env[program.output], sorted([hash((leaf, env[name])) for leaf, name in zip(leaves, names)]))


def _digest(output: int, labels: list[int] | tuple[()]) -> str:
    return format(hash((output, tuple(labels))) & 0xFFFFFFFFFFFFFFFF, "016x")
