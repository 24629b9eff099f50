"""What MLflow tracking costs a search: per candidate, and as a share of a smoke search.

    python benchmarks/tracking_overhead.py [--runs 3]

The smoke preset in deterministic serial mode, run alternately without and
with tracking to a fresh SQLite store (MLflow's default), same seed. The
store's first-time creation is reported separately: it happens once per
store, not per search.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from search import config as config_module
from search.engine import run
from search.tracking import MlflowTracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        overrides = ["workers.serial=true", f"evaluation.baseline_cache={folder / 'baselines.json'}",
                     "stop.max_evals=20"]
        config = config_module.load("smoke", overrides=overrides + ["tracking.enabled=false"])
        run(config, run_dir=folder / "warm")  # baselines, computed once
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        start = time.perf_counter()
        MlflowTracker(uri)._guard("create", lambda: __import__("mlflow").tracking.MlflowClient(uri).search_experiments())
        creation = time.perf_counter() - start
        plain, tracked, tracking, candidates = [], [], [], 0
        for i in range(args.runs):
            start = time.perf_counter()
            run(config, run_dir=folder / f"plain{i}")
            plain.append(time.perf_counter() - start)
            tracker = MlflowTracker(uri)
            start = time.perf_counter()
            result = run(config, run_dir=folder / f"tracked{i}", observers=[tracker])
            tracked.append(time.perf_counter() - start)
            tracking.append(tracker.seconds)
            candidates = result.counters.evaluated
    print(f"smoke preset, serial, {candidates} candidates per search, median of {args.runs} runs each\n")
    print("| | seconds |\n|---|---:|")
    print(f"| search without tracking | {statistics.median(plain):.2f} |")
    print(f"| search with tracking | {statistics.median(tracked):.2f} |")
    print(f"| time inside the tracker | {statistics.median(tracking):.2f} |")
    print(f"| per candidate (time inside the tracker / candidates) | {statistics.median(tracking) / candidates:.3f} |")
    print(f"| share of the tracked search | {statistics.median(tracking) / statistics.median(tracked):.1%} |")
    print(f"| creating the SQLite store (once per store) | {creation:.2f} |")


if __name__ == "__main__":
    main()
