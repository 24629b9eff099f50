"""Can the suite tell optimizers apart? Signal-to-noise of every task.

    python benchmarks/suite_snr.py [--tasks all] [--seeds 3] [--out bench_out/snr]

Tunes AdamW, SGD, SGD with momentum, Lion, Muon, PolarGrad and SOAP on each task
(the same protocol as the search, see proxy_tasks/tuning.py) and reports,
per task and for both measured quantities (final training loss: optimisation
speed; final held-out loss: generalisation):

    signal  the standard deviation across optimizers of their task scores
            (median over seeds of clip(log(L_AdamW / L), -3, 3))
    noise   the pooled standard deviation over seeds of the per-seed scores
            (AdamW itself excluded: its per-seed score is 0 by construction)
    SNR     signal / noise

and which optimizer wins each task. Also prints the `optsearch bench` table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from proxy_tasks.registry import get_task, select_tasks
from proxy_tasks.scoring import BASELINE, seed_score
from proxy_tasks import bench

OPTIMIZERS = ["AdamW", "SGD", "SGDM", "Lion", "Muon", "PolarGrad", "SOAP"]


def snr(rows, metric: str) -> dict:
    by_task: dict[str, list] = {}
    for r in rows:
        by_task.setdefault(r.task, []).append(r)
    report = {}
    for task, task_rows in by_task.items():
        base = next(r for r in task_rows if r.optimizer == BASELINE)
        base_losses = base.seed_train if metric == "train" else base.seed_eval
        scores, variances = {}, []
        for r in task_rows:
            losses = r.seed_train if metric == "train" else r.seed_eval
            per_seed = [seed_score(b, c) for b, c in zip(base_losses, losses)]
            scores[r.optimizer] = statistics.median(per_seed)
            if r.optimizer != BASELINE:
                variances.append(statistics.pvariance(per_seed))
        signal = statistics.pstdev(scores.values())
        noise = math.sqrt(statistics.fmean(variances)) if variances else 0.0
        report[task] = {"signal": signal, "noise": noise, "snr": signal / noise if noise > 0 else math.inf,
                        "scores": scores, "best": max(scores, key=scores.get)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_out/snr")
    parser.add_argument("--baseline-cache", default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    cache = Path(args.baseline_cache) if args.baseline_cache else None
    rows = []
    for task in select_tasks(args.tasks):  # one task at a time, its SNR printed as soon as it is known
        task_start = time.perf_counter()
        task_rows = bench.bench(OPTIMIZERS, task.name, args.seeds, args.device, cache)
        rows += task_rows
        train, evaluation = (snr(task_rows, metric)[task.name] for metric in ("train", "eval"))
        scores = ", ".join(f"{r.optimizer} {r.score:+.2f}±{r.spread:.2f}" for r in task_rows)
        print(f"{task.name}: SNR {train['snr']:.1f} (train loss), {evaluation['snr']:.1f} (eval loss), "
              f"{time.perf_counter() - task_start:.0f}s; scores {scores}", flush=True)
    print()
    print(bench.format_table(rows))
    bench.write_outputs(rows, Path(args.out))
    reports = {metric: snr(rows, metric) for metric in ("train", "eval")}
    print("\n| task | metric used | SNR (train loss) | SNR (eval loss) | best (train) | best (eval) |")
    print("|---|---|---:|---:|---|---|")
    for task, train in reports["train"].items():
        evaluation = reports["eval"][task]
        print(f"| {task} | {get_task(task).metric} | {train['snr']:.1f} | {evaluation['snr']:.1f} | "
              f"{train['best']} | {evaluation['best']} |")
    print(f"\ntotal {time.perf_counter() - start:.0f}s")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "snr.json").write_text(json.dumps(reports, indent=1, default=str))


if __name__ == "__main__":
    main()
