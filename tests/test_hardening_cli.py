"""The command line's own hardening (issues 31 and 32): a fast --help and --version, unique run ids."""

from __future__ import annotations

import subprocess
import sys


def _imported(*args: str) -> set[str]:
    """The modules `python -m search ARGS` imports (read from -X importtime, not timed)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "search", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_and_version_import_neither_torch_nor_mlflow():
    for args in (["--version"], ["--help"]):
        modules = _imported(*args)
        assert "search.cli" in modules
        heavy = {m for m in modules if m.split(".")[0] in ("torch", "mlflow", "primitives", "sympy", "numpy")}
        assert not heavy, (args, sorted(heavy)[:10])


def test_runs_started_in_the_same_second_get_different_ids(monkeypatch, tmp_path):
    from search import config as config_module
    from search import engine
    from search.cli import main

    started = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "run", lambda config, run_dir=None, observers=(): started.append(run_dir) or
                        type("Result", (), {"stopped_by": "max_evals"})())
    import time

    epoch = time.gmtime(0)
    monkeypatch.setattr(engine.time, "gmtime", lambda *_: epoch)  # one second for all
    for _ in range(20):
        assert main(["run", "--preset", "smoke", "--tracking.enabled=false"]) == 0
    names = [path.name for path in started]
    assert len(set(names)) == len(names)
    assert all(config_module.RUN_ID.match(name) and name.startswith("smoke-19700101-000000-") for name in names)
    assert {str(path.parent) for path in started} == {"runs"}
