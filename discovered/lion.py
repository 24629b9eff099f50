"""Lion: EvoLved Sign Momentum (Chen et al. 2023, arXiv 2302.06675).

Found by program search, like everything optsearch looks for. Per step:

    c     = beta1 m + (1 - beta1) g        interpolation with the *old* momentum
    theta = theta - lr (sign(c) + wd theta)  decoupled decay on the old weights
    m     = beta2 m + (1 - beta2) g        then the momentum update

One state buffer (AdamW keeps two), every coordinate moves by exactly lr, so
the learning rate is usually 3-10x smaller than AdamW's and the weight decay
3-10x larger (the product lr * wd is what decays the weights).

Operations in the order of google/automl's lion_pytorch.py and lucidrains'
lion-pytorch eager update, run with torch's foreach kernels over each group.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from discovered._contract import (
    CheckedOptimizer,
    call_closure,
    check_betas,
    check_lr,
    check_nonnegative,
    params_with_grad,
)


class Lion(CheckedOptimizer):
    """Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0).

    Args:
        params: parameters or param groups.
        lr: learning rate (every coordinate moves by lr per step).
        betas: (beta1, beta2): beta1 mixes the gradient into the sign's input,
            beta2 is the momentum's EMA coefficient.
        weight_decay: decoupled decay coefficient (theta *= 1 - lr * wd).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_betas(group["betas"])
        check_nonnegative("weight_decay", group["weight_decay"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = call_closure(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
            # foreach kernels need one device and dtype per call.
            buckets: dict[tuple, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
            for p in params_with_grad(group, "Lion"):
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                params, grads, exp_avgs = buckets[(p.device, p.dtype)]
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
            for params, grads, exp_avgs in buckets.values():
                if weight_decay != 0:
                    torch._foreach_mul_(params, 1 - lr * weight_decay)
                update = torch._foreach_mul(exp_avgs, beta1)
                torch._foreach_add_(update, grads, alpha=1 - beta1)
                torch._foreach_sign_(update)
                torch._foreach_add_(params, update, alpha=-lr)
                torch._foreach_mul_(exp_avgs, beta2)
                torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)
        return loss
