"""Does evolution find more than cheaper ways of searching? Strategies at equal numbers of trained candidates.

    python benchmarks/discovery.py [--spaces lion-space,matrix-space] [--seeds 3] [--candidates 24]
                                   [--out bench_out/discovery]

For each space (its preset's primitives and warm starts: lion-space from
AdamW, matrix-space from AdamW, Muon, PolarGrad, Shampoo, SOAP, ...) and each
strategy (`evolution`, `random`: the same mutations of a warm start without
selection, `constants`: only the warm starts' constants perturbed), searches
with --seeds search seeds each train --candidates candidates on a reduced suite
(the cheap tier, the full suite of tiers 0-1, 2 seeds), score their hall of
fame on the held-out tasks (lora, deep_linear) as it forms (every 8
candidates) and pass what beats AdamW on the full suite through the transfer
stage (the streaming MLP at 2x the steps and width). What is compared is not the selection score a
search optimises but what it does not see: the best held-out score among
the candidates scored on the held-out tasks so far, and the best transfer
score, against candidates trained. Output: a table (median and range over
seeds at the end), a PNG of the curves, and events for a closer look.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from search import config as config_module
from search.engine import run

STRATEGIES = ("evolution", "random", "constants")
# Sized for 2 cores: 18 searches of 24 candidates in about an hour. The held-out tasks are the two cheapest
# (gratings_cnn and synthetic_lm cost minutes a candidate here) and the transfer is 2x steps and 2x width
# (a quarter of the default's cost); a machine with more cores should raise both.
SUITE = ["evaluation.cheap_tasks=tier0", "evaluation.full_tasks=tier1", "evaluation.seeds=2",
         "evaluation.held_out_tasks=lora,deep_linear", "evaluation.meta_every=8",
         "transfer.enabled=true", "transfer.tasks=mlp", "transfer.steps_factor=2", "transfer.width_factor=2",
         "transfer.hurdle=0.0", "tracking.enabled=false",
         "evolution.population=40", "evolution.tournament=4", "stop.wall_time=0"]


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(candidates trained, best held-out score so far) and the same for transfer scores, from the events."""
    trained, best = 0, {"held_out": -math.inf, "transfer": -math.inf}
    points: dict[str, list[tuple[int, float]]] = {"held_out": [], "transfer": []}
    with open(run_dir / "events.jsonl") as handle:
        for line in handle:
            event = json.loads(line)
            if event["type"] == "candidate" and event["status"] not in ("error", "timeout", "crashed"):
                trained += 1
            elif event["type"] in best and event["status"] in ("ok", "diverged"):
                best[event["type"]] = max(best[event["type"]], event["score"])
                points[event["type"]].append((trained, best[event["type"]]))
    return points


def at(points: list[tuple[int, float]], trained: int) -> float:
    """The best score reached by `trained` candidates (-inf before the first)."""
    reached = [score for count, score in points if count <= trained]
    return reached[-1] if reached else -math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", default="lion-space,matrix-space")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench_out/discovery")
    parser.add_argument("--baseline-cache", default="")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[tuple[str, str], list[dict]] = {}
    for space in args.spaces.split(","):
        for strategy in STRATEGIES:
            for seed in range(args.seeds):
                run_dir = out / f"{space}-{strategy}-{seed}"
                if not (run_dir / "checkpoint.json").exists():
                    overrides = SUITE + [f"evolution.strategy={strategy}", f"seed={seed}",
                                         f"stop.max_evals={args.candidates}", f"workers.workers={args.workers}"]
                    if args.baseline_cache:
                        overrides.append(f"evaluation.baseline_cache={args.baseline_cache}")
                    began = time.perf_counter()
                    run(config_module.load(space, overrides=overrides), run_dir=run_dir)
                    print(f"{space} {strategy} seed {seed}: {time.perf_counter() - began:.0f}s", flush=True)
                results.setdefault((space, strategy), []).append(curves(run_dir))
    print(f"\n{args.candidates} candidates trained per search, {args.seeds} search seeds; "
          f"total {time.perf_counter() - start:.0f}s\n")
    print("| space | strategy | best held-out score (median, range) | best transfer score (median, range) |")
    print("|---|---|---:|---:|")
    for (space, strategy), runs in results.items():
        cells = []
        for kind in ("held_out", "transfer"):
            finals = [at(r[kind], args.candidates) for r in runs]
            shown = [f for f in finals if math.isfinite(f)]
            cells.append(f"{statistics.median(shown):+.3f} ({min(shown):+.3f} .. {max(shown):+.3f})" if shown
                         else "none scored")
        print(f"| {space} | {strategy} | {cells[0]} | {cells[1]} |")
    _plot(results, args.candidates, out / "discovery.png")
    (out / "discovery.json").write_text(json.dumps({f"{s}/{t}": r for (s, t), r in results.items()}, indent=1))


def _plot(results, candidates: int, path: Path) -> None:
    from proxy_tasks.figures import pyplot, save

    plt = pyplot()
    spaces = sorted({space for space, _ in results})
    figure, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for strategy in STRATEGIES:
            runs = results.get((space, strategy), [])
            xs = list(range(1, candidates + 1))
            values = [[at(r["held_out"], x) for r in runs] for x in xs]
            medians = [statistics.median(v) if all(map(math.isfinite, v)) else float("nan") for v in values]
            lows = [min(v) if all(map(math.isfinite, v)) else float("nan") for v in values]
            highs = [max(v) if all(map(math.isfinite, v)) else float("nan") for v in values]
            line, = ax.plot(xs, medians, label=strategy)
            ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        ax.axhline(0, color="grey", lw=0.7, ls="--", label="AdamW parity")
        ax.set_title(f"{space}: best held-out score so far (median, range over seeds)", fontsize=9)
        ax.set_xlabel("candidates trained")
        ax.set_ylabel("held-out score vs tuned AdamW")
        ax.legend(fontsize=8)
    save(figure, path)


if __name__ == "__main__":
    main()
