"""ProgramOptimizer: any optimizer program as a torch.optim.Optimizer.

    from primitives.known import LION
    optimizer = ProgramOptimizer(model.parameters(), LION, lr=1e-4)

Each step, the parameters of a group that share a shape (of their matrix
view), dtype and device are stacked along a batch dimension and the program
runs once for all of them: one call per primitive per shape, not per
parameter. State registers are stored per parameter, as torch.optim expects
(state_dict round trips, parameters may come and go).

Routing (see discovered._contract.MatrixOptimizer): with route "auto", a
program that uses matrix primitives (polar factor, spectral norm, Kronecker
factors) gets the matrix parameters and AdamW the rest, as in Muon; a purely
elementwise program (Lion, AdamW, Adafactor) gets every parameter.

Per group, `constants` overrides program constants by name (checked against
the ranges the primitives accept).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from discovered._contract import MatrixOptimizer, matrix_view
from primitives.analysis import uses_matrix_primitives
from primitives.interpreter import CompiledProgram, compile_program
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program, ProgramError, validate

STEP_KEY = "program_step"


class ProgramOptimizer(MatrixOptimizer):
    """ProgramOptimizer(params, program, lr=1e-3, constants=None, options=ExecutionOptions()).

    Args:
        program: a validated Program (primitives.serialize.load reads files).
        lr: learning rate; the program's output u is applied as w -= lr * u.
        constants: overrides of the program's named constants.
        options: how approximate primitives run (polar backend, its steps and dtype).
        primitive_set: the primitives the program may use (default: all built-in ones).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay, route,
        batch_dims: see discovered._contract.MatrixOptimizer.
    """

    def __init__(
        self,
        params,
        program: Program,
        lr: float = 1e-3,
        constants: dict[str, float] | None = None,
        options: ExecutionOptions = ExecutionOptions(),
        primitive_set: PrimitiveSet = ALL,
        **routing,
    ):
        if not isinstance(program, Program):
            raise TypeError(f"program must be a primitives.program.Program, got {type(program).__name__}")
        validate(program, primitive_set)
        self.program = program
        self.options = options
        self.primitive_set = primitive_set
        self._elementwise = not uses_matrix_primitives(program, primitive_set)
        self._compiled: dict[tuple, CompiledProgram] = {}
        super().__init__(params, {"lr": lr, "constants": dict(constants or {}), **routing})

    def _check_rule(self, group: dict) -> None:
        if not isinstance(group["constants"], dict):
            raise ValueError(f"Invalid constants: {group['constants']!r} (expected a dict of name: value)")
        try:
            validate(self.program.with_constants(**group["constants"]), self.primitive_set)
        except ProgramError as exc:
            raise ValueError(f"Invalid constants: {exc}") from None

    def _auto_takes(self, p: Tensor, group: dict) -> bool:
        return self._elementwise or super()._auto_takes(p, group)

    def _compiled_for(self, layout: Layout, constants: dict[str, float]) -> CompiledProgram:
        key = (layout, tuple(sorted(constants.items())))
        if key not in self._compiled:
            program = self.program.with_constants(**constants) if constants else self.program
            self._compiled[key] = compile_program(program, layout, self.options, self.primitive_set)
        return self._compiled[key]

    def _rule_step(self, group: dict, params: list[Tensor]) -> None:
        batch_dims = group["batch_dims"]
        buckets: dict[tuple, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        for p in params:
            view = matrix_view(p, batch_dims)
            core = view.shape[batch_dims:]
            buckets[(core, p.dtype, p.device)].append((p, view.reshape(-1, *core)))
        for (core, dtype, device), members in buckets.items():
            layout = Layout.MATRIX if len(core) == 2 else Layout.VECTOR
            m, n = (core[0], core[1]) if layout is Layout.MATRIX else (1, core[0])
            compiled = self._compiled_for(layout, group["constants"])
            self._run_bucket(compiled, group["lr"], members, layout, m, n, dtype, device)

    def _run_bucket(self, compiled, lr, members, layout, m, n, dtype, device) -> None:
        names = self.program.state_names
        sizes = [view.shape[0] for _, view in members]
        states, steps = [], []
        for p, view in members:
            state = self.state[p]
            if STEP_KEY not in state:
                state[STEP_KEY] = 0
                for name, value in zip(names, compiled.init_state((view.shape[0],), m, n, dtype, device)):
                    state[name] = value
            state[STEP_KEY] += 1
            steps.append(torch.full((view.shape[0],), float(state[STEP_KEY]), dtype=dtype, device=device))
            states.append([state[name] for name in names])

        def stack(tensors: list[Tensor]) -> Tensor:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

        g = stack([p.grad.reshape(view.shape) for p, view in members])
        w = stack([view for _, view in members])
        t = stack(steps).reshape(-1, *([1] * layout.core_ndim))
        old = [stack([s[i] for s in states]) for i in range(len(names))]
        u, new = compiled.step(g, w, t, old)
        u = torch.broadcast_to(u, w.shape)
        new_per_param = list(zip(*(value.split(sizes) for value in new))) if names else [()] * len(members)
        for (p, _), u_p, values in zip(members, u.split(sizes), new_per_param):
            p.add_(u_p.reshape(p.shape), alpha=-lr)
            for name, value in zip(names, values):
                self.state[p][name].copy_(value)
