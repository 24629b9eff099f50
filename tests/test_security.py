"""Regression tests for what a hostile or careless user did to break things (issue 14).

Each test plants the attack or the bad input and checks that it is refused
clearly, or survived, and that nothing already recorded changed.
"""

from __future__ import annotations

import pytest
import torch

from discovered.registry import REGISTRY, OptimizerInfo
from proxy_tasks.optimizers import baseline_spec, parse_optimizer
from proxy_tasks.registry import get_task
from proxy_tasks.scoring import BaselineCache
from proxy_tasks.tuning import TuningProtocol
from search.export import ExportError, check_name


# ---------------------------------------------------------------------------
# An export named like a torch optimizer must not replace the baseline.


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Adam", "SGDM", "Muon", "Lion"])
def test_an_export_may_not_take_a_name_bench_or_scoring_resolves(tmp_path, name):
    with pytest.raises(ExportError, match="shadow|already an optimizer|reserved"):
        check_name(name, tmp_path, force=True)


def test_the_baseline_is_torch_adamw_even_if_something_registered_that_name(monkeypatch):
    class Impostor(torch.optim.SGD):
        pass

    monkeypatch.setitem(REGISTRY, "AdamW", OptimizerInfo("AdamW", Impostor, {"lr": 1e-3}, source="exported"))
    assert parse_optimizer("AdamW").factory is torch.optim.AdamW
    assert baseline_spec().factory is torch.optim.AdamW
    assert parse_optimizer("AdamW:weight_decay=0").factory is torch.optim.AdamW
    key = BaselineCache.key(get_task("quadratic"), (0,), "cpu", TuningProtocol())
    assert key.endswith("baseline=torch.optim.adamw.AdamW")


# ---------------------------------------------------------------------------
# One process at a time in a run directory.


def _behaviour(*overrides):
    from search import config as config_module

    return config_module.load(None, overrides=[
        "tracking.enabled=false", "workers.serial=true", "evaluation.kind=behaviour", "evaluation.target=lion",
        "evolution.warm_start=adamw", "evolution.population=20", "evaluation.meta_every=0", *overrides])


@pytest.mark.e2e
def test_a_second_resume_of_a_run_in_use_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from search.engine import resume, run
    from search.run_store import RunDirError, RunStore

    run_dir = tmp_path / "run"
    run(_behaviour("stop.max_evals=10"), run_dir=run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-m", "search", "resume", str(run_dir), "--max-evals", "1000000",
         "--stop.wall_time=120"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(RunStore(run_dir).read_events()) < 40:
            time.sleep(0.1)
        assert holder.poll() is None, holder.stderr.read().decode()
        before = (run_dir / "events.jsonl").read_bytes()
        with pytest.raises(RunDirError, match=f"in use by PID {holder.pid}"):
            resume(run_dir, ["stop.max_evals=2000000"])
        assert (run_dir / "events.jsonl").read_bytes().startswith(before)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    recorded = [e for e in RunStore(run_dir).read_events() if e["type"] == "candidate"]
    result = resume(run_dir, [f"stop.max_evals={len(recorded) + 5}"])  # the stale lock is free again
    assert result.counters.evaluated == len(recorded) + 5
    assert (run_dir / "lock").read_text().strip() == str(os.getpid())


def test_files_a_run_writes_follow_the_umask(tmp_path):
    import os

    from search.engine import run

    previous = os.umask(0o022)
    try:
        run(_behaviour("stop.max_evals=12", "persistence.checkpoint_every=5"), run_dir=tmp_path / "run")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert {"config.json", "checkpoint.json", "events.jsonl"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


# ---------------------------------------------------------------------------
# Nothing from a run directory runs: a crafted events.jsonl planted into every field export reads.

PAYLOAD = "''',__import__('os').system('date >> PWNED'),'''#"
QUOTES = '"""\'\'\'\\'


def _tiny_run(run_dir):
    from search.engine import run

    run(_behaviour("stop.max_evals=4"), run_dir=run_dir)


def _edit_event(run_dir, change):
    import json

    path = run_dir / "events.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    change(first)
    lines[0] = json.dumps(first)
    path.write_text("\n".join(lines) + "\n")


TAMPERING = {
    "structural_hash": lambda e: e.update(structural_hash=PAYLOAD),
    "fingerprint": lambda e: e.update(fingerprint=QUOTES),
    "mutation": lambda e: e.update(mutation=PAYLOAD + QUOTES),
    "reason": lambda e: e.update(reason=PAYLOAD),
    "task name": lambda e: e.update(tasks={PAYLOAD: {"score": 0.0}}),
    "task lr": lambda e: e.update(tasks={"behaviour": {"score": 0.0, "lr": PAYLOAD}}),
    "task loss": lambda e: e.update(tasks={"behaviour": {"score": 0.0, "train_loss": QUOTES}}),
    "program name": lambda e: e["program"].update(name=PAYLOAD),
    "constant name": lambda e: e["program"].update(constants={PAYLOAD: 0.9}),
    "warm start": lambda e: e.update(warm_start=PAYLOAD),
}


@pytest.mark.e2e
@pytest.mark.parametrize("field", sorted(TAMPERING))
def test_a_crafted_run_directory_never_runs_code_through_export(tmp_path, monkeypatch, field):
    import subprocess
    import sys

    from search.cli import main

    monkeypatch.chdir(tmp_path)
    _tiny_run(tmp_path / "run")
    _edit_event(tmp_path / "run", TAMPERING[field])
    code = main(["export", str(tmp_path / "run"), "0", "--name", "Evil", "--out", str(tmp_path / "out")])
    assert code in (0, 2)
    assert not (tmp_path / "PWNED").exists()
    if code == 0:
        source = (tmp_path / "out" / "evil.py").read_text()
        assert "__import__" not in source and "PWNED" not in source
        done = subprocess.run([sys.executable, "-c", "import evil"], cwd=tmp_path / "out", capture_output=True)
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / "out" / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    else:
        assert not (tmp_path / "out").exists()


def test_a_crafted_run_id_in_config_json_is_refused(tmp_path, monkeypatch):
    import json

    from search.cli import main

    monkeypatch.chdir(tmp_path)
    _tiny_run(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["run_id"] = PAYLOAD
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert main(["export", str(tmp_path / "run"), "0", "--name", "Evil", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "PWNED").exists()


def test_generated_source_is_checked_before_anything_imports_it():
    from primitives.known import LION
    from search import codegen
    from primitives.library import ALL

    with pytest.raises(codegen.CodegenError, match="docstring"):
        codegen.module_source(LION, "Evil", 'x"""\nimport os\n"""', {}, 1e-3, ALL)
    with pytest.raises(codegen.CodegenError, match="docstring"):
        codegen.module_source(LION, "Evil", "ends in a backslash \\", {}, 1e-3, ALL)
    good = codegen.module_source(LION, "Fine", "A rule.", {"run": "r"}, 1e-3, ALL)
    codegen.check_source(good, "Fine", "A rule.", standalone=False)
    for bad in (good + "\n__import__('os').system('date')\n",
                good.replace("PROVENANCE = {", "PROVENANCE = dict(x=__import__('os')) or {"),
                good.replace('r"""A rule."""', 'r"""A rule."""\nimport os; os.system("date")')):
        with pytest.raises(codegen.CodegenError):
            codegen.check_source(bad, "Fine", "A rule.", standalone=False)


# ---------------------------------------------------------------------------
# Weak cases: each a clear one-line error (exit 2) or a warning, and nothing recorded is lost.


def _cli(args, capsys):
    from search.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("override,match", [
    ("--evaluation.timeout=nan", "finite"), ("--workers.memory_gb=inf", "finite"),
    ("--stop.wall_time=nan", "finite"), ("--evaluation.hurdle=nan", "finite"), ("--seed=-1", "seed"),
    ("--persistence.run_id=../escape", "run_id"), ("--evaluation.device=tpu", "device"),
    ("--workers.memory_gb=1e300", "at most"),
])
def test_bad_numbers_in_the_configuration_are_refused(capsys, override, match):
    code, err = _cli(["run", "--preset", "smoke", override, "--dry-run"], capsys)
    assert code == 2 and match in err


def test_a_run_directory_that_cannot_be_created_or_written_is_a_clear_error(tmp_path, capsys):
    code, err = _cli(["run", "--preset", "smoke", "--persistence.run_dir=/sys/optsearch-test", "--max-evals", "1",
                      "--tracking.enabled=false"], capsys)
    assert code == 2 and "cannot create run directory" in err
    (tmp_path / "afile").write_text("")
    code, err = _cli(["bench", "SGD", "--out", str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file" in err


def test_a_resume_of_a_damaged_run_is_refused_and_changes_nothing(tmp_path, capsys):
    import json

    _tiny_run(tmp_path / "run")
    run_dir = tmp_path / "run"
    files = lambda: {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "lock"}  # noqa: E731
    events = (run_dir / "events.jsonl").read_text().splitlines()
    config = json.loads((run_dir / "config.json").read_text())
    damages = {
        "a log shorter than the checkpoint says": ("events.jsonl", "\n".join(events[:-1]) + "\n", "cut short"),
        "a duplicated last line": ("events.jsonl", "\n".join(events + events[-1:]) + "\n", "follows event"),
        "config.json without [stop]": ("config.json", json.dumps({k: v for k, v in config.items() if k != "stop"}),
                                       "[stop] is missing"),
        "config.json as a list": ("config.json", "[1, 2]", "not a table"),
        "an event missing a field": ("events.jsonl", "\n".join([json.dumps({k: v for k, v in json.loads(events[0])
                                                                           .items() if k != "score"})]
                                                               + events[1:]) + "\n", "lacks the field"),
    }
    for what, (name, text, match) in damages.items():
        original = (run_dir / name).read_text()
        (run_dir / name).write_text(text)
        before = files()
        code, err = _cli(["resume", str(run_dir), "--max-evals", "8"], capsys)
        assert code == 2 and match in err, (what, err)
        assert files() == before, what
        (run_dir / name).write_text(original)


def test_a_program_too_long_for_sympy_is_shown_unsimplified(tmp_path, capsys):
    lines = ["a0 = add(g, g)"] + [f"a{i} = {'mul' if i % 2 else 'add'}(a{i - 1}, g)" for i in range(1, 10_000)]
    (tmp_path / "long.txt").write_text("\n".join(lines + ["return a9999"]))
    code, _ = _cli(["simplify", str(tmp_path / "long.txt")], capsys)
    assert code == 0


def test_leaderboard_against_a_dead_server_is_a_clear_error(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _cli(["leaderboard", "--tracking-uri", f"http://127.0.0.1:{port}"], capsys)
    assert code == 2 and "cannot read the tracking store" in err


def test_a_plot_that_cannot_be_written_is_a_warning_and_leaves_no_empty_file(tmp_path, monkeypatch, caplog):
    import errno
    import logging

    import matplotlib.figure

    from search.engine import run

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb"):
            pass  # what a full disk leaves: an empty file, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    with caplog.at_level(logging.WARNING, logger="optsearch"):
        result = run(_behaviour("stop.max_evals=6"), run_dir=tmp_path / "run")
    assert result.stopped_by == "max_evals"
    assert any("could not write plots" in r.getMessage() for r in caplog.records)
    assert not [p for p in (tmp_path / "run" / "plots").iterdir() if p.suffix == ".png"]
