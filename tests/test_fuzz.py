"""Fuzzing what users and runs write: program JSON, config TOML, run-directory files.

Whatever the input, a command ends with exit status 0 (it was fine) or 2 (a
clear one-line error), never a traceback, and never changes a run directory
it only reads (show, export, resume --dry-run). A real resume of a damaged run
(a tampered value or curve, a link or a special file planted in it) also ends
with 0 or 2, and writes nothing through a link into a file outside the run. Hypothesis runs with a fixed
seed (tests/conftest.py's profile), so CI sees the same cases every time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from primitives.known import KNOWN_PROGRAMS
from primitives.serialize import to_dict
from search.cli import main

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 25)), deadline=None, suppress_health_check=list(HealthCheck))

# Values that break things: wrong types, huge and non-finite numbers, deep nesting, quotes and code.
NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**400, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["'''", '"""', "__import__('os').system('date')", "../../etc", "\x00", "1e999", "-1", "nan"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated(draw, document):
    """`document` with one value (anywhere in it) replaced by a nasty one, or one key dropped."""
    paths = list(_paths(document))
    path = draw(st.sampled_from(paths))
    if path and draw(st.booleans()) and isinstance(_get(document, path[:-1]), dict):
        parent = dict(_get(document, path[:-1]))
        parent.pop(path[-1])
        return _replace(document, path[:-1], parent)
    return _replace(document, path, draw(NASTY))


def _get(value, path):
    for key in path:
        value = value[key]
    return value


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


def _ok(code: int, capsys) -> None:
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    if code == 2:
        assert err.strip().count("\n") <= 4, err  # a short message, not a dump


# --- program files -----------------------------------------------------------------

PROGRAMS = [to_dict(KNOWN_PROGRAMS[name]) for name in ("lion", "adamw", "muon")]


@FUZZ
@given(st.sampled_from(PROGRAMS).flatmap(mutated))
def test_fuzzed_program_files_get_a_clear_answer(tmp_path_factory, capsys, program):
    folder = tmp_path_factory.mktemp("program")
    path = folder / "program.json"
    path.write_text(_dump(program))
    _ok(main(["simplify", str(path)]), capsys)
    _ok(main(["export", str(path), "--name", "Fuzzed", "--out", str(folder / "out")]), capsys)


@FUZZ
@given(st.text(max_size=200) | st.just("[" * 100_000) | st.just('{"a":' * 50_000))
def test_arbitrary_text_as_a_program_file_gets_a_clear_answer(tmp_path_factory, capsys, text):
    path = tmp_path_factory.mktemp("program") / "program.json"
    path.write_text(text)
    _ok(main(["simplify", str(path)]), capsys)


# --- configuration files -----------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


SECTIONS = {"evolution": ["population", "tournament", "warm_start", "primitive_set", "strategy", "plateau"],
            "evaluation": ["seeds", "hurdle", "timeout", "step_fraction", "device", "select_on", "kind"],
            "workers": ["workers", "memory_gb", "serial"], "stop": ["max_evals", "wall_time", "target_score"],
            "persistence": ["run_id", "checkpoint_every"], "tracking": ["enabled", "uri"], "bogus": ["key"]}


@st.composite
def toml_documents(draw):
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3, unique=True)):
            value = draw(st.one_of(st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.text(max_size=10),
                                   st.lists(st.integers(), max_size=2)))
            lines.append(f"{key} = {_toml_value(value)}")
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["seed = -1", "seed = 3", "preset = 5", "x = [", "\x00\xff"])))
    return "\n".join(lines) + "\n"


@FUZZ
@given(toml_documents())
def test_fuzzed_config_files_get_a_clear_answer(tmp_path_factory, capsys, document):
    path = tmp_path_factory.mktemp("config") / "search.toml"
    path.write_text(document, encoding="utf-8", errors="surrogateescape")
    _ok(main(["run", "--preset", "smoke", "--config", str(path), "--dry-run"]), capsys)


def test_a_binary_config_file_gets_a_clear_answer(tmp_path, capsys):
    path = tmp_path / "search.toml"
    path.write_bytes(bytes(range(256)) * 4)
    _ok(main(["run", "--config", str(path), "--dry-run"]), capsys)


# --- run directories ---------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from search import config as config_module
    from search.engine import run

    folder = tmp_path_factory.mktemp("run") / "run"
    run(config_module.load(None, overrides=[
        "tracking.enabled=false", "workers.serial=true", "evaluation.kind=behaviour", "evolution.warm_start=adamw",
        "evolution.population=8", "evaluation.meta_every=4", "stop.max_evals=12",
        "persistence.checkpoint_every=5"]), run_dir=folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _write_run(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)


# What plots, MLflow and show read from a task's entry: its loss curve and numbers.
CURVES = st.one_of(NASTY, st.lists(NASTY, max_size=4), st.lists(st.floats(), max_size=4))


@st.composite
def damaged_runs(draw, files):
    """The finished run with one of its JSON files changed: a value replaced, a record dropped or repeated,
    or a task's curve or number tampered with."""
    name = draw(st.sampled_from(["config.json", "checkpoint.json", "events.jsonl"]))
    files = dict(files)
    if name == "events.jsonl":
        records = [json.loads(line) for line in files[name].decode().splitlines()]
        index = draw(st.integers(0, len(records) - 1))
        action = draw(st.sampled_from(["mutate", "drop", "repeat", "truncate", "curve"]))
        with_tasks = [i for i, r in enumerate(records) if isinstance(r.get("tasks"), dict) and r["tasks"]]
        if action == "curve" and with_tasks:
            record = records[draw(st.sampled_from(with_tasks))]
            task = draw(st.sampled_from(sorted(record["tasks"])))
            key = draw(st.sampled_from(["curve", "curve", "lr", "train_loss", "eval_loss"]))
            record["tasks"][task] = {**record["tasks"][task], key: draw(CURVES)}
        elif action == "mutate":
            records[index] = draw(mutated(records[index]))
        elif action == "drop":
            records.pop(index)
        elif action == "repeat":
            records.insert(index, records[index])
        else:
            records = records[:index]
        files[name] = "".join(_dump(r) + "\n" for r in records).encode()
    else:
        files[name] = _dump(draw(mutated(json.loads(files[name])))).encode()
    return files


@pytest.mark.e2e
@FUZZ
@given(st.data())
def test_fuzzed_run_directories_are_read_or_refused_and_never_changed(tmp_path_factory, capsys, finished_run, data):
    files = data.draw(damaged_runs(finished_run))
    folder = tmp_path_factory.mktemp("fuzzed") / "run"
    _write_run(folder, files)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _ok(main(["show", str(folder)]), capsys)
    _ok(main(["resume", str(folder), "--dry-run"]), capsys)
    _ok(main(["export", str(folder), "0", "--name", "Fuzzed", "--out", str(folder.parent / "out")]), capsys)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --- a real resume, and links or special files planted in a run directory -------------------------------

# Each example searches: 10 keep CI short (FUZZ_RESUME_EXAMPLES=500 to explore).
FUZZ_RESUME = settings(FUZZ, max_examples=int(__import__("os").environ.get("FUZZ_RESUME_EXAMPLES", 10)))
# A damaged config.json may turn tracking on, or name a store: a resume in a test tracks nowhere (the tracking
# section is not part of what the search is, so this changes nothing else), and runs from a folder of its own.
UNTRACKED = ["--tracking.enabled=false"]
PLANTED = ["config.json", "events.jsonl", "checkpoint.json", "hall_of_fame.json", "lock", "timings.jsonl",
           "tracking.json", "identity.json", "plots", "plots/progress.png", "plots/.pareto.png.partial"]
ATTACKS = ["link to a file of the user's", "link to a folder of the user's", "link to /dev/zero", "dangling link",
           "FIFO", "folder", "hard link to a file of the user's"]


@pytest.fixture
def no_hang():
    """A command that would block (a FIFO read without end) fails the test after 60 s instead of hanging CI."""
    import signal

    def timeout(signum, frame):
        raise AssertionError("blocked on a special file")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """A working folder of the test's own: whatever a resume writes by a relative name lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _plant(folder: Path, victim: Path, name: str, attack: str) -> None:
    import os

    path = folder / name
    path.parent.mkdir(exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        path.rmdir() if not any(path.iterdir()) else None
    if path.exists() or path.is_symlink():
        path.unlink()
    if attack == "link to a file of the user's":
        os.symlink(victim / "notes.txt", path)
    elif attack == "link to a folder of the user's":
        os.symlink(victim, path)
    elif attack == "link to /dev/zero":
        os.symlink("/dev/zero", path)
    elif attack == "dangling link":
        os.symlink(victim / "nothing-here", path)
    elif attack == "FIFO":
        os.mkfifo(path)
    elif attack == "folder":
        path.mkdir()
    else:
        os.link(victim / "notes.txt", path)


def _victim(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's notes\n")
    return folder


def _untouched(victim: Path) -> bool:
    return sorted(p.name for p in victim.iterdir()) == ["notes.txt"] and \
        (victim / "notes.txt").read_text() == "the user's notes\n"


@pytest.mark.e2e
@FUZZ_RESUME
@given(st.data())
def test_a_real_resume_of_a_damaged_run_ends_cleanly(tmp_path_factory, capsys, finished_run, no_hang, cwd, data):
    files = data.draw(damaged_runs(finished_run))
    folder = tmp_path_factory.mktemp("resumed") / "run"
    _write_run(folder, files)
    _ok(main(["resume", str(folder), "--max-evals", "14", *UNTRACKED]), capsys)


@pytest.mark.e2e
@FUZZ_RESUME
@given(st.sampled_from(["curve", "lr", "train_loss", "eval_loss"]), CURVES)
@example("curve", "abc")
@example("curve", [[1.0]])
@example("curve", [None, 1.0])
@example("curve", [float("nan"), float("inf")])  # numbers the engine may write: kept
@example("lr", "0.1")
def test_a_real_resume_after_a_tampered_task_entry_ends_cleanly(tmp_path_factory, capsys, finished_run, cwd, key,
                                                                 value):
    files = dict(finished_run)
    records = [json.loads(line) for line in files["events.jsonl"].decode().splitlines()]
    for record in records:  # every candidate's: the best one's is what plots draw
        for entry in (record.get("tasks") or {}).values():
            entry[key] = value
    files["events.jsonl"] = "".join(_dump(r) + "\n" for r in records).encode()
    folder = tmp_path_factory.mktemp("tampered") / "run"
    _write_run(folder, files)
    code = main(["resume", str(folder), "--dry-run"])
    _ok(code, capsys)
    _ok(main(["resume", str(folder), "--max-evals", "14", *UNTRACKED]), capsys)


@pytest.mark.e2e
@FUZZ_RESUME
@given(st.sampled_from(PLANTED), st.sampled_from(ATTACKS))
@example("lock", "link to a file of the user's")
@example("events.jsonl", "link to /dev/zero")
@example("events.jsonl", "FIFO")
@example("plots", "link to a folder of the user's")
@example("plots/progress.png", "link to a file of the user's")
@example("plots/.pareto.png.partial", "hard link to a file of the user's")
@example("timings.jsonl", "link to a file of the user's")
def test_links_and_special_files_in_a_run_directory_are_refused(tmp_path_factory, capsys, finished_run, no_hang, cwd,
                                                                 name, attack):
    base = tmp_path_factory.mktemp("planted")
    victim = _victim(base / "users")
    folder = base / "run"
    _write_run(folder, finished_run)
    _plant(folder, victim, name, attack)
    for args in (["show", str(folder)], ["resume", str(folder), "--dry-run"],
                 ["export", str(folder), "0", "--name", "Fuzzed", "--out", str(base / "out")],
                 ["resume", str(folder), "--max-evals", "14", *UNTRACKED]):
        _ok(main(args), capsys)
        assert _untouched(victim), (args, name, attack)
