"""ProgramOptimizer: any optimizer program as a torch.optim.Optimizer.

    from primitives.known import LION
    optimizer = ProgramOptimizer(model.parameters(), LION, lr=1e-4)

The program runs through the interpreter (primitives/interpreter.py); state,
checks, routing and batching are RuleOptimizer's (discovered/rule_optimizer.py),
the same runtime an exported optimizer runs on. Routing: with route "auto", a
program that uses matrix primitives (polar factor, spectral norm, Kronecker
factors) gets the matrix parameters and AdamW the rest, as in Muon; a purely
elementwise program (Lion, AdamW, Adafactor) gets every parameter.

Per group, `constants` overrides program constants by name (checked against
the ranges the primitives accept).
"""

from __future__ import annotations

from torch import Tensor

from discovered.rule_optimizer import RuleOptimizer, State
from primitives.analysis import uses_matrix_primitives
from primitives.interpreter import CompiledProgram, compile_program
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import ExecutionOptions, PrimitiveSet
from primitives.program import Program, ProgramError, validate


class ProgramOptimizer(RuleOptimizer):
    """ProgramOptimizer(params, program, lr=1e-3, constants=None, options=None, primitive_set=None, **routing).

    Args:
        program: a validated Program (primitives.serialize.load reads files).
        lr: learning rate; the program's output u is applied as w -= lr * u.
        constants: overrides of the program's named constants.
        options: how approximate primitives run (polar backend, its steps and dtype;
            default ExecutionOptions()).
        primitive_set: the primitives the program may use (default: all built-in ones,
            primitives.library.ALL).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay, route,
        batch_dims: see discovered._contract.MatrixOptimizer.
    """

    GROUP_KEYS = ("constants",)

    def __init__(
        self,
        params,
        program: Program,
        lr: float = 1e-3,
        constants: dict[str, float] | None = None,
        options: ExecutionOptions | None = None,
        primitive_set: PrimitiveSet | None = None,
        **routing,
    ):
        # None, not the defaults themselves, in the signature: help() printed the repr of every built-in
        # primitive (about 50 KB) as the default of primitive_set.
        options = ExecutionOptions() if options is None else options
        primitive_set = ALL if primitive_set is None else primitive_set
        if not isinstance(program, Program):
            raise TypeError(f"program must be a primitives.program.Program, got {type(program).__name__}")
        validate(program, primitive_set)
        self.program = program
        self.execution = options
        self.primitive_set = primitive_set
        self.ELEMENTWISE = not uses_matrix_primitives(program, primitive_set)
        self._specs = tuple(State(d.name, d.kind.value, d.init, d.eps) for d in program.state)
        self._compiled: dict[tuple, CompiledProgram] = {}
        # `constants` is a group key of this class: a program's constants are its data, not class attributes.
        super().__init__(params, lr, constants=dict(constants or {}), **routing)

    def _check_rule(self, group: dict) -> None:
        constants = group["constants"]
        if not isinstance(constants, dict):
            raise ValueError(f"Invalid constants: {constants!r} (expected a dict of name: value)")
        try:
            validate(self.program.with_constants(**constants), self.primitive_set)
        except ProgramError as exc:
            raise ValueError(f"Invalid constants: {exc}") from None

    def state_specs(self) -> tuple[State, ...]:
        return self._specs

    def update(self, layout: Layout, group: dict, g: Tensor, w: Tensor, t: Tensor, state: list[Tensor]):
        constants = group["constants"]
        key = (layout, tuple(sorted(constants.items())))
        compiled = self._compiled.get(key)
        if compiled is None:
            program = self.program.with_constants(**constants) if constants else self.program
            compiled = self._compiled[key] = compile_program(program, layout, self.execution, self.primitive_set)
        return compiled.step(g, w, t, state)
