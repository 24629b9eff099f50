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

_INPUT_LEAVES = (hash(("input", 1)), hash(("input", 2)), hash(("input", 3)))  # g, w, t
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


@functools.lru_cache(maxsize=65536)
def _head(primitive_set: PrimitiveSet, op: str, values: tuple[float, ...]) -> tuple[int, bool]:
    """(hash of an op with its rounded constants, whether its arguments commute)."""
    prim = primitive_set.get(op)
    consts = tuple([round_constant(v, spec.perturb) for v, spec in zip(values, prim.consts)])
    return hash((_code(op), consts)), prim.commutative


def structural_hash(program: Program, primitive_set: PrimitiveSet = ALL, pruned: bool = False) -> str:
    """16 hex digits. Pass pruned=True if `program` is already pruned."""
    if not pruned:
        program = prune(program)
    constants = dict(program.constants)
    # Registers become list slots: inputs, then state registers, then temporaries.
    slots = {"g": 0, "w": 1, "t": 2}
    for decl in program.state:
        slots[decl.name] = len(slots)
    code = []
    for stmt in program.body:
        head, commutative = _head(primitive_set, stmt.op, tuple([constants[c] for c in stmt.consts]))
        args = tuple([slots[a] for a in stmt.args])
        out = slots.setdefault(stmt.out, len(slots))
        code.append((out, args, commutative, head))
    kind_keys = [hash((_code(d.kind.value), _code(d.init), d.eps)) for d in program.state]
    labels = kind_keys
    env: list[int] = []
    for _ in range(len(kind_keys) + 1):
        env = [*_INPUT_LEAVES, *(hash(("state", label)) for label in labels)] + [0] * (len(slots) - 3 - len(labels))
        for out, args, commutative, head in code:
            arg_hashes = tuple([env[i] for i in args])
            env[out] = hash((head, tuple(sorted(arg_hashes)) if commutative else arg_hashes))
        labels = [hash((key, env[3 + i])) for i, key in enumerate(kind_keys)]
    return format(hash((env[slots[program.output]], tuple(sorted(labels)))) & 0xFFFFFFFFFFFFFFFF, "016x")
