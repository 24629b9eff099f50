"""RuleOptimizer: the torch.optim side of an update rule; a subclass only says what the rule computes.

An update rule (a program of primitives/) maps, for one parameter, the
gradient g, the parameter w, the step t and its state registers to an update
u and the registers' new values; the optimizer applies w <- w - lr * u. This
class owns everything around that: the parameter groups and their checks
(every constant inside the interval its primitives accept), the state (each
register created lazily, zeros or eps * I, in the shape its kind says),
routing (a rule with matrix primitives takes the matrices, a built-in AdamW
the rest, as Muon users expect; an elementwise rule takes every parameter),
and speed (parameters of one shape run as one batch: one call per primitive
per shape, not per parameter).

A subclass declares

    STATE       its registers: State(name, kind, init, eps)
    CONSTANTS   its named constants: Constant(default, low, high, low_open, high_open)
    ELEMENTWISE whether route "auto" gives it every parameter (no matrix primitive)
    POLAR       whether it takes the polar-factor options (backend, steps, dtype)

and the rule itself: matrix_update / vector_update(g, w, t, *state, **constants,
options) -> (u, new state tuple), or an override of update(). ProgramOptimizer
runs a program through the interpreter; `optsearch export` writes the rule out
as straight-line torch code (discovered/<name>.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from discovered._contract import NS_DTYPES, MatrixOptimizer, check_choice, matrix_view, routing_keywords
from primitives.kinds import Kind, Layout, initial_value
from primitives.polar import BACKENDS
from primitives.primitive import ExecutionOptions

STEP_KEY = "program_step"  # the state entry holding a parameter's step count t
POLAR_OPTIONS = ("backend", "steps", "compute_dtype")


@dataclasses.dataclass(frozen=True)
class State:
    """A state register: its name, kind (param, row, col, rowvec, colvec, scalar) and start (zeros or eps * I)."""

    name: str
    kind: str = "param"
    init: str = "zeros"
    eps: float = 0.0


@dataclasses.dataclass(frozen=True)
class Constant:
    """A named constant: its default and the interval every primitive it feeds accepts."""

    default: float
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def check(self, name: str, value: Any) -> None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        inside = number and (value > self.low if self.low_open else value >= self.low) and \
            (value < self.high if self.high_open else value <= self.high)
        if not inside:
            interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            raise ValueError(f"Invalid {name} value: {value!r} (expected a number in {interval})")


class RuleOptimizer(MatrixOptimizer):
    """RuleOptimizer(params, lr, rule_constants, polar_backend="ns", polar_steps=None, polar_dtype=None, **routing).

    Args:
        lr: learning rate (w <- w - lr * u).
        rule_constants: values of the rule's named constants (the rest keep their defaults).
        polar_backend, polar_steps, polar_dtype: how polar factors are computed (rules with POLAR).
        route, batch_dims, adamw_*: see discovered._contract.MatrixOptimizer.
    """

    STATE: ClassVar[tuple[State, ...]] = ()
    CONSTANTS: ClassVar[dict[str, Constant]] = {}
    ELEMENTWISE: ClassVar[bool] = True
    POLAR: ClassVar[bool] = False
    GROUP_KEYS: ClassVar[tuple[str, ...]] = ()  # group keys a subclass passes besides routing (ProgramOptimizer's)
    matrix_update: ClassVar[Callable[..., tuple[Tensor, tuple[Tensor, ...]]] | None] = None
    vector_update: ClassVar[Callable[..., tuple[Tensor, tuple[Tensor, ...]]] | None] = None

    def __init__(self, params, lr: float, rule_constants: dict[str, float] | None = None,
                 polar_backend: str = "ns", polar_steps: int | None = None, polar_dtype: str | None = None,
                 **routing):
        defaults = {name: spec.default for name, spec in self.CONSTANTS.items()}
        unknown = set(rule_constants or {}) - set(defaults)
        if unknown:
            raise ValueError(f"Invalid constants: {', '.join(sorted(unknown))} (this rule has "
                             f"{', '.join(defaults) or 'none'})")
        polar = {"polar_backend": polar_backend, "polar_steps": polar_steps, "polar_dtype": polar_dtype}
        super().__init__(params, {"lr": lr, **defaults, **(rule_constants or {}), **(polar if self.POLAR else {}),
                                  **routing_keywords(type(self).__name__, routing, self.GROUP_KEYS)})

    # ------------------------------------------------------------------ checks and routing

    def _check_rule(self, group: dict) -> None:
        for name, spec in self.CONSTANTS.items():
            spec.check(name, group[name])
        if self.POLAR:
            check_choice("polar_backend", group["polar_backend"], BACKENDS)
            steps = group["polar_steps"]
            if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
                raise ValueError(f"Invalid polar_steps value: {steps!r} (expected None or a positive integer)")
            if group["polar_dtype"] is not None:
                check_choice("polar_dtype", group["polar_dtype"], NS_DTYPES)

    def _auto_takes(self, p: Tensor, group: dict) -> bool:
        return self.ELEMENTWISE or super()._auto_takes(p, group)

    def state_specs(self) -> tuple[State, ...]:
        return self.STATE

    def options(self, group: dict) -> dict[str, Any]:
        """Keywords of the polar primitives for this group ({} for a rule without them)."""
        if not self.POLAR:
            return {}
        return ExecutionOptions(group["polar_backend"], group["polar_steps"], group["polar_dtype"]).for_primitive(
            POLAR_OPTIONS)

    def update(self, layout: Layout, group: dict, g: Tensor, w: Tensor, t: Tensor, state: list[Tensor]
               ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The rule on a batch of parameters of one shape: (u, new state)."""
        rule = type(self).matrix_update if layout is Layout.MATRIX else type(self).vector_update
        constants = {name: group[name] for name in self.CONSTANTS}
        return rule(g, w, t, *state, **constants, options=self.options(group))

    # ------------------------------------------------------------------ the step

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
            self._run_bucket(group, members, layout, m, n, dtype, device)

    def _run_bucket(self, group, members, layout, m, n, dtype, device) -> None:
        specs = self.state_specs()
        sizes = [view.shape[0] for _, view in members]
        states, steps = [], []
        for p, view in members:
            state = self.state[p]
            if STEP_KEY not in state:
                state[STEP_KEY] = 0
                for spec in specs:
                    state[spec.name] = initial_value(Kind(spec.kind), spec.init, spec.eps, layout, (view.shape[0],),
                                                     m, n, dtype, device)
            state[STEP_KEY] += 1
            steps.append(torch.full((view.shape[0],), float(state[STEP_KEY]), dtype=dtype, device=device))
            states.append([state[spec.name] for spec in specs])

        def stack(tensors: list[Tensor]) -> Tensor:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

        g = stack([p.grad.reshape(view.shape) for p, view in members])
        w = stack([view for _, view in members])
        t = stack(steps).reshape(-1, *([1] * layout.core_ndim))
        old = [stack([s[i] for s in states]) for i in range(len(specs))]
        u, new = self.update(layout, group, g, w, t, old)
        u = torch.broadcast_to(u, w.shape)
        new_per_param = list(zip(*(value.split(sizes) for value in new))) if specs else [()] * len(members)
        for (p, _), u_p, values in zip(members, u.split(sizes), new_per_param):
            p.add_(u_p.reshape(p.shape), alpha=-group["lr"])
            for spec, value in zip(specs, values):
                self.state[p][spec.name].copy_(value)
