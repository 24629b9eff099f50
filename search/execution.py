"""The execution protocol between the search and whatever runs its jobs.

    free_slots() -> int          how many jobs could start now
    submit(job)                  start a job (only when a slot is free)
    poll(timeout) -> [Completion]  what finished, waiting at most `timeout` for the first
    cancel(job_id)               stop a job now; no completion comes for it
    close()                      stop everything; nothing may be used after

Backends: SerialPool (in this process, one job at a time, in order: the
deterministic mode) and WorkerPool (long-lived local worker processes), both
in search/workers.py, and RayPool (long-lived actors on a Ray cluster:
workers.backend = "ray", search/ray_backend.py). A backend reports a job that
raised, ran past the timeout, or lost its worker as a Completion with that
status; the search records it and goes on. Jobs and results are plain data
(programs as JSON dicts), so a backend may run them anywhere.
"""

from __future__ import annotations

from typing import Protocol

from search.config import SearchConfig
from search.records import Completion, Job


class Backend(Protocol):
    def free_slots(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def poll(self, timeout: float | None = None) -> list[Completion]: ...

    def cancel(self, job_id: int) -> None: ...

    def close(self) -> None: ...


def make_backend(config: SearchConfig) -> Backend:
    """The backend the configuration asks for, its workers started."""
    from search.jobs import build_runner
    from search.workers import SerialPool, WorkerPool

    settings = {"config": config.to_dict()}
    if config.workers.serial:
        return SerialPool(build_runner, settings)
    if config.workers.backend == "ray":
        from search.ray_backend import RayPool  # imports Ray: only when asked for

        return RayPool.from_config(config, build_runner, settings)
    return WorkerPool(config.workers.workers, build_runner, settings, config.evaluation.timeout,
                      config.workers.memory_gb)
