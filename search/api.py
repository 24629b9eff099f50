"""The Python front end: a search as an estimator, in the style of PySR's fit() and Optuna's study.

    from search import Search

    search = Search("quickstart", max_evals=50)      # a preset, then settings
    result = search.fit()                             # runs it: progress shown, MLflow tracked
    result.hall_of_fame                               # the Pareto front, best first (records)
    result.to_dataframe()                             # the same as a pandas DataFrame
    Search.resume("runs/quickstart-...", max_evals=100).fit()

Settings are the configuration's keys (search/config.py), either as
"section.key" strings or, for the common ones, as plain keywords: max_evals,
wall_time, workers, seed, population, run_id. Everything else a search does
is the engine's (search/engine.py); this only builds the configuration and
the observers a notebook or a script wants.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from search import config as config_module
from search import engine
from search.display import Display
from search.events import CacheHit, CandidateEvaluated, Event
from search.individual import Individual
from search.observers import Observer, Snapshot
from search.records import Counters

# Keywords for the settings people change most, and the key each one sets.
KEYWORDS = {"max_evals": "stop.max_evals", "wall_time": "stop.wall_time", "workers": "workers.workers",
            "seed": "seed", "population": "evolution.population", "run_id": "persistence.run_id",
            "run_dir": "persistence.run_dir", "strategy": "evolution.strategy", "device": "evaluation.device"}


@dataclasses.dataclass(frozen=True)
class Result:
    """What fit() returns: the run directory, the hall of fame, the counters, and why it stopped."""

    run_dir: Path
    hall_of_fame: list[Individual]  # ranked, best first
    best: Individual | None
    counters: Counters
    seconds: float
    stopped_by: str

    def to_dataframe(self):
        """The hall of fame as a pandas DataFrame, one row per member (pandas comes with MLflow)."""
        import pandas

        return pandas.DataFrame([{
            "id": m.id, "score": m.score, "held_out": m.held_out, "transfer": m.transfer,
            "complexity": m.complexity, "state_bytes": m.state_bytes, "state_buffers": m.state_buffers,
            "stage": str(m.stage),
            "mutation": m.mutation, "program": m.program.text(),
        } for m in self.hall_of_fame])


class Search:
    """Search(preset="quickstart", config_file=None, *, tracking=True, progress=True, **settings)."""

    def __init__(self, preset: str | None = "quickstart", config_file: str | Path | None = None, *,
                 tracking: bool = True, progress: bool | str = True, overrides: list[str] | None = None,
                 **settings: Any):
        unknown = [key for key in settings if key not in KEYWORDS and "." not in key]
        if unknown:
            raise config_module.ConfigError(f"unknown setting(s) {', '.join(unknown)}: use "
                                            f"{', '.join(KEYWORDS)}, or 'section.key' strings")
        items = [f"{KEYWORDS.get(key, key)}={_text(value)}" for key, value in settings.items()]
        if not tracking:
            items.append("tracking.enabled=false")
        self.config = config_module.load(preset, config_file, items + list(overrides or []))
        self.progress = progress
        self._resume: tuple[Path, list[str]] | None = None

    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool | str = True, **settings: Any) -> Search:
        """A stopped search, to continue with fit() (settings such as a larger max_evals apply)."""
        search = cls.__new__(cls)
        search.progress = progress
        search._resume = (Path(run_dir), [f"{KEYWORDS.get(k, k)}={_text(v)}" for k, v in settings.items()])
        search.config = None
        return search

    def observers(self, config) -> list[Observer]:
        from search.tracking import make_tracker

        tracker = make_tracker(config)
        shown = [] if not self.progress else [ProgressBar()] if _in_notebook() or self.progress == "bar" \
            else [Display()]
        return shown + ([tracker] if tracker is not None else [])

    def fit(self) -> Result:
        """Run the search to its budget (or wall time, target, Ctrl-C) and return what it found."""
        if self._resume is not None:
            run_dir, overrides = self._resume
            result = engine.resume(run_dir, overrides, observers_for=self.observers)
        else:
            result = engine.run(self.config, observers=self.observers(self.config))
        return Result(result.run_dir, result.hall_of_fame, result.best, result.counters, result.seconds,
                      result.stopped_by)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar(Observer):
    """A tqdm bar over the budget (tqdm.auto: a widget in notebooks), with the phase and the best score."""

    def __init__(self):
        self.bar = None

    def on_start(self, snapshot: Snapshot) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=snapshot.config.stop.max_evals, initial=snapshot.counters.evaluated,
                        desc=f"{snapshot.run_id} [starting]", unit="cand")

    def on_phase(self, phase: str, snapshot: Snapshot) -> None:
        self.bar.set_description(f"{snapshot.run_id} [{phase}]")

    def on_event(self, event: Event, snapshot: Snapshot) -> None:
        if isinstance(event, (CandidateEvaluated, CacheHit)):
            self.bar.n = snapshot.counters.evaluated
            self.bar.set_postfix(best=f"{snapshot.best_score:+.3f}", refresh=False)
            self.bar.refresh()

    def on_end(self, snapshot: Snapshot, stopped_by: str) -> None:
        self.bar.set_description(f"{snapshot.run_id} [stopped: {stopped_by}]")
        self.bar.close()
