"""The Ray backend (search/ray_backend.py) against a real local Ray cluster, not a mock.

A head node with 2 CPUs is started once for the session (`ray start --head` on
127.0.0.1, in a session of its own) and stopped at the end by the processes of
that session: `ray stop` would stop every Ray instance on the machine. The
searches connect to it by address, as they would to a cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import pytest

from primitives.known import KNOWN_PROGRAMS
from primitives.serialize import parse, save, to_dict
from search import cli
from search import config as config_module
from search.config import ConfigError
from search.engine import run
from search.records import Job, JobKind, Status
from search.run_store import RunStore
from test_search import FAULTS, TESTS, candidates, smoke

HAS_RAY = importlib.util.find_spec("ray") is not None


# ---------------------------------------------------------------------------
# The cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of the session `sid`: what `ray start` started, and their workers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            found.append(int(entry))
    return found


def _stop(sid: int) -> None:
    for sig, patience in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        for pid in _session_processes(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + patience
        while _session_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_processes(sid):
            return


class Cluster(typing.NamedTuple):
    address: str  # the head's GCS, as `ray start --address` and ray.init take it
    client: str  # its Ray Client server (ray://), for a coordinator outside the cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """The address of a fresh local Ray head node (2 CPUs), stopped after the session."""
    if not HAS_RAY:
        pytest.skip('needs Ray: pip install "optsearch[ray]"')
    cache = tmp_path_factory.mktemp("ray-node-cache")
    temp_dir = tempfile.mkdtemp(prefix="osray-")  # short: Ray's socket paths must fit in 107 characters
    port, client_port = _free_port(), _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    command += ["start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--node-ip-address", "127.0.0.1",
                "--port", str(port), "--disable-usage-stats", "--include-dashboard", "false",
                "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port", str(client_port),
                "--object-store-memory", str(200 * 2**20), "--temp-dir", temp_dir]
    # Ray makes a "127.0.0.1" node reachable on the machine's address: the cluster takes a token, given
    # to the head and to this process (the driver) alike. Whether ~/.ray/auth_token exists does not matter.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    # The node's processes (and so the actors) keep their baseline copies under the test's folder. The
    # Ray Client server gives a client's own server 30s to start, too little on 2 busy cores.
    env = {**os.environ, **auth, "OPTSEARCH_CACHE": str(cache), "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}
    env.pop("RAY_ADDRESS", None)
    driver = pytest.MonkeyPatch()
    for name, value in auth.items():
        driver.setenv(name, value)
    driver.delenv("RAY_ADDRESS", raising=False)
    if "ray" in sys.modules:  # Ray reads its authentication mode once: again, as Ray does when it turns tokens on
        from ray._raylet import Config

        Config.initialize("")
    started = time.monotonic()
    head = subprocess.Popen(command, env=env, cwd=temp_dir, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = head.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        head.kill()
        output = head.communicate()[0]
    try:
        if head.returncode != 0:
            pytest.fail(f"`ray start --head` failed ({head.returncode}):\n{output[-3000:]}")
        print(f"\nray head on 127.0.0.1:{port} in {time.monotonic() - started:.1f}s")
        yield Cluster(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}")
    finally:
        _stop(head.pid)  # `ray start` led the session: everything it started is in it
        driver.undo()
        shutil.rmtree(temp_dir, ignore_errors=True)


def on_ray(cluster, baseline_cache, *overrides):
    return smoke(baseline_cache, "workers.backend=ray", f"workers.address={cluster.address}", *overrides)


def assert_log_is_whole(run_dir, expected):
    """Events numbered 1, 2, 3, ... with no gap or repeat; each candidate once."""
    events = RunStore(run_dir).read_events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    found = candidates(run_dir)
    assert len(found) == expected
    assert len({e["id"] for e in found}) == expected
    return found


# ---------------------------------------------------------------------------
# Searches on the cluster


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_smoke_search_on_ray_then_resumed_locally(tmp_path, baseline_cache, ray_cluster, capsys):
    run_dir = tmp_path / "run"
    result = run(on_ray(ray_cluster, baseline_cache), run_dir=run_dir)
    assert result.stopped_by == "max_evals"
    events = assert_log_is_whole(run_dir, 10)
    assert result.counters.evaluated == 10
    assert {e["status"] for e in events} <= {"ok", "diverged"}
    assert all(e["stage"] in ("cheap", "full") and set(e["tasks"]) for e in events)
    assert result.hall_of_fame and all(m.held_out is not None for m in result.hall_of_fame)
    assert {e["worker"] for e in events} <= {0, 1}  # two actors, none replaced
    for e in events:
        assert 0 < e["seconds"] and e["started"] <= e["finished"]
    assert json.loads((run_dir / "config.json").read_text())["workers"]["backend"] == "ray"
    before = (run_dir / "events.jsonl").read_bytes()

    # `workers` is not part of the search's identity: the same search goes on with local workers.
    code = cli.main(["resume", str(run_dir), "--max-evals", "14", "--workers.backend=multiprocess"])
    assert code == 0, capsys.readouterr().err
    assert (run_dir / "events.jsonl").read_bytes().startswith(before)
    assert_log_is_whole(run_dir, 14)
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["state"]["counters"]["evaluated"] == 14


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_every_kind_of_failure_is_recorded_on_ray(tmp_path, baseline_cache, ray_cluster, monkeypatch):
    """tests/test_search.py's fault test on actors: the plugin set reaches them by Ray's py_modules."""
    monkeypatch.syspath_prepend(str(TESTS))
    from faulty_primitives import FAULTY

    files = []
    for op in FAULTS:
        path = tmp_path / f"{op}.json"
        save(parse(f"program {op}\nv = {op}(g)\nu = add(v, g)\nreturn u", FAULTY), path)
        files.append(str(path))
    # The timeout is test_search's 4s plus room: the 2-CPU cluster shares its cores with the coordinator and
    # Ray's own processes, and "nan" (trained, not failed) must finish inside it.
    config = on_ray(ray_cluster, baseline_cache, "evolution.primitive_set=faulty_primitives:FAULTY",
                    f"evolution.warm_start={','.join(files + ['signum'])}", "evaluation.timeout=10",
                    "evaluation.meta_every=0", "workers.memory_gb=1", "stop.max_evals=9")
    result = run(config, run_dir=tmp_path / "run")
    assert result.stopped_by == "max_evals", [(e["warm_start"], e["status"], e["seconds"], e["reason"][-200:])
                                              for e in candidates(tmp_path / "run")]
    events = assert_log_is_whole(tmp_path / "run", 9)
    by_name = {e.get("warm_start", "").rsplit("/", 1)[-1].removesuffix(".json"): e for e in events}
    for op, (status, reason) in FAULTS.items():
        assert by_name[op]["status"] == status, (op, by_name[op]["status"], by_name[op]["reason"][-300:])
        assert reason in by_name[op]["reason"], (op, by_name[op]["reason"][-300:])
    assert "Traceback" in by_name["boom"]["reason"]
    assert "ActorDiedError" in by_name["die"]["reason"]  # Ray's account of the death, in one line
    assert by_name["signum"]["status"] == "ok"
    failed = [e for e in events if e["status"] in ("error", "timeout", "crashed")]
    assert result.counters.failed == len(failed) >= 4 and all(e["reason"] for e in failed)
    assert max(e["worker"] for e in events) >= 2  # the search went on with fresh actors


# ---------------------------------------------------------------------------
# The pool itself: cancel, a worker that cannot start


def _fingerprint_job(job_id, text, primitive_set):
    program = KNOWN_PROGRAMS[text] if text in KNOWN_PROGRAMS else parse(text, primitive_set)
    return Job(job_id, JobKind.FINGERPRINT, {"program": to_dict(program)})


def _poll_until(pool, count, seconds=60.0):
    done, deadline = [], time.monotonic() + seconds
    while len(done) < count and time.monotonic() < deadline:
        done += pool.poll(0.5)
    return done


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_cancel_stops_a_job_with_no_completion(ray_cluster, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    from faulty_primitives import FAULTY

    from search.jobs import build_runner
    from search.ray_backend import RayPool

    config = config_module.load("smoke", overrides=["tracking.enabled=false",
                                                    "evolution.primitive_set=faulty_primitives:FAULTY"])
    pool = RayPool(1, build_runner, {"config": config.to_dict()}, 60.0, address=ray_cluster.address,
                   primitive_set="faulty_primitives:FAULTY")
    try:
        assert pool.free_slots() == 1
        pool.submit(_fingerprint_job(1, "signum", FAULTY))
        assert [(c.job.id, c.status, c.worker) for c in _poll_until(pool, 1)] == [(1, Status.OK, 0)]
        pool.submit(_fingerprint_job(2, "program hang\nv = hang(g)\nu = add(v, g)\nreturn u", FAULTY))
        assert pool.free_slots() == 0
        assert pool.poll(2.0) == []  # it hangs, on the started actor
        pool.cancel(2)
        assert pool.free_slots() == 1
        pool.submit(_fingerprint_job(3, "signum", FAULTY))
        done = _poll_until(pool, 1)
        assert [(c.job.id, c.status) for c in done] == [(3, Status.OK)]
        assert done[0].worker == 1  # a fresh actor: the hanging one was killed
        assert pool.poll(0.5) == []  # nothing ever comes for the cancelled job
    finally:
        pool.close()


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_a_coordinator_outside_the_cluster_uses_ray_client(ray_cluster):
    from search.jobs import build_runner
    from search.ray_backend import RayPool

    config = config_module.load("smoke", overrides=["tracking.enabled=false"])
    pool = RayPool(1, build_runner, {"config": config.to_dict()}, 60.0, address=ray_cluster.client)
    try:
        pool.submit(_fingerprint_job(1, "signum", None))
        done = _poll_until(pool, 1)
        assert [(c.job.id, c.status) for c in done] == [(1, Status.OK)], done
        assert isinstance(done[0].result, str) and done[0].seconds > 0
    finally:
        pool.close()


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_a_worker_that_cannot_start_stops_the_search(ray_cluster):
    from search.jobs import build_runner
    from search.ray_backend import RayPool

    config = config_module.load("smoke", overrides=["tracking.enabled=false"]).to_dict()
    config["evaluation"]["target"] = "no-such-program"  # build_runner raises in the actor
    config["evaluation"]["kind"] = "behaviour"
    pool = RayPool(1, build_runner, {"config": config}, 60.0, address=ray_cluster.address)
    try:
        pool.submit(_fingerprint_job(1, "signum", None))
        with pytest.raises(RuntimeError, match="could not start(.|\n)*no-such-program"):
            _poll_until(pool, 1)
    finally:
        pool.close()


@pytest.mark.ray
@pytest.mark.skipif(not HAS_RAY, reason='needs Ray: pip install "optsearch[ray]"')
def test_a_worker_shape_no_node_can_hold_is_refused(ray_cluster):
    from search.jobs import build_runner
    from search.ray_backend import RayPool

    config = config_module.load("smoke", overrides=["tracking.enabled=false"])
    with pytest.raises(ConfigError, match="no node of the Ray cluster has 1 CPU.* and 0.5 GPU"):
        RayPool(1, build_runner, {"config": config.to_dict()}, 60.0, address=ray_cluster.address,
                gpus_per_worker=0.5)
    import ray

    assert not ray.is_initialized()  # disconnected on the way out


# ---------------------------------------------------------------------------
# Configuration (no cluster needed)


@pytest.mark.parametrize("override, message", [
    ("workers.backend=dask", "workers.backend must be one of multiprocess, ray"),
    ("workers.address=http://head:8265", "workers.address must be"),
    ("workers.address=head", "workers.address must be"),
    ("workers.cpus_per_worker=0", "workers.cpus_per_worker must be positive"),
    ("workers.gpus_per_worker=-1", "workers.gpus_per_worker must be >= 0"),
    ("workers.gpus_per_worker=1.5", "above 1 must be a whole number"),
])
def test_bad_worker_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_module.load("smoke", overrides=[override])


@pytest.mark.parametrize("address", ["", "auto", "10.0.0.1:6379", "head:6379", "ray://head:10001", "ray://head"])
def test_ray_addresses(address):
    assert config_module.load("smoke", overrides=[f"workers.address={address}"]).workers.address == address


def test_serial_and_ray_do_not_mix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match="workers.serial"):
        config_module.load("smoke", overrides=["workers.backend=ray", "workers.serial=true"])


def test_asking_for_ray_without_ray_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code = cli.main(["run", "--preset", "smoke", "--run-dir", str(tmp_path / "run"), "--workers.backend=ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and 'pip install "optsearch[ray]"' in err, err
    assert not (tmp_path / "run").exists()
