"""What users see from the command line: `optsearch ui`'s lifetime, `show --format`, one id per candidate."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search import config as config_module
from search.cli import main
from search.display import Display
from search.engine import run
from search.run_store import RunStore

ROOT = Path(__file__).parents[1]


# --------------------------------------------------------------------------- optsearch ui owns its server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"optsearch ui exited early: {process.stdout.read()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing listened on port {port} within {seconds} s")


def _table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, start time) of every process, read from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below `root`."""
    table, found, frontier = _table(), {}, {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier and pid not in found}
        found.update({pid: table[pid][2] for pid in frontier})
    return found


def start_ui(store: str, port: int, *extra: str) -> subprocess.Popen:
    """`optsearch ui` on `store` (no browser), in a session of its own so that the test can find what it starts."""
    return subprocess.Popen([sys.executable, "-m", "search", "ui", "--tracking-uri", store, "--port", str(port),
                             "--no-browser", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT)


def stop_ui(process: subprocess.Popen, how=signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_ui_stops_its_mlflow_server_and_everything_it_started_on_sigterm(tmp_path):
    port = _free_port()
    ui = start_ui(f"sqlite:///{tmp_path / 'mlflow.db'}", port)
    try:
        _wait_for_port(port, ui)
        time.sleep(3)  # MLflow 3 starts its job runner and huey_consumer processes after the port opens
        below = _descendants(ui.pid)
        groups = {_table()[pid][1] for pid in below if pid in _table()}
        assert len(below) >= 2, f"expected MLflow's server processes below optsearch ui, found {below}"
        assert ui.pid not in groups  # the server runs in a process group of its own
        started = time.monotonic()
        stop_ui(ui)
        assert ui.returncode == 0, ui.stdout.read()
        assert time.monotonic() - started < 30
    finally:
        stop_ui(ui, signal.SIGKILL)
    table = _table()
    survivors = [pid for pid, start in below.items() if pid in table and table[pid][2] == start]
    assert not survivors, f"processes outlived optsearch ui: {survivors}"
    assert not [pid for pid, (_, group, _) in table.items() if group in groups], "the server's group outlived it"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_ui_refuses_an_experiment_that_does_not_exist(tmp_path, capsys):
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "nope",
                 "--no-browser"]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- show --format, one id per candidate


@pytest.fixture(scope="module")
def behaviour_run(tmp_path_factory):
    """A small recorded behaviour search (serial: the same run each time), and what its live display printed."""
    folder = tmp_path_factory.mktemp("behaviour")
    config = config_module.load("smoke", overrides=["evaluation.kind=behaviour", "workers.serial=true",
                                                    "stop.max_evals=20", "tracking.enabled=false"])
    shown = io.StringIO()
    run(config, run_dir=folder / "run", observers=[Display(stream=shown, live=True)])  # the panel, as on a terminal
    return folder / "run", shown.getvalue()


def _out(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_show_as_table_json_and_csv(behaviour_run, capsys):
    run_dir, _ = behaviour_run
    table = _out(capsys, ["show", str(run_dir)])
    assert "hall of fame" in table and "candidates evaluated 20 of 20" in table
    data = json.loads(_out(capsys, ["show", str(run_dir), "--format", "json"]))
    assert data["run"] == "run" and data["evaluated"] == 20
    assert data["hall_of_fame"]
    assert {"id", "score", "held_out", "complexity", "program_text"} <= set(data["hall_of_fame"][0])
    rows = list(csv.DictReader(io.StringIO(_out(capsys, ["show", str(run_dir), "--format", "csv"]))))
    assert [int(r["id"]) for r in rows] == [m["id"] for m in data["hall_of_fame"]]
    assert rows[0]["run"] == "run" and float(rows[0]["score"]) == pytest.approx(data["hall_of_fame"][0]["score"])
    assert "\n" not in rows[0]["program_text"]  # one line per member


def _cache_hits(run_dir: Path) -> list[dict]:
    return [e for e in RunStore(run_dir).read_events() if e["type"] == "cache_hit"]


def test_a_cache_hits_own_id_is_shown_and_exported(behaviour_run, capsys, tmp_path):
    run_dir, _ = behaviour_run
    hit = _cache_hits(run_dir)[0]
    shown = _out(capsys, ["show", str(run_dir), str(hit["id"])])
    assert f"candidate #{hit['id']}, a behavioural cache hit of #{hit['same_as']}" in shown
    data = json.loads(_out(capsys, ["show", str(run_dir), str(hit["id"]), "--format", "json"]))
    assert (data["id"], data["same_as"], data["score"]) == (hit["id"], hit["same_as"], hit["score"])
    assert main(["export", str(run_dir), str(hit["id"]), "--name", "CacheHit", "--out", str(tmp_path)]) == 0
    source = (tmp_path / "cache_hit.py").read_text()
    assert f"candidate {hit['id']}" in source


def test_the_live_panels_best_id_is_one_show_and_export_accept(behaviour_run, capsys, tmp_path):
    run_dir, shown = behaviour_run
    best = int(re.findall(r"best program \(#(\d+)", shown)[-1])
    assert f"candidate #{best}" in _out(capsys, ["show", str(run_dir), str(best)])
    assert main(["export", str(run_dir), str(best), "--name", "Best", "--out", str(tmp_path)]) == 0


def test_an_unknown_candidate_is_an_error_that_lists_the_ids_there_are(behaviour_run, capsys, tmp_path):
    run_dir, _ = behaviour_run
    ids = sorted(e["id"] for e in RunStore(run_dir).read_events() if e["type"] in ("candidate", "cache_hit"))
    assert ids == list(range(len(ids))) and _cache_hits(run_dir)  # cache hits have ids of their own, in the range
    expected = f"no candidate 999 in {run_dir} (candidates: 0-{ids[-1]})"
    assert main(["export", str(run_dir), "999", "--name", "Nope", "--out", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err
    assert main(["show", str(run_dir), "999"]) == 2
    assert expected in capsys.readouterr().err
