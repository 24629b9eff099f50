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
