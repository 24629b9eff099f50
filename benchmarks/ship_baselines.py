"""Write the AdamW baselines that ship with the package (proxy_tasks/baselines.json).

    python benchmarks/ship_baselines.py [--presets quickstart,lion-space,matrix-space] [--out proxy_tasks/baselines.json]

For each preset (its default configuration, CPU), every baseline its search
asks for before the first candidate: AdamW tuned on each cheap, full and
held-out task, and at the transfer stage's scale. Entries already in the
user's cache (~/.cache/optsearch/baselines.json) under the same key are
copied (the key names the task version and settings, seeds, device,
protocol and baseline class, so a copy is the same computation); the rest
are tuned here, one after another. Run it again whenever a task, the tuning
protocol or a preset's seeds change: tests/test_selection_suite.py checks
that the quickstart's keys are all shipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from primitives.library import ALL
from proxy_tasks.scoring import BaselineCache, default_cache_path, entry_of
from search import config as config_module
from search.evaluation import ProxyTaskEvaluator

HERE = Path(__file__).resolve().parents[1]


def ship(preset: str, out: BaselineCache, user: BaselineCache) -> None:
    config = config_module.load(preset, overrides=["tracking.enabled=false"])
    evaluator = ProxyTaskEvaluator(config, ALL, None)
    evaluator.baselines = out
    if evaluator.transfer is not None:
        evaluator.transfer.baselines = out
    for task in evaluator.all_tasks:
        key = out.key(task, evaluator.seeds, evaluator.device, evaluator.protocol)
        known = user.get(task, evaluator.seeds, evaluator.device, evaluator.protocol)
        start = time.perf_counter()
        out.put_entry(key, entry_of(known) if known is not None else
                      {k: v for k, v in evaluator.baseline(task.name).items() if k != "task"})
        print(f"{preset}: {task.name} ({'copied' if known else f'{time.perf_counter() - start:.0f} s'})", flush=True)
    if evaluator.transfer is not None:
        for name in evaluator.transfer.missing_baselines():
            start = time.perf_counter()
            entry = evaluator.transfer.baseline(name)
            out.put_entry(evaluator.transfer.baseline_key(name), {k: v for k, v in entry.items() if k != "task"})
            print(f"{preset}: {name} at the transfer scale ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="quickstart,lion-space,matrix-space")
    parser.add_argument("--out", type=Path, default=HERE / "proxy_tasks" / "baselines.json")
    args = parser.parse_args()
    out = BaselineCache(args.out, shipped=None)
    user = BaselineCache(default_cache_path(), shipped=None)
    for preset in args.presets.split(","):
        ship(preset, out, user)


if __name__ == "__main__":
    main()
