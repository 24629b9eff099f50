"""PolarGrad (Lau, Long & Su 2025, arXiv 2505.21799; timlautk/polargrad).

Steepest descent in the spectral norm with the dual-norm step length: the
direction is the polar factor U of the (momentum) gradient, and the step is
scaled by its nuclear norm nu = <M, U> = tr(S). Unlike Muon it is not
scale-invariant: the step grows with the gradient, so it converges on
strongly convex problems where a fixed-length orthogonal step stalls.

Momentum-first (polar_first=False, the default):
    M = beta M + (1 - beta) G;  U = polar(M);  nu = <M, U>
    W = (1 - lr wd) W - lr nu U
Polar-first (polar_first=True):
    U = polar(G);  nu = <G, U>;  M = beta M + (1 - beta) U
    W = (1 - lr wd) W - lr nu M
momentum=0 is PolarGrad / PolarSGD: W -= lr ||G||_* polar(G).

method picks the polar oracle: "qdwh" (default; inner_steps QDWH iterations
in the parameter's dtype, upcast from bf16; PolarGrad's default of 2 is a
truncated, inexact factor and is reproduced step for step), "ns" (PolarGrad's
Newton-Schulz coefficients, c = 2.031, in bfloat16), "polar_express"
(bfloat16) or "svd" (exact). As in PolarGrad, nu is computed in U's dtype.
Conv weights are flattened to (out, in*kh*kw); other parameters are routed
as in Muon (discovered._contract.MatrixOptimizer).
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
from primitives.polar import POLARGRAD_NS_COEFFICIENTS, newton_schulz, polar_express, polar_svd, polar_vector
from primitives.qdwh import qdwh

METHODS = ("qdwh", "ns", "polar_express", "svd")


def polar_factor(x: torch.Tensor, method: str, inner_steps: int, ns_dtype: str = "bfloat16") -> torch.Tensor:
    """PolarGrad's polar oracles on matrices (..., m, n)."""
    if method == "qdwh":
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return qdwh(work, inner_steps)
    if method == "ns":
        return newton_schulz(x, POLARGRAD_NS_COEFFICIENTS, inner_steps, compute_dtype=getattr(torch, ns_dtype))
    if method == "polar_express":
        return polar_express(x, inner_steps, compute_dtype=getattr(torch, ns_dtype))
    return polar_svd(x)


class PolarGrad(MatrixOptimizer):
    """PolarGrad(params, lr=0.02, momentum=0.95, polar_first=False, method="qdwh", inner_steps=2, weight_decay=0.0, ns_dtype="bfloat16").

    Args:
        lr: learning rate; the step is lr * nuclear norm, so it depends on the
            scale of the gradients (PolarGrad's experiments use 1e-8 to 1e2).
        momentum: EMA coefficient of the momentum (0: PolarGrad / PolarSGD).
        polar_first: momentum of polar factors instead of polar of momentum.
        method: "qdwh", "ns", "polar_express" or "svd".
        inner_steps: iterations of the polar oracle (ignored by "svd").
        ns_dtype: precision of "ns" and "polar_express" ("bfloat16" as in
            PolarGrad; "float32" on CPUs, see Muon).
        weight_decay: decoupled decay (W *= 1 - lr * wd).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay, route,
        batch_dims: see discovered._contract.MatrixOptimizer.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        polar_first: bool = False,
        method: str = "qdwh",
        inner_steps: int = 2,
        weight_decay: float = 0.0,
        ns_dtype: str = "bfloat16",
        **routing,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "polar_first": polar_first,
            "method": method,
            "inner_steps": inner_steps,
            "weight_decay": weight_decay,
            "ns_dtype": ns_dtype,
        }
        super().__init__(params, {**defaults, **routing_keywords(type(self).__name__, routing)})

    def _check_rule(self, group: dict) -> None:
        check_beta("momentum", group["momentum"])
        check_choice("method", group["method"], METHODS)
        check_positive_int("inner_steps", group["inner_steps"])
        check_choice("ns_dtype", group["ns_dtype"], NS_DTYPES)
        if not isinstance(group["polar_first"], bool):
            raise ValueError(f"Invalid polar_first value: {group['polar_first']!r} (expected a bool)")

    def _rule_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        batch_dims = group["batch_dims"]

        def oracle(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(U, nu) with nu = <t, U> over each matrix (or vector) in t's view."""
            view = matrix_view(t, batch_dims)
            if view.ndim - batch_dims == 2:
                u = polar_factor(view, group["method"], group["inner_steps"], group["ns_dtype"])
            else:
                u = polar_vector(view)
            core = tuple(range(batch_dims, view.ndim))
            nu = torch.sum(view.to(u.dtype) * u, dim=core, keepdim=True)
            return u, nu

        for p in params:
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buf = state["momentum_buffer"]
            if group["polar_first"]:
                u, nu = oracle(grad)
                buf.lerp_(u.reshape(buf.shape).to(buf.dtype), 1 - beta)
                update = nu * matrix_view(buf, batch_dims)
            else:
                buf.lerp_(grad, 1 - beta)
                u, nu = oracle(buf)
                update = nu * u
            p.mul_(1 - lr * wd)
            p.add_(update.reshape(p.shape), alpha=-lr)
