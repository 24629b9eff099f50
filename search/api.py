"""The Python front end: a search as an estimator, in the style of PySR's fit() and Optuna's study.

    from search import Search

    search = Search("quickstart", max_evals=50)      # a preset, then settings
    result = search.fit()                             # runs it: progress shown, MLflow tracked
    result.hall_of_fame                               # the rules that beat AdamW, best first (records)
    result.to_dataframe()                             # the same as a pandas DataFrame, with their formulas
    result.candidates()                               # every candidate, as Optuna's trials_dataframe()
    Search.resume("runs/quickstart-...", max_evals=100).fit()
    Result.load("runs/quickstart-...")                # a finished (or stopped) run, read back

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
from primitives.serialize import from_dict, to_dict
from search.individual import Individual
from search.observers import Observer, Snapshot
from search.records import Counters, finite_number

# Keywords for the settings people change most, and the key each one sets.
KEYWORDS = {"max_evals": "stop.max_evals", "wall_time": "stop.wall_time", "workers": "workers.workers",
            "seed": "seed", "population": "evolution.population", "run_id": "persistence.run_id",
            "run_dir": "persistence.run_dir", "strategy": "evolution.strategy", "device": "evaluation.device"}


@dataclasses.dataclass(frozen=True)
class Result:
    """What fit() returns, or Result.load(run_dir) reads back: the run directory, the hall of fame, the
    counters, and why it stopped ("" when read back: a run directory does not record it)."""

    run_dir: Path
    hall_of_fame: list[Individual]  # ranked, best first
    best: Individual | None
    counters: Counters
    seconds: float
    stopped_by: str
    # The primitive set the run used, by name: a plugin's is imported to read the programs back only
    # when it came from the user (fit()'s configuration, or load()'s primitive_set), never from the run.
    primitive_set: str | None = None

    @classmethod
    def load(cls, run_dir: str | Path, primitive_set: str | None = None) -> Result:
        """A run directory read back as `optsearch show` reads it (search/replay.py over search/run_store.py:
        JSON checked field by field, nothing evaluated or unpickled); a damaged one is a RunDirError.

        primitive_set: the name of a plugin primitive set the run used (--primitive-set), if any.
        """
        from search import replay

        recorded = replay.load(run_dir, primitive_set_name=primitive_set, trusted=False)
        elapsed = (recorded.checkpoint or {}).get("elapsed")
        # The set's name as the run recorded it: a plugin's got this far only if the caller named it.
        return cls(Path(run_dir), recorded.state.hall_of_fame.ranked(), recorded.state.best(),
                   recorded.state.counters, float(elapsed) if finite_number(elapsed) else 0.0, "",
                   recorded.config.evolution.primitive_set)

    def to_dataframe(self):
        """The hall of fame as a pandas DataFrame, one row per member (pandas comes with MLflow)."""
        import pandas

        formulas = _Formulas(self._primitive_set())
        return pandas.DataFrame([{
            "id": m.id, "score": m.score, "held_out": m.held_out, "transfer": m.transfer,
            "complexity": m.complexity, "state_bytes": m.state_bytes, "state_buffers": m.state_buffers,
            "stage": str(m.stage), "mutation": m.mutation,
            **formulas.of(m.structural_hash, to_dict(m.program)), "program": m.program.text(),
        } for m in self.hall_of_fame])

    def candidates(self):
        """Every candidate of the run as a pandas DataFrame, one row per id (as Optuna's trials_dataframe()).

        Columns: id, same_as (a behavioural cache hit: the candidate whose scores it shares), status,
        stage, score, held_out, transfer, complexity, mutation, parent, structural_hash, formula and
        latex (the simplified update rule, "" where SymPy has none), program, then score_<task> for
        every task the suite scored. Read from the run directory as Result.load() reads it.
        """
        import pandas

        from primitives.analysis import complexity
        from search import replay

        recorded = replay.load(self.run_dir, primitive_set_name=self.primitive_set, trusted=False)
        events = recorded.store.read_events()
        by_id = {e["id"]: e for e in events if e["type"] in ("candidate", "cache_hit")}
        later = {(e["type"], e["id"]): e["score"] for e in events if e["type"] in ("held_out", "transfer")}
        formulas = _Formulas(recorded.primitive_set)
        rows, tasks = [], {}
        for id_, event in sorted(by_id.items()):
            scored = by_id.get(event["same_as"], event) if event["type"] == "cache_hit" else event
            program = from_dict(event["program"], recorded.primitive_set)
            per_task = {f"score_{task}": entry.get("score") for task, entry in scored.get("tasks", {}).items()}
            tasks.update(dict.fromkeys(per_task))
            rows.append({
                "id": id_, "same_as": event.get("same_as"), "status": scored.get("status", ""),
                "stage": event["stage"], "score": event["score"],
                "held_out": later.get(("held_out", scored["id"])), "transfer": later.get(("transfer", scored["id"])),
                "complexity": complexity(program, recorded.primitive_set), "mutation": event["mutation"],
                "parent": event["parent"], "structural_hash": event["structural_hash"],
                **formulas.of(event["structural_hash"], event["program"]), "program": program.text(), **per_task,
            })
        columns = list(CANDIDATE_COLUMNS) + list(tasks)
        return pandas.DataFrame(rows, columns=columns)

    def _primitive_set(self):
        from search.jobs import resolve_primitive_set

        return resolve_primitive_set(self.primitive_set or "all", trusted=True)


CANDIDATE_COLUMNS = ("id", "same_as", "status", "stage", "score", "held_out", "transfer", "complexity", "mutation",
                     "parent", "structural_hash", "formula", "latex", "program")


class _Formulas:
    """The simplified update rule of each program, once per structure (SymPy takes a while per program)."""

    def __init__(self, primitive_set):
        self.primitive_set = primitive_set
        self.known: dict[str, dict[str, str]] = {}

    def of(self, structural_hash: str, program_dict: dict) -> dict[str, str]:
        from primitives.simplify import formulas_of_dict

        if structural_hash not in self.known:
            latex, text = formulas_of_dict(program_dict, self.primitive_set)
            # One line for a table cell: "u = sign(m); m <- ..."
            self.known[structural_hash] = {"formula": "; ".join(text.splitlines()), "latex": latex}
        return self.known[structural_hash]


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
        config = self.config if self._resume is None else None
        return Result(result.run_dir, result.hall_of_fame, result.best, result.counters, result.seconds,
                      result.stopped_by, _primitive_set_name(config, result.run_dir))


def _primitive_set_name(config, run_dir: Path) -> str | None:
    """The primitive set this process used for the run (the user's own choice, so trusted), by name."""
    if config is None:
        from search import replay
        from search.run_store import RunStore

        config = replay.read_config(RunStore(run_dir))[1]
    return config.evolution.primitive_set


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
