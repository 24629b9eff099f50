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


def _store(tmp_path) -> str:
    from search.tracking import open_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_client(uri)  # a store a search made (the UI creates none)
    return uri


def _wait_for_line(process: subprocess.Popen, text: str, seconds: float = 180) -> str:
    """What the process printed up to the first line holding `text` (its stdout is a pipe of lines)."""
    import select

    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 1.0)[0]:
            line = process.stdout.readline()
            seen.append(line)
            if text in line:
                return "".join(seen)
            if not line:
                break
    raise AssertionError(f"no {text!r} from optsearch ui within {seconds} s: {''.join(seen)}")


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=["SIGTERM", "SIGHUP", "kill -9"])
def test_ui_stops_its_mlflow_server_and_everything_it_started(tmp_path, how):
    """A signal is forwarded to the server's group; a kill -9 of optsearch ui leaves its watchdog to stop it."""
    port = _free_port()
    ui = start_ui(_store(tmp_path), port)
    try:
        printed = _wait_for_line(ui, "ready: ")
        assert f"ready: http://127.0.0.1:{port}/" in printed
        _wait_for_port(port, ui)
        time.sleep(3)  # MLflow 3 starts its job runner and huey_consumer processes after the port opens
        below = _descendants(ui.pid)
        groups = {_table()[pid][1] for pid in below if pid in _table()}
        assert len(below) >= 2, f"expected MLflow's server processes below optsearch ui, found {below}"
        groups.discard(ui.pid)  # optsearch ui's own group: itself and its watchdog
        assert groups, "the server runs in a process group of its own"
        started = time.monotonic()
        ui.send_signal(how)
        ui.wait(timeout=60)
        assert ui.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 0), ui.stdout.read()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # after a kill -9 the watchdog needs a moment
            table = _table()
            survivors = [pid for pid, start in below.items() if pid in table and table[pid][2] == start]
            if not survivors:
                break
            time.sleep(0.5)
        assert time.monotonic() - started < 30
    finally:
        stop_ui(ui, signal.SIGKILL)
    assert not survivors, f"processes outlived optsearch ui: {survivors}"
    assert not [pid for pid, (_, group, _) in _table().items() if group in groups], "the server's group outlived it"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_ui_refuses_a_busy_port_up_front(tmp_path, capsys, monkeypatch):
    from search import ui_process

    monkeypatch.setattr(ui_process, "serve", lambda *a, **k: pytest.fail("a server was started on a busy port"))
    uri = _store(tmp_path)
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["ui", "--tracking-uri", uri, "--port", str(port), "--no-browser"])
    err = capsys.readouterr().err
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err and err.count("\n") == 1, err


def test_leaderboard_and_ui_without_a_store_say_so_and_create_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["leaderboard"]) == 2
    assert f"no MLflow store at {tmp_path / 'mlflow.db'}" in capsys.readouterr().err
    assert main(["ui", "--no-browser", "--port", str(_free_port())]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_reading_a_store_writes_nothing_beside_it_so_a_read_only_folder_works(tmp_path, capsys):
    """leaderboard and the UI's look-up take no lock and create nothing: a read-only folder can be read."""
    from search import tracking

    folder = tmp_path / "store"
    folder.mkdir()
    uri = _store(folder)
    (folder / "mlflow.db.lock").unlink()
    client = tracking.open_client(uri, reading=True)
    experiment = client.create_experiment("optsearch-x", tags=tracking.experiment_tags())
    client.create_run(experiment, tags={"optsearch.kind": "search"})
    before = sorted(os.listdir(folder))
    if os.geteuid() != 0:  # root writes into a read-only folder anyway: only the listing shows it then
        folder.chmod(0o555)
    try:
        assert main(["leaderboard", "--tracking-uri", uri]) == 0
        assert "no candidate scored" in capsys.readouterr().out
        assert tracking.ui_view(uri) == experiment
    finally:
        folder.chmod(0o755)
    assert sorted(os.listdir(folder)) == before


def test_a_held_store_lock_is_said_not_waited_on_silently(tmp_path, caplog):
    import fcntl
    import logging
    import threading

    from search import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open(tmp_path / "mlflow.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with caplog.at_level(logging.WARNING, logger="optsearch.tracking"):
            opened = threading.Thread(target=tracking.open_client, args=(uri,))
            opened.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not caplog.records:
                time.sleep(0.05)
            assert opened.is_alive()  # it waits for the lock ...
            fcntl.flock(held, fcntl.LOCK_UN)
            opened.join(60)
    said = [r.getMessage() for r in caplog.records]
    assert any(f"waiting for {tmp_path / 'mlflow.db.lock'}" in m for m in said), said  # ... and says so
    assert any("got" in m for m in said) and not opened.is_alive()


def test_ui_refuses_an_experiment_that_does_not_exist(tmp_path, capsys):
    assert main(["ui", "--tracking-uri", _store(tmp_path), "--experiment", "nope", "--no-browser",
                 "--port", str(_free_port())]) == 2
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
