"""How many evaluations the search needs to find Lion from AdamW (the mechanics test), over seeds.

    python benchmarks/mechanics.py [--seeds 5] [--budget 6000] [--space mechanics|elementwise]

Fitness is the behavioural distance to Lion (0.9, 0.99) on a 24-step probe;
"found" is a distance below 0.05 (the same sign on > 98.7% of coordinates).
Deterministic serial mode, population 100, tournament 4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the mechanics primitive set

from search import config as config_module  # noqa: E402
from search.engine import run  # noqa: E402

SPACES = {"mechanics": "mechanics_primitives:MECHANICS", "elementwise": "elementwise"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=6000)
    parser.add_argument("--space", default="mechanics", choices=sorted(SPACES))
    parser.add_argument("--set", action="append", default=[], help="a config override, e.g. evolution.plateau=300")
    args = parser.parse_args()
    overrides = ["evaluation.kind=behaviour", "evaluation.target=lion", "evolution.warm_start=adamw",
                 f"evolution.primitive_set={SPACES[args.space]}", "evolution.population=100",
                 "evolution.tournament=4", "evaluation.meta_every=0", "stop.target_score=-0.05",
                 f"stop.max_evals={args.budget}", "persistence.checkpoint_every=1000", "workers.serial=true",
                 "tracking.enabled=false", *args.set]
    found = []
    print(f"space {args.space}, budget {args.budget}\n\n| seed | evaluations | found | distance | seconds |")
    print("|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            start = time.perf_counter()
            config = config_module.load(None, overrides=overrides + [f"seed={seed}"])
            result = run(config, run_dir=Path(folder) / f"s{seed}")
            hit = result.stopped_by == "target_score"
            if hit:
                found.append(result.counters.evaluated)
            print(f"| {seed} | {result.counters.evaluated} | {'yes' if hit else 'no'} | {-result.best.score:.3f} | "
                  f"{time.perf_counter() - start:.0f} |")
    summary = f"median {statistics.median(found):.0f} evaluations when found" if found else "never found"
    print(f"\nfound in {len(found)} of {args.seeds} seeds; {summary}")


if __name__ == "__main__":
    main()
