"""Run a program: compile it once per layout into a list of bound functions.

The compiled form is the interpreter's hot loop: registers are slots in a
list, each statement is (function with its constants bound, argument slots,
result slot). A state register's slot starts with the previous step's value
and whatever it holds at the end is the new state. All tensors carry leading
batch dimensions (stacked parameters of one shape, or vmapped seeds).

    compiled = compile_program(program, Layout.MATRIX)
    state = compiled.init_state(batch=(3,), m=64, n=32, dtype=torch.float32)
    u, state = compiled.step(g, w, t, state)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from primitives.kinds import Layout, initial_value
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import INPUTS, Program, validate


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    program: Program
    layout: Layout
    code: tuple[tuple[Callable[..., Tensor], tuple[int, ...], int], ...]
    n_slots: int
    state_slots: tuple[int, ...]  # slot of each state register, in declaration order
    output_slot: int

    def init_state(self, batch: Sequence[int], m: int, n: int, dtype=torch.float32, device=None) -> list[Tensor]:
        """Initial state registers for a batch of (m, n) parameters (VECTOR layout: m = 1)."""
        return [initial_value(d.kind, d.init, d.eps, self.layout, batch, m, n, dtype, device) for d in self.program.state]

    def step(self, g: Tensor, w: Tensor, t: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One step: (update u, new state). Never writes into g, w, t or state."""
        env: list = [None] * self.n_slots
        env[0], env[1], env[2] = g, w, t
        for slot, value in zip(self.state_slots, state):
            env[slot] = value
        for fn, args, out in self.code:
            env[out] = fn(*[env[i] for i in args])
        return env[self.output_slot], [env[slot] for slot in self.state_slots]


def compile_program(
    program: Program,
    layout: Layout,
    options: ExecutionOptions = ExecutionOptions(),
    primitive_set: PrimitiveSet = ALL,
    validated: bool = False,
) -> CompiledProgram:
    """Bind every statement's function for `layout` (validating first unless `validated`)."""
    if not validated:
        validate(program, primitive_set)
    slots: dict[str, int] = {name: i for i, name in enumerate(INPUTS)}  # g, w, t -> 0, 1, 2
    for decl in program.state:
        slots[decl.name] = len(slots)
    constants = program.constant_values
    code = []
    for stmt in program.body:
        prim = primitive_set.get(stmt.op)
        fn = prim.bind(layout, tuple(constants[c] for c in stmt.consts), options)
        args = tuple(slots[a] for a in stmt.args)
        if stmt.out not in slots:
            slots[stmt.out] = len(slots)
        code.append((fn, args, slots[stmt.out]))
    return CompiledProgram(
        program, layout, tuple(code), len(slots), tuple(slots[d.name] for d in program.state), slots[program.output]
    )


def trajectory(compiled: CompiledProgram, w: Tensor, grads: Sequence[Tensor], lr: float) -> list[Tensor]:
    """Run from zero state on given gradients, applying w <- w - lr u: the updates u, step after step.

    w has one leading batch dimension: (batch, m, n), or (batch, n) for the VECTOR layout.
    """
    batch, core = w.shape[0], w.shape[1:]
    m, n = (core[0], core[1]) if compiled.layout is Layout.MATRIX else (1, core[0])
    state = compiled.init_state((batch,), m, n, dtype=w.dtype, device=w.device)
    times = torch.arange(1, len(grads) + 1, dtype=w.dtype, device=w.device)
    time_shape = (batch,) + (1,) * compiled.layout.core_ndim
    updates = []
    for step, g in enumerate(grads):
        u, state = compiled.step(g, w, times[step].expand(time_shape), state)
        if u.shape != w.shape:
            u = torch.broadcast_to(u, w.shape)
        updates.append(u)
        w = w - lr * u  # two roundings, as the probe (probe.py) computes it
    return updates
