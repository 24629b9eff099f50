"""The transfer stage: 4x the steps and 4x the width, the rate carried by muP's rule and re-tuned."""

from __future__ import annotations

import json
import math

import pytest

from primitives.known import ADAMW, MUON
from primitives.library import ALL
from proxy_tasks.optimizers import OptimizerSpec
from proxy_tasks.registry import get_task
from proxy_tasks.scoring import BaselineCache, tune_and_score
from proxy_tasks.task import shortened
from search import config as config_module
from search.transfer import TransferStage, carried_rate


def test_mup_carries_an_elementwise_rate_down_with_width_and_a_matrix_one_as_it_is():
    assert carried_rate(1e-2, 4, matrix_update=False) == pytest.approx(2.5e-3)
    assert carried_rate(1e-2, 4, matrix_update=True) == 1e-2


def test_a_wider_longer_task_is_the_same_task_scaled():
    task = get_task("char_lm")
    wide = task.scaled(4, 4)
    assert (wide.steps, wide.width) == (4 * task.steps, 4 * task.width)
    assert wide.batch_size * wide.steps <= wide.example_count(wide.data(0))  # still never repeats a window
    with pytest.raises(ValueError, match="no width"):
        get_task("quadratic").scaled(4, 4)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    config = config_module.load("smoke", overrides=[
        "evaluation.full_tasks=mlp", "evaluation.step_fraction=0.1", "evaluation.seeds=1",
        "transfer.enabled=true", "transfer.tasks=mlp", "transfer.steps_factor=2", "transfer.width_factor=2",
        "tracking.enabled=false"])
    cache = BaselineCache(tmp_path_factory.mktemp("cache") / "baselines.json")
    stage = TransferStage(config, ALL, cache)
    base_task, _ = stage.tasks["mlp"]
    cache.baseline(base_task, stage.seeds, "cpu", stage.base_protocol)
    for name in stage.missing_baselines():
        entry = stage.baseline(name)
        cache.put_entry(stage.baseline_key(name), {k: v for k, v in entry.items() if k != "task"})
    return stage


def test_adamw_written_as_a_program_transfers_exactly_as_adamw(stage):
    """The AdamW program is torch's AdamW: the same carried rate, the same re-tune, a transfer score of 0."""
    base_task, wide = stage.tasks["mlp"]
    base = tune_and_score(base_task, OptimizerSpec.for_program(ADAMW), stage.seeds, stage.baselines,
                          protocol=stage.base_protocol)
    result = stage.evaluate(ADAMW, {"mlp": base.lr})
    entry = result.tasks["mlp"]
    assert abs(entry["score"]) < 0.02, entry
    assert entry["carried_lr"] == pytest.approx(base.lr / 2)
    assert entry["steps"] == wide.steps and result.drift == pytest.approx(entry["drift"])
    assert math.isfinite(result.drift) and result.drift <= 0.5 + 1e-9  # within the +-1 half-decade re-tune


def test_a_matrix_rule_keeps_its_rate_and_a_missing_base_rate_is_an_error(stage):
    result = stage.evaluate(MUON, {"mlp": 0.05})
    assert result.tasks["mlp"]["carried_lr"] == 0.05
    with pytest.raises(RuntimeError, match="no base-size rate"):
        stage.evaluate(MUON, {})


@pytest.mark.e2e
def test_a_search_records_transfer_scores_in_events_mlflow_and_show(tmp_path, baseline_cache, capsys):
    """Every full-suite candidate over the hurdle gets a transfer score, and all three records agree on it."""
    from mlflow.tracking import MlflowClient

    from search.cli import main
    from search.engine import run
    from search.run_store import RunStore
    from search.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = config_module.load("smoke", overrides=[
        "workers.serial=true", f"evaluation.baseline_cache={baseline_cache}", "evaluation.full_tasks=quadratic,mlp",
        "evaluation.step_fraction=0.1", "transfer.enabled=true", "transfer.tasks=mlp", "transfer.steps_factor=2",
        "transfer.width_factor=2", "transfer.hurdle=-3.0", "stop.max_evals=5"])
    run(config, run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    events = RunStore(tmp_path / "run").read_events()
    full = {e["id"] for e in events if e["type"] == "candidate" and e["stage"] == "full" and e["status"] == "ok"}
    transfers = {e["id"]: e for e in events if e["type"] == "transfer"}
    assert full and set(transfers) == full  # the hurdle of -3 passes every full-suite candidate that trained
    for event in transfers.values():
        entry = event["tasks"]["mlp"]
        assert entry["width_factor"] == 2 and entry["steps"] == 2 * shortened(get_task("mlp"), 0.1).steps
        assert math.isfinite(event["score"]) and entry["drift"] >= 0

    mlflow = MlflowClient(tracking_uri=uri)
    experiment = mlflow.get_experiment_by_name("optsearch-smoke").experiment_id
    children = {int(r.data.tags["optsearch.candidate_id"]): r for r in mlflow.search_runs([experiment])
                if r.data.tags.get("optsearch.kind") == "candidate"}
    for candidate_id, event in transfers.items():
        assert children[candidate_id].data.metrics["transfer_score"] == pytest.approx(event["score"])
        assert children[candidate_id].data.metrics["transfer_score.mlp"] == pytest.approx(event["score"])

    shown_id, shown = next(iter(transfers.items()))
    assert main(["show", str(tmp_path / "run"), str(shown_id)]) == 0
    text = capsys.readouterr().out
    assert f"transfer {shown['score']:+.3f}" in text
    assert f"mlp ({shown['tasks']['mlp']['steps']} steps, 2x)" in text
    assert main(["show", str(tmp_path / "run"), "--format", "json"]) == 0
    hall = json.loads(capsys.readouterr().out)["hall_of_fame"]
    assert any(member["transfer"] == pytest.approx(transfers[member["id"]]["score"])
               for member in hall if member["id"] in transfers)
