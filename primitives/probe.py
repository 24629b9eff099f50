"""The probe: a program run for a few steps on fixed inputs, every value remembered.

The fingerprint (fingerprint.py) and the behaviour score (search/evaluation.py)
run thousands of programs on the same fixed inputs, and a search's children
share most statements with their parents. The probe runs them on NumPy twins
of the primitives (probe_kernels.py: at these sizes a torch op is all launch
overhead) and numbers every value it computes (hash-consing):

    by how it was computed   a statement's result: in its operation's table
                             (an operation is a primitive with its constants),
                             under the numbers of its arguments
    by its bits              (shape, bytes): two computations that reach the
                             same value give it one number

A statement whose arguments are in its operation's table is looked up
instead of run, and kernels are functions of their arguments' bits, so a run
with the memory gives bit for bit the values of a run without it
(tests/test_probe.py). On the benchmark's search stream 62% of the
statements are found in the full primitive space (BENCHMARKS.md). The
updates agree with the torch interpreter's (`interpreter.trajectory`) to
round-off. Statements are compiled once to instructions and kept, keyed by
their value (a worker's programs are decoded from JSON: no object is shared
with a parent).

The memory is per process and per probe (primitive set, execution options,
steps, batch, drift); it starts over when it holds MEMO_BYTES.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from operator import itemgetter

import numpy as np
import torch
from torch import Tensor

from primitives.interpreter import initial_value
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, Primitive, PrimitiveSet
from primitives.probe_kernels import MATRIX_KERNELS, MATRIX_PARTS, VECTOR_KERNELS, VECTOR_PARTS
from primitives.program import Program, StateDecl, Statement, validate

PROBE_STEPS = 4
PROBE_LR = 1e-2
PROBE_BATCH = 2
_LEARNING_RATE = np.array(PROBE_LR)  # 0-d: see probe_kernels.py
MATRIX_PROBE = (5, 3)  # non-square: catches transposition mix-ups
VECTOR_PROBE = 4
# The memory's bound, counted as each value's data plus VALUE_OVERHEAD for its
# Python objects and keys (measured: 54 MB held 45,000 values of the
# fingerprint's 240-byte arrays, ~1,000 bytes each beyond the data). A
# search's children descend from recent programs, which is what it must hold.
MEMO_BYTES = 64_000_000
VALUE_OVERHEAD = 1_000
# The probe computes polar factors exactly: the fingerprint is about what a
# program means (polar(2 X) = polar(X)), and one SVD of a 5 x 3 matrix costs
# less than Newton-Schulz's 45 small ops.
PROBE_OPTIONS = ExecutionOptions(polar_backend="svd")


@functools.lru_cache(maxsize=8)
def probe_inputs(layout: Layout, steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0
                 ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(initial parameters, gradient per step) for one layout; fixed forever.

    Gradient entries span four orders of magnitude across entries and steps, so
    that discrete outputs (signs, clips) sit near their decision boundaries
    somewhere and every constant moves some of them. drift adds a persistent
    gradient direction (scaled by `drift`) to every step, as real gradients
    have; without it every step is independent.
    """
    generator = torch.Generator().manual_seed(20230215 + layout.value)
    shape = (batch, *MATRIX_PROBE) if layout is Layout.MATRIX else (batch, VECTOR_PROBE)

    def heavy_tailed() -> Tensor:
        magnitude = 10.0 ** (3 * torch.rand(shape, generator=generator, dtype=torch.float64) - 2)
        return magnitude * torch.randn(shape, generator=generator, dtype=torch.float64)

    with torch.inference_mode(False):  # ordinary tensors, usable inside and outside inference mode
        w0 = heavy_tailed()
        direction = heavy_tailed()
        return w0, tuple(drift * direction + heavy_tailed() for _ in range(steps))


class LayoutMemo:
    """What a probe memory holds for one layout: the inputs' numbers, operations and compiled statements."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.inputs: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None  # numbers of w0, g, t
        self.initial: dict[tuple, int] = {}  # (kind, init, eps) of a state register -> its initial number
        # (op, constants) -> (table, kernel, None) or (None, None, parts): ProbeMemo._new_operation. A
        # table maps the numbers of an operation's arguments (one number, or a tuple) to its result's.
        self.operations: dict[tuple, tuple] = {}
        # (op, args, out, constants' values) of a statement -> (its instructions, whether it reads w)
        self.instructions: dict[tuple, tuple] = {}
        self.full: dict[int, int] = {}  # u -> u broadcast to the parameter's shape


class ProbeMemo:
    """Every value one probe has computed, numbered by how it was computed and by its bits."""

    def __init__(self, primitive_set: PrimitiveSet, options: ExecutionOptions, steps: int, batch: int,
                 drift: float, capacity: int = MEMO_BYTES):
        self.primitive_set, self.options = primitive_set, options
        self.steps, self.batch, self.drift = steps, batch, drift
        self.capacity = capacity  # bytes
        self.clear()

    def clear(self) -> None:
        self.contents: dict[tuple, int] = {}  # (shape, bytes) of a value -> its number
        self.values: list[np.ndarray] = []  # number -> value
        self.descents: dict[tuple[int, int], int] = {}  # (w, u as w's shape) -> w - lr u
        self.layouts = {layout: LayoutMemo(layout) for layout in Layout}
        # Registers are slots of one list, numbered here for every program (a search names its
        # registers from a small set), so that a statement compiles once and its instructions
        # serve every program that holds it: a child holds most of its parent's statements.
        self.slots: dict[str | tuple, int] = {"g": 0, "w": 1, "t": 2}  # register name -> slot
        self.digests: dict[tuple[int, ...], str] = {}  # numbers of a run's updates -> fingerprint
        self.statements_seen = self.statements_run = 0  # statements run: not found in the memory
        self.size = 0  # bytes, counted as MEMO_BYTES says

    def number(self, value: np.ndarray) -> int:
        """The number of a value: equal bits, equal number, however it was computed.

        Kernels are functions of their arguments' bits, so a statement applied
        to a value that another computation also reached is found too.
        """
        content = (value.shape, value.tobytes())
        number = self.contents.get(content)
        if number is None:
            number = self.contents[content] = len(self.values)
            self.values.append(value)
            self.size += value.nbytes + VALUE_OVERHEAD
        return number

    def _inputs(self, memo: LayoutMemo) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        if memo.inputs is None:
            w, grads = probe_inputs(memo.layout, self.steps, self.batch, self.drift)
            time_shape = (self.batch,) + (1,) * memo.layout.core_ndim
            memo.inputs = (self.number(w.numpy()), tuple(self.number(g.numpy()) for g in grads),
                           tuple(self.number(np.full(time_shape, k + 1.0)) for k in range(self.steps)))
        return memo.inputs

    def _initial_value(self, decl: StateDecl, layout: Layout) -> np.ndarray:
        w = probe_inputs(layout, self.steps, self.batch, self.drift)[0]
        m, n = w.shape[1:] if layout is Layout.MATRIX else (1, w.shape[1])
        return initial_value(decl, layout, (self.batch,), m, n, w.dtype).numpy()

    def _slot(self, name: str | tuple) -> int:
        slot = self.slots.get(name)
        if slot is None:
            slot = self.slots[name] = len(self.slots)
        return slot

    def _compile(self, program: Program, memo: LayoutMemo) -> tuple[list, list[int], int, bool]:
        """(code, registers holding the initial values' numbers, slot of u, whether a statement reads w)."""
        cache = memo.instructions
        constants = program.constant_values if program.constants else None
        code, reads_w = [], False
        for stmt in program.body:
            names = stmt.consts
            consts = () if not names else (constants[names[0]],) if len(names) == 1 else tuple(
                [constants[name] for name in names])
            entry = cache.get((stmt.op, stmt.args, stmt.out, consts))
            if entry is None:
                entry = cache[stmt.op, stmt.args, stmt.out, consts] = (self._instructions(stmt, consts, memo),
                                                                       "w" in stmt.args)
                self.size += VALUE_OVERHEAD
            code += entry[0]
            reads_w = reads_w or entry[1]
        initial, state = memo.initial, []
        for decl in program.state:
            key = (decl.kind, decl.init, decl.eps)
            number = initial.get(key)
            if number is None:
                number = initial[key] = self.number(self._initial_value(decl, memo.layout))
            state.append((self._slot(decl.name), number))
        registers = [-1] * len(self.slots)
        for slot, number in state:
            registers[slot] = number
        return code, registers, self.slots[program.output], reads_w

    def _instructions(self, stmt: Statement, consts: tuple[float, ...], memo: LayoutMemo) -> tuple[tuple, ...]:
        """A statement's instructions on one layout.

        An instruction is (its operation's table, kernel, getter of its
        argument slots, how many arguments it has, its result slot). A
        statement is one instruction, or one per part (MATRIX_PARTS,
        VECTOR_PARTS), the parts before the last writing slots of their own.
        """
        table, kernel, parts = memo.operations.get((stmt.op, consts)) or self._new_operation(stmt.op, consts, memo)
        arguments = [self._slot(a) for a in stmt.args]
        out = self._slot(stmt.out)
        if parts is None:
            return ((table, kernel, itemgetter(*arguments), len(arguments), out),)
        instructions = []
        for k, (table, kernel, positions) in enumerate(parts):
            result = out if k == len(parts) - 1 else self._slot(("part", k))  # read at once by a later part
            instructions.append((table, kernel, itemgetter(*[arguments[i] for i in positions]), len(positions),
                                 result))
            arguments.append(result)
        return tuple(instructions)

    def _new_operation(self, op: str, consts: tuple[float, ...], memo: LayoutMemo) -> tuple:
        """A table and a kernel for an operation (a primitive with its constants), or for each of its parts.

        The entry is (table, kernel, None), or (None, None, parts) with a part
        (table, kernel, positions of its arguments); parts are keyed by
        (kernel, their constants), so two primitives sharing a part share it.
        """
        operations = memo.operations
        primitive = self.primitive_set.get(op)
        matrix = memo.layout is Layout.MATRIX
        parts = (MATRIX_PARTS if matrix else VECTOR_PARTS).get(op) if _is_library(primitive) else None
        if parts is None:
            entry = ({}, probe_function(primitive, memo.layout, consts, self.options), None)
        else:
            named = dict(zip((spec.name for spec in primitive.consts), consts))
            numbered = []
            for kernel, positions, names in parts:
                part_consts = tuple([named[name] for name in names])
                part = operations.get((kernel, part_consts))
                if part is None:
                    bound = kernel(**dict(zip(names, part_consts))) if names else kernel  # factories, as above
                    part = operations[kernel, part_consts] = ({}, bound, None)
                numbered.append((part[0], part[1], positions))
            entry = (None, None, tuple(numbered))
        operations[op, consts] = entry
        return entry

    def updates(self, program: Program, layout: Layout) -> list[int]:
        """Numbers of the updates u, step after step, of `program` (validated) on this probe's `layout`."""
        contents, values, descents = self.contents, self.values, self.descents
        memo = self.layouts[layout]
        full = memo.full
        run = added = 0
        w_number, g_numbers, t_numbers = self._inputs(memo)
        code, env, output, reads_w = self._compile(program, memo)
        env[1] = w_number
        out = []
        for step in range(self.steps):
            env[0], env[2] = g_numbers[step], t_numbers[step]
            for table, function, arguments, arity, result in code:
                found = arguments(env)  # one number, or a tuple of them
                number = table.get(found)
                if number is None:  # run it, then number its value by its bits (self.number, inlined)
                    if arity == 1:
                        value = function(values[found])
                    elif arity == 2:
                        value = function(values[found[0]], values[found[1]])
                    else:
                        value = function(*[values[i] for i in found])
                    content = (value.shape, value.tobytes())
                    number = contents.get(content)
                    if number is None:
                        number = contents[content] = len(values)
                        values.append(value)
                        added += value.nbytes + VALUE_OVERHEAD
                    table[found] = number
                    run += 1
                env[result] = number
            u_number = full.get(env[output])  # u as the parameter's shape
            if u_number is None:
                u_number = full[env[output]] = self._as_parameter(values[env[output]], values[w_number].shape)
            out.append(u_number)
            if reads_w:  # the next step's w = w - lr u (a program that never reads w needs none)
                w_next = descents.get((env[1], u_number))
                if w_next is None:
                    w_next = descents[env[1], u_number] = self.number(values[env[1]] - _LEARNING_RATE * values[u_number])
                env[1] = w_next
        self.statements_seen += self.steps * len(code)
        self.statements_run += run
        self.size += added
        return out

    def _as_parameter(self, u: np.ndarray, shape: tuple[int, ...]) -> int:
        """The number of u broadcast to the parameter's shape (a PARAM result can be a broadcast scalar)."""
        if u.shape != shape:  # a copy, not np.broadcast_to (9 us of Python)
            full = np.empty(shape)
            full[...] = u
            u = full
        return self.number(u)

    def concatenate(self, numbers: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([self.values[i].reshape(-1) for i in numbers])


def probe_function(primitive: Primitive, layout: Layout, consts: tuple[float, ...], options: ExecutionOptions
                   ) -> Callable[..., np.ndarray]:
    """The primitive's NumPy kernel with its constants bound, or its torch function wrapped for NumPy.

    Kernels exist for the library's own primitives (not for a primitive of
    the same name from elsewhere), and polar factors have only the exact one.
    """
    kernel = (MATRIX_KERNELS if layout is Layout.MATRIX else VECTOR_KERNELS).get(primitive.name)
    if kernel is None or not _is_library(primitive) or (primitive.options and options.polar_backend != "svd"):
        fn = primitive.bind(layout, consts, options)

        def run_torch(*args: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return fn(*[torch.from_numpy(np.ascontiguousarray(a)) for a in args]).numpy()

        return run_torch
    if not primitive.consts:
        return kernel
    return kernel(**{spec.name: float(v) for spec, v in zip(primitive.consts, consts)})  # a kernel factory


def _is_library(primitive: Primitive) -> bool:
    return ALL.primitives_by_name.get(primitive.name) is primitive


@functools.lru_cache(maxsize=8)
def probe_memo(primitive_set: PrimitiveSet, options: ExecutionOptions, steps: int, batch: int, drift: float
               ) -> ProbeMemo:
    """The process's memory of one probe."""
    return ProbeMemo(primitive_set, options, steps, batch, drift)


def default_layouts(program: Program, primitive_set: PrimitiveSet) -> tuple[Layout, ...]:
    """The matrix probe, and the vector probe too when the program has matrix primitives.

    Elementwise ops and element statistics mean the same on a vector as on a
    matrix; the matrix primitives act on a vector as on diag(x).
    """
    matrix = any(primitive_set.get(s.op).category in ("matrix", "kronecker", "factored") for s in program.body)
    return (Layout.MATRIX, Layout.VECTOR) if matrix else (Layout.MATRIX,)


def probe_run(program: Program, options: ExecutionOptions = PROBE_OPTIONS, primitive_set: PrimitiveSet = ALL,
              layouts: tuple[Layout, ...] | None = None, steps: int = PROBE_STEPS, batch: int = PROBE_BATCH,
              drift: float = 0.0, memo: ProbeMemo | None = None, validated: bool = False
              ) -> tuple[ProbeMemo, tuple[int, ...]]:
    """(the memory, numbers of every update u in it, layout after layout, step after step).

    validated: the caller has validated `program` against `primitive_set` (the
    kernels assume a valid program; a worker's job decodes it with from_dict,
    which validates).
    """
    if not validated:
        validate(program, primitive_set)
    if memo is None:
        memo = probe_memo(primitive_set, options, steps, batch, drift)
    if memo.size > memo.capacity:
        memo.clear()
    with np.errstate(all="ignore"):  # a runaway program overflows: that is its behaviour, not a warning
        numbers = []
        for layout in layouts or default_layouts(program, primitive_set):
            numbers += memo.updates(program, layout)
    return memo, tuple(numbers)


def probe_updates(program: Program, options: ExecutionOptions = PROBE_OPTIONS,
                  primitive_set: PrimitiveSet = ALL, layouts: tuple[Layout, ...] | None = None,
                  steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, drift: float = 0.0,
                  memo: ProbeMemo | None = None) -> np.ndarray:
    """Every update u of the probe run, flattened (float64), step after step.

    layouts: which probes to run (default_layouts unless given). steps and
    batch make a longer or wider probe, drift a persistent gradient direction
    (the fingerprint uses the defaults). memo: the process's own unless given.
    """
    memo, numbers = probe_run(program, options, primitive_set, layouts, steps, batch, drift, memo)
    return memo.concatenate(numbers)
