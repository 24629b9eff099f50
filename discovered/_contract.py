"""The torch.optim contract every optimizer in discovered/ keeps.

- hyperparameters are checked in every param group (also ones added later)
  and bad values raise ValueError with torch-style messages;
- step(closure) re-enables grad for the closure and returns its loss;
- parameters whose grad is None are skipped (no state is created for them);
- sparse and complex gradients are refused with a clear error;
- p.grad is never written into.

MatrixOptimizer adds what Muon users expect: a matrix update rule for
parameters with two or more dimensions and a built-in AdamW for the rest,
chosen per param group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

# ---------------------------------------------------------------------------
# Hyperparameter checks (messages follow torch.optim's wording)


def check_lr(lr: float) -> None:
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        lr = lr.item()
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"Invalid learning rate: {lr}")


def check_beta(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"Invalid {name} value: {value} (expected 0 <= {name} < 1)")


def check_betas(betas: tuple[float, float], name: str = "beta") -> None:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas} (expected a pair of floats)")
    for index, value in enumerate(betas):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ValueError(f"Invalid {name} parameter at index {index}: {value}")


def check_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
        raise ValueError(f"Invalid {name} value: {value}")


def check_positive_int(name: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"Invalid {name} value: {value} (expected a positive integer)")


# Precisions the Newton-Schulz iterations may run in (names, so that param
# groups stay plain data in a state_dict).
NS_DTYPES = ("bfloat16", "float32", "float64")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {', '.join(map(repr, choices))})")


# ---------------------------------------------------------------------------
# Step helpers


def call_closure(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """Run the closure with grad enabled (step() itself runs under no_grad)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grad(group: dict, optimizer_name: str) -> list[Tensor]:
    """Parameters of `group` that have a gradient; refuse what we cannot handle."""
    params = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{optimizer_name} does not support sparse gradients")
        if torch.is_complex(p):
            raise RuntimeError(f"{optimizer_name} does not support complex parameters")
        params.append(p)
    return params


def matrix_view(t: Tensor, batch_dims: int = 0) -> Tensor:
    """The view matrix primitives act on.

    The leading `batch_dims` dimensions index independent copies (stacked seeds)
    and are kept. Of the rest, two or more dimensions become (first, product of
    the others): a conv weight (out, in, kh, kw) is the (out, in*kh*kw) matrix,
    and Muon's shape factor is computed from that matrix. One dimension stays a
    vector; a scalar becomes a vector of length 1.
    """
    batch, core = t.shape[:batch_dims], t.shape[batch_dims:]
    if len(core) >= 2:
        return t.reshape(*batch, core[0], -1)
    if len(core) == 0:
        return t.reshape(*batch, 1)
    return t


# ---------------------------------------------------------------------------
# Built-in AdamW for the parameters a matrix rule does not take

ROUTES = ("auto", "rule", "adamw")
ROUTING_DEFAULTS = {
    "route": "auto",
    "batch_dims": 0,
    "adamw_lr": 3e-4,
    "adamw_betas": (0.9, 0.95),
    "adamw_eps": 1e-10,
    "adamw_weight_decay": 0.0,
}


def routing_keywords(owner: str, routing: dict, own: tuple[str, ...] = ()) -> dict:
    """The routing keywords a constructor's **routing caught; an unknown one is a TypeError, as in torch.optim.

    A misspelt or foreign keyword (weight_decay to a rule without decay) would otherwise sit unused
    in every param group and change nothing, silently. `own`: group keys the subclass itself passes.
    """
    for key in routing:
        if key not in ROUTING_DEFAULTS and key not in own:
            raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {key!r}")
    return routing


def adamw_update(p: Tensor, state: dict, lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One AdamW step (KellerJordan/Muon's auxiliary Adam, decoupled decay first)."""
    grad = p.grad
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    state["step"] += 1
    beta1, beta2 = betas
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** state["step"])
    v_hat = exp_avg_sq / (1 - beta2 ** state["step"])
    p.mul_(1 - lr * weight_decay)
    p.add_(m_hat / (v_hat.sqrt() + eps), alpha=-lr)


class CheckedOptimizer(Optimizer):
    """An Optimizer whose every param group is checked when it is added.

    A group with a bad value raises ValueError and is not added, so the
    optimizer is left as it was (torch.optim checks only the defaults).
    """

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict) -> None:
        raise NotImplementedError


class MatrixOptimizer(CheckedOptimizer):
    """Base class: a matrix rule for matrix parameters, AdamW for the rest.

    Per param group:
      route   "auto" (default): parameters with >= 2 dimensions (after
              batch_dims) get the optimizer's rule, the others (biases,
              gains) the built-in AdamW with adamw_lr and adamw_weight_decay;
              "rule": every parameter gets the optimizer's rule (a vector is
              treated as diag(x), so its polar factor is sign(x));
              "adamw": every parameter gets AdamW with this group's lr and
              weight_decay (put embeddings and heads in such a group; LR
              schedulers then drive it, which they cannot do for adamw_lr).
      batch_dims  leading dimensions that index independent copies of a
              parameter (seeds trained side by side); each copy is updated
              as if it were alone.
      adamw_betas, adamw_eps  the AdamW's coefficients.
    Subclasses implement _rule_step(group, params) and _check_rule(group).
    """

    def __init__(self, params, defaults: dict) -> None:
        super().__init__(params, {**ROUTING_DEFAULTS, **defaults})

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_nonnegative("weight_decay", group.get("weight_decay", 0.0))
        check_choice("route", group["route"], ROUTES)
        if not (isinstance(group["batch_dims"], int) and group["batch_dims"] >= 0):
            raise ValueError(f"Invalid batch_dims value: {group['batch_dims']}")
        check_lr(group["adamw_lr"])
        check_betas(group["adamw_betas"], "adamw_beta")
        check_nonnegative("adamw_eps", group["adamw_eps"])
        check_nonnegative("adamw_weight_decay", group["adamw_weight_decay"])
        self._check_rule(group)

    def _check_rule(self, group: dict) -> None:
        """Check the matrix rule's own hyperparameters."""
        raise NotImplementedError

    def _rule_step(self, group: dict, params: list[Tensor]) -> None:
        """Apply the optimizer's own rule to `params` (all with a gradient)."""
        raise NotImplementedError

    def _auto_takes(self, p: Tensor, group: dict) -> bool:
        """Whether route "auto" gives p to the rule (default: matrices only)."""
        return p.ndim - group["batch_dims"] >= 2

    def uses_rule(self, p: Tensor, group: dict) -> bool:
        """Whether `p` is updated by the optimizer's rule (else by the built-in AdamW)."""
        if group["route"] == "auto":
            return self._auto_takes(p, group)
        return group["route"] == "rule"

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = call_closure(closure)
        for group in self.param_groups:
            rule_params, adamw_params = [], []
            for p in params_with_grad(group, type(self).__name__):
                (rule_params if self.uses_rule(p, group) else adamw_params).append(p)
            if rule_params:
                self._rule_step(group, rule_params)
            if adamw_params:
                own_group = group["route"] == "adamw"
                lr = group["lr"] if own_group else group["adamw_lr"]
                weight_decay = group.get("weight_decay", 0.0) if own_group else group["adamw_weight_decay"]
                for p in adamw_params:
                    adamw_update(p, self.state[p], lr, group["adamw_betas"], group["adamw_eps"], weight_decay)
        return loss
