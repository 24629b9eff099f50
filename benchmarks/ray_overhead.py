"""The Ray backend against local worker processes: candidates/s, and what Ray's scheduling costs a job.

    python benchmarks/ray_overhead.py [--evals 30] [--rounds 2]

A local Ray head with 2 CPUs (started here, stopped by its processes at the
end) and 2 actors, against the multiprocess backend with 2 workers, on the
smoke preset at full length (--evaluation.step_fraction=1), tracking off,
alternating backends round by round, same seed. The AdamW baselines are tuned
once before the rounds (not timed).

candidates/s: evaluated candidates over the search's wall time, workers'
start included (run() from call to return); "busy" counts from the first job
submitted to the last result taken. Ray's scheduling overhead per job, from
the coordinator's clock and the actor's (one machine, one clock): from
submit() to the job's start on the actor, and from its end there to the
poll() that returned it; per candidate, the sum over its jobs (fingerprint,
cheap tier, full suite, held-out). Jobs submitted while no actor was free and
started wait for a start, not for scheduling, and are left out (for the local
pool, jobs sent to a worker that had not finished a job yet). The end-to-poll
time in a search includes the coordinator's own work between two polls
(recording events, checkpoints, plots); the same jobs sent one at a time to
otherwise idle actors show Ray's cost alone.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search import config as config_module
from search import engine


class Timed:
    """A backend as the engine sees it, with every job's submit and poll times written down."""

    def __init__(self, backend):
        self.backend = backend
        self.submitted: dict[int, float] = {}
        self.jobs: list[tuple] = []  # (submitted, started, ended on the worker, polled, worker)
        self.count = 0
        self.first_submit: float | None = None
        self.startup: set[int] = set()  # jobs that wait for a worker to start: not scheduling overhead
        self.last_result = 0.0

    def free_slots(self):
        return self.backend.free_slots()

    def submit(self, job):
        now = time.time()
        self.first_submit = self.first_submit or now
        self.submitted[job.id] = now
        if _waits_for_a_start(self.backend):
            self.startup.add(job.id)
        self.backend.submit(job)

    def poll(self, timeout=None):
        done = self.backend.poll(timeout)
        now = time.time()
        for c in done:
            self.last_result = now
            submitted = self.submitted.pop(c.job.id)
            if c.status.value in ("ok", "error") and c.job.id not in self.startup:
                self.jobs.append((submitted, c.started, c.started + c.seconds, now, c.worker))
            self.count += 1
        return done

    def cancel(self, job_id):
        self.backend.cancel(job_id)

    def close(self):
        self.backend.close()


def _waits_for_a_start(backend) -> bool:
    """Whether a job submitted now waits for a worker to start (the pools' own bookkeeping, read here only)."""
    if hasattr(backend, "queue"):  # RayPool: jobs go to actors that have started
        return not any(s.ready and s.job is None for s in backend.slots)
    worker = next((w for w in backend.workers if w.job is None), None)  # WorkerPool: the worker it goes to
    return worker is not None and worker.fresh


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def start_head(folder: Path) -> tuple[str, int, str]:
    """(address, the session id of its processes, its temp dir) of a fresh 2-CPU head on this machine."""
    temp_dir = tempfile.mkdtemp(prefix="osray-")
    port = _free_port()
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    os.environ.pop("RAY_ADDRESS", None)
    if "ray" in sys.modules:  # Ray reads its authentication mode once: again, as Ray does when it turns tokens on
        from ray._raylet import Config

        Config.initialize("")
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    command += ["start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--node-ip-address", "127.0.0.1",
                "--port", str(port), "--disable-usage-stats", "--include-dashboard", "false",
                "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
                "--object-store-memory", str(200 * 2**20), "--temp-dir", temp_dir]
    head = subprocess.Popen(command, env={**os.environ, "OPTSEARCH_CACHE": str(folder / "node-cache")},
                            cwd=temp_dir, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output, _ = head.communicate(timeout=180)
    if head.returncode != 0:
        stop_head(head.pid, temp_dir)
        sys.exit(f"ray start failed:\n{output[-3000:]}")
    # `ray start` has exited; what it started lives on in the session it led, whose id is its pid.
    return f"127.0.0.1:{port}", head.pid, temp_dir


def stop_head(sid: int, temp_dir: str) -> None:
    for sig, patience in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _session(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + patience
        while _session(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def one_search(overrides: list[str], run_dir: Path) -> dict:
    timed: list[Timed] = []
    real = engine.make_backend

    def make(config):
        timed.append(Timed(real(config)))
        return timed[0]

    engine.make_backend = make
    try:
        start = time.perf_counter()
        result = engine.run(config_module.load("smoke", overrides=overrides), run_dir=run_dir)
        wall = time.perf_counter() - start
    finally:
        engine.make_backend = real
    t = timed[0]
    return {"evaluated": result.counters.evaluated, "wall": wall, "busy": t.last_result - t.first_submit,
            "jobs": t.count, "to_start": [j[1] - j[0] for j in t.jobs], "to_poll": [j[3] - j[2] for j in t.jobs]}


def idle_round_trips(address: str, count: int) -> tuple[list[float], list[float]]:
    """Fingerprint jobs (microseconds of work) one at a time on 2 actors and nothing else: Ray's own cost."""
    from primitives.known import KNOWN_PROGRAMS
    from primitives.serialize import to_dict
    from search.jobs import build_runner
    from search.ray_backend import RayPool
    from search.records import Job, JobKind

    config = config_module.load("smoke", overrides=["tracking.enabled=false"])
    pool = RayPool(2, build_runner, {"config": config.to_dict()}, 60.0, address=address)
    program = {"program": to_dict(KNOWN_PROGRAMS["signum"])}
    to_start, to_poll = [], []
    try:
        for i in range(count + 10):
            submitted = time.time()
            pool.submit(Job(i, JobKind.FINGERPRINT, program))
            done: list = []
            while not done:
                done = pool.poll(1.0)
            polled, c = time.time(), done[0]
            if i >= 10:  # the actors' start and first jobs left out
                to_start.append(c.started - submitted)
                to_poll.append(polled - c.started - c.seconds)
    finally:
        pool.close()
    return to_start, to_poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=int, default=30, help="candidates per search")
    parser.add_argument("--rounds", type=int, default=2, help="searches per backend, alternating")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        common = ["tracking.enabled=false", f"evaluation.baseline_cache={folder / 'baselines.json'}",
                  "evaluation.step_fraction=1", "workers.workers=2"]
        engine.run(config_module.load("smoke", overrides=common + ["stop.max_evals=1"]), run_dir=folder / "warm")
        address, sid, temp_dir = start_head(folder)
        try:
            backends = {"multiprocess": ["workers.backend=multiprocess"],
                        "ray": ["workers.backend=ray", f"workers.address={address}"]}
            idle_start, idle_poll = idle_round_trips(address, 200)
            runs: dict[str, list[dict]] = {name: [] for name in backends}
            for round_ in range(args.rounds):
                for name, extra in backends.items():
                    runs[name].append(one_search(common + extra + [f"stop.max_evals={args.evals}"],
                                                 folder / f"{name}{round_}"))
                    r = runs[name][-1]
                    print(f"round {round_ + 1} {name}: {r['evaluated']} candidates in {r['wall']:.1f}s "
                          f"({r['evaluated'] / r['wall']:.3f}/s), {r['jobs']} jobs", flush=True)
        finally:
            stop_head(sid, temp_dir)

    def rate(name, key):
        return statistics.median(r["evaluated"] / r[key] for r in runs[name])

    ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
    p90 = lambda values: 1000 * statistics.quantiles(values, n=10)[-1] if len(values) > 1 else ms(values)  # noqa: E731
    jobs_per_candidate = statistics.mean(r["jobs"] / r["evaluated"] for r in runs["ray"])
    to_start = [v for r in runs["ray"] for v in r["to_start"]]
    to_poll = [v for r in runs["ray"] for v in r["to_poll"]]
    mp_start = [v for r in runs["multiprocess"] for v in r["to_start"]]
    print(f"\nsmoke preset at full length, {args.evals} candidates per search, 2 workers, "
          f"median of {args.rounds} rounds; {time.perf_counter() - began:.0f}s in all\n")
    print("| | multiprocess | ray | ray / multiprocess |\n|---|---:|---:|---:|")
    for label, key in (("candidates/s (run() wall time)", "wall"), ("candidates/s (busy: first submit to last result)", "busy")):
        mp, ry = rate("multiprocess", key), rate("ray", key)
        print(f"| {label} | {mp:.3f} | {ry:.3f} | {ry / mp:.2f}x |")
    print(f"| search wall time, s | {statistics.median(r['wall'] for r in runs['multiprocess']):.1f} | "
          f"{statistics.median(r['wall'] for r in runs['ray']):.1f} | |")
    per_job = [a + b for a, b in zip(to_start, to_poll)]
    idle = [a + b for a, b in zip(idle_start, idle_poll)]
    mean = lambda values: 1000 * statistics.mean(values)  # noqa: E731
    print(f"\nRay's scheduling overhead per job, in the searches above ({len(to_start)} jobs, "
          f"{jobs_per_candidate:.2f} jobs per candidate) and alone ({len(idle)} fingerprint jobs one at a time):\n")
    print("| | median ms | p90 ms | mean ms |\n|---|---:|---:|---:|")
    rows = [("search: submit() to start on the actor", to_start), ("search: end on the actor to poll()", to_poll),
            ("search: both, per job", per_job), ("alone: submit() to start on the actor", idle_start),
            ("alone: end on the actor to poll()", idle_poll), ("alone: both, per job", idle)]
    for label, values in rows:
        print(f"| {label} | {ms(values):.1f} | {p90(values):.1f} | {mean(values):.1f} |")
    print(f"| search: per candidate ({jobs_per_candidate:.2f} jobs) | {ms(per_job) * jobs_per_candidate:.1f} | | "
          f"{mean(per_job) * jobs_per_candidate:.1f} |")
    print(f"| for reference, multiprocess in the search: submit() to the worker's start | {ms(mp_start):.1f} | "
          f"{p90(mp_start):.1f} | {mean(mp_start):.1f} |")


if __name__ == "__main__":
    main()
