"""Muon: MomentUm Orthogonalized by Newton-schulz (Keller Jordan et al. 2024).

For each matrix parameter W (m x n; a conv weight is its (out, in*kh*kw) view):

    M = beta M + (1 - beta) G                 EMA momentum
    X = (1 - beta) G + beta M                 Nesterov look-ahead (nesterov=True)
    O = NS5(X)                                ~ polar factor U V^T, in bfloat16
    W = (1 - lr wd) W - lr sqrt(max(1, m/n)) O

NS5 is five steps of Muon's quintic (primitives.polar.newton_schulz) on
X / (||X||_F + 1e-7): singular values land in about [0.5, 1.2] rather than
exactly 1, which trains as well and costs a few matmuls. The factor
sqrt(max(1, m/n)) makes the update's RMS depend on the fan-in only, so the
learning rate is "in units of spectral norm per step" (KellerJordan/Muon).

The same operations as KellerJordan/Muon's SingleDeviceMuon (@857d1ad), with
three documented differences: p.grad is never written into (KJ writes the
Nesterov mix into it); parameters without a gradient are skipped (KJ
zero-fills them to keep distributed ranks in step); and the shape factor of a
conv weight comes from the flattened matrix (KJ #60), not the kernel dims.
Biases, gains and whatever the user routes there get a built-in AdamW.
"""

from __future__ import annotations

import torch

from discovered._contract import (
    NS_DTYPES,
    MatrixOptimizer,
    check_beta,
    check_choice,
    check_positive_int,
    matrix_view,
    routing_keywords,
)
from primitives.normalisers import aspect_factor
from primitives.polar import MUON_COEFFICIENTS, newton_schulz, polar_vector


class Muon(MatrixOptimizer):
    """Muon(params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0, ns_dtype="bfloat16").

    Args:
        lr: learning rate of the matrix update (spectral-norm units).
        momentum: EMA coefficient beta of the momentum buffer.
        nesterov: orthogonalise the Nesterov look-ahead instead of M.
        ns_steps: Newton-Schulz iterations.
        ns_dtype: precision of the iterations: "bfloat16" (Muon's choice,
            fast on GPUs) or "float32" (on CPUs without bf16 matmul units,
            where bf16 is tens of times slower; it only removes round-off).
        weight_decay: decoupled decay (W *= 1 - lr * wd).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay, route,
        batch_dims: see discovered._contract.MatrixOptimizer.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        ns_dtype: str = "bfloat16",
        **routing,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
            "ns_dtype": ns_dtype,
        }
        super().__init__(params, {**defaults, **routing_keywords(type(self).__name__, routing)})

    def _check_rule(self, group: dict) -> None:
        check_beta("momentum", group["momentum"])
        check_positive_int("ns_steps", group["ns_steps"])
        check_choice("ns_dtype", group["ns_dtype"], NS_DTYPES)
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"Invalid nesterov value: {group['nesterov']!r} (expected a bool)")

    def _rule_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - beta)
            update = grad.lerp(buf, beta) if group["nesterov"] else buf
            view = matrix_view(update, group["batch_dims"])
            if view.ndim - group["batch_dims"] == 2:
                dtype = getattr(torch, group["ns_dtype"])
                direction = newton_schulz(view, MUON_COEFFICIENTS, group["ns_steps"], compute_dtype=dtype)
                # The shape factor goes into the fp32 step size rather than
                # multiplying the bf16 direction (as torch.optim.Muon does).
                scale = aspect_factor(view.shape[-2], view.shape[-1])
            else:  # route="rule" on a vector: the exact polar factor of diag(x)
                direction, scale = polar_vector(view), 1.0
            p.mul_(1 - lr * wd)
            p.add_(direction.reshape(p.shape), alpha=-lr * scale)
