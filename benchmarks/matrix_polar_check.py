"""Muon against PolarGrad on the matrix tasks: is the suite's verdict the task's, the tuning's or the code's?

    python benchmarks/matrix_polar_check.py [--tasks matrix_regression,matrix_completion] [--seeds 3]

The suite (benchmarks/suite_snr.py) ranks Muon above PolarGrad on matrix
regression, while PolarGrad's paper (Lau, Long & Su 2025) reports the
opposite. Three candidate causes, each checked here on a dense learning-rate
grid (half a decade over eight decades, then a quarter decade either side of
the best) instead of the search's 7-evaluation tuning:

  - the schedule: the suite anneals every learning rate to zero (cosine).
    Muon's step has a fixed spectral size, so at a constant rate it stalls at
    a floor set by the rate, while PolarGrad's step is scaled by the nuclear
    norm of the momentum and shrinks as the gradient does. The paper's
    comparison is at a constant rate; annealing removes Muon's floor.
  - momentum: the paper's matrix-regression runs use PolarSGD (momentum 0)
    beside momentum variants; our PolarGrad default is momentum 0.95.
  - the backend: QDWH with 2 iterations against the exact (SVD) polar factor.

Prints, per task, the best median (over seeds) training loss of each
variant at its best rate, for both schedules.
"""

from __future__ import annotations

import argparse
import statistics

from proxy_tasks.optimizers import parse_optimizer
from proxy_tasks.registry import get_task
from proxy_tasks.runner import SCHEDULES, train

VARIANTS = {
    "Muon": "Muon",
    "Muon, momentum 0": "Muon:momentum=0.0,nesterov=False",
    "PolarGrad (momentum 0.95, qdwh-2)": "PolarGrad",
    "PolarGrad, svd": "PolarGrad:method=svd",
    "PolarSGD (momentum 0)": "PolarGrad:momentum=0.0",
    "AdamW": "AdamW",
}
GRID = [10.0 ** (e / 2) for e in range(-8, 9)]  # 1e-4 .. 1e4, half a decade apart


def median_loss(task, spec, lr, seeds, schedule) -> float:
    runs = train(task, spec, lr, seeds, schedule=schedule)
    return statistics.median(r.train_loss for r in runs)


def best_on_grid(task, spec, seeds, schedule) -> tuple[float, float]:
    """(best lr, its median training loss): the half-decade grid, then a quarter decade either side."""
    tried = {lr: median_loss(task, spec, lr, seeds, schedule) for lr in GRID}
    best = min(tried, key=tried.get)
    for lr in (best * 10**-0.25, best * 10**0.25):
        tried[lr] = median_loss(task, spec, lr, seeds, schedule)
    best = min(tried, key=tried.get)
    return best, tried[best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="matrix_regression,matrix_completion")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds = tuple(range(args.seeds))
    print("| task | optimizer | " + " | ".join(f"{s}: best lr | {s}: train loss" for s in SCHEDULES) + " |")
    print("|---|---|" + "---:|---:|" * len(SCHEDULES))
    for name in args.tasks.split(","):
        task = get_task(name)
        for label, text in VARIANTS.items():
            spec = parse_optimizer(text)
            cells = []
            for schedule in SCHEDULES:
                lr, loss = best_on_grid(task, spec, seeds, schedule)
                cells += [f"{lr:.3g}", f"{loss:.3g}"]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
