"""MLflow tracking against real stores: SQLite files and an `mlflow server` process."""

from __future__ import annotations

import collections
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search import config as config_module
from search import tracking
from search.engine import resume, run
from search.run_store import RunStore
from search.tracking import MlflowTracker, leaderboard

pytestmark = pytest.mark.e2e  # every test here runs searches against real stores (and servers)


def smoke(baseline_cache, *overrides):
    return config_module.load("smoke", overrides=[
        "workers.serial=true", f"evaluation.baseline_cache={baseline_cache}", *overrides])


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri, experiment="optsearch-smoke"):
    c = client(uri)
    experiment_id = c.get_experiment_by_name(experiment).experiment_id
    return c, c.search_runs([experiment_id], max_results=1000)


def test_search_is_tracked_in_a_sqlite_store_and_agrees_with_events(tmp_path, baseline_cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(smoke(baseline_cache), run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    events = [e for e in RunStore(tmp_path / "run").read_events() if e["type"] == "candidate"]
    c, runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("optsearch.kind") == "search"]
    children = {int(r.data.tags["optsearch.candidate_id"]): r for r in runs
                if r.data.tags.get("optsearch.kind") == "candidate"}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["evolution.population"] == "6"
    assert parent.data.tags["optsearch.primitive_set_version"]
    assert parent.data.metrics["evaluated"] == len(events)
    assert set(children) == {e["id"] for e in events}
    for event in events:
        child = children[event["id"]]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["optsearch.program_hash"] == event["structural_hash"]
        assert child.data.tags["optsearch.fingerprint"] == event["fingerprint"]
        assert child.data.tags["optsearch.status"] == event["status"]
        assert child.data.tags["optsearch.stage"] == event["stage"]
        assert child.data.metrics["score"] == pytest.approx(event["score"])
        for task, entry in event["tasks"].items():
            assert child.data.metrics[f"score.{task}"] == pytest.approx(entry["score"])
            assert float(child.data.params[f"lr.{task}"]) == pytest.approx(entry["lr"], rel=1e-5)
        artifacts = {a.path for a in c.list_artifacts(child.info.run_id)}
        assert {"program.json", "program.txt"} <= artifacts
    program = json.loads(Path(c.download_artifacts(children[events[0]["id"]].info.run_id, "program.json",
                                                   str(tmp_path))).read_text())
    assert program == events[0]["program"]
    parent_artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"hall_of_fame.json", "plots"} <= parent_artifacts
    assert {Path(a.path).name for a in c.list_artifacts(parent.info.run_id, "plots")} >= {"progress.png", "pareto.png"}
    assert leaderboard(uri, "optsearch-smoke", top=3)[0]["score"] == max(
        e["score"] for e in events if e["stage"] == "full")


def test_resumed_search_continues_the_same_parent_run(tmp_path, baseline_cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(smoke(baseline_cache, "stop.max_evals=5"), run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    resume(tmp_path / "run", ["stop.max_evals=8"], observers=[MlflowTracker(uri)])
    _, runs = runs_of(uri)
    assert sum(r.data.tags.get("optsearch.kind") == "search" for r in runs) == 1
    assert sum(r.data.tags.get("optsearch.kind") == "candidate" for r in runs) == 8


def test_unreachable_tracking_server_warns_once_and_the_search_finishes(tmp_path, baseline_cache, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = MlflowTracker(f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="optsearch.tracking"):
        result = run(smoke(baseline_cache, "stop.max_evals=6"), run_dir=tmp_path / "run", observers=[tracker])
    assert result.stopped_by == "max_evals"
    assert len([e for e in RunStore(tmp_path / "run").read_events() if e["type"] == "candidate"]) == 6
    warnings = [r for r in caplog.records if "tracking failed" in r.getMessage()]
    assert len(warnings) == 1
    assert len(tracker.backlog) == 6  # kept for a later catch-up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1.0)
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("mlflow server did not start")


@pytest.mark.slow
def test_real_mlflow_server_stopped_mid_search_then_back(tmp_path, baseline_cache, monkeypatch):
    """Runs arrive; the server dies mid-search; the search finishes; the backlog arrives after a restart."""
    import os
    import signal

    monkeypatch.setattr(tracking, "RETRY_SECONDS", 0.5)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    servers = [_start_server(tmp_path, port)]

    class StopsTheServer(MlflowTracker):
        def on_event(self, event, snapshot):
            super().on_event(event, snapshot)
            if self.logged == 3 and servers[-1].poll() is None:
                os.killpg(servers[-1].pid, signal.SIGKILL)
                servers[-1].wait()

    try:
        result = run(smoke(baseline_cache), run_dir=tmp_path / "run", observers=[StopsTheServer(uri)])
        assert result.stopped_by == "max_evals"
        events = [e for e in RunStore(tmp_path / "run").read_events() if e["type"] == "candidate"]
        assert len(events) == 10
        servers.append(_start_server(tmp_path, port))
        _, runs = runs_of(uri)
        logged = [r for r in runs if r.data.tags.get("optsearch.kind") == "candidate"]
        assert len(logged) >= 3  # what arrived before the server died
        # Catch-up: resuming the finished search (same budget) logs the backlog.
        resume(tmp_path / "run", observers=[MlflowTracker(uri)])
        _, runs = runs_of(uri)
        ids = [r.data.tags["optsearch.candidate_id"] for r in runs if r.data.tags.get("optsearch.kind") == "candidate"]
        assert sorted(ids) == sorted(str(e["id"]) for e in events)  # counts, not sets: each exactly once
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _candidate_runs(uri):
    _, runs = runs_of(uri)
    return [r for r in runs if r.data.tags.get("optsearch.kind") == "candidate"]


def test_kill_9_then_resume_logs_each_candidate_exactly_once(tmp_path, baseline_cache):
    """Counts, not sets: a kill between logging a candidate and saving any counter must not log it twice."""
    import os
    import signal

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "search", "run", "--preset", "smoke", "--run-dir", str(run_dir),
               "--max-evals", "14", f"--tracking-uri={uri}", f"--evaluation.baseline_cache={baseline_cache}",
               "--persistence.checkpoint_every=50"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (run_dir / "events.jsonl").exists() and \
                    sum(e["type"] == "candidate" for e in RunStore(run_dir).read_events()) >= 5:
                break
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    resume(run_dir, observers=[MlflowTracker(uri)])
    ids = [int(r.data.tags["optsearch.candidate_id"]) for r in _candidate_runs(uri)]
    events = [e for e in RunStore(run_dir).read_events() if e["type"] == "candidate"]
    assert len(events) == 14
    assert sorted(ids) == sorted(e["id"] for e in events)  # each exactly once


def test_a_child_run_left_half_written_is_replaced_once(tmp_path, baseline_cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(smoke(baseline_cache, "stop.max_evals=4"), run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    c = client(uri)
    first = _candidate_runs(uri)[0]
    c.set_terminated(first.info.run_id, status="RUNNING")  # as a kill between create_run and set_terminated leaves it
    resume(tmp_path / "run", ["stop.max_evals=5"], observers=[MlflowTracker(uri)])
    runs = _candidate_runs(uri)
    ids = [r.data.tags["optsearch.candidate_id"] for r in runs]
    assert len(ids) == len(set(ids)) == 5
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)


def test_a_damaged_tracking_json_is_a_warning_and_the_parent_run_is_kept(tmp_path, baseline_cache, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(smoke(baseline_cache, "stop.max_evals=3"), run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    (tmp_path / "run" / "tracking.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="optsearch.tracking"):
        result = resume(tmp_path / "run", ["stop.max_evals=5"], observers=[MlflowTracker(uri)])
    assert result.stopped_by == "max_evals"
    assert any("tracking.json is damaged" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "run").glob("tracking.json.damaged-*"))
    _, runs = runs_of(uri)
    assert sum(r.data.tags.get("optsearch.kind") == "search" for r in runs) == 1  # found again by its run id
    assert len(_candidate_runs(uri)) == 5


def test_two_searches_starting_together_on_a_new_store_are_both_tracked(tmp_path, baseline_cache):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "search", "run", "--preset", "smoke", "--run-dir", str(tmp_path / name),
         "--max-evals", "3", f"--tracking-uri={uri}", "--workers.serial=true", "--evaluation.kind=behaviour"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name in ("a", "b")]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    c = client(uri)
    experiment = c.get_experiment_by_name("optsearch-smoke")
    runs = c.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("optsearch.kind") == "search") == ["a", "b"]
    assert sum(r.data.tags.get("optsearch.kind") == "candidate" for r in runs) == 6


# --- the parent run is the run's identity's (issue 32) -------------------------------------------------------


def behaviour(*overrides):
    """A cheap search (no training: programs scored by behaviour), tracked by the observer a test passes."""
    return config_module.load(None, overrides=[
        "tracking.enabled=false", "workers.serial=true", "evaluation.kind=behaviour", "evaluation.target=lion",
        "evolution.warm_start=adamw", "evolution.population=20", "evaluation.meta_every=0",
        "tracking.experiment=optsearch-test", *overrides])


def _parents_and_children(uri):
    c, runs = runs_of(uri, "optsearch-test")
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("optsearch.kind") == "search"
               and r.info.lifecycle_stage == "active"}
    children = collections.Counter(r.data.tags["mlflow.parentRunId"] for r in runs
                                   if r.data.tags.get("optsearch.kind") == "candidate")
    return parents, children


def test_runs_of_the_same_name_in_two_folders_get_two_parent_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folders = [tmp_path / "projA" / "runs" / "exp", tmp_path / "projB" / "runs" / "exp"]
    for folder in folders:
        run(behaviour("stop.max_evals=3"), run_dir=folder, observers=[MlflowTracker(uri)])
    resume(folders[0], ["stop.max_evals=5"], observers=[MlflowTracker(uri)])
    parents, children = _parents_and_children(uri)
    assert len(parents) == 2
    by_uuid = {p.data.tags["optsearch.run_uuid"]: p.info.run_id for p in parents.values()}
    identities = [json.loads((f / "identity.json").read_text())["run_uuid"] for f in folders]
    assert set(by_uuid) == set(identities)
    assert children[by_uuid[identities[0]]] == 5 and children[by_uuid[identities[1]]] == 3


def test_a_run_made_before_identities_keeps_its_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "run"
    run(behaviour("stop.max_evals=3"), run_dir=folder, observers=[MlflowTracker(uri)])
    (folder / "identity.json").unlink()
    (parent,) = _parents_and_children(uri)[0]
    client(uri).delete_tag(parent, "optsearch.run_uuid")
    resume(folder, ["stop.max_evals=5"], observers=[MlflowTracker(uri)])
    parents, children = _parents_and_children(uri)
    assert list(parents) == [parent] and children[parent] == 5
    assert parents[parent].data.tags["optsearch.run_uuid"] == json.loads((folder / "identity.json").read_text())[
        "run_uuid"]


BEHAVIOUR_FLAGS = ["--workers.serial=true", "--evaluation.kind=behaviour", "--evaluation.target=lion",
                   "--evolution.warm_start=adamw", "--evolution.population=20", "--evaluation.meta_every=0",
                   "--tracking.experiment=optsearch-test"]


def _optsearch(*args, cwd):
    """optsearch in a process of its own, as a user runs it (MLflow keeps a store open for a process's life)."""
    done = subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.mark.parametrize("change", ["another tracking URI", "a recreated store", "a deleted parent run"])
def test_a_parent_run_the_store_lacks_is_replaced_and_said_so(tmp_path, change):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "run"
    _optsearch("run", "--run-dir", str(folder), "--max-evals", "3", f"--tracking-uri={uri}", *BEHAVIOUR_FLAGS,
               cwd=tmp_path)
    old = json.loads((folder / "tracking.json").read_text())["parent_run_id"]
    if change == "another tracking URI":
        uri = f"sqlite:///{tmp_path / 'other.db'}"
    elif change == "a recreated store":
        (tmp_path / "mlflow.db").unlink()
    else:
        client(uri).delete_run(old)
    said = _optsearch("resume", str(folder), "--max-evals", "5", f"--tracking.uri={uri}", cwd=tmp_path)
    assert "every candidate" in said and "tracking failed" not in said, said
    parents, children = _parents_and_children(uri)
    (new,) = parents
    assert new != old and children[new] == 5
    assert json.loads((folder / "tracking.json").read_text()) == {"uri": uri, "parent_run_id": new}


def test_artifacts_go_beside_the_store_not_into_the_working_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    run(behaviour("stop.max_evals=2"), run_dir=tmp_path / "run", observers=[MlflowTracker(uri)])
    assert list(elsewhere.iterdir()) == []
    assert list((tmp_path / "store" / "mlruns").rglob("program.json"))
