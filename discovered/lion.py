"""Lion: EvoLved Sign Momentum (Chen et al. 2023, arXiv 2302.06675).

Found by program search, like everything optsearch looks for. Per step:

    c     = beta1 m + (1 - beta1) g        interpolation with the *old* momentum
    theta = theta - lr (sign(c) + wd theta)  decoupled decay on the old weights
    m     = beta2 m + (1 - beta2) g        then the momentum update

One state buffer (AdamW keeps two), every coordinate moves by exactly lr, so
the learning rate is usually 3-10x smaller than AdamW's and the weight decay
3-10x larger (the product lr * wd is what decays the weights).

The interpolations are torch.lerp (as in lion-pytorch's foreach variant): one
pass over memory each, about twice as fast on CPU as the eager update's
mul/add chain, which it matches to float32 round-off.
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
            params = params_with_grad(group, "Lion")
            grads = [p.grad for p in params]
            exp_avgs = [self._exp_avg(p) for p in params]
            # One kernel per tensor and op on CPU (foreach only loops there);
            # foreach kernels on GPUs, where launches dominate. Same ops either way.
            if params and params[0].is_cuda:
                _lion_foreach(params, grads, exp_avgs, lr, beta1, beta2, weight_decay)
            else:
                for p, grad, exp_avg in zip(params, grads, exp_avgs):
                    if weight_decay != 0:
                        p.mul_(1 - lr * weight_decay)
                    p.add_(torch.lerp(exp_avg, grad, 1 - beta1).sign_(), alpha=-lr)
                    exp_avg.lerp_(grad, 1 - beta2)
        return loss

    def _exp_avg(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
        return state["exp_avg"]


def _lion_foreach(params, grads, exp_avgs, lr, beta1, beta2, weight_decay) -> None:
    # foreach kernels need one device and dtype per call.
    buckets: dict[tuple, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
    for p, grad, exp_avg in zip(params, grads, exp_avgs):
        for bucket, t in zip(buckets[(p.device, p.dtype)], (p, grad, exp_avg)):
            bucket.append(t)
    for ps, gs, ms in buckets.values():
        if weight_decay != 0:
            torch._foreach_mul_(ps, 1 - lr * weight_decay)
        update = torch._foreach_lerp(ms, gs, 1 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_add_(ps, update, alpha=-lr)
        torch._foreach_lerp_(ms, gs, 1 - beta2)
