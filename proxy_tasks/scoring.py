"""Scores against tuned AdamW, and the on-disk cache of baselines.

Per seed: s = clip(log(L_AdamW / L_candidate), -3, 3), both at their tuned
learning rates; a candidate that diverged or returned a non-finite loss
gets -3. Per task: the median over seeds. Per suite: the mean over tasks.
Positive is better than AdamW; +1 is a loss e times smaller.

Baselines are tuned once per (task key: name, version and settings; seeds;
device; tuning protocol) and kept in a JSON file, so a changed task or
protocol never reuses a stale entry. Writes are atomic (write, then rename);
only one process (the search's coordinator) writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from primitives.files import atomic_write_text
from proxy_tasks.optimizers import BASELINE, OptimizerSpec, baseline_identity, baseline_spec
from proxy_tasks.task import RunResult, Task
from proxy_tasks.tuning import TuneResult, TuningProtocol, tune

SCORE_CLIP = 3.0
# The aux AdamW lr used while tuning the baseline itself (it has no aux part).
_UNUSED_AUX_LR = 1e-3


def seed_score(baseline: float, candidate: float) -> float:
    if not math.isfinite(candidate) or candidate < 0:
        return -SCORE_CLIP
    if not math.isfinite(baseline):
        return SCORE_CLIP
    ratio = math.log(max(baseline, 1e-30) / max(candidate, 1e-30))
    return max(-SCORE_CLIP, min(SCORE_CLIP, ratio))


@dataclasses.dataclass(frozen=True)
class TaskScore:
    task: str
    score: float  # median over seeds
    seed_scores: tuple[float, ...]
    lr: float
    runs: tuple[RunResult, ...]


def score_task(task: Task, candidate: tuple[RunResult, ...], baseline: tuple[RunResult, ...], lr: float) -> TaskScore:
    by_seed = {r.seed: r.metric(task.metric) for r in baseline}
    seed_scores = tuple(seed_score(by_seed[r.seed], r.metric(task.metric)) for r in candidate)
    return TaskScore(task.name, statistics.median(seed_scores), seed_scores, lr, candidate)


def suite_score(scores: list[TaskScore]) -> float:
    return statistics.fmean(s.score for s in scores) if scores else -SCORE_CLIP


class BaselineCache:
    """Tuned AdamW per task, on disk."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, dict] = {}
        self._load()

    @staticmethod
    def key(task: Task, seeds: tuple[int, ...], device: str, protocol: TuningProtocol) -> str:
        return f"{task.key}|seeds={list(seeds)}|device={device}|{protocol}|baseline={baseline_identity()}"

    def _load(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self._entries = {}  # a damaged cache is only a cache: recompute

    def get(self, task: Task, seeds, device, protocol) -> TuneResult | None:
        key = self.key(task, seeds, device, protocol)
        if key not in self._entries:
            self._load()  # another process (the search's coordinator) may have added it since
        entry = self._entries.get(key)
        if entry is None:
            return None
        runs = {float(lr): tuple(RunResult.from_dict(r) for r in results) for lr, results in entry["runs"]}
        return TuneResult(entry["best_lr"], entry["centre"], runs)

    def put(self, task: Task, seeds, device, protocol, result: TuneResult) -> None:
        self.put_entry(self.key(task, seeds, device, protocol), {
            "best_lr": result.best_lr,
            "centre": result.centre,
            "runs": [[lr, [r.to_dict() for r in results]] for lr, results in result.runs.items()],
        })

    def put_entry(self, key: str, entry: dict) -> None:
        self._load()  # keep what others wrote
        self._entries[key] = entry
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self._entries), durable=False)

    def baseline(self, task: Task, seeds, device="cpu", protocol=TuningProtocol()) -> TuneResult:
        """The cached tuned baseline, computing (and storing) it if needed."""
        result = self.get(task, seeds, device, protocol)
        if result is None:
            result = tune(task, baseline_spec(), seeds, device, _UNUSED_AUX_LR, protocol)
            self.put(task, seeds, device, protocol, result)
        return result


def evaluate(
    task: Task,
    spec: OptimizerSpec,
    seeds: tuple[int, ...],
    baselines: BaselineCache,
    device: str = "cpu",
    protocol: TuningProtocol = TuningProtocol(),
) -> TaskScore:
    """Tune `spec` on `task` and score it against the tuned baseline."""
    baseline = baselines.baseline(task, seeds, device, protocol)
    # Non-matrix parameters of Muon-style optimizers use the tuned AdamW lr.
    result = tune(task, spec, seeds, device, baseline.best_lr, protocol)
    return score_task(task, result.best, baseline.best, result.best_lr)
