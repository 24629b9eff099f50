"""MLflow tracking against real stores: SQLite files and an `mlflow server` process."""

from __future__ import annotations

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
        ids = {r.data.tags["optsearch.candidate_id"] for r in runs if r.data.tags.get("optsearch.kind") == "candidate"}
        assert ids == {str(e["id"]) for e in events}
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
