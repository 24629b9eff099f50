"""Can the suite tell optimizers apart? Signal-to-noise of every task.

    python benchmarks/suite_snr.py [--tasks tier1] [--seeds 3] [--out bench_out/snr]
                                   [--json benchmarks/results/suite_snr.json]

Tunes AdamW, SGD, SGD with momentum, Lion, Muon, PolarGrad and SOAP on each task
(the same protocol as the search, see proxy_tasks/tuning.py) and reports,
per task and for both measured quantities (final training loss: optimisation
speed; final held-out loss: generalisation):

    signal  the standard deviation across optimizers of their task scores
            (median over seeds of clip(log(L_AdamW / L), -3, 3))
    noise   the pooled standard deviation over seeds of the per-seed scores
            (AdamW itself excluded: its per-seed score is 0 by construction)
    SNR     signal / noise

and which optimizer wins each task. For the selection suite it also reports
what the search's scores need (benchmarks/results/suite_snr.json, rewritten
after every task, so a stopped run leaves what it measured):

    spread     the signal in raw log-ratio units: the task's `score_scale`
    saturated  the references whose raw score sits at the clip (+-3)
    share      each task's share of the variance, across the references, of
               the suite mean of standardised scores (score / spread):
               cov(s_task, mean) / (T var(mean)); the shares add up to 1,
               and no task should carry more than about a third.

Also prints the `optsearch bench` table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from primitives.files import atomic_write_text
from proxy_tasks.registry import get_task, select_tasks
from proxy_tasks.scoring import BASELINE, seed_score
from proxy_tasks import bench

OPTIMIZERS = ["AdamW", "SGD", "SGDM", "Lion", "program:signum", "Adafactor", "Muon", "PolarGrad", "SOAP"]


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


def shares(report: dict) -> dict[str, float]:
    """Each task's share of the variance of the suite mean of standardised scores across optimizers."""
    tasks = [t for t, r in report.items() if r["signal"] > 0]
    if not tasks:
        return {}
    names = sorted(set.intersection(*(set(report[t]["scores"]) for t in tasks)))
    standard = {t: [report[t]["scores"][n] / report[t]["signal"] for n in names] for t in tasks}
    mean = [statistics.fmean(standard[t][i] for t in tasks) for i in range(len(names))]
    variance = statistics.pvariance(mean)
    if variance == 0:
        return {t: math.nan for t in tasks}

    def covariance(xs, ys):
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        return statistics.fmean((x - mx) * (y - my) for x, y in zip(xs, ys))

    return {t: covariance(standard[t], mean) / (len(tasks) * variance) for t in tasks}


def summary(rows, command: list[str]) -> dict:
    """What benchmarks/results/suite_snr.json holds: per task, the metric the task scores."""
    by_metric = {metric: snr(rows, metric) for metric in ("train", "eval")}
    used = {task: by_metric[get_task(task).metric][task] for task in by_metric["train"]}
    share = shares(used)
    return {"command": " ".join(command), "tasks": {
        task: {"metric": get_task(task).metric, "snr": r["snr"], "spread": r["signal"], "noise": r["noise"],
               "score_scale": get_task(task).score_scale, "share": share.get(task),
               "saturated": sorted(n for n, v in r["scores"].items() if abs(v) >= 3.0), "scores": r["scores"],
               "best": r["best"]}
        for task, r in used.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="tier1")
    parser.add_argument("--json", default="benchmarks/results/suite_snr.json")
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
        _write_json(Path(args.json), summary(rows, sys.argv))
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
    result = summary(rows, sys.argv)
    print("\n| task | metric | SNR | spread (score_scale now) | share of the suite's variance | saturated |")
    print("|---|---|---:|---:|---:|---|")
    for task, r in result["tasks"].items():
        share = "-" if r["share"] is None else f"{r['share']:.2f}"
        print(f"| {task} | {r['metric']} | {r['snr']:.1f} | {r['spread']:.3f} ({r['score_scale']}) | {share} | "
              f"{', '.join(r['saturated']) or 'none'} |")
    print(f"\ntotal {time.perf_counter() - start:.0f}s")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "snr.json").write_text(json.dumps(reports, indent=1, default=str))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=str), durable=False)


if __name__ == "__main__":
    main()
