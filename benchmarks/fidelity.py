"""The fidelity panel: does the selection suite rank optimizers the way its targets do?

    python benchmarks/fidelity.py [--cheap tier0] [--full tier1] [--held-out all] [--scaled auto]
                                  [--seeds 3] [--target-seeds 2] [--members REGEX] [--step-fraction 1]
                                  [--workers 1] [--resume] [--out benchmarks/results/fidelity.json]

DESIGN.md, "Fidelity is the gate". Every member of the panel
(benchmarks/fidelity_panel.py: references, within-family pairs, random
children of the warm starts) is scored

  * on each task of the cheap rung (--cheap, the search's cheap stage) and of
    the full rung (--full); a rung's score is the mean over its tasks, the full
    rung's over cheap + full tasks as in the search's full stage. The search's
    own protocol: proxy_tasks.scoring.tune_and_score (read at run time, so a
    change of scoring there, e.g. per-task standardisation, is what this measures);
  * on each target: every held-out task (--held-out: "all", a comma list, or
    "none"), scored the same way, and every selection task of the full rung
    that has a width, 4x the steps and 4x the width (--scaled "auto", or
    "mlp:4x4,...", or "none"). On a scaled target a member's rate is its rate
    tuned on the base task, carried by muP's rule (search/transfer.py's
    carried_rate: elementwise updates 1/width, matrix-normalised ones as is),
    re-tuned one half-decade either side on the tuning seeds and scored on
    fresh seeds against AdamW treated the same way (the search's transfer stage;
    its AdamW is cached under the transfer stage's key plus the base rate's seeds).

Then Kendall's tau-b and Spearman's rho, each with a 90% bootstrap interval
(members and seeds resampled, fixed seed): full rung vs targets (the mean over
targets), cheap rung vs full rung, cheap rung vs targets, and the full rung
vs each target; and the order of every within-family pair on the cheap rung,
the full rung and the targets. Goal: tau >= 0.7 (full vs targets), >= 0.6
(cheap vs full). The JSON (--out) is rewritten atomically after every member,
so a run stopped at any time leaves a usable partial table; --resume skips
the members already there with the same settings. A scatter plot (full rung
vs targets, pairs joined) is written beside it at each checkpoint.

Batching (what proxy_tasks/runner.py's train_grid does, read for this panel):
a run batches seeds (and rates) under vmap when `spec.batchable and
task.vmap_seeds`; several rates go into one batch only when `spec.lr_linear`.
Every program (OptimizerSpec.for_program) is batchable and lr-linear, so the
Shampoo family (SOAP, Shampoo, one-sided Shampoo) and Adafactor are panel
members as programs: the classes discovered.SOAP (REGISTRY batchable=False,
lr_linear=False) and torch.optim.Adafactor (not in ELEMENTWISE_TORCH) would
train every (rate, seed) alone. Muon and PolarGrad classes are batchable and
lr-linear. Tasks with vmap_seeds=False (cnn, and the held-out gratings_cnn,
measured slower under vmap: benchmarks/task_costs.py) train seed by seed and
rate by rate for every member, AdamW included; that is the task's choice, not
the optimizer's (gratings_cnn: ~27 CPU s of a member's ~160). Nothing in
proxy_tasks needed to change. (BaselineCache.get needs a protocol object with
`fresh_seeds`: a plain string key is silently a miss, hence ScaledProtocol.)

Budget, measured at the defaults (nice -n 10, one torch thread; CPU seconds,
what a free core would take): AdamW baselines ~350 CPU s once (then cached);
an elementwise member ~160-175 CPU s (Lion 158, an AdamW child 174), a
matrix member up to ~350 (SOAP 348). Where it goes (Lion / SOAP): the four
rung tasks 20 / 44, the seven held-out targets 64 / 88 (gratings_cnn and
synthetic_lm ~27 each), the three 4x4 targets 74 / 216 (mlp@4x4 41 / 104).
The 27 members: ~5,400 CPU s, so about 50 minutes with --workers 2 on two free
cores, 95 serially; expect up to 1.5-2x that while others share the cores.
Smaller: --members REGEX, --held-out a,b, --scaled none, --seeds 2,
--step-fraction 0.1 (a smoke run: every task shortened, the same code path).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fidelity_panel beside this file, in any process

import fidelity_panel  # noqa: E402
from fidelity_panel import Member  # noqa: E402

from proxy_tasks import scoring  # noqa: E402
from proxy_tasks.optimizers import baseline_spec  # noqa: E402
from proxy_tasks.registry import get_task, select_tasks  # noqa: E402
from proxy_tasks.task import Task, shortened  # noqa: E402
from proxy_tasks.tuning import TuneResult, TuningProtocol, tune_at  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fidelity.json"
RETUNE = 1  # half-decades either side of the carried rate on a scaled target (the transfer stage's default)
RESAMPLES = 1000
CHECKPOINT_RESAMPLES = 200
BOOTSTRAP_SEED = 0
GOAL_TAU, GOAL_TAU_CHEAP = 0.7, 0.6


# ---------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a member's scores depend on (a resumed run reuses a member only under equal settings)."""

    cheap: tuple[str, ...]  # task names of the cheap rung
    full: tuple[str, ...]  # task names of the full rung beyond the cheap one
    held_out: tuple[str, ...]  # held-out target tasks
    scaled: tuple[tuple[str, int, int], ...]  # (base task, steps factor, width factor)
    seeds: int
    target_seeds: int
    step_fraction: float

    @property
    def rung_tasks(self) -> tuple[str, ...]:
        return self.cheap + self.full

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.held_out + tuple(scaled_name(*s) for s in self.scaled)

    def task(self, name: str) -> Task:
        return shortened(get_task(name), self.step_fraction)

    def scaled_task(self, base: str, steps: int, width: int) -> Task:
        return self.task(base).scaled(steps, width)  # shortened first, as the search's transfer stage does

    def key(self) -> str:
        """A digest of the settings, every task's identity (name, version, settings), the protocol, and the
        source of scoring, tuning and training: a member scored under other rules is not resumed."""
        tasks = [self.task(n).key for n in self.rung_tasks + self.held_out]
        tasks += [self.scaled_task(*s).key for s in self.scaled]
        from proxy_tasks import runner, tuning

        code = hashlib.sha256("".join(Path(m.__file__).read_text() for m in (scoring, tuning, runner)).encode())
        text = json.dumps([dataclasses.asdict(self), tasks, str(TuningProtocol()), RETUNE, code.hexdigest()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def scaled_name(base: str, steps: int, width: int) -> str:
    return f"{base}@{steps}x{width}"


def parse_scaled(text: str, full_rung: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """'auto' (the rung's tasks that have a width, 4x4), 'none', or 'mlp:4x4,char_lm:4x2'."""
    if text == "none":
        return ()
    if text == "auto":
        return tuple((n, 4, 4) for n in full_rung if get_task(n).width_fields)
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, factors = item.partition(":")
        steps, _, width = factors.partition("x")
        if not (steps.isdigit() and width.isdigit() and int(steps) >= 1 and int(width) >= 1):
            raise SystemExit(f"--scaled: {item!r} is not TASK:STEPSxWIDTH (e.g. mlp:4x4)")
        if not get_task(name).width_fields:
            raise SystemExit(f"--scaled: task {name!r} has no width to scale")
        out.append((name, int(steps), int(width)))
    return tuple(out)


def settings_from(args) -> Settings:
    cheap = tuple(t.name for t in select_tasks(args.cheap))
    full = tuple(t.name for t in select_tasks(args.full) if t.name not in cheap)
    held_out = () if args.held_out == "none" else tuple(
        t.name for t in select_tasks("held-out" if args.held_out == "all" else args.held_out))
    return Settings(cheap, full, held_out, parse_scaled(args.scaled, cheap + full), args.seeds, args.target_seeds,
                    args.step_fraction)


# ---------------------------------------------------------------------------- scoring one member


def say(text: str) -> None:
    print(text, flush=True)  # a log read while the run goes on (nohup, a pipe)


def _entry(score: scoring.TaskScore, **extra) -> dict:
    return {"score": score.score, "seed_scores": list(score.seed_scores), "lr": score.lr, **extra}


@dataclasses.dataclass(frozen=True)
class ScaledProtocol:
    """The cache key's protocol for AdamW on a scaled target: the transfer stage's, plus the base rate's seeds.

    Its base rate is the rung's baseline (--seeds) while the target runs use
    --target-seeds, so base_seeds keeps it apart from a search's entry (whose
    two seed sets agree). fresh_seeds: what BaselineCache.get checks the
    cached runs against.
    """

    transfer: object  # search.transfer.TransferProtocol
    base_seeds: int

    @property
    def fresh_seeds(self) -> bool:
        return self.transfer.fresh_seeds


def scaled_adamw(settings: Settings, base: str, steps: int, width: int, cache: scoring.BaselineCache,
                 compute: bool) -> TuneResult:
    """AdamW on a scaled target, tuned as the search's transfer stage tunes it (carried, re-tuned), cached."""
    from search.transfer import TransferProtocol, carried_rate

    seeds = tuple(range(settings.target_seeds))
    protocol = TuningProtocol()
    key = ScaledProtocol(TransferProtocol(protocol, steps, width, RETUNE, protocol.fresh_seeds), settings.seeds)
    target = settings.scaled_task(base, steps, width)
    result = cache.get(target, seeds, "cpu", key)
    if result is None:
        if not compute:
            raise RuntimeError(f"no AdamW on {scaled_name(base, steps, width)}: the coordinator computes it first")
        base_lr = cache.baseline(settings.task(base), tuple(range(settings.seeds)), "cpu", protocol).best_lr
        carried = carried_rate(base_lr, width, False)
        rates = tuple(carried * 10 ** (k / 2) for k in range(-RETUNE, RETUNE + 1))
        result = tune_at(target, baseline_spec(), seeds, rates)
        cache.put(target, seeds, "cpu", key, result)
    return result


def prepare_baselines(settings: Settings, cache: scoring.BaselineCache, log: Callable[[str], None] = say) -> None:
    """Every AdamW baseline the panel needs, once, before any worker starts (workers only read the cache)."""
    seeds, target_seeds = tuple(range(settings.seeds)), tuple(range(settings.target_seeds))
    jobs = [(n, lambda n=n: cache.baseline(settings.task(n), seeds)) for n in settings.rung_tasks]
    jobs += [(n, lambda n=n: cache.baseline(settings.task(n), target_seeds)) for n in settings.held_out]
    jobs += [(scaled_name(*s), lambda s=s: scaled_adamw(settings, *s, cache, compute=True)) for s in settings.scaled]
    for name, job in jobs:
        t0, c0 = time.perf_counter(), time.process_time()
        job()
        log(f"  AdamW on {name}: {time.perf_counter() - t0:.1f}s ({time.process_time() - c0:.1f} CPU s)")


def score_member(member: Member, settings: Settings, cache: scoring.BaselineCache, compute_baselines: bool = True,
                 log: Callable[[str], None] = say) -> dict:
    """The member's record: scores per rung task and per target, with seed scores and rates."""
    from search.transfer import carried_rate

    started, cpu_started = time.perf_counter(), time.process_time()
    spec = member.spec()
    seeds, target_seeds = tuple(range(settings.seeds)), tuple(range(settings.target_seeds))

    def timed(name: str, make_entry) -> dict:  # the entry, with the wall and CPU seconds it took
        t0, c0 = time.perf_counter(), time.process_time()
        entry = make_entry()
        entry = {**entry, "seconds": round(time.perf_counter() - t0, 2),
                 "cpu_seconds": round(time.process_time() - c0, 2)}
        log(f"    {member.name} on {name}: {entry['score']:+.3f} "
            f"({entry['seconds']:.0f}s, {entry['cpu_seconds']:.0f} CPU s)")
        return entry

    def tuned(task: Task, s: tuple[int, ...]) -> dict:
        return _entry(scoring.tune_and_score(task, spec, s, cache, compute_baseline=compute_baselines))

    tasks = {name: timed(name, lambda: tuned(settings.task(name), seeds)) for name in settings.rung_tasks}
    targets = {name: timed(name, lambda: tuned(settings.task(name), target_seeds)) for name in settings.held_out}

    def scaled_entry(base: str, steps: int, width: int) -> dict:
        # The rate tuned at the base size on the rung's seeds (as AdamW's, scaled_adamw), free when the
        # base task is a rung task (it is, with --scaled auto).
        base_lr = tasks[base]["lr"] if base in tasks else tuned(settings.task(base), seeds)["lr"]
        target = settings.scaled_task(base, steps, width)
        adamw = scaled_adamw(settings, base, steps, width, cache, compute=compute_baselines)
        carried = carried_rate(base_lr, width, member.matrix_update)
        rates = tuple(carried * 10 ** (k / 2) for k in range(-RETUNE, RETUNE + 1))
        # Non-matrix parameters of Muon-style rules take AdamW's rate at the target's size.
        result = tune_at(target, spec, target_seeds, rates, aux_lr=adamw.best_lr)
        return _entry(scoring.score_task(target, result.best, adamw.best, result.best_lr), carried_lr=carried)

    for base, steps, width in settings.scaled:
        name = scaled_name(base, steps, width)
        targets[name] = timed(name, lambda: scaled_entry(base, steps, width))
    record = {**member.record(), "settings": settings.key(), "tasks": tasks, "targets": targets,
              "seconds": round(time.perf_counter() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu_started, 1)}
    record.update(summary(record, settings))
    log(f"  {member.name:<22} cheap {record['cheap']:+.3f}  full {record['full']:+.3f}  "
        f"targets {record['target']:+.3f}  ({record['seconds']:.0f}s, {record['cpu_seconds']:.0f} CPU s)")
    return record


def summary(record: dict, settings: Settings) -> dict:
    mean = lambda entries, names: statistics.fmean(entries[n]["score"] for n in names)  # noqa: E731
    return {"cheap": mean(record["tasks"], settings.cheap), "full": mean(record["tasks"], settings.rung_tasks),
            "target": mean(record["targets"], settings.target_names)}


# ---------------------------------------------------------------------------- rank statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (1-based)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties in either ranking count as neither concordant nor discordant); nan if undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), 1)
    s, nx, ny = (dx * dy)[upper].sum(), np.abs(dx[upper]).sum(), np.abs(dy[upper]).sum()
    return float(s / math.sqrt(nx * ny)) if nx and ny else math.nan


def spearman_rho(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks; nan if undefined."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _seed_matrix(records: list[dict], section: str, names: tuple[str, ...]) -> np.ndarray:
    """(members, tasks, seeds) of seed scores."""
    return np.array([[r[section][n]["seed_scores"] for n in names] for r in records], dtype=float)


def _resampled_means(scores: np.ndarray, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per resample and drawn member: the mean over tasks of the median over its resampled seeds.

    Seeds are drawn once per member and resample, so a member drawn twice is
    the same point twice: tied in both rankings, a pair that tau-b leaves out.
    """
    resamples, n = members.shape
    _, tasks, seeds = scores.shape
    picked = rng.integers(seeds, size=(resamples, n, tasks, seeds))
    drawn = np.take_along_axis(np.broadcast_to(scores, (resamples, *scores.shape)), picked, axis=3)
    means = np.median(drawn, axis=3).mean(axis=2)  # (resamples, members)
    return np.take_along_axis(means, members, axis=1)


def bootstrap(records: list[dict], x: tuple[str, tuple[str, ...]], y: tuple[str, tuple[str, ...]],
              resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """tau and rho between two scores (each: section of the record, tasks averaged) with 90% intervals.

    A resample draws members with replacement and, for each drawn member and
    task, its seeds with replacement; a member's score is then the mean over
    tasks of the median over the drawn seeds. Resamples where a statistic is
    undefined (all drawn members tied) are left out.
    """
    sx, sy = _seed_matrix(records, *x), _seed_matrix(records, *y)
    point_x = np.array([statistics.fmean(r[x[0]][n]["score"] for n in x[1]) for r in records])
    point_y = np.array([statistics.fmean(r[y[0]][n]["score"] for n in y[1]) for r in records])
    rng = np.random.default_rng(seed)
    members = rng.integers(len(records), size=(resamples, len(records)))
    bx, by = _resampled_means(sx, members, rng), _resampled_means(sy, members, rng)
    out = {"n": len(records)}
    for name, statistic in (("tau", kendall_tau), ("rho", spearman_rho)):
        values = np.array([statistic(a, b) for a, b in zip(bx, by)])
        values = values[np.isfinite(values)]
        interval = [float(np.percentile(values, 5)), float(np.percentile(values, 95))] if len(values) else None
        point = statistic(point_x, point_y)
        out[name], out[f"{name}_interval"] = (point if math.isfinite(point) else None), interval  # JSON: null
    return out


def agreement(records: list[dict], settings: Settings, resamples: int = RESAMPLES) -> dict:
    """Every rank statistic of the panel (members with complete records only)."""
    if len(records) < 3:
        return {}
    cheap, full = ("tasks", settings.cheap), ("tasks", settings.rung_tasks)
    targets = ("targets", settings.target_names)
    out = {
        "full_vs_targets": bootstrap(records, full, targets, resamples),
        "cheap_vs_full": bootstrap(records, cheap, full, resamples),
        "cheap_vs_targets": bootstrap(records, cheap, targets, resamples),
        "full_vs_target": {n: bootstrap(records, full, ("targets", (n,)), resamples) for n in settings.target_names},
    }
    return out


def pair_orders(records: dict[str, dict], members: list[Member]) -> list[dict]:
    """Each within-family pair's order on the cheap rung, the full rung and the targets, and whether they agree."""
    out = []
    for a, b in fidelity_panel.pairs(members):
        if a.name not in records or b.name not in records:
            continue
        ra, rb = records[a.name], records[b.name]
        entry = {"family": a.family, "a": a.name, "b": b.name}
        sign = {}
        for level in ("cheap", "full", "target"):
            diff = ra[level] - rb[level]
            sign[level] = int(np.sign(diff))
            entry[level] = {"a": ra[level], "b": rb[level], "better": a.name if diff > 0 else b.name if diff < 0
                            else "tie"}
        entry["cheap_agrees"] = sign["cheap"] == sign["target"]
        entry["full_agrees"] = sign["full"] == sign["target"]
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- the result file


def result(records: dict[str, dict], members: list[Member], settings: Settings, argv: list[str], started: float,
           complete: bool, resamples: int, failed: list[str] = ()) -> dict:
    done = [records[m.name] for m in members if m.name in records]
    stats = agreement(done, settings, resamples)
    top = stats.get("full_vs_targets", {})
    return {
        "command": ["python", "benchmarks/fidelity.py", *argv],
        "complete": complete,
        "members_done": len(done),
        "members_planned": len(members),
        "members_failed": list(failed),
        "elapsed_seconds": round(time.time() - started, 1),
        "settings": {**dataclasses.asdict(settings), "key": settings.key(), "target_names": settings.target_names},
        "tau": top.get("tau"), "tau_interval": top.get("tau_interval"),
        "rho": top.get("rho"), "rho_interval": top.get("rho_interval"),
        "tau_cheap_vs_full": stats.get("cheap_vs_full", {}).get("tau"),
        "tau_cheap_vs_full_interval": stats.get("cheap_vs_full", {}).get("tau_interval"),
        "goals": {"tau": GOAL_TAU, "tau_cheap_vs_full": GOAL_TAU_CHEAP},
        "bootstrap": {"resamples": resamples, "seed": BOOTSTRAP_SEED, "interval": "90% percentile"},
        "agreement": stats,
        "pairs": pair_orders(records, members),
        "members": {m.name: records[m.name] for m in members if m.name in records},
    }


def write_json(path: Path, data: dict) -> None:
    """Atomically: a reader (or a run stopped mid-write) sees the previous file or this one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)


def resumable(path: Path, settings: Settings, members: list[Member]) -> dict[str, dict]:
    """Records of an earlier run that still hold: same settings, same member definition."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text()).get("members", {})
    except (OSError, ValueError):
        return {}
    key = settings.key()
    by_name = {m.name: m for m in members}
    keep = {}
    for name, record in old.items():
        member = by_name.get(name)
        if member is None or record.get("settings") != key:
            continue
        if {k: record.get(k) for k in member.record()} != json.loads(json.dumps(member.record())):
            continue  # the panel's definition of this member changed
        keep[name] = record
    return keep


# ---------------------------------------------------------------------------- report


def table(data: dict) -> str:
    lines = ["| member | family | cheap | full | targets |", "|---|---|---:|---:|---:|"]
    members = sorted(data["members"].values(), key=lambda r: -r["full"])
    for r in members:
        lines.append(f"| {r['name']} | {r['family']} | {r['cheap']:+.3f} | {r['full']:+.3f} | {r['target']:+.3f} |")
    stats = data["agreement"]
    if stats:
        lines += ["", "| scores compared | n | Kendall tau (90%) | Spearman rho (90%) |", "|---|---:|---:|---:|"]
        rows = [("full rung vs targets", stats["full_vs_targets"]), ("cheap rung vs full rung", stats["cheap_vs_full"]),
                ("cheap rung vs targets", stats["cheap_vs_targets"])]
        rows += [(f"full rung vs {n}", s) for n, s in stats["full_vs_target"].items()]
        for label, s in rows:
            lines.append(f"| {label} | {s['n']} | {_fmt(s['tau'], s['tau_interval'])} | "
                         f"{_fmt(s['rho'], s['rho_interval'])} |")
    if data["pairs"]:
        lines += ["", "| pair | cheap | full | targets | cheap agrees | full agrees |", "|---|---|---|---|---|---|"]
        for p in data["pairs"]:
            order = lambda level: f"{p[level]['better']} ({p[level]['a'] - p[level]['b']:+.3f})"  # noqa: E731
            lines.append(f"| {p['a']} vs {p['b']} | {order('cheap')} | {order('full')} | {order('target')} | "
                         f"{'yes' if p['cheap_agrees'] else 'NO'} | {'yes' if p['full_agrees'] else 'NO'} |")
    return "\n".join(lines)


def _fmt(value, interval) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f} ({interval[0]:+.2f} .. {interval[1]:+.2f})" if interval else f"{value:+.2f}"


def plot(data: dict, path: Path, members: list[Member]) -> None:
    """Full rung vs mean target score, one point per member, within-family pairs joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = data["members"]
    if not records:
        return
    figure, ax = plt.subplots(figsize=(7, 6))
    for p in data["pairs"]:
        a, b = records[p["a"]], records[p["b"]]
        ax.plot([a["full"], b["full"]], [a["target"], b["target"]], color="tab:orange", lw=1, zorder=1)
    children = [r for r in records.values() if r["family"] == "child"]
    others = [r for r in records.values() if r["family"] != "child"]
    ax.scatter([r["full"] for r in others], [r["target"] for r in others], label="references and pairs", zorder=2)
    ax.scatter([r["full"] for r in children], [r["target"] for r in children], marker="x", color="grey",
               label="random children", zorder=2)
    for r in records.values():
        ax.annotate(r["name"], (r["full"], r["target"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("full rung score (mean over cheap + full tasks, vs tuned AdamW)")
    ax.set_ylabel("target score (mean over targets, vs AdamW)")
    tau = data.get("tau")
    title = f"Fidelity: Kendall's tau {tau:+.2f}" if tau is not None and math.isfinite(tau) else "Fidelity"
    ax.set_title(f"{title} ({data['members_done']}/{data['members_planned']} members)")
    ax.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


# ---------------------------------------------------------------------------- running


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one thread per worker process: two workers on two cores


def _worker(member_name: str, settings: Settings, cache_path: str) -> tuple[str, dict | None]:
    member = {m.name: m for m in fidelity_panel.panel()}[member_name]  # the panel is rebuilt alike (fixed seed)
    return member_name, _score_or_none(member, settings, scoring.BaselineCache(cache_path), compute_baselines=False)


def _score_or_none(member: Member, settings: Settings, cache: scoring.BaselineCache,
                   compute_baselines: bool = True) -> dict | None:
    """The member's record, or None (said, with the traceback) if scoring it raised: the others go on."""
    try:
        return score_member(member, settings, cache, compute_baselines)
    except Exception:  # noqa: BLE001 -- one member's failure must not lose the panel's hours
        import traceback

        say(f"  {member.name}: FAILED (left out; --resume tries it again)\n{traceback.format_exc()}")
        return None


def select_members(pattern: str | None) -> list[Member]:
    members = fidelity_panel.panel()
    if pattern:
        members = [m for m in members if re.search(pattern, m.name)]
        if not members:
            raise SystemExit(f"--members {pattern!r} matches no panel member")
    return members


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cheap", default="tier0", help="the cheap rung's tasks (select_tasks)")
    parser.add_argument("--full", default="tier1", help="the full rung's tasks (select_tasks; cheap ones added)")
    parser.add_argument("--held-out", default="all", help="held-out targets: all, none, or comma-separated names")
    parser.add_argument("--scaled", default="auto", help="scaled targets: auto (full-rung tasks with a width, "
                        "4x steps 4x width), none, or TASK:STEPSxWIDTH,...")
    parser.add_argument("--seeds", type=int, default=3, help="seeds on the rungs' tasks")
    parser.add_argument("--target-seeds", type=int, default=2, help="seeds on the targets")
    parser.add_argument("--members", default=None, help="regular expression: only panel members whose name matches")
    parser.add_argument("--step-fraction", type=float, default=1.0, help="shorten every task (smoke runs)")
    parser.add_argument("--workers", type=int, default=1, help="member-level processes (one torch thread each)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--resume", action="store_true", help="keep members already in --out with equal settings")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, on_checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Run the panel; returns the final result. on_checkpoint(result) is called after each write."""
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(1)  # one thread per process, as the search's workers: 2 cores are shared
    started = time.time()
    settings = settings_from(args)
    members = select_members(args.members)
    out = Path(args.out)
    cache_path = scoring.default_cache_path()
    cache = scoring.BaselineCache(cache_path)
    records = resumable(out, settings, members) if args.resume else {}
    todo = [m for m in members if m.name not in records]
    failed: list[str] = []
    print(f"fidelity panel: {len(members)} members ({len(records)} resumed), rungs {settings.cheap} + "
          f"{settings.full}, targets {settings.target_names}, seeds {settings.seeds}/{settings.target_seeds}, "
          f"step fraction {settings.step_fraction}", flush=True)

    def checkpoint(complete: bool) -> dict:
        # A checkpoint's intervals from fewer resamples: 1,000 cost ~5 s with 27 members, at every member.
        resamples = args.resamples if complete else min(args.resamples, CHECKPOINT_RESAMPLES)
        data = result(records, members, settings, argv, started, complete, resamples, failed)
        write_json(out, data)
        if not args.no_plot:
            plot(data, out.with_suffix(".png"), members)
        if on_checkpoint is not None:
            on_checkpoint(data)
        return data

    t0 = time.perf_counter()
    prepare_baselines(settings, cache)
    print(f"baselines ready ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.workers <= 1:
        for member in todo:
            record = _score_or_none(member, settings, cache)
            if record is None:
                failed.append(member.name)
                continue
            records[member.name] = record
            checkpoint(False)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context,
                                                    initializer=_worker_init) as pool:
            # Matrix members first (they cost up to twice as much): no long one left alone at the end.
            ordered = sorted(todo, key=lambda m: not m.matrix_update)
            futures = [pool.submit(_worker, m.name, settings, str(cache_path)) for m in ordered]
            for future in concurrent.futures.as_completed(futures):
                name, record = future.result()
                if record is None:
                    failed.append(name)
                    continue
                records[name] = record
                checkpoint(False)
    data = checkpoint(True)
    print("\n" + table(data))
    print(f"\ngoal: tau >= {GOAL_TAU} (full vs targets), >= {GOAL_TAU_CHEAP} (cheap vs full); "
          f"total {time.time() - started:.0f}s; wrote {out}", flush=True)
    return data


if __name__ == "__main__":
    main()
