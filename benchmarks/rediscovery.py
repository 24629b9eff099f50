"""Does the search rediscover Lion from AdamW on the real fitness? (Issue: the selection suite's rediscovery check.)

    python benchmarks/rediscovery.py [--seeds 2] [--minutes 20] [--workers 1] [--preset lion-space]
                                     [--json benchmarks/results/rediscovery.json]

Runs the preset (lion-space: warm start AdamW, the elementwise primitives,
the selection suite's cheap and full rungs) for `--minutes` of searching per
search seed, then reads every evaluated candidate back from its events and
measures its behavioural distance to Lion (0.9, 0.99) on the mechanics
benchmark's probe (search/evaluation.py BehaviourEvaluator: RMS-normalised
updates on a 24-step matrix probe; "Lion's behaviour" is a distance below
0.05, the same bar as benchmarks/mechanics.py). Reports per seed: candidates
evaluated, CPU-minutes of worker time, the best suite score and its program,
the closest candidate to Lion (distance, its score, after how many
candidates and CPU-minutes), and whether any reached the bar. The JSON is
rewritten after every seed. Whether Lion *should* win on this suite is for
the fidelity panel's targets to say (benchmarks/fidelity.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from primitives.files import atomic_write_text
from primitives.known import LION
from primitives.library import ALL
from primitives.serialize import from_dict
from search import config as config_module
from search.engine import run
from search.evaluation import BehaviourEvaluator
from search.run_store import RunStore

FOUND = 0.05  # behavioural distance counted as Lion's behaviour (benchmarks/mechanics.py)


def analyse(run_dir: Path, judge: BehaviourEvaluator) -> dict:
    rows, cpu = [], 0.0
    for event in RunStore(run_dir).read_events():
        if event.get("type") != "candidate":
            continue
        cpu += float(event.get("seconds") or 0.0)
        distance = -judge.evaluate(from_dict(event["program"], ALL)).score
        rows.append({"id": event["id"], "score": event["score"], "stage": event["stage"], "distance": distance,
                     "cpu_minutes": cpu / 60, "candidates": len(rows) + 1})
    if not rows:
        return {"candidates": 0}
    best = max(rows, key=lambda r: r["score"])
    closest = min(rows, key=lambda r: r["distance"])
    first = next((r for r in rows if r["distance"] < FOUND), None)
    return {"candidates": len(rows), "cpu_minutes": cpu / 60, "best": best, "closest": closest,
            "found": first is not None, "found_at": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--preset", default="lion-space")
    parser.add_argument("--json", default="benchmarks/results/rediscovery.json")
    parser.add_argument("--keep", default="", help="keep the run directories under this folder")
    args = parser.parse_args()
    judge = BehaviourEvaluator(LION, ALL)
    report = {"command": " ".join(sys.argv), "preset": args.preset, "minutes": args.minutes, "seeds": {}}
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rediscovery-"))
    for seed in range(args.seeds):
        start = time.perf_counter()
        config = config_module.load(args.preset, overrides=[
            "tracking.enabled=false", f"seed={seed}", f"workers.workers={args.workers}",
            f"stop.wall_time={args.minutes * 60}", "stop.max_evals=100000", "stop.final_seconds=0",
            "evaluation.meta_every=0"])
        run(config, run_dir=folder / f"seed{seed}")
        result = analyse(folder / f"seed{seed}", judge)
        result["wall_minutes"] = (time.perf_counter() - start) / 60
        report["seeds"][str(seed)] = result
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(report, indent=1), durable=False)
        closest = result.get("closest", {})
        print(f"seed {seed}: {result['candidates']} candidates, {result.get('cpu_minutes', 0):.1f} CPU-min, "
              f"best score {result.get('best', {}).get('score', float('nan')):+.2f}, closest to Lion "
              f"{closest.get('distance', float('nan')):.3f} (score {closest.get('score', float('nan')):+.2f}), "
              f"found: {result.get('found')}", flush=True)


if __name__ == "__main__":
    main()
