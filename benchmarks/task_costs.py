"""What the proxy tasks cost on this machine, and what vmap over seeds buys.

    python benchmarks/task_costs.py [--tasks all] [--repeats 3] [--threads 1]

Per task, side by side in one run (median of `repeats`, runs alternated):
  - one AdamW run of one seed;
  - three seeds trained together (torch.func.vmap) vs one after another,
    and the speed-up;
and the cost of evaluating one candidate program (tuning with the search's
budget, scoring against the cached AdamW baseline) on the cheap tier (tier 0)
and on the full suite, with 3 seeds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from primitives.known import LION
from proxy_tasks.optimizers import OptimizerSpec, parse_optimizer
from proxy_tasks.registry import select_tasks
from proxy_tasks.runner import train
from proxy_tasks.scoring import BaselineCache, tune_and_score

SEEDS = (0, 1, 2)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adamw = parse_optimizer("AdamW")
    tasks = select_tasks(args.tasks)

    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}\n")
    print("| task | 1 seed (s) | 3 seeds, loop (s) | 3 seeds, vmap (s) | vmap speed-up |")
    print("|---|---:|---:|---:|---:|")
    for task in tasks:
        train(task, adamw, 1e-3, (0,))  # warm caches (datasets, first-call overheads)
        one, loop, vmap = [], [], []
        for _ in range(args.repeats):
            one.append(timed(lambda: train(task, adamw, 1e-3, (0,), batched=False)))
            loop.append(timed(lambda: train(task, adamw, 1e-3, SEEDS, batched=False)))
            vmap.append(timed(lambda: train(task, adamw, 1e-3, SEEDS, batched=True)))
        one_s, loop_s, vmap_s = map(statistics.median, (one, loop, vmap))
        print(f"| {task.name} | {one_s:.2f} | {loop_s:.2f} | {vmap_s:.2f} | {loop_s / vmap_s:.2f}x |")

    print("\nCost of evaluating one candidate (program:lion), tuning included, 3 seeds:\n")
    print("| task | tier | seconds |\n|---|---:|---:|")
    candidate = OptimizerSpec.for_program(LION)
    with tempfile.TemporaryDirectory() as tmp:
        cache = BaselineCache(Path(tmp) / "baselines.json")
        totals = {"cheap tier (tier 0)": 0.0, "full suite": 0.0}
        for task in tasks:
            cache.baseline(task, SEEDS)  # baselines are computed once, outside the candidate's cost
            seconds = timed(lambda: tune_and_score(task, candidate, SEEDS, cache))
            print(f"| {task.name} | {task.tier} | {seconds:.1f} |")
            if not task.held_out:
                totals["full suite"] += seconds
                if task.tier == 0:
                    totals["cheap tier (tier 0)"] += seconds
    for name, seconds in totals.items():
        print(f"| **{name}** | | {seconds:.1f} |")


if __name__ == "__main__":
    main()
