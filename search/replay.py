"""Reading a run back: its configuration, and its events replayed into a SearchState.

Used by `resume` (which then continues), `resume --dry-run`, `show` and
`export`. Every file is checked before anything in it is used: config.json
must be a complete configuration, every event must be one this version
writes, events must follow each other (seq 1, 2, 3, ...; a duplicated line
or a log spliced from another run is refused), and the state they rebuild
must be the one the checkpoint summarised when it was written (a log cut
shorter than the checkpoint says is refused). Nothing is written here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from primitives.primitive import PrimitiveSet
from primitives.program import ProgramError
from search import config as config_module
from search import events as events_module
from search.config import ConfigError, SearchConfig
from search.jobs import resolve_primitive_set
from search.records import finite_number
from search.run_store import RunDirError, RunStore
from search.state import SearchState, StateError


@dataclasses.dataclass
class RecordedRun:
    store: RunStore
    run_id: str
    config: SearchConfig
    primitive_set: PrimitiveSet
    state: SearchState
    checkpoint: dict[str, Any] | None  # None: no checkpoint was written yet


def read_config(store: RunStore, overrides: list[str] | None = None) -> tuple[str, SearchConfig]:
    """(run id, configuration) of a run directory, with overrides (a resume's) applied and checked."""
    saved = store.read_config()
    run_id = saved.get("run_id")
    if not isinstance(run_id, str) or not config_module.RUN_ID.match(run_id):
        raise RunDirError(f"{store.config_path} has no valid run_id")
    try:
        config = config_module.from_dict({k: v for k, v in saved.items() if k != "run_id"}, str(store.config_path))
        if overrides:
            config = config_module.merge(config, config_module.parse_overrides(overrides), "overrides").check()
    except ConfigError as exc:
        raise RunDirError(str(exc)) from None
    return run_id, config


def load(run_dir: str | Path, overrides: list[str] | None = None, primitive_set_name: str | None = None,
         trusted: bool = False, repair: bool = False) -> RecordedRun:
    """A run directory read back and checked (see the module docstring).

    A plugin primitive set is imported only when its name came from the user, not from
    the run directory: primitive_set_name (`--primitive-set`), or an override that sets
    evolution.primitive_set. A config.json received with a run could otherwise name any
    importable module ("this:X", a module planted beside it) and run it, --dry-run included.
    trusted: the caller vouches for the name in config.json (a program that made the run itself).
    repair: cut a torn last line from events.jsonl (resume does, holding the lock).
    """
    store = RunStore(run_dir)
    run_id, config = read_config(store, overrides)
    store.check_files()
    store.read_identity()  # damaged: refused here, where --dry-run sees it
    name = config.evolution.primitive_set
    if primitive_set_name is not None and primitive_set_name != name:
        raise RunDirError(f"the run used primitive set {name!r}, not {primitive_set_name!r}")
    named = primitive_set_name is not None or named_primitive_set(overrides) == name
    try:
        primitive_set = resolve_primitive_set(name, trusted=trusted or named)
    except ConfigError as exc:
        raise RunDirError(str(exc)) from None
    checkpoint = store.read_checkpoint(run_id, config.digest())
    if checkpoint is not None:
        _check_shape(checkpoint, store)
    state = SearchState(config, primitive_set)
    for line, record in store.read_records(repair=repair):
        try:
            _check_task_numbers(record)
            state.apply(events_module.from_dict(record))
        except (events_module.EventError, StateError, ProgramError) as exc:
            raise RunDirError(f"{store.events_path}, line {line}: {exc}; nothing was changed") from None
        if checkpoint is not None and state.seq == checkpoint["state"]["seq"]:
            _check_against(state, checkpoint, store)
    if checkpoint is not None and state.seq < checkpoint["state"]["seq"]:
        raise RunDirError(f"{store.events_path} ends at event {state.seq}, but {store.checkpoint_path} was "
                          f"written after event {checkpoint['state']['seq']}: the log was cut short or "
                          f"replaced; nothing was changed")
    return RecordedRun(store, run_id, config, primitive_set, state, checkpoint)


# What a task's entry in an event may hold besides its score (checked by search/events.py): numbers that plots,
# MLflow and show draw or format. A tampered entry must be refused here, where --dry-run sees it too, not
# found by the plots of every later resume.
TASK_NUMBERS = ("lr", "train_loss", "eval_loss", "carried_lr", "drift")
MAX_CURVE_POINTS = 100_000


def _number(value) -> bool:
    """A JSON number (NaN and infinities included: a diverged loss is one), not a bool."""
    return type(value) in (int, float)


def _check_task_numbers(record: dict[str, Any]) -> None:
    tasks = record.get("tasks")
    if not isinstance(tasks, dict):
        return  # events.from_dict says what is wrong with it
    for task, entry in tasks.items():
        if not isinstance(entry, dict):
            continue
        for key in TASK_NUMBERS:
            if entry.get(key) is not None and not _number(entry[key]):
                raise events_module.EventError(f"tasks[{task!r:.60}].{key} must be a number, got {entry[key]!r:.60}")
        curve = entry.get("curve")
        if curve is not None and not (type(curve) is list and len(curve) <= MAX_CURVE_POINTS
                                      and all(_number(v) for v in curve)):
            raise events_module.EventError(f"tasks[{task!r:.60}].curve must be a list of at most "
                                           f"{MAX_CURVE_POINTS} numbers, got {curve!r:.60}")


def named_primitive_set(overrides: list[str] | None) -> str | None:
    """The primitive set an override names (evolution.primitive_set=...), or None."""
    try:
        section = config_module.parse_overrides(list(overrides or [])).get("evolution")
    except ConfigError:
        return None
    return section.get("primitive_set") if isinstance(section, dict) else None


def _check_shape(checkpoint: dict[str, Any], store: RunStore) -> None:
    """The checkpoint's fields have the types this version writes (their values are checked against the events)."""
    state, elapsed = checkpoint.get("state"), checkpoint.get("elapsed")
    if not (isinstance(state, dict) and type(state.get("seq")) is int and isinstance(checkpoint.get("rng"), dict)
            and finite_number(elapsed) and elapsed >= 0):
        raise RunDirError(f"{store.checkpoint_path} is damaged (its state, random-generator state or elapsed time "
                          f"is missing or of the wrong type); nothing was changed")
    _check_rng(checkpoint["rng"], store)


def _check_rng(rng: dict[str, Any], store: RunStore) -> None:
    """The random generator's state is one numpy takes (set on a scratch generator, as resume will set it).

    Checked here, where --dry-run sees it: numpy refuses a bad state with TypeError, ValueError,
    KeyError or OverflowError (a negative or too large integer), and a resume must not find out later.
    """
    import numpy as np

    try:
        np.random.default_rng(0).bit_generator.state = rng
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise RunDirError(f"{store.checkpoint_path}: damaged random-generator state ({exc}); "
                          f"nothing was changed") from None


def _check_against(state: SearchState, checkpoint: dict[str, Any], store: RunStore) -> None:
    summary = state.summary()
    if checkpoint.get("state") != summary:
        saved = checkpoint.get("state")
        differ = sorted(k for k in summary if not isinstance(saved, dict) or saved.get(k) != summary[k])
        raise RunDirError(f"{store.events_path} and {store.checkpoint_path} disagree ({', '.join(differ)} "
                          f"after event {state.seq}); nothing was changed")
