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
the same in every process on 64-bit CPython; str hashes are salted per
process, so every name and tag enters as its CRC32 instead (a test runs a
second process to hold this).
"""

from __future__ import annotations

import functools
import zlib

from primitives.analysis import prune
from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import Program

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


def _merkle(program: Program, primitive_set: PrimitiveSet, env: dict[str, int]) -> dict[str, int]:
    """Hash every statement's value from its op head and its arguments' hashes, in order.

    `env` holds the leaves (inputs, and state registers as the step begins).
    """
    constants = program.constant_values
    for stmt in program.body:
        head, commutative = _head(primitive_set, stmt.op, tuple(constants[c] for c in stmt.consts))
        arguments = [env[a] for a in stmt.args]
        if commutative:
            arguments.sort()
        env[stmt.out] = hash((head, *arguments))
    return env


def structural_hash(program: Program, primitive_set: PrimitiveSet = ALL, pruned: bool = False) -> str:
    """16 hex digits, the same in every process. Pass pruned=True if `program` is already pruned."""
    if not pruned:
        program = prune(program)
    names = [decl.name for decl in program.state]
    keys = [_state_key(decl.kind, decl.init, decl.eps) for decl in program.state]
    leaves = [hash((_STATE_TAG, key)) for key in keys]
    env = _merkle(program, primitive_set, _with_leaves(names, leaves))
    for _ in range(len(keys)):  # at most one relabelling per state (each splits a class, or nothing will)
        if len(set(leaves)) == len(leaves):
            break
        leaves = [hash((_STATE_TAG, hash((key, env[name])))) for key, name in zip(keys, names)]
        env = _merkle(program, primitive_set, _with_leaves(names, leaves))
    # (label, end-of-step value) per carried state: the recurrence, whatever the names
    labels = [hash((leaf, env[name])) for leaf, name in zip(leaves, names)]
    return _digest(env[program.output], labels)


def _with_leaves(names: list[str], leaves: list[int]) -> dict[str, int]:
    env = _INPUT_LEAVES.copy()
    env.update(zip(names, leaves))
    return env


def _digest(output: int, labels: list[int]) -> str:
    labels.sort()
    return "%016x" % (hash((output, *labels)) & 0xFFFFFFFFFFFFFFFF)
