"""`optsearch bench`: tune and score optimizers on the proxy-task suite.

    optsearch bench AdamW Lion Muon PolarGrad path/to/program.json --tasks all --seeds 3

For every task, AdamW is tuned once (cached on disk) and every contender gets
the same tuning budget; the table shows each one's score against AdamW, the
spread of its per-seed scores, its median final losses and its tuned lr, and
the overall score (mean over tasks). Results are written as CSV and JSON, and
a PNG of the loss curves per task.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

from proxy_tasks.figures import curve_grid
from proxy_tasks.optimizers import OptimizerSpec, parse_optimizer
from proxy_tasks.registry import select_tasks
from proxy_tasks.scoring import BASELINE, BaselineCache, TaskScore, default_cache_path, tune_and_score
from proxy_tasks.task import Task
from proxy_tasks.tuning import TuningProtocol


@dataclasses.dataclass(frozen=True)
class BenchRow:
    task: str
    optimizer: str
    score: float
    seed_scores: tuple[float, ...]
    lr: float
    train_loss: float  # median over seeds
    eval_loss: float
    seconds: float  # tuning wall time
    seed_train: tuple[float, ...]
    seed_eval: tuple[float, ...]
    curves: tuple[tuple[float, ...], ...]

    @property
    def spread(self) -> float:
        return statistics.pstdev(self.seed_scores) if len(self.seed_scores) > 1 else 0.0


class Progress:
    """One self-overwriting line on stderr (nothing when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done)
            width = 30
            bar = "#" * int(width * self.done / self.total)
            sys.stderr.write(f"\r[{bar:<{width}}] {self.done}/{self.total} {label[:40]:<40} eta {eta:5.0f}s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def bench(
    optimizers: list[str],
    tasks: str = "all",
    seeds: int = 3,
    device: str = "cpu",
    cache: Path | None = None,
    protocol: TuningProtocol = TuningProtocol(),
    progress: bool | None = None,
) -> list[BenchRow]:
    specs = [parse_optimizer(name) for name in optimizers]  # fails fast on a bad name
    task_list = select_tasks(tasks)
    seed_tuple = tuple(range(seeds))
    baselines = BaselineCache(cache if cache is not None else default_cache_path())
    meter = Progress(len(task_list) * (len(specs) + 1), progress)
    rows = []
    for task in task_list:
        baselines.baseline(task, seed_tuple, device, protocol)
        meter.update(f"{task.name}: {BASELINE} baseline")
        for spec in specs:
            start = time.perf_counter()
            scored = tune_and_score(task, spec, seed_tuple, baselines, device, protocol)
            rows.append(_row(task, spec, scored, time.perf_counter() - start))
            meter.update(f"{task.name}: {spec.name}")
    meter.close()
    return rows


def _row(task: Task, spec: OptimizerSpec, scored: TaskScore, seconds: float) -> BenchRow:
    return BenchRow(
        task=task.name, optimizer=spec.name, score=scored.score, seed_scores=scored.seed_scores, lr=scored.lr,
        train_loss=scored.train_loss, eval_loss=scored.eval_loss,
        seconds=seconds, curves=tuple(r.curve for r in scored.runs),
        seed_train=tuple(r.train_loss for r in scored.runs), seed_eval=tuple(r.eval_loss for r in scored.runs),
    )


def overall(rows: list[BenchRow]) -> dict[str, float]:
    by_optimizer: dict[str, list[float]] = {}
    for row in rows:
        by_optimizer.setdefault(row.optimizer, []).append(row.score)
    return {name: statistics.fmean(scores) for name, scores in by_optimizer.items()}


def format_table(rows: list[BenchRow]) -> str:
    header = "| task | optimizer | score | seed spread | train loss | eval loss | tuned lr | s |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.task} | {r.optimizer} | {r.score:+.3f} | {r.spread:.3f} | {r.train_loss:.4g} | "
                     f"{r.eval_loss:.4g} | {r.lr:.3g} | {r.seconds:.1f} |")
    lines += ["", "| optimizer | overall score (mean over tasks) |", "|---|---:|"]
    lines += [f"| {name} | {score:+.3f} |" for name, score in overall(rows).items()]
    return "\n".join(lines)


def write_outputs(rows: list[BenchRow], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fields = ["task", "optimizer", "score", "spread", "train_loss", "eval_loss", "lr", "seconds", "seed_scores"]
    with open(out / "bench.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for r in rows:
            writer.writerow([r.task, r.optimizer, r.score, r.spread, r.train_loss, r.eval_loss, r.lr, r.seconds,
                             " ".join(f"{s:.4f}" for s in r.seed_scores)])
    payload = {"rows": [{**dataclasses.asdict(r), "spread": r.spread} for r in rows], "overall": overall(rows)}
    (out / "bench.json").write_text(json.dumps(payload, indent=1, default=_json_number))
    return [out / "bench.csv", out / "bench.json", plot_curves(rows, out / "curves.png")]


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot_curves(rows: list[BenchRow], path: Path) -> Path:
    """Median loss curve over seeds, per task, one line per optimizer."""
    panels: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        median = [statistics.median(values) for values in zip(*r.curves)]
        panels.setdefault(r.task, {})[f"{r.optimizer} ({r.score:+.2f})"] = median
    return curve_grid(panels, path)
