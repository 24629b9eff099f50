"""MLflow as users open it: a classic experiment, a saved view of the candidates, runs named by what they are.

Checked through MlflowClient against a real SQLite store, then in the MLflow UI itself, rendered by headless
Chromium (skipped with a message where no Chromium is installed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess
import tempfile

import pytest

from search import config as config_module
from search import tracking
from search.cli import main
from search.engine import run
from search.run_store import RunStore
from search.tracking import MlflowTracker
from test_ui import _free_port, _wait_for_port, start_ui, stop_ui

COLUMNS = {"metrics.`score`", "metrics.`held_out_score`", "tags.`optsearch.stage`", "tags.`optsearch.status`",
           "metrics.`complexity`", "metrics.`state_buffers`"}


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, baseline_cache):
    """A small proxy-task search (serial) tracked to a fresh SQLite store: (uri, run directory, events)."""
    folder = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    config = config_module.load("smoke", overrides=[
        "workers.serial=true", f"evaluation.baseline_cache={baseline_cache}", "stop.max_evals=8"])
    run(config, run_dir=folder / "run", observers=[MlflowTracker(uri)])
    return uri, folder / "run", RunStore(folder / "run").read_events()


def _children(uri) -> dict[int, object]:
    c = client(uri)
    experiment = c.get_experiment_by_name("optsearch-smoke")
    runs = c.search_runs([experiment.experiment_id], tracking.CANDIDATE_FILTER, max_results=1000)
    return {int(r.data.tags["optsearch.candidate_id"]): r for r in runs}


def test_the_experiment_is_classic_ml_with_a_saved_view_of_the_candidates(tracked):
    uri, _, _ = tracked
    tags = client(uri).get_experiment_by_name("optsearch-smoke").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    envelope = json.loads(tags[f"mlflow.sharedViewState.{tracking.VIEW_KEY}"])
    assert envelope["name"] and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == "tags.`optsearch.kind` = 'candidate'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`score`", False)
    assert COLUMNS <= set(state["selectedColumns"])


def test_an_existing_experiment_gets_the_kind_and_the_view_where_they_are_missing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.open_client(uri)
    old = c.create_experiment("optsearch-old")
    mine = c.create_experiment("mine")
    assert tracking.ui_view(uri, "optsearch-old") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.ui_view(uri, "mine") == mine
    assert "mlflow.experimentKind" not in c.get_experiment(mine).tags  # not optsearch's to classify
    assert tracking.VIEW_TAG in c.get_experiment(mine).tags
    c.set_experiment_tag(mine, tracking.VIEW_TAG, "the user's own view")
    tracking.ui_view(uri, "mine")
    assert c.get_experiment(mine).tags[tracking.VIEW_TAG] == "the user's own view"  # never replaced


def test_ui_opens_the_experiment_of_the_latest_search(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.open_client(uri)
    assert tracking.ui_view(uri) is None  # an empty store: MLflow's home page
    searched = c.create_experiment("optsearch-smoke")
    c.create_run(searched, start_time=2_000, tags={"optsearch.kind": "search"})
    c.create_experiment("optsearch-newer-but-unused")
    assert tracking.ui_view(uri) == searched


def test_the_ui_url_opens_the_candidates_view():
    url = tracking.view_url("http://127.0.0.1:5000", "7")
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                   "&viewStateShareKey=optsearch-candidates")
    assert tracking.view_url("http://127.0.0.1:5000", None) == "http://127.0.0.1:5000/"


def test_child_runs_are_named_and_described_by_what_the_candidate_is(tracked):
    uri, _, events = tracked
    children = _children(uri)
    candidates = [e for e in events if e["type"] == "candidate"]
    assert set(children) == {e["id"] for e in candidates}
    for event in candidates:
        child = children[event["id"]]
        name = child.info.run_name
        assert name.startswith(f"#{event['id']} {round(event['score'], 2) + 0.0:+.2f} "), name
        assert len(name) <= 80 and "\n" not in name
        description = child.data.tags["mlflow.note.content"]
        assert child.data.tags["optsearch.program"] in description  # the program text
        assert "\\begin{aligned}" in description and "u = " in description  # LaTeX and the update rule
        assert child.data.metrics["complexity"] == event["complexity"]
        assert child.data.metrics["state_buffers"] == event["state_buffers"]
    lion = next(e for e in candidates if e["mutation"] == "warm start lion")
    assert "sign(" in children[lion["id"]].info.run_name


def test_loss_curves_are_step_metrics_one_step_per_window(tracked):
    uri, _, events = tracked
    c, children = client(uri), _children(uri)
    event = next(e for e in events if e["type"] == "candidate" and e["tasks"])
    for task, entry in event["tasks"].items():
        history = sorted(c.get_metric_history(children[event["id"]].info.run_id, f"loss.{task}"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(len(entry["curve"])))
        for metric, value in zip(history, entry["curve"]):
            if math.isfinite(value):
                assert metric.value == pytest.approx(value)
        # tuned AdamW's curve on the same task beside it, one step per window too
        adamw = c.get_metric_history(children[event["id"]].info.run_id, f"loss_adamw.{task}")
        assert len(adamw) == len(entry["curve"]) and all(math.isfinite(m.value) for m in adamw)
    held = [e for e in events if e["type"] == "held_out"]
    assert held, "the smoke search scores its hall of fame on held-out tasks"
    child = children[held[0]["id"]]
    assert child.data.metrics["held_out_score"] == pytest.approx(held[0]["score"])
    task, entry = next(iter(held[0]["tasks"].items()))
    history = c.get_metric_history(child.info.run_id, f"held_out_loss.{task}")
    assert len(history) == len(entry["curve"])


def test_leaderboard_as_table_json_and_csv_with_held_out_scores(tracked, capsys):
    uri, _, events = tracked
    best = max((e for e in events if e["type"] == "candidate" and e["stage"] == "full"), key=lambda e: e["score"])
    held = {e["id"]: e["score"] for e in events if e["type"] == "held_out"}
    base = ["leaderboard", "--tracking-uri", uri, "--experiment", "optsearch-smoke"]
    assert main(base) == 0
    table = capsys.readouterr().out
    assert "held-out" in table.splitlines()[0] and "transfer" in table.splitlines()[0]
    assert main(base + ["--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["rank"] == 1 and rows[0]["candidate"] == best["id"]
    assert rows[0]["score"] == pytest.approx(best["score"])
    assert rows[0]["held_out"] == (pytest.approx(held[best["id"]]) if best["id"] in held else None)
    assert main(base + ["--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("rank,score,held_out,transfer,search,candidate")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(rows) and parsed[0]["candidate"] == str(best["id"])


# --------------------------------------------------------------------------- the MLflow UI, in a browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render(browser: str, url: str, *what: str) -> subprocess.CompletedProcess:
    """Load `url` in headless Chromium and dump its DOM (or whatever `what` asks for) once scripts have run."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1400,900",
                               *(what or ("--dump-dom",)), url], capture_output=True, text=True, timeout=180)


@pytest.mark.e2e
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium): the MLflow UI "
                                                "is not rendered; the store itself is checked by the other tests")
def test_the_mlflow_ui_opens_on_the_candidates_table_with_their_scores(tracked):
    uri, _, events = tracked
    port = _free_port()
    ui = start_ui(uri, port)
    try:
        url = re.search(r"(http://\S+)", ui.stdout.readline()).group(1)
        assert "viewStateShareKey=optsearch-candidates" in url
        _wait_for_port(port, ui)
        dom = render(chromium(), url).stdout
    finally:
        stop_ui(ui)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "candidates by score" in text  # the saved view is open
    assert "matching runs" in text and "score" in text
    for event in (e for e in events if e["type"] == "candidate"):
        assert f"#{event['id']} {round(event['score'], 2) + 0.0:+.2f} " in text  # the run names
        assert repr(event["score"])[:7] in text, f"score of #{event['id']} not in the table"  # the score column
