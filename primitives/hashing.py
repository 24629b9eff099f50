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
Weisfeiler-Lehman graph hashing). After n_states + 1 rounds the labels encode
each register's update rule, so names and declaration order drop out.

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
from primitives.program import Program

_INPUT_LEAVES = {"g": hash(("input", 1)), "w": hash(("input", 2)), "t": hash(("input", 3))}
SIGNIFICANT_DIGITS = 3


@functools.lru_cache(maxsize=None)
def _code(text: str) -> int:
    return zlib.crc32(text.encode())


def round_constant(value: float, perturb: str) -> float:
    """Round to SIGNIFICANT_DIGITS, in the quantity a mutation perturbs (1 - beta for betas)."""
    if perturb == "complement":
        return 1.0 - float(f"{1.0 - value:.{SIGNIFICANT_DIGITS}g}")
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@functools.lru_cache(maxsize=4096)
def _op_info(primitive_set: PrimitiveSet, op: str) -> tuple[int, bool, tuple[str, ...]]:
    prim = primitive_set.get(op)
    return _code(op), prim.commutative, tuple(c.perturb for c in prim.consts)


def structural_hash(program: Program, primitive_set: PrimitiveSet = ALL, pruned: bool = False) -> str:
    """16 hex digits. Pass pruned=True if `program` is already pruned."""
    if not pruned:
        program = prune(program)
    constants = program.constant_values
    statements = []
    for stmt in program.body:
        code, commutative, perturbs = _op_info(primitive_set, stmt.op)
        consts = tuple(round_constant(constants[c], p) for c, p in zip(stmt.consts, perturbs))
        statements.append((stmt.out, stmt.args, commutative, hash((code, consts))))
    states = program.state
    labels = {s.name: hash((_code(s.kind.value), _code(s.init), s.eps)) for s in states}
    env: dict[str, int] = {}
    for _ in range(len(states) + 1):
        env = dict(_INPUT_LEAVES)
        env.update((name, hash(("state", label))) for name, label in labels.items())
        for out, args, commutative, head in statements:
            arg_hashes = tuple(env[a] for a in args)
            if commutative:
                arg_hashes = tuple(sorted(arg_hashes))
            env[out] = hash((head, arg_hashes))
        labels = {s.name: hash((_code(s.kind.value), _code(s.init), s.eps, env[s.name])) for s in states}
    return format(hash((env[program.output], tuple(sorted(labels.values())))) & 0xFFFFFFFFFFFFFFFF, "016x")
