"""One registry of every optimizer in discovered/; it drives the conformance suite.

Modelled on torch's OptimizerInfo (torch/testing/_internal/common_optimizers.py):
each entry says how to build the optimizer for a small problem it should solve
and which bad hyperparameters must be refused.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from discovered.lion import Lion
from discovered.muon import Muon
from discovered.polargrad import PolarGrad
from discovered.program_optimizer import ProgramOptimizer
from discovered.soap import SOAP
from primitives import known


@dataclasses.dataclass(frozen=True)
class ErrorInput:
    """Constructor keywords that must raise `error` with a message matching `match`."""

    kwargs: dict[str, Any]
    match: str
    error: type[Exception] = ValueError


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    name: str
    cls: Callable[..., Optimizer]
    # Keywords under which a few hundred steps solve the conformance problems.
    kwargs: dict[str, Any]
    error_inputs: tuple[ErrorInput, ...] = ()
    # Routes non-matrix parameters to a built-in AdamW (route/batch_dims keys).
    matrix: bool = False
    # Keywords that turn momentum off (the routing test checks a bare step).
    no_momentum: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "reference"  # or "exported"
    # Trains a stack of seeds along a leading batch dimension exactly as the
    # seeds alone (elementwise rules, or batch_dims routing); False for rules
    # that mix entries along every dimension (SOAP's preconditioner).
    batchable: bool = True
    # Its step is exactly lr times an update independent of lr (weight decay included): runs at
    # several rates can share one batch (proxy_tasks/runner.py). SOAP decays after its step: not.
    lr_linear: bool = True

    def make(self, params, **overrides) -> Optimizer:
        return self.cls(params, **{**self.kwargs, **overrides})


_COMMON_ERRORS = (
    ErrorInput({"lr": -1.0}, "Invalid learning rate"),
    ErrorInput({"weight_decay": -0.1}, "Invalid weight_decay"),
)
_MATRIX_ERRORS = _COMMON_ERRORS + (
    ErrorInput({"momentum": 1.0}, "Invalid momentum"),
    ErrorInput({"route": "sideways"}, "Invalid route"),
    ErrorInput({"adamw_betas": (0.9, 1.5)}, "Invalid adamw_beta parameter at index 1"),
    ErrorInput({"ns_dtype": "float16"}, "Invalid ns_dtype"),
)

REGISTRY: dict[str, OptimizerInfo] = {}


def register(info: OptimizerInfo) -> OptimizerInfo:
    if info.name in REGISTRY:
        raise ValueError(f"an optimizer named {info.name!r} is already registered")
    REGISTRY[info.name] = info
    return info


register(OptimizerInfo(
    "Lion", Lion, {"lr": 3e-3, "betas": (0.9, 0.99), "weight_decay": 0.0},
    _COMMON_ERRORS + (ErrorInput({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1"),),
))
register(OptimizerInfo(
    "Muon", Muon, {"lr": 0.05, "adamw_lr": 3e-2},
    _MATRIX_ERRORS + (ErrorInput({"ns_steps": 0}, "Invalid ns_steps"),),
    matrix=True, no_momentum={"momentum": 0.0},
))
register(OptimizerInfo(
    "PolarGrad", PolarGrad, {"lr": 0.2, "adamw_lr": 3e-2},
    _MATRIX_ERRORS + (ErrorInput({"method": "zolo"}, "Invalid method"),
                      ErrorInput({"inner_steps": 0}, "Invalid inner_steps")),
    matrix=True, no_momentum={"momentum": 0.0},
))
register(OptimizerInfo(
    "SOAP", SOAP, {"lr": 1e-2},
    _COMMON_ERRORS + (
        ErrorInput({"betas": (0.95, 1.0)}, "Invalid beta parameter at index 1"),
        ErrorInput({"shampoo_beta": 1.0}, "Invalid shampoo_beta"),
        ErrorInput({"eps": -1e-8}, "Invalid eps"),
        ErrorInput({"precondition_frequency": 0}, "Invalid precondition_frequency"),
        ErrorInput({"max_precond_dim": 0}, "Invalid max_precond_dim"),
        ErrorInput({"merge_dims": "yes"}, "Invalid merge_dims"),
        ErrorInput({"data_format": "NHWC"}, "Invalid data_format"),
    ),
    batchable=False, lr_linear=False,
))

# Programs run by the interpreter keep the same contract.
_PROGRAM_ERRORS = _COMMON_ERRORS[:1] + (
    ErrorInput({"route": "sideways"}, "Invalid route"),
    ErrorInput({"constants": {"no_such_constant": 1.0}}, "Invalid constants"),
)
for _program, _kwargs, _matrix, _momentum in [
    (known.ADAMW, {"lr": 1e-2}, False, {}),
    (known.LION, {"lr": 3e-3}, False, {}),
    (known.ADAFACTOR, {"lr": 3e-2}, False, {}),
    (known.MUON, {"lr": 0.05, "adamw_lr": 3e-2}, True, {"beta": 0.0}),
    (known.SHAMPOO, {"lr": 0.3, "adamw_lr": 3e-2}, True, {"beta": 0.0}),
    (known.ONE_SIDED_SHAMPOO, {"lr": 3e-2, "adamw_lr": 3e-2}, True, {"beta1": 0.0}),
    (known.SHAMPOO_GRAFTED, {"lr": 3e-2, "adamw_lr": 3e-2}, True, {"beta1": 0.0}),
    # Like SOAP, its first step only builds the preconditioner, so the routing test's one-step move does
    # not apply: it is checked here as SOAP is, on every parameter (route "rule": vectors get SOAP's
    # 1-D Adam); its routing and batch_dims are tested in tests/test_soap_program.py.
    (known.SOAP, {"lr": 3e-2, "route": "rule"}, False, {}),
]:
    register(OptimizerInfo(
        f"Program[{_program.name}]",
        functools.partial(ProgramOptimizer, program=_program),
        _kwargs,
        _PROGRAM_ERRORS + ((ErrorInput({"constants": {next(iter(_momentum)): 2.5}}, "Invalid constants"),)
                           if _matrix else ()),
        matrix=_matrix,
        no_momentum={"constants": _momentum} if _matrix else {},
    ))

# What `optsearch export` wrote into this package (see search/export.py).
from discovered._exported import EXPORTED  # noqa: E402

for _name, (_cls, _kwargs, _matrix) in EXPORTED.items():
    register(OptimizerInfo(
        _name, _cls, {**_kwargs, **({"adamw_lr": 3e-2} if _matrix else {})},
        _COMMON_ERRORS[:1] + (ErrorInput({"route": "sideways"}, "Invalid route"),),
        matrix=_matrix, source="exported",
    ))
