"""Fault-isolated evaluation: a steady-state pool of long-lived worker processes.

Each worker (a `multiprocess` process, spawned so that no torch state or
thread is inherited) imports torch once, limits itself to one thread and an
address-space ceiling, builds the evaluator, and then serves jobs from its
own pipe until told to stop. The coordinator keeps every worker busy (no
generations: a new job goes out as soon as one comes back) and watches:

  - an exception in a job comes back as status "error" with its traceback;
  - a job running past the timeout has its worker killed: status "timeout";
  - a worker that dies (os._exit, a signal, the OOM killer) is noticed by its
    process sentinel: status "crashed" with the exit code;
and a killed or dead worker is replaced by a fresh one. A memory limit
(RLIMIT_AS) makes an oversized allocation fail as an exception inside the
job instead of taking the machine down.

SerialPool runs jobs in the calling process, one at a time, in order: the
deterministic mode (no timeouts there, and a crash is the caller's crash).

Both implement the execution protocol (search/execution.py): free_slots,
submit, poll, cancel, close.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

import multiprocess
from multiprocess.connection import wait

from search.records import Completion, Job, Status

# Time a fresh worker may take to import torch and build its evaluator
# before its first job's clock starts.
STARTUP_GRACE = 120.0
# Workers that die before finishing any job, in a row, before the pool gives
# up: a worker that cannot start would otherwise be replaced for ever.
MAX_EARLY_DEATHS = 3


# The function a worker calls to build its job runner: settings -> (job -> result).
RunnerFactory = Callable[[dict[str, Any]], Callable[[Job], Any]]


@contextlib.contextmanager
def _main_module_hidden():
    """Start a worker without re-running the caller's script in it.

    A spawned process normally imports the parent's __main__ first, so that
    functions defined there can be unpickled; a worker needs nothing from it
    (its target is search.workers._worker_main, its settings plain data). A
    script without an `if __name__ == "__main__":` guard, or one piped to
    `python -`, would otherwise start a search again inside every worker.
    During start(), __main__ is a bare module with no file to import.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _limit_memory(gigabytes: float) -> None:
    if gigabytes > 0:
        import resource

        limit = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _worker_main(conn, factory: RunnerFactory, settings: dict[str, Any], memory_gb: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    _limit_memory(memory_gb)
    try:
        run = factory(settings)
    except BaseException:  # report why this worker cannot work, then stop
        conn.send(("broken", None, traceback.format_exc()))
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(("started", job.id, time.time()))
        try:
            result = run(job)
        except BaseException:  # noqa: BLE001 -- every failure of a candidate is data
            conn.send(("error", job.id, traceback.format_exc(limit=20)))
        else:
            conn.send(("ok", job.id, result))
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # an idle worker holds no GPU memory its neighbours could use


@dataclasses.dataclass
class _Worker:
    index: int
    process: Any
    conn: Any
    job: Job | None = None
    sent: float = 0.0
    started: float | None = None  # when the worker acknowledged the job (monotonic clock)
    started_at: float = 0.0  # the same moment on the wall clock, as the worker read it
    fresh: bool = True  # has not finished a job yet (startup grace)


class WorkerPool:
    """`size` worker processes; submit() jobs, poll() completions."""

    def __init__(self, size: int, factory: RunnerFactory, settings: dict[str, Any], timeout: float,
                 memory_gb: float = 0.0):
        self.size, self.factory, self.settings = size, factory, settings
        self.timeout, self.memory_gb = timeout, memory_gb
        self._context = multiprocess.get_context("spawn")
        self._next_index = 0
        self.workers: list[_Worker] = [self._spawn() for _ in range(size)]
        self._early_deaths = 0

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        settings = {**self.settings, "worker": self._next_index}  # e.g. which GPU to take
        process = self._context.Process(
            target=_worker_main, args=(child, self.factory, settings, self.memory_gb), daemon=True,
            name=f"optsearch-worker-{self._next_index}",
        )
        with _main_module_hidden():
            process.start()
        child.close()
        worker = _Worker(self._next_index, process, parent)
        self._next_index += 1
        return worker

    def free_slots(self) -> int:
        return sum(w.job is None for w in self.workers)

    def submit(self, job: Job) -> None:
        worker = next(w for w in self.workers if w.job is None)
        worker.job, worker.sent, worker.started = job, time.monotonic(), None
        try:
            worker.conn.send(job)
        except (BrokenPipeError, OSError):
            pass  # the worker is dead: poll() sees its sentinel and reports the job as crashed

    def _replace(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        self.workers[self.workers.index(worker)] = self._spawn()

    def cancel(self, job_id: int) -> None:
        """Stop a job now: its worker is killed and replaced, and no completion comes for it."""
        for worker in self.workers:
            if worker.job is not None and worker.job.id == job_id:
                worker.job = None
                self._replace(worker)

    def _deadline(self, worker: _Worker) -> float:
        if not worker.job.timed:
            return math.inf
        if worker.started is not None:
            return worker.started + self.timeout
        return worker.sent + self.timeout + (STARTUP_GRACE if worker.fresh else 0.0)

    def poll(self, timeout: float | None = None) -> list[Completion]:
        """Completions that are ready, waiting at most `timeout` seconds for the first."""
        completions: list[Completion] = []
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            return completions
        now = time.monotonic()
        wait_for = min(self._deadline(w) for w in busy) - now
        if timeout is not None:
            wait_for = min(wait_for, timeout)
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                     None if wait_for == math.inf else max(0.0, wait_for))
        for worker in busy:
            if worker.conn in ready or worker.process.sentinel in ready:
                completions += self._read(worker)  # a dead worker's last words first
            if worker.job is None:
                continue
            if not worker.process.is_alive():
                code = worker.process.exitcode
                why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                if worker.fresh:
                    self._early_deaths += 1
                    if self._early_deaths >= MAX_EARLY_DEATHS:
                        raise RuntimeError(f"{MAX_EARLY_DEATHS} workers in a row died before finishing a job "
                                           f"(last: {why}); see their output above")
                completions.append(self._finish(worker, Status.CRASHED, None, f"worker process died ({why})"))
                self._replace(worker)
            elif time.monotonic() > self._deadline(worker):
                completions.append(self._finish(worker, Status.TIMEOUT, None,
                                                f"no result after {self.timeout:g}s; worker killed"))
                self._replace(worker)
        return completions

    def _read(self, worker: _Worker) -> list[Completion]:
        out = []
        while worker.job is not None and worker.conn.poll():
            try:
                kind, job_id, value = worker.conn.recv()
            except (EOFError, OSError):
                break  # died mid-message: the sentinel check reports it
            if kind == "started":
                worker.started, worker.started_at = time.monotonic(), value
            elif kind == "broken":
                raise RuntimeError(f"a worker could not start:\n{value}")
            elif job_id == worker.job.id:
                ok = kind == "ok"
                out.append(self._finish(worker, Status(kind), value if ok else None, "" if ok else value))
        return out

    def _finish(self, worker: _Worker, status: Status, result: Any, reason: str) -> Completion:
        if status is not Status.CRASHED:
            self._early_deaths = 0
        job = worker.job
        start = worker.started if worker.started is not None else worker.sent
        now = time.time()
        completion = Completion(job, status, result, reason, worker.index, time.monotonic() - start,
                                worker.started_at or now, now)
        worker.job, worker.started, worker.started_at, worker.fresh = None, None, 0.0, False
        return completion

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()


class SerialPool:
    """The same protocol, one job at a time in this process (deterministic mode)."""

    def __init__(self, factory: RunnerFactory, settings: dict[str, Any]):
        self.size = 1
        self.run = factory(settings)
        self._done: list[Completion] = []

    def free_slots(self) -> int:
        return 0 if self._done else 1

    def submit(self, job: Job) -> None:
        started, start = time.time(), time.perf_counter()
        try:
            status, result, reason = Status.OK, self.run(job), ""
        except Exception:  # noqa: BLE001
            status, result, reason = Status.ERROR, None, traceback.format_exc(limit=20)
        self._done.append(Completion(job, status, result, reason, 0, time.perf_counter() - start, started, time.time()))

    def poll(self, timeout: float | None = None) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def cancel(self, job_id: int) -> None:
        self._done = [c for c in self._done if c.job.id != job_id]

    def close(self) -> None:
        pass
