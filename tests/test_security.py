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
