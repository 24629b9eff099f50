"""Scores against tuned AdamW, and the on-disk cache of baselines.

Per seed: s = clip(log(L_AdamW / L_candidate) / spread, -3, 3), both at their
tuned learning rates, where `spread` is the task's `score_scale`: the spread
(standard deviation) of the reference panel's log-ratios on that task
(benchmarks/suite_snr.py measures it). Standardised so, every task counts
alike in a suite's mean: without it a task on which methods differ by e^3
decided the mean and one on which they differ by 5% counted for nothing.
A run that diverged at step s of T gets partial credit, with f = (s - 1)/T:
-3 (1 - f) + f min(0, score of its last loss before diverging), so a
rule that trained most of the way ranks above one that never trained, and
never above AdamW. Per task: the median over seeds. Per suite: the mean over
tasks. Positive is better than AdamW.

Baselines are tuned once per (task key: name, version and settings; seeds;
device; tuning protocol) and kept in a JSON file, so a changed task or
protocol never reuses a stale entry. Writes are atomic (write, then rename);
only one process (the search's coordinator) writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from primitives.files import atomic_write_text
from primitives.program import Program
from proxy_tasks.optimizers import BASELINE, BASELINE_CLASS, OptimizerSpec, baseline_identity, baseline_spec
from proxy_tasks.task import RunResult, Task
from proxy_tasks.tuning import TuneResult, TuningProtocol, fresh, tune

SCORE_CLIP = 3.0
# The aux AdamW lr used while tuning the baseline itself (it has no aux part).
_UNUSED_AUX_LR = 1e-3


# Every task's metric is a loss bounded below by 0 (or a gap to the optimum, f - f*); a value below
# this floor is round-off at the optimum (f - f* in float32), and counts as the floor.
LOSS_FLOOR = 1e-30


def seed_score(baseline: float, candidate: float, spread: float = 1.0) -> float:
    """clip(log(baseline / candidate) / spread): positive when the candidate's loss is lower."""
    if not math.isfinite(candidate):
        return -SCORE_CLIP
    if not math.isfinite(baseline):
        return SCORE_CLIP
    ratio = math.log(max(baseline, LOSS_FLOOR) / max(candidate, LOSS_FLOOR)) / spread
    return max(-SCORE_CLIP, min(SCORE_CLIP, ratio))


def diverged_credit(run: RunResult, baseline: RunResult, steps: int, spread: float = 1.0) -> float:
    """A run that diverged at step s: -3 (1 - f) + f min(0, its score before), f = (s - 1) / steps.

    "Its score before" compares its training curve with the baseline's (same seed) at the last point
    before the divergence: both minibatch losses at the same step, whatever metric the task scores.
    """
    step = run.diverged_step
    if step is None or steps <= 0:
        return -SCORE_CLIP
    # The loss at step s is measured before step s's update: s - 1 updates were made, and a run that
    # diverged at step 1 (its first update) never trained at all.
    done = min(max((step - 1) / steps, 0.0), 1.0)
    # The curve's points average windows of steps; the last one that ends before the divergence.
    last = math.floor(step * len(run.curve) / steps) - 1
    if not (0 <= last < min(len(run.curve), len(baseline.curve))):
        return -SCORE_CLIP * (1 - done) - SCORE_CLIP * done
    before, reference = run.curve[last], baseline.curve[last]
    credit = min(0.0, seed_score(reference, before, spread)) if math.isfinite(before) else -SCORE_CLIP
    return -SCORE_CLIP * (1 - done) + done * credit


def run_score(task: Task, run: RunResult, baseline: RunResult) -> float:
    """One seed's score on `task` against the baseline's run of the same seed."""
    value, reference = run.metric(task.metric), baseline.metric(task.metric)
    if not math.isfinite(value) and run.diverged_step is not None and math.isfinite(reference):
        return diverged_credit(run, baseline, task.steps, task.score_scale)
    return seed_score(reference, value, task.score_scale)


@dataclasses.dataclass(frozen=True)
class TaskScore:
    task: str
    score: float  # median over seeds
    seed_scores: tuple[float, ...]
    lr: float
    runs: tuple[RunResult, ...]  # the scored runs, one per seed
    diverged_everywhere: bool = False  # every run at every learning rate tried diverged
    offset: int | None = None  # the chosen rate in half-decades from the scale-free centre (a child inherits it)
    run_count: int = 0  # training runs the tuning cost on this task

    @property
    def train_loss(self) -> float:
        return statistics.median(r.train_loss for r in self.runs)

    @property
    def eval_loss(self) -> float:
        return statistics.median(r.eval_loss for r in self.runs)

    @property
    def curve(self) -> list[float]:
        """The seeds' loss curves, median at each point (inf where a run had stopped)."""
        return [statistics.median(points) for points in zip(*(r.curve for r in self.runs))]

    def to_dict(self) -> dict:
        """What a search records per task (events.jsonl)."""
        record = {"score": self.score, "seed_scores": list(self.seed_scores), "lr": self.lr,
                  "train_loss": self.train_loss, "eval_loss": self.eval_loss, "curve": self.curve}
        if self.offset is not None:
            record.update(offset=self.offset, runs=self.run_count)
        return record


def score_task(task: Task, candidate: tuple[RunResult, ...], baseline: tuple[RunResult, ...], lr: float,
               diverged_everywhere: bool = False, tuned: TuneResult | None = None) -> TaskScore:
    """Per seed, the candidate's run against the baseline's run of the same seed."""
    by_seed = {r.seed: r for r in baseline}
    seed_scores = tuple(run_score(task, r, by_seed[r.seed]) for r in candidate)
    offset, runs = (tuned.offset, tuned.run_count) if tuned is not None else (None, 0)
    return TaskScore(task.name, statistics.median(seed_scores), seed_scores, lr, candidate, diverged_everywhere,
                     offset, runs)


def suite_score(scores: list[TaskScore]) -> float:
    return statistics.fmean(s.score for s in scores) if scores else -SCORE_CLIP


def entry_of(result: TuneResult) -> dict:
    """A tuned baseline as the cache (and a baseline job's result) holds it."""
    return {"best_lr": result.best_lr, "centre": result.centre,
            "runs": [[lr, [r.to_dict() for r in results]] for lr, results in result.runs.items()],
            "scored": [r.to_dict() for r in result.scored]}


ENTRY_KEYS = ("best_lr", "centre", "runs", "scored")


# AdamW baselines of the built-in tasks for the presets' protocols, shipped with the package
# (benchmarks/ship_baselines.py writes it), so that a first search on a fresh machine starts searching at
# once. Read-only: a key it lacks (another task version, seeds, device or protocol) is tuned and cached as
# usual; a damaged entry is a miss like any other.
SHIPPED_BASELINES = Path(__file__).with_name("baselines.json")
MAX_SHIPPED_BYTES = 64 << 20


class BaselineCache:
    """Tuned AdamW per task, on disk (the user's cache, then the baselines shipped with the package)."""

    def __init__(self, path: str | Path | None, shipped: str | Path | None = SHIPPED_BASELINES):
        self.path = Path(path) if path is not None else None
        self.shipped_path = Path(shipped) if shipped is not None else None
        self._entries: dict[str, dict] = {}
        self._shipped: dict[str, dict] | None = None
        self._load()

    def _shipped_entries(self) -> dict[str, dict]:
        if self._shipped is None:
            self._shipped = {}
            try:
                if self.shipped_path is not None and self.shipped_path.is_file() \
                        and self.shipped_path.stat().st_size <= MAX_SHIPPED_BYTES:
                    entries = json.loads(self.shipped_path.read_text())
                    self._shipped = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError, RecursionError):
                self._shipped = {}  # a damaged file is only a cache: tune again
        return self._shipped

    @staticmethod
    def key(task: Task, seeds: tuple[int, ...], device: str, protocol: TuningProtocol) -> str:
        return f"{task.key}|seeds={list(seeds)}|device={device}|{protocol}|baseline={baseline_identity()}"

    def _load(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                entries = json.loads(self.path.read_text())
            except (OSError, ValueError, RecursionError):
                entries = {}  # a damaged cache is only a cache: recompute
            self._entries = entries if isinstance(entries, dict) else {}

    def get(self, task: Task, seeds, device, protocol) -> TuneResult | None:
        key = self.key(task, seeds, device, protocol)
        if key not in self._entries:
            self._load()  # another process (the search's coordinator) may have added it since
        entry = self._entries.get(key)
        if entry is None:
            entry = self._shipped_entries().get(key)
        if entry is None:
            return None
        try:
            runs = {_positive_float(lr): tuple(_run_of(r) for r in results) for lr, results in entry["runs"]}
            result = TuneResult(_positive_float(entry["best_lr"]), _positive_float(entry["centre"]), runs,
                                tuple(_run_of(r) for r in entry["scored"]))
            if not result.best or {r.seed for r in result.best} != set(fresh_or_tuning(seeds, protocol)):
                return None  # not the runs this key promises
            return result
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a damaged entry is only a cache miss: the baseline is tuned again

    def put(self, task: Task, seeds, device, protocol, result: TuneResult) -> None:
        self.put_entry(self.key(task, seeds, device, protocol), entry_of(result))

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


def _positive_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"not a positive finite number: {value!r}")
    return float(value)


def _run_of(data) -> RunResult:
    """A cached run, its fields checked (a hand-edited or hostile cache is a miss, never a crash later)."""
    run = RunResult.from_dict(data)
    numbers = (run.train_loss, run.eval_loss, run.seconds, *run.curve)
    if type(run.seed) is not int or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise ValueError("a cached run with fields of the wrong type")
    _positive_float(run.lr)
    return run


def fresh_or_tuning(seeds: tuple[int, ...], protocol: TuningProtocol) -> tuple[int, ...]:
    """The seeds of the runs a tuned baseline scores with."""
    # a protocol without the field (a study's own key object) scores fresh seeds, as the default does
    return fresh(tuple(seeds)) if getattr(protocol, "fresh_seeds", True) else tuple(seeds)


def tune_and_score(
    task: Task,
    spec: OptimizerSpec,
    seeds: tuple[int, ...],
    baselines: BaselineCache,
    device: str = "cpu",
    protocol: TuningProtocol = TuningProtocol(),
    run_device: str | None = None,
    compute_baseline: bool = True,
    offset: int | None = None,
) -> TaskScore:
    """Tune `spec` on `task` with the baseline's budget and score it against the tuned baseline.

    The one way everything (bench, ablation, the search's evaluator) scores an
    optimizer. Baselines are keyed by `device` ("cuda") and runs go to
    `run_device` ("cuda:1" for a second GPU worker). A search's workers pass
    compute_baseline=False: the coordinator computes baselines first, and a
    missing one is an error rather than a race on the cache file. `offset`: the
    parent's chosen rate on this task, in half-decades from the centre (the
    tuning brackets it instead of searching widely).
    """
    if compute_baseline:
        baseline = baselines.baseline(task, seeds, device, protocol)
    else:
        baseline = baselines.get(task, seeds, device, protocol)
        if baseline is None:
            raise RuntimeError(f"no AdamW baseline for task {task.name}: the coordinator computes them first")
    if spec.factory is BASELINE_CLASS and not spec.kwargs:
        result = baseline  # AdamW against itself: its own tuning, not a second draw
    else:
        # Non-matrix parameters of Muon-style optimizers use the tuned AdamW lr.
        result = tune(task, spec, seeds, run_device or device, baseline.best_lr, protocol, offset=offset)
    everywhere = all(r.diverged_step is not None for runs in result.runs.values() for r in runs)
    return score_task(task, result.best, baseline.best, result.best_lr, everywhere, tuned=result)


def default_cache_path() -> Path:
    """~/.cache/optsearch/baselines.json (or under $OPTSEARCH_CACHE, or $XDG_CACHE_HOME)."""
    root = os.environ.get("OPTSEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "optsearch")
    return Path(root) / "baselines.json"


def program_scorer(tasks: list[Task], seeds: tuple[int, ...], primitive_set, baselines: BaselineCache,
                   device: str = "cpu", protocol: TuningProtocol = TuningProtocol()) -> Callable[[Program], float]:
    """program -> its mean score on `tasks` against the cached tuned baseline (ablation's judge)."""

    def score(program: Program) -> float:
        spec = OptimizerSpec.for_program(program, primitive_set=primitive_set)
        return suite_score([tune_and_score(task, spec, seeds, baselines, device, protocol) for task in tasks])

    return score
