"""What a candidate costs now, side by side with another checkout of optsearch (the code before a change).

    python benchmarks/candidate_cost.py --before /tmp/optsearch-before [--repeats 3] [--search-evals 24]
        [--tasks quadratic,matrix_regression,logistic] [--json benchmarks/results/candidate_cost.json]

`--before` is a checkout of an earlier commit (`git worktree add /tmp/optsearch-before 9b56560`).
Each measurement runs in a fresh subprocess (one torch thread), alternating
this tree and the other, `--repeats` times, and reports medians and ratios:

  - one candidate (Lion as a program) tuned and scored on each task of
    `--tasks` (by name, so both trees train the same tasks), 3 seeds, AdamW
    baselines cached beforehand, by each tree's own protocol: as a warm start
    (no known rate) and, where the tree has the protocol, as a child that
    inherits the rate offset the warm start chose (the rate protocol brackets
    it). The training runs each tuning costs are counted by wrapping the
    tuner's train_grid: every (rate, seed) instance trained is one run;
  - a quickstart-shaped search with 2 workers (tracking off, baselines cached):
    candidates per second from its first recorded candidate to its last.

Candidates per CPU-hour of a lion-space child: 3600 / (its seconds on the
tasks). The figures go to `--json` too.
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
import inspect, json, sys, time, torch
torch.set_num_threads(1)
from primitives.known import LION
from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.registry import select_tasks
from proxy_tasks import scoring, tuning
runs = [0]
_train_grid = tuning.train_grid
def counting(task, spec, lrs, seeds, *args, **kwargs):
    runs[0] += len(set(float(lr) for lr in lrs)) * len(seeds)
    return _train_grid(task, spec, lrs, seeds, *args, **kwargs)
tuning.train_grid = counting
cache = scoring.BaselineCache(sys.argv[1])
score = getattr(scoring, "tune_and_score", None) or scoring.evaluate
inherits = "offset" in inspect.signature(score).parameters
seeds, out = (0, 1, 2), {}
def timed(task, **kwargs):
    runs[0] = 0
    start = time.perf_counter()
    result = score(task, OptimizerSpec.for_program(LION), seeds, cache, **kwargs)
    return time.perf_counter() - start, runs[0], result
for task in select_tasks(sys.argv[2]):
    cache.baseline(task, seeds)
    seconds, count, warm = timed(task)
    row = {"tier": task.tier, "warm_seconds": seconds, "warm_runs": count, "warm_score": warm.score}
    if inherits and warm.offset is not None:
        seconds, count, child = timed(task, offset=warm.offset)
        row.update(child_seconds=seconds, child_runs=count, child_score=child.score,
                   same_offset=abs(child.offset - warm.offset) <= 1)
    out[task.name] = row
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
    parser.add_argument("--tasks", default="quadratic,matrix_regression,logistic",
                        help="task names (the old cheap tier by default: both trees have it)")
    parser.add_argument("--search-evals", type=int, default=24, help="0: no search measurement")
    parser.add_argument("--json", default="benchmarks/results/candidate_cost.json")
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
                if args.search_evals:
                    run_dir = f"{scratch}/{name}-search-{repeat}"
                    result = in_tree(tree, SEARCH, caches[name], str(args.search_evals), run_dir)
                    searches[name].append(result["evaluated"] / max(result["seconds"], 1e-9))
    report = summarise(costs, searches, args)
    _print(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))


def _median(runs: list[dict], task: str, key: str) -> float:
    values = [run[task][key] for run in runs if key in run.get(task, {})]
    return statistics.median(values) if values else float("nan")


def summarise(costs: dict, searches: dict, args) -> dict:
    tasks = list(costs["now"][0])
    per_task = {}
    for task in tasks:
        row = {key: _median(costs[name], task, key) for name in ("before",)
               for key in ("warm_seconds", "warm_runs", "warm_score")}
        per_task[task] = {"before": row, "now": {key: _median(costs["now"], task, key) for key in
                                                 ("warm_seconds", "warm_runs", "warm_score", "child_seconds",
                                                  "child_runs", "child_score")}}
    before_s = sum(per_task[t]["before"]["warm_seconds"] for t in tasks)
    child_s = sum(per_task[t]["now"]["child_seconds"] for t in tasks)
    warm_s = sum(per_task[t]["now"]["warm_seconds"] for t in tasks)
    report = {
        "command": " ".join(sys.argv), "repeats": args.repeats, "tasks": per_task,
        "before": 3600 / before_s, "after": 3600 / child_s, "after_warm_start": 3600 / warm_s,
        "ratio": before_s / child_s,
        "runs_per_task": {"before": statistics.fmean(per_task[t]["before"]["warm_runs"] for t in tasks),
                          "child": statistics.fmean(per_task[t]["now"]["child_runs"] for t in tasks),
                          "warm_start": statistics.fmean(per_task[t]["now"]["warm_runs"] for t in tasks)},
        "score_change_child_vs_before": {t: per_task[t]["now"]["child_score"] - per_task[t]["before"]["warm_score"]
                                         for t in tasks},
    }
    if searches["before"] and searches["now"]:
        before, now = statistics.median(searches["before"]), statistics.median(searches["now"])
        report["search"] = {"evals": args.search_evals, "before": before, "now": now, "ratio": now / before}
    return report


def _print(report: dict) -> None:
    print(f"median of {report['repeats']}, alternating trees\n")
    print("| task | before: s (runs) | now, warm start: s (runs) | now, child: s (runs) | child speed-up |"
          " score before / child |")
    print("|---|---:|---:|---:|---:|---:|")
    for task, row in report["tasks"].items():
        b, n = row["before"], row["now"]
        print(f"| {task} | {b['warm_seconds']:.2f} ({b['warm_runs']:.0f}) | {n['warm_seconds']:.2f} "
              f"({n['warm_runs']:.0f}) | {n['child_seconds']:.2f} ({n['child_runs']:.0f}) | "
              f"{b['warm_seconds'] / n['child_seconds']:.2f}x | {b['warm_score']:+.2f} / {n['child_score']:+.2f} |")
    print(f"\ncandidates per CPU-hour on these tasks: before {report['before']:.0f}, now a child "
          f"{report['after']:.0f} ({report['ratio']:.2f}x), a warm start {report['after_warm_start']:.0f}")
    runs = report["runs_per_task"]
    print(f"runs per task: before {runs['before']:.1f}, child {runs['child']:.1f}, warm start {runs['warm_start']:.1f}")
    if "search" in report:
        s = report["search"]
        print(f"quickstart-shaped search, 2 workers, {s['evals']} candidates: "
              f"{s['before']:.3f} -> {s['now']:.3f} candidates/s ({s['ratio']:.2f}x)")


if __name__ == "__main__":
    main()
