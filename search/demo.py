"""A one-minute look at the reference optimizers on a matrix problem.

Trains 1/2 ||A X B - C||_F^2 (PolarGrad's matrix regression, scaled down)
with AdamW, Lion, Muon and PolarGrad from the same start and prints the loss
every few steps. Learning rates are each optimizer's good range on this
problem (PolarGrad's step scales with the gradient's nuclear norm, hence its
small lr).
"""

from __future__ import annotations

import time

import torch

from discovered import Lion, Muon, PolarGrad

# Learning rates: the best of a half-decade grid on this problem (300 steps).
OPTIMIZERS = {
    "AdamW": lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.0),
    "Lion": lambda p: Lion(p, lr=0.01),
    "Muon": lambda p: Muon(p, lr=0.05),
    "PolarGrad": lambda p: PolarGrad(p, lr=3e-5, momentum=0.0),
}


def matrix_regression(seed: int = 0, m: int = 60, k: int = 40, r: int = 20, n: int = 30):
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(m, k, generator=g), torch.randn(r, n, generator=g)
    C = torch.randn(m, n, generator=g)
    X0 = torch.rand(k, r, generator=g) * 2 - 1
    return A, B, C, X0


def run(steps: int = 300, report_every: int = 50) -> dict[str, list[float]]:
    torch.set_num_threads(1)
    A, B, C, X0 = matrix_regression()
    curves = {}
    print(f"matrix regression 1/2||AXB - C||^2, X {tuple(X0.shape)}, {steps} steps")
    print(f"{'step':>6}" + "".join(f"{name:>12}" for name in OPTIMIZERS))
    for name, make in OPTIMIZERS.items():
        X = torch.nn.Parameter(X0.clone())
        optimizer = make([X])
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = 0.5 * torch.sum((A @ X @ B - C) ** 2)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves[name] = losses
    for step in list(range(0, steps, report_every)) + [steps - 1]:
        print(f"{step:>6}" + "".join(f"{curves[name][step]:>12.4g}" for name in OPTIMIZERS))
    # The least-squares optimum X* = A^+ C B^+ for reference.
    X_star = torch.linalg.pinv(A) @ C @ torch.linalg.pinv(B)
    print(f"optimum {0.5 * torch.sum((A @ X_star @ B - C) ** 2).item():.4g}")
    return curves


def main() -> int:
    start = time.perf_counter()
    run()
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0
