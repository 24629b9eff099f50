"""Any optimizer as a proxy-task contender: by name, with keywords, or as a program.

    parse_optimizer("AdamW")                      torch.optim.AdamW, defaults
    parse_optimizer("SGD:momentum=0.9")           torch.optim.SGD with keywords
    parse_optimizer("Lion")                       discovered.Lion (any registry name)
    parse_optimizer("program:muon")               a known program, run by the interpreter
    parse_optimizer("path/to/program.json")       a program file
    OptimizerSpec.for_program(program)            a Program object

Only the learning rate is tuned; everything else keeps the optimizer's
defaults (or the keywords given). Muon-style optimizers (with a built-in AdamW
for non-matrix parameters) get the task's tuned AdamW learning rate for those
parameters, with torch.optim.AdamW's coefficients, so that the comparison is
about the matrix rule alone.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from primitives.errors import OptsearchError
from primitives.program import Program, ProgramError

# torch.optim classes that act coordinate by coordinate, so a stack of seeds
# (a leading batch dimension) is trained exactly as the seeds would be alone.
ELEMENTWISE_TORCH = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD"}
# Of those, the ones whose step (decay included) is lr times an update independent of lr.
# Not ASGD (its averaging depends on lr) nor Adagrad with lr_decay (its rate decays by step).
LR_LINEAR_TORCH = ELEMENTWISE_TORCH - {"ASGD"}
# The aux AdamW of Muon-style optimizers uses torch.optim.AdamW's defaults.
AUX_ADAMW = {"adamw_betas": (0.9, 0.999), "adamw_eps": 1e-8, "adamw_weight_decay": 0.01}
ALIASES = {"SGDM": ("SGD", {"momentum": 0.9}), "SGD-Nesterov": ("SGD", {"momentum": 0.9, "nesterov": True})}


class UnknownOptimizerError(OptsearchError):
    pass


# Every score is measured against this: torch's own AdamW at its defaults. It is
# built here, never looked up by name, so nothing registered or exported under
# the name "AdamW" can stand in for it.
BASELINE = "AdamW"
BASELINE_CLASS = torch.optim.AdamW


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str
    factory: Callable[..., Optimizer]
    kwargs: tuple[tuple[str, Any], ...] = ()
    routes: bool = False  # a MatrixOptimizer: takes route / batch_dims / adamw_* group keys
    batchable: bool = True  # trains stacked seeds correctly
    # Its step is exactly lr times an update that does not depend on lr (decay included), so
    # runs at several rates can be trained as one batch (proxy_tasks/runner.py's train_grid).
    lr_linear: bool = False
    # Gives a task's adamw_params (embeddings, heads) to a built-in AdamW at the baseline's tuned rate
    # (Muon-style rules); otherwise they follow the rule like every other parameter.
    aux_params: bool = True
    program: Program | None = None

    @classmethod
    def for_program(cls, program: Program, name: str | None = None, **kwargs) -> OptimizerSpec:
        from discovered.program_optimizer import ProgramOptimizer

        from primitives.analysis import uses_matrix_primitives

        # An elementwise program trains every parameter, as Lion or AdamW does; a matrix program hands
        # embeddings and heads to the built-in AdamW, as Muon's users do.
        matrix = uses_matrix_primitives(program, kwargs.get("primitive_set") or _all_primitives())
        return cls(name or f"program:{program.name or 'unnamed'}", functools.partial(ProgramOptimizer, program=program),
                   tuple(sorted(kwargs.items())), routes=True, lr_linear=True, program=program, aux_params=matrix)

    def make(self, named_params: dict[str, torch.nn.Parameter], adamw_names: tuple[str, ...], lr: float,
             aux_lr: float, batch_dims: int, device: torch.device | str = "cpu") -> Optimizer:
        kwargs = dict(self.kwargs)
        if not self.routes:
            return self.factory(list(named_params.values()), lr=lr, **kwargs)
        if "ns_dtype" in _parameters(self.factory) and "ns_dtype" not in kwargs and torch.device(device).type == "cpu":
            # bf16 matmuls have no fast kernel on most CPUs (BENCHMARKS.md): 16x slower for no benefit
            kwargs["ns_dtype"] = "float32"
        common = {"batch_dims": batch_dims, "adamw_lr": aux_lr, **AUX_ADAMW}
        adamw_names = adamw_names if self.aux_params else ()
        rule = [p for n, p in named_params.items() if n not in adamw_names]
        aux = [p for n, p in named_params.items() if n in adamw_names]
        groups = [{"params": rule, **common}]
        if aux:
            groups.append({"params": aux, **common, "route": "adamw", "lr": aux_lr, "weight_decay": 0.01})
        return self.factory(groups, lr=lr, **kwargs)


def _all_primitives():
    from primitives.library import ALL

    return ALL


def _default_decay(cls, kwargs: dict) -> bool:
    """Adagrad's step is linear in lr only without lr_decay."""
    return not (cls is torch.optim.Adagrad and kwargs.get("lr_decay", 0))


def _parameters(factory) -> set[str]:
    target = factory.func if isinstance(factory, functools.partial) else factory
    try:
        return set(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return set()


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_kwargs(text: str, name: str) -> dict[str, Any]:
    kwargs = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.isidentifier():
            raise UnknownOptimizerError(f"bad keyword {part!r} in {name!r}: expected key=value")
        kwargs[key] = _parse_value(value)
    return kwargs


def known_names() -> list[str]:
    from discovered import REGISTRY

    torch_names = [n for n, c in vars(torch.optim).items()
                   if isinstance(c, type) and issubclass(c, Optimizer) and c is not Optimizer]
    return sorted(set(REGISTRY) | set(torch_names) | set(ALIASES))


def baseline_spec() -> OptimizerSpec:
    """torch.optim.AdamW with its defaults: the baseline of every score."""
    return OptimizerSpec(BASELINE, BASELINE_CLASS, (), batchable=True, lr_linear=True)


def baseline_identity() -> str:
    """What the baseline cache records about the class it tuned."""
    return f"{BASELINE_CLASS.__module__}.{BASELINE_CLASS.__qualname__}"


def shadowed_names() -> set[str]:
    """Names an exported optimizer may not take: torch.optim's classes and the aliases bench resolves."""
    return {n for n, c in vars(torch.optim).items() if isinstance(c, type) and issubclass(c, Optimizer)} | set(ALIASES)


def _checked(spec: OptimizerSpec) -> OptimizerSpec:
    """The spec, once its keywords are known to the class and accepted by it (before anything trains)."""
    if not spec.kwargs:
        return spec
    accepted = _parameters(spec.factory)
    target = spec.factory.func if isinstance(spec.factory, functools.partial) else spec.factory
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(target).parameters.values())
    unknown = [key for key, _ in spec.kwargs if key not in accepted and not takes_any]
    if unknown:
        options = ", ".join(sorted(accepted - {"self", "params", "lr"}))
        raise UnknownOptimizerError(f"{spec.name!r}: {target.__name__} has no keyword {unknown[0]!r}; "
                                    f"it takes {options}")
    defaults = {k: p.default for k, p in inspect.signature(target).parameters.items()}
    for key, value in spec.kwargs:
        default = defaults.get(key)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(value, (int, float)):
            raise UnknownOptimizerError(f"{spec.name!r}: {key} must be a number, got {value!r}")
    try:
        spec.make({"probe": torch.nn.Parameter(torch.zeros(2, 2))}, (), 1e-3, 1e-3, batch_dims=0)
    except (TypeError, ValueError) as exc:
        raise UnknownOptimizerError(f"{spec.name!r}: {exc}") from None
    return spec


def parse_optimizer(text: str) -> OptimizerSpec:
    """An OptimizerSpec from a command-line name (see the module docstring)."""
    from discovered import REGISTRY
    from discovered._contract import MatrixOptimizer
    from primitives.known import KNOWN_PROGRAMS
    from primitives.serialize import load

    name, _, keywords = text.partition(":")
    if name == "program":
        if keywords not in KNOWN_PROGRAMS:
            raise UnknownOptimizerError(f"unknown program {keywords!r}; known: {', '.join(sorted(KNOWN_PROGRAMS))}")
        return OptimizerSpec.for_program(KNOWN_PROGRAMS[keywords])
    if text.endswith((".json", ".txt")) or Path(text).is_file():
        try:
            return OptimizerSpec.for_program(load(text), name=Path(text).stem)
        except ProgramError as exc:
            raise UnknownOptimizerError(f"cannot use program file {text}: {exc}") from None
    kwargs = _parse_kwargs(keywords, text)
    if name in ALIASES:
        name, alias_kwargs = ALIASES[name]
        kwargs = {**alias_kwargs, **kwargs}
    if name == BASELINE and not kwargs:
        return baseline_spec()
    if name in REGISTRY and not (REGISTRY[name].source == "exported" and name in shadowed_names()):
        info = REGISTRY[name]
        cls = info.cls.func if isinstance(info.cls, functools.partial) else info.cls
        routes = isinstance(cls, type) and issubclass(cls, MatrixOptimizer)
        return _checked(OptimizerSpec(text, info.cls, tuple(sorted(kwargs.items())), routes=routes,
                                      batchable=info.batchable, lr_linear=info.lr_linear))
    cls = getattr(torch.optim, name, None)
    if isinstance(cls, type) and issubclass(cls, Optimizer) and cls is not Optimizer:
        return _checked(OptimizerSpec(text, cls, tuple(sorted(kwargs.items())), batchable=name in ELEMENTWISE_TORCH,
                                      lr_linear=name in LR_LINEAR_TORCH and _default_decay(cls, kwargs)))
    import difflib

    close = difflib.get_close_matches(name, known_names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownOptimizerError(
        f"unknown optimizer {text!r}.{hint} Valid: {', '.join(known_names())}, program:NAME, or a program file."
    )
