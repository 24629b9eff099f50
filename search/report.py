"""`optsearch show`: a run's statistics and hall of fame, read from its directory."""

from __future__ import annotations

import collections
from pathlib import Path

from search.display import hall_of_fame_text
from search.individual import Individual
from search.jobs import resolve_primitive_set
from search.run_store import RunStore


def summary(run_dir: str | Path, primitive_set_name: str | None = None) -> str:
    store = RunStore(run_dir)
    config = store.read_config()
    events = store.read_events()
    candidates = [e for e in events if e["type"] == "candidate"]
    hits = [e for e in events if e["type"] == "cache_hit"]
    statuses = collections.Counter(e["status"] for e in candidates)
    stages = collections.Counter(e["stage"] for e in candidates)
    lines = [
        f"run {config.get('run_id', Path(run_dir).name)} (preset {config.get('preset')}, seed {config.get('seed')})",
        f"  candidates evaluated {len(candidates)} of {config['stop']['max_evals']}; behavioural cache hits {len(hits)}",
        "  status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        "  stage reached: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())),
    ]
    scored = [e for e in candidates if e["status"] not in ("error", "timeout", "crashed")]
    if scored:
        best = max(scored, key=lambda e: e["score"])
        lines.append(f"  best score {best['score']:+.3f} (#{best['id']}, {best['mutation']})")
    primitive_set = resolve_primitive_set(config["evolution"]["primitive_set"], trusted=primitive_set_name is not None)
    checkpoint = store.read_checkpoint(config.get("run_id", Path(run_dir).name), _digest(config))
    if checkpoint is not None:
        members = [Individual.from_dict(m, primitive_set) for m in checkpoint["hall_of_fame"]]
        members.sort(key=lambda m: (-m.score, m.complexity, m.state_buffers, m.id))
        counters = checkpoint["counters"]
        lines.append(f"  generated {counters['generated']}, invalid {counters['invalid']}, structural cache hits "
                     f"{counters['structural_hits']}, failed {counters['failed']}, restarts {counters['restarts']}")
        lines.append(hall_of_fame_text(members))
    else:
        lines.append("  (no checkpoint yet: hall of fame not available)")
    return "\n".join(lines)


def _digest(config: dict) -> str:
    from search import config as config_module

    data = {k: v for k, v in config.items() if k != "run_id"}
    return config_module.from_dict(data).digest()
