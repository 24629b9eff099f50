"""What a candidate costs now, side by side with another checkout of optsearch (the code before a change).

    python benchmarks/candidate_cost.py --before /tmp/optsearch-before [--repeats 3] [--search-evals 24]

`--before` is a checkout of an earlier commit (`git worktree add /tmp/optsearch-before 519e969`).
Each measurement runs in a fresh subprocess (one torch thread), alternating
this tree and the other, `--repeats` times, and reports medians and ratios:

  - one candidate (Lion as a program) tuned and scored on each task of the
    cheap tier and of the full suite, 3 seeds, AdamW baselines cached
    beforehand (each tree's own protocol: the old one tuned up to 7 rates one
    after another; this one trains a stage's rates and seeds as one batch and
    scores fresh seeds);
  - a quickstart-shaped search with 2 workers (tracking off, baselines cached):
    candidates per second from its first recorded candidate to its last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# Runs inside a tree (its own code on sys.path); prints {task: seconds} as JSON.
CANDIDATE = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from primitives.known import LION
from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.registry import select_tasks
from proxy_tasks import scoring
cache = scoring.BaselineCache(sys.argv[1])
score = getattr(scoring, "tune_and_score", None) or scoring.evaluate
seeds, out = (0, 1, 2), {}
for task in select_tasks(sys.argv[2]):
    cache.baseline(task, seeds)
    spec = OptimizerSpec.for_program(LION)
    start = time.perf_counter()
    score(task, spec, seeds, cache)
    out[task.name] = (task.tier, time.perf_counter() - start)
print(json.dumps(out))
"""

SEARCH = r"""
import json, sys, time
from search import config as config_module, engine
config = config_module.load("quickstart", overrides=["tracking.enabled=false", f"evaluation.baseline_cache={sys.argv[1]}",
                                                     f"stop.max_evals={sys.argv[2]}", "stop.wall_time=0"])
result = engine.run(config, run_dir=sys.argv[3])
times = [json.loads(line).get("time") for line in open(f"{sys.argv[3]}/events.jsonl") if '"candidate"' in line]
times = [t for t in times if t]
print(json.dumps({"evaluated": len(times), "seconds": times[-1] - times[0]}))
"""


def in_tree(tree: Path, code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--search-evals", type=int, default=24)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "now": HERE}
    with tempfile.TemporaryDirectory() as scratch:
        caches = {name: f"{scratch}/{name}-baselines.json" for name in trees}
        for name, tree in trees.items():  # baselines (and the first-call costs) outside the measurement
            in_tree(tree, CANDIDATE, caches[name], args.tasks)
        costs: dict[str, list[dict]] = {name: [] for name in trees}
        searches: dict[str, list[float]] = {name: [] for name in trees}
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                costs[name].append(in_tree(tree, CANDIDATE, caches[name], args.tasks))
                run_dir = f"{scratch}/{name}-search-{repeat}"
                result = in_tree(tree, SEARCH, caches[name], str(args.search_evals), run_dir)
                searches[name].append(result["evaluated"] / max(result["seconds"], 1e-9))
    tasks = list(costs["now"][0])
    print(f"median of {args.repeats}, alternating trees; before = {args.before}\n")
    print("| task | tier | before (s) | now (s) | speed-up |\n|---|---:|---:|---:|---:|")
    totals = {"cheap tier": [0.0, 0.0], "full suite": [0.0, 0.0]}
    for task in tasks:
        tier = costs["now"][0][task][0]
        before = statistics.median(run[task][1] for run in costs["before"] if task in run) \
            if task in costs["before"][0] else float("nan")
        now = statistics.median(run[task][1] for run in costs["now"])
        print(f"| {task} | {tier} | {before:.1f} | {now:.1f} | {before / now:.2f}x |")
        totals["full suite"][0] += before
        totals["full suite"][1] += now
        if tier == 0:
            totals["cheap tier"][0] += before
            totals["cheap tier"][1] += now
    for name, (before, now) in totals.items():
        print(f"| **{name}** | | **{before:.1f}** | **{now:.1f}** | **{before / now:.2f}x** |")
    before, now = statistics.median(searches["before"]), statistics.median(searches["now"])
    print(f"\nquickstart-shaped search, 2 workers, {args.search_evals} candidates: "
          f"{before:.3f} -> {now:.3f} candidates/s ({now / before:.2f}x)")


if __name__ == "__main__":
    main()
