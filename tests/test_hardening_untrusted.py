"""Hardening of what reads and writes a run directory (issues 31 and 32).

A run directory may come from someone else (a tarball, a shared folder): what
is in it names no code to import, links no file of the user's into a write,
and hangs nothing; a damaged one is a one-line error (exit 2).
"""

from __future__ import annotations

import json
import os

import pytest


def _behaviour(*overrides):
    from search import config as config_module

    return config_module.load(None, overrides=[
        "tracking.enabled=false", "workers.serial=true", "evaluation.kind=behaviour", "evaluation.target=lion",
        "evolution.warm_start=adamw", "evolution.population=20", "evaluation.meta_every=0", *overrides])


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """The files of a finished tiny search (copied into each test's own folder)."""
    from search.engine import run

    folder = tmp_path_factory.mktemp("recorded") / "run"
    run(_behaviour("stop.max_evals=4", "persistence.checkpoint_every=2"), run_dir=folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "lock"}


@pytest.fixture
def run_dir(tmp_path, recorded_run):
    folder = tmp_path / "run"
    folder.mkdir()
    for name, data in recorded_run.items():
        (folder / name).write_bytes(data)
    return folder


def _cli(args, capsys):
    from search.cli import main

    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.name != "lock"}


# ---------------------------------------------------------------------------
# 1. No module named by a run directory is imported unless the user names it.


def test_resume_never_imports_a_plugin_named_in_config_json(tmp_path, run_dir, capsys, monkeypatch):
    (run_dir / "payload.py").write_text("open(__file__ + '.PWNED', 'w').close()\nX = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m search` run from the folder holding the run
    config = json.loads((run_dir / "config.json").read_text())
    for name in ("run.payload:X", "this:X"):
        config["evolution"]["primitive_set"] = name
        (run_dir / "config.json").write_text(json.dumps(config))
        before = _files(run_dir)
        for args in (["--dry-run"], ["--max-evals", "6"]):
            code, out, err = _cli(["resume", str(run_dir), *args], capsys)
            assert code == 2 and f"--primitive-set {name}" in err, err
            assert "Beautiful is better" not in out
            assert not (run_dir / "payload.py.PWNED").exists()
            assert _files(run_dir) == before
    # Naming another set than the run's is refused before anything is imported.
    code, _, err = _cli(["resume", str(run_dir), "--dry-run", "--primitive-set", "run.payload:Y"], capsys)
    assert code == 2 and "not 'run.payload:Y'" in err
    assert not (run_dir / "payload.py.PWNED").exists()


def test_resume_imports_the_plugin_the_user_names(tmp_path, run_dir, capsys, monkeypatch):
    (tmp_path / "user_plugin.py").write_text("from primitives.library import ALL as X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads((run_dir / "config.json").read_text())
    config["evolution"]["primitive_set"] = "user_plugin:X"
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checkpoint.json").unlink()  # its digest is of the old configuration
    code, out, err = _cli(["resume", str(run_dir), "--dry-run", "--primitive-set", "user_plugin:X"], capsys)
    assert code == 0 and "can be resumed" in out, err


# ---------------------------------------------------------------------------
# 2. Links and special files in a run directory are refused, never followed.


@pytest.fixture
def no_hang():
    """A test that would block (a FIFO read without end) fails after 20 s instead of hanging CI."""
    import signal

    def timeout(signum, frame):
        raise AssertionError("blocked on a special file")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_lock_that_links_to_a_users_file_is_refused_and_the_file_kept(tmp_path, run_dir, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's notes\n")
    os.symlink(victim, run_dir / "lock")
    before = _files(run_dir)
    code, _, err = _cli(["resume", str(run_dir), "--max-evals", "6"], capsys)
    assert code == 2 and "symbolic link" in err and err.count("\n") == 1, err
    assert victim.read_text() == "the user's notes\n"
    assert _files(run_dir) == before


@pytest.mark.parametrize("where", ["plots", "plots/progress.png", "plots/.progress.png.partial", "events.jsonl",
                                   "checkpoint.json", "hall_of_fame.json", "timings.jsonl", "tracking.json"])
def test_a_run_file_or_plots_folder_that_is_a_link_is_refused(tmp_path, run_dir, capsys, where):
    victim = tmp_path / "victim"
    if where == "plots":
        victim.mkdir()
    else:
        victim.write_bytes((run_dir / where).read_bytes() if (run_dir / where).is_file() else b"mine\n")
        (run_dir / "plots").mkdir(exist_ok=True)
        (run_dir / where).unlink(missing_ok=True)
    os.symlink(victim, run_dir / where)
    snapshot = victim.read_bytes() if victim.is_file() else sorted(os.listdir(victim))
    for args in (["resume", str(run_dir), "--dry-run"], ["resume", str(run_dir), "--max-evals", "6"],
                 ["show", str(run_dir)]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and str(run_dir / where) in err and err.count("\n") == 1, (args, err)
    assert (victim.read_bytes() if victim.is_file() else sorted(os.listdir(victim))) == snapshot


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "a folder", "too large"])
def test_events_that_are_a_fifo_a_device_or_too_large_are_refused_without_hanging(run_dir, capsys, monkeypatch,
                                                                                  no_hang, kind):
    from search import run_store

    events = run_dir / "events.jsonl"
    if kind != "too large":
        events.unlink()
    if kind == "fifo":
        os.mkfifo(events)
    elif kind == "/dev/zero":
        os.symlink("/dev/zero", events)
    elif kind == "a folder":
        events.mkdir()
    else:
        monkeypatch.setitem(run_store.MAX_BYTES, "events.jsonl", 100)
    for args in (["resume", str(run_dir), "--dry-run"], ["resume", str(run_dir), "--max-evals", "6"],
                 ["show", str(run_dir)], ["export", str(run_dir), "0", "--name", "Evil", "--out", str(run_dir / "x")]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and "events.jsonl" in err and err.count("\n") == 1, (args, err)


def test_a_hard_link_to_another_file_is_not_written(tmp_path, run_dir, capsys):
    from search.run_store import RunDirError, RunStore

    victim = tmp_path / "victim.jsonl"
    victim.write_bytes((run_dir / "events.jsonl").read_bytes())
    (run_dir / "events.jsonl").unlink()
    os.link(victim, run_dir / "events.jsonl")
    with pytest.raises(RunDirError, match="another hard link"):
        RunStore(run_dir).append_event({"seq": 0})


# ---------------------------------------------------------------------------
# 3. The lock holds for the holder's life, even if its lock file is removed.


def test_removing_the_lock_file_does_not_let_a_second_writer_in(run_dir, capsys):
    from search.engine import resume
    from search.run_store import RunDirError, RunStore

    holder = RunStore(run_dir)
    holder.acquire()
    try:
        (run_dir / "lock").unlink()
        with pytest.raises(RunDirError, match="in use by PID unknown"):
            RunStore(run_dir).acquire()
        before = _files(run_dir)
        code, _, err = _cli(["resume", str(run_dir), "--max-evals", "6"], capsys)
        assert code == 2 and "in use" in err
        assert _files(run_dir) == before
        (run_dir / "lock").write_text("12345\n")  # a new lock file is no way in either
        with pytest.raises(RunDirError, match="in use by PID 12345"):
            resume(run_dir, ["stop.max_evals=6"])
    finally:
        holder.release()
    second = RunStore(run_dir)
    second.acquire()  # free once the holder is gone
    second.release()


# ---------------------------------------------------------------------------
# 8. A tampered curve (or number) in a task's entry is refused where --dry-run sees it.


@pytest.mark.parametrize("value", ["abc", [[1.0]], {"a": 1}, [True, 1.0], ["1"], list(range(100_001))])
def test_a_tampered_curve_is_refused_by_dry_run_and_resume_alike(run_dir, capsys, value):
    path = run_dir / "events.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    task = next(iter(first["tasks"]))
    first["tasks"][task]["curve"] = value
    path.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    before = _files(run_dir)
    for args in (["--dry-run"], ["--max-evals", "6"]):
        code, _, err = _cli(["resume", str(run_dir), *args], capsys)
        assert code == 2 and "curve must be a list" in err and err.count("\n") == 1, err
    assert _files(run_dir) == before


def test_a_real_resume_draws_plots_from_valid_unusual_curves(run_dir, capsys):
    """Numbers the engine may write (NaN, infinities, a flat or empty curve) are kept and drawn."""
    from search.plots import loss_curves

    path = run_dir / "events.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    task = next(iter(first["tasks"]))
    first["tasks"][task]["curve"] = [float("nan"), float("inf"), -1.0, 0, 1e308]
    path.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    code, out, err = _cli(["resume", str(run_dir), "--dry-run"], capsys)
    assert code == 0, err
    assert loss_curves(first, {task: [1.0, 0.5]}, run_dir / "curves.png") is not None


# ---------------------------------------------------------------------------
# 7. What show prints from events: no terminal escapes, no spreadsheet formulas.

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31m\u202e\r"


def test_show_escapes_control_characters_and_quotes_formula_cells(run_dir, capsys):
    import csv
    import io

    path = run_dir / "events.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    candidates = [r for r in records if r["type"] == "candidate"]
    for record in candidates:
        record["mutation"] = "=cmd|' /C calc'!A0" + ESCAPES + "\nforged line"
        record["tasks"] = {"=HYPERLINK(\"http://x\")" + ESCAPES: {**entry, "score": -0.5, "lr": -1.0}
                           for entry in record["tasks"].values()}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "checkpoint.json").unlink()  # its summary holds the old events' hashes
    first = str(candidates[0]["id"])
    outputs = {}
    for args in ([], [first], ["--format", "csv"], [first, "--format", "csv"]):
        code, out, err = _cli(["show", str(run_dir), *args], capsys)
        assert code == 0, err
        assert not any(ch in out for ch in "\x1b\x07\r\u202e"), (args, out)
        outputs[tuple(args)] = out
    assert "\\x1b[2J" in outputs[()] and "\\x1b[2J" in outputs[(first,)]
    assert "\nforged line" not in outputs[(first,)]  # a one-line field stays one line
    rows = list(csv.DictReader(io.StringIO(outputs[(first, "--format", "csv")])))
    assert rows and all(row["task"].startswith("'=HYPERLINK") for row in rows)
    assert all(row["score"] == "-0.5" and row["lr"] == "-1.0" for row in rows)  # negative numbers stay numbers
    members = list(csv.DictReader(io.StringIO(outputs[("--format", "csv")])))
    assert members and all(row["mutation"].startswith("'=cmd") for row in members)
    code, out, _ = _cli(["show", str(run_dir), first, "--format", "json"], capsys)
    assert code == 0 and "\x1b" not in out and json.loads(out)["mutation"].startswith("=cmd|' /C calc'!A0\x1b")


@pytest.mark.parametrize("field,value", [("state", -1), ("inc", 2**200), ("state", "1"), ("bit_generator", "MT19937")])
def test_a_damaged_random_generator_state_is_refused_by_dry_run_and_resume_alike(run_dir, capsys, field, value):
    """Found by the fuzz tests: a negative integer in the state made every real resume end in a traceback."""
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    rng = checkpoint["rng"]
    (rng if field == "bit_generator" else rng["state"])[field] = value
    (run_dir / "checkpoint.json").write_text(json.dumps(checkpoint))
    before = _files(run_dir)
    for args in (["--dry-run"], ["--max-evals", "6"]):
        code, _, err = _cli(["resume", str(run_dir), *args], capsys)
        assert code == 2 and "random-generator state" in err and err.count("\n") == 1, err
    assert _files(run_dir) == before
