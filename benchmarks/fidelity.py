"""Do the suite's scores predict real training? Rank agreement between the suite and larger targets.

    python benchmarks/fidelity.py [--suite all] [--targets char_lm:4x4,cnn:4x4] [--seeds 3] [--target-seeds 2]
                                  [--programs a.json,b.json] [--out bench_out/fidelity]

Every optimizer (SGD with momentum, AdamW, Lion, Adafactor, Shampoo, Muon,
PolarGrad, SOAP, and any program files given, e.g. a search's best) gets:

  (a) its suite score: the search's own protocol (proxy_tasks/tuning.py) on
      every task of --suite (default: all training tasks; the quickstart
      searches on tier1), the mean over tasks of its score against tuned AdamW;
  (b) its target score on each target, a task that costs at least 10x a suite
      task: by default the streaming char LM 4x wider and 4x longer, and the
      streaming CNN 4x wider and 4x longer (Task.scaled; --targets
      base:STEPSxWIDTH,...). Each optimizer's rate is the one tuned (the same
      protocol) on the target's base task, carried by muP's rule (search/transfer.py:
      elementwise updates 1/width, matrix-normalised ones as is), re-tuned on
      a coarse grid of half-decades around it on the tuning seeds, and scored
      on fresh seeds against AdamW treated the same way.

Then Kendall's tau and Spearman's rho between the suite scores and the mean
target scores, with a bootstrap interval (2,000 resamples of the per-seed
scores), a table, and suite-vs-target scatter plot. Goal: tau >= 0.7.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from primitives.serialize import load
from proxy_tasks.optimizers import OptimizerSpec, baseline_spec, parse_optimizer
from proxy_tasks.registry import get_task, select_tasks
from proxy_tasks.scoring import BaselineCache, default_cache_path, score_task, tune_and_score
from proxy_tasks.tuning import TuningProtocol, tune_at
from search.transfer import carried_rate

OPTIMIZERS = ["SGDM", "AdamW", "Lion", "Adafactor", "program:shampoo", "Muon", "PolarGrad", "SOAP"]
# Optimizers whose update is normalised as a matrix: their rate carries to a wider model as it is.
MATRIX_UPDATES = {"program:shampoo", "Muon", "PolarGrad", "SOAP"}
TARGETS = "char_lm:4x4,cnn:4x4"  # base task:(steps factor)x(width factor), ...
RETUNE = (-1, 0, 1)  # half-decades around the carried rate


def kendall_tau(x: list[float], y: list[float]) -> float:
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    concordant = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return float(concordant / len(pairs))


def spearman_rho(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap(suite: dict[str, list[float]], target: dict[str, list[float]], statistic, resamples: int = 2000,
              seed: int = 0) -> tuple[float, float]:
    """A 90% interval of `statistic` over seed resamples (per optimizer, per-seed scores drawn with replacement)."""
    rng = np.random.default_rng(seed)
    names = list(suite)
    values = []
    for _ in range(resamples):
        s = [float(np.mean(rng.choice(suite[n], len(suite[n])))) for n in names]
        t = [float(np.mean(rng.choice(target[n], len(target[n])))) for n in names]
        values.append(statistic(s, t))
    return float(np.percentile(values, 5)), float(np.percentile(values, 95))


def parse_targets(text: str) -> dict[str, tuple[int, int]]:
    """'char_lm:4x4,cnn:4x2' -> {"char_lm": (4, 4), "cnn": (4, 2)}: base task -> (steps factor, width factor)."""
    targets = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, factors = item.partition(":")
        steps, _, width = factors.partition("x")
        if not (steps.isdigit() and width.isdigit() and int(steps) >= 1 and int(width) >= 1):
            raise SystemExit(f"--targets: {item!r} is not BASE_TASK:STEPSxWIDTH (e.g. char_lm:4x4)")
        if not get_task(name).width_fields:
            raise SystemExit(f"--targets: task {name!r} has no width to scale")
        targets[name] = (int(steps), int(width))
    return targets


def suite_scores(specs: dict[str, OptimizerSpec], tasks, seeds: tuple[int, ...], cache: BaselineCache,
                 protocol: TuningProtocol) -> tuple[dict, dict, dict]:
    """Per optimizer: mean score over the suite, per-seed means, and its tuned rate per task."""
    means, per_seed, rates = {}, {}, {}
    for name, spec in specs.items():
        scored = [tune_and_score(task, spec, seeds, cache, protocol=protocol) for task in tasks]
        means[name] = statistics.fmean(s.score for s in scored)
        per_seed[name] = [statistics.fmean(s.seed_scores[i] for s in scored) for i in range(len(seeds))]
        rates[name] = {s.task: s.lr for s in scored}
        print(f"  suite {name}: {means[name]:+.3f} ({', '.join(f'{s.task} {s.score:+.2f}' for s in scored)})",
              flush=True)
    return means, per_seed, rates


def target_scores(specs, targets, rates, seeds, cache, protocol) -> tuple[dict, dict]:
    """Per optimizer: the mean target score, and per-seed means, AdamW treated the same way."""
    means, per_seed = {}, {}
    by_target: dict[str, dict[str, list[float]]] = {}
    for base_name, (steps_factor, width_factor) in targets.items():
        base_task = get_task(base_name)
        for name, spec in specs.items():  # the rate at the base size, where the suite did not tune it
            if base_name not in rates[name]:
                rates[name][base_name] = tune_and_score(base_task, spec, seeds, cache, protocol=protocol).lr
        target = base_task.scaled(steps_factor, width_factor)
        adamw_base = cache.baseline(base_task, seeds, "cpu", protocol)
        adamw_rates = tuple(carried_rate(adamw_base.best_lr, width_factor, False) * 10 ** (k / 2) for k in RETUNE)
        adamw = tune_at(target, baseline_spec(), seeds, adamw_rates)
        for name, spec in specs.items():
            started = time.perf_counter()
            carried = carried_rate(rates[name][base_name], width_factor, name in MATRIX_UPDATES)
            result = tune_at(target, spec, seeds, tuple(carried * 10 ** (k / 2) for k in RETUNE), aux_lr=adamw.best_lr)
            scored = score_task(target, result.best, adamw.best, result.best_lr)
            by_target.setdefault(name, {})[base_name] = scored.seed_scores
            print(f"  target {base_name}@{steps_factor}x{width_factor} {name}: {scored.score:+.3f} "
                  f"(lr {result.best_lr:.3g}, carried {carried:.3g}; {time.perf_counter() - started:.0f}s)", flush=True)
    for name, targets in by_target.items():
        per_seed[name] = [statistics.fmean(scores[i] for scores in targets.values()) for i in range(len(seeds))]
        means[name] = statistics.fmean(per_seed[name])
    return means, per_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="all", help="the suite's tasks (proxy_tasks.registry.select_tasks)")
    parser.add_argument("--targets", default=TARGETS, help="BASE_TASK:STEPSxWIDTH,... (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target-seeds", type=int, default=2)
    parser.add_argument("--programs", default="", help="comma-separated program files to rank beside the references")
    parser.add_argument("--out", default="bench_out/fidelity")
    parser.add_argument("--baseline-cache", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    targets = parse_targets(args.targets)
    specs = {name: parse_optimizer(name) for name in OPTIMIZERS}
    for path in filter(None, args.programs.split(",")):
        specs[Path(path).stem] = OptimizerSpec.for_program(load(path), name=Path(path).stem)
        if any(s.op in ("polar", "nuclear_scaled_polar", "kron_precondition") for s in load(path).body):
            MATRIX_UPDATES.add(Path(path).stem)
    cache = BaselineCache(args.baseline_cache or default_cache_path())
    protocol = TuningProtocol()
    print("suite:")
    suite, suite_seed, rates = suite_scores(specs, select_tasks(args.suite), tuple(range(args.seeds)), cache, protocol)
    print("targets:")
    target, target_seed = target_scores(specs, targets, rates, tuple(range(args.target_seeds)), cache, protocol)
    names = list(specs)
    x, y = [suite[n] for n in names], [target[n] for n in names]
    tau, rho = kendall_tau(x, y), spearman_rho(x, y)
    tau_ci = bootstrap(suite_seed, target_seed, kendall_tau)
    rho_ci = bootstrap(suite_seed, target_seed, spearman_rho)
    print("\n| optimizer | suite score | target score |\n|---|---:|---:|")
    for n in sorted(names, key=lambda n: -suite[n]):
        print(f"| {n} | {suite[n]:+.3f} | {target[n]:+.3f} |")
    print(f"\nKendall's tau {tau:+.2f} (90% bootstrap interval {tau_ci[0]:+.2f} .. {tau_ci[1]:+.2f}); "
          f"Spearman's rho {rho:+.2f} ({rho_ci[0]:+.2f} .. {rho_ci[1]:+.2f}); goal tau >= 0.7")
    print(f"total {time.perf_counter() - start:.0f}s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps({"suite_tasks": args.suite, "targets": args.targets,
                                                   "suite": suite, "target": target, "tau": tau, "rho": rho,
                                                   "tau_interval": tau_ci, "rho_interval": rho_ci}, indent=1))
    _plot(names, suite, target, tau, out / "fidelity.png", args.targets)


def _plot(names, suite, target, tau, path: Path, targets_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 5))
    ax.scatter([suite[n] for n in names], [target[n] for n in names])
    for n in names:
        ax.annotate(n, (suite[n], target[n]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("suite score (mean over training tasks, vs tuned AdamW)")
    ax.set_ylabel(f"target score ({targets_label}; vs AdamW)")
    ax.set_title(f"Suite vs larger targets: Kendall's tau {tau:+.2f}" if math.isfinite(tau) else "Suite vs targets")
    figure.tight_layout()
    figure.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
