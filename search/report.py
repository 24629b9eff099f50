"""`optsearch show`: a run's statistics and hall of fame, read from its directory (nothing is written)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from search import replay
from search.display import hall_of_fame_text
from search.records import FAILED


def summary(run_dir: str | Path, primitive_set_name: str | None = None) -> dict[str, Any]:
    """What `show` prints, as data: the run, its counters and its ranked hall of fame."""
    recorded = replay.load(run_dir, primitive_set_name=primitive_set_name, trusted=False)
    state, config = recorded.state, recorded.config
    candidates = [r for r in recorded.store.read_events() if r["type"] == "candidate"]
    scored = [e for e in candidates if e["status"] not in FAILED]
    best = max(scored, key=lambda e: e["score"]) if scored else None
    return {
        "run": recorded.run_id, "preset": config.preset, "seed": config.seed,
        "evaluated": state.counters.evaluated, "max_evals": config.stop.max_evals,
        "counters": state.counters.to_dict(), "cache_hit_rate": state.counters.cache_hit_rate,
        "status": dict(sorted(collections.Counter(e["status"] for e in candidates).items())),
        "stage": dict(sorted(collections.Counter(e["stage"] for e in candidates).items())),
        "best": None if best is None else {"id": best["id"], "score": best["score"], "mutation": best["mutation"]},
        "hall_of_fame": state.hall_of_fame.ranked(),
    }


def text(report: dict[str, Any]) -> str:
    c = report["counters"]
    lines = [
        f"run {report['run']} (preset {report['preset']}, seed {report['seed']})",
        f"  candidates evaluated {report['evaluated']} of {report['max_evals']}; behavioural cache hits "
        f"{c['fingerprint_hits']}",
        "  status: " + ", ".join(f"{k} {v}" for k, v in report["status"].items()),
        "  stage reached: " + ", ".join(f"{k} {v}" for k, v in report["stage"].items()),
    ]
    if report["best"] is not None:
        best = report["best"]
        lines.append(f"  best score {best['score']:+.3f} (#{best['id']}, {best['mutation']})")
    lines.append(f"  generated {c['generated']}, invalid {c['invalid']}, structural cache hits "
                 f"{c['structural_hits']}, failed {c['failed']}, restarts {c['restarts']}")
    lines.append(hall_of_fame_text(report["hall_of_fame"]))
    return "\n".join(lines)
