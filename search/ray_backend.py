"""The execution protocol (search/execution.py) on a Ray cluster: long-lived actors as workers.

    optsearch run --workers.backend=ray --workers.address=ray://head:10001 --workers.workers=16

The coordinator stays where the search was launched: it alone holds the run
directory and writes to MLflow. Each worker is a Ray actor that builds its job
runner once, with the same search.jobs.build_runner a local worker calls
(task data, baselines and torch state stay warm between jobs), limits torch to
the CPUs it was given, and then runs one job at a time. What travels to an
actor: its settings (the configuration as a dict and a worker index), jobs
(programs as JSON dicts) and the AdamW baselines the coordinator tuned (the
entries of its baseline cache, which a remote node cannot read); what comes
back: results as plain data. Nothing from the run directory travels.

The fault isolation is the local pool's (search/workers.py):
  - a job that raises comes back as ERROR with its traceback;
  - a job past evaluation.timeout has its actor killed (ray.kill: Ray cannot
    force-cancel a running actor task) and comes back as TIMEOUT;
  - a job whose actor dies (os._exit, a signal, the OOM killer, a lost node)
    comes back as CRASHED with Ray's reason;
and a killed or dead actor is replaced by a fresh one. A worker that cannot
build its runner stops the search with the reason, and so do
MAX_EARLY_DEATHS actors in a row that die before finishing a job (one that
cannot start would otherwise be replaced for ever).

Jobs go only to actors that have finished starting (a job's clock starts when
it is sent), so a cluster with room for fewer actors than asked for runs the
search on those it has; jobs submitted meanwhile wait here. If no actor at all
has started after RAY_STARTUP_GRACE seconds, the search stops and says so.

Code: every node needs optsearch and its dependencies installed (the same
versions as the coordinator, as Ray requires of Ray and Python). A plugin
primitive set ("package.module:NAME") that is not installed on the
coordinator (a local file or folder on sys.path) is shipped to the actors with
Ray's runtime_env py_modules: its top-level module or package, once per
search; an installed plugin must be installed on every node too.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import socket
import sys
import sysconfig
import time
import traceback
from pathlib import Path
from typing import Any

from search.config import RAY_INSTALL, ConfigError, SearchConfig
from search.records import Completion, Job, Status
from search.workers import MAX_EARLY_DEATHS, RunnerFactory

try:
    import ray
    import ray.exceptions
except ImportError:  # pragma: no cover - the config check says it first
    ray = None

log = logging.getLogger("optsearch")

# Time an actor may take to be placed, set up (runtime environment), import torch and build its runner.
# Longer than a local worker's grace (search/workers.py): a node may have to start first.
RAY_STARTUP_GRACE = 300.0
# optsearch's own packages: installed on every node, never shipped.
OWN_PACKAGES = frozenset({"primitives", "discovered", "proxy_tasks", "search"})


# ---------------------------------------------------------------------------
# The actor (runs on a node of the cluster)


class RayWorker:
    """One worker: builds its job runner once, then runs the jobs it is sent, one at a time.

    Failures of a job are data (status "error" and the traceback). A runner
    that cannot be built is reported by ready(); the actor stays up to say so.
    """

    def __init__(self, factory: RunnerFactory, settings: dict[str, Any], threads: int, memory_gb: float,
                 mirror_token: str):
        self.broken: str | None = None
        self.run_job = None
        self.baselines_version = -1
        try:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
            self.mirror = _mirror_path(mirror_token)
            config = settings["config"]
            settings = {**settings, "config": {**config, "evaluation": {**config["evaluation"],
                                                                          "baseline_cache": str(self.mirror)}}}
            self.run_job = factory(settings)
            _limit_memory_above_current(memory_gb)
        except BaseException:  # noqa: BLE001 -- report why this worker cannot work
            self.broken = traceback.format_exc()

    def ready(self) -> tuple[str | None, str, int]:
        """(None, or why the runner could not be built; this node's address; this process)."""
        return self.broken, _node_address(), os.getpid()

    def run(self, job: Job, baselines_version: int, baselines: dict | None) -> tuple[str, Any, float, float]:
        """(status "ok" or "error", result or traceback, start on this node's wall clock, seconds)."""
        started, start = time.time(), time.perf_counter()
        try:
            if self.run_job is None:
                raise RuntimeError(f"this worker could not start:\n{self.broken}")
            if baselines is not None and baselines_version > self.baselines_version:
                _merge_baselines(self.mirror, baselines)
                self.baselines_version = baselines_version
            status, value = "ok", self.run_job(job)
        except BaseException:  # noqa: BLE001 -- every failure of a candidate is data
            status, value = "error", traceback.format_exc(limit=20)
        return status, value, started, time.perf_counter() - start


def _node_address() -> str:
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 -- only for messages
        return socket.gethostname()


def _limit_memory_above_current(gigabytes: float) -> None:
    """An address-space ceiling `gigabytes` above what the process holds now (Linux; elsewhere none).

    A Ray worker maps ~9 GB it never touches (measured), so the local pool's
    absolute ceiling would break Ray itself; the job gets the same headroom instead.
    """
    if gigabytes <= 0:
        return
    try:
        with open("/proc/self/status") as status:
            current = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return
    import resource

    limit = current + int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _mirror_path(token: str) -> Path:
    """Where this node keeps its copy of the coordinator's baseline cache (beside its own cache)."""
    from proxy_tasks.scoring import default_cache_path

    return default_cache_path().parent / "ray" / f"{token}.json"


def _merge_baselines(path: Path, entries: dict) -> None:
    """Add the coordinator's entries to this node's copy (actors on a node share it: merged under a lock)."""
    import fcntl

    from primitives.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(path.read_text())
            if not isinstance(current, dict):
                current = {}
        except (OSError, ValueError):
            current = {}
        if all(current.get(key) == value for key, value in entries.items()):
            return
        current.update(entries)
        atomic_write_text(path, json.dumps(current), durable=False)


# ---------------------------------------------------------------------------
# The coordinator's side


@dataclasses.dataclass(eq=False)  # slots are told apart by identity
class _Slot:
    index: int  # the worker index its settings carry (GPU choice), and Completion.worker
    actor: Any
    ready_ref: Any  # ObjectRef of ready(); None once it has answered
    created: float  # monotonic
    ready: bool = False
    job: Job | None = None
    ref: Any = None  # ObjectRef of the running job
    sent: float = 0.0  # monotonic: when the job was sent (its clock)
    baselines_version: int = -1  # what this actor has been sent
    fresh: bool = True  # has not finished a job yet


class RayPool:
    """`size` Ray actors; submit() jobs, poll() completions (the execution protocol)."""

    def __init__(self, size: int, factory: RunnerFactory, settings: dict[str, Any], timeout: float, *,
                 address: str = "", cpus_per_worker: int = 1, gpus_per_worker: float = 0.0,
                 memory_gb: float = 0.0, baseline_cache: str | Path | None = None, primitive_set: str = ""):
        if ray is None:
            raise ConfigError(f"workers.backend = \"ray\" needs Ray, which is not installed here: {RAY_INSTALL}")
        self.size, self.factory, self.settings, self.timeout = size, factory, settings, timeout
        self.cpus, self.gpus, self.memory_gb = cpus_per_worker, gpus_per_worker, memory_gb
        self.address = address
        self.slots: list[_Slot] = []
        self.queue: collections.deque[Job] = collections.deque()  # submitted, waiting for a started actor
        self._next_index = 0
        self._early_deaths = 0
        self._warned_waiting = False
        self._connected = False  # this pool called ray.init, and so calls ray.shutdown
        self._baselines = _BaselineFeed(Path(baseline_cache) if baseline_cache else None)
        self._connect(plugin_modules(primitive_set))
        try:
            self._check_room()
            options: dict[str, Any] = {"num_cpus": cpus_per_worker, "max_restarts": 0, "max_task_retries": 0}
            if gpus_per_worker > 0:
                options["num_gpus"] = gpus_per_worker
            self._actor_class = ray.remote(RayWorker).options(**options)
            self._mirror_token = hashlib.sha256(
                f"{socket.gethostname()}:{self._baselines.path and self._baselines.path.resolve()}".encode()
            ).hexdigest()[:16]
            self.slots = [self._spawn() for _ in range(size)]
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: SearchConfig, factory: RunnerFactory, settings: dict[str, Any]) -> RayPool:
        from search.jobs import baseline_cache_path

        w = config.workers
        return cls(w.workers, factory, settings, config.evaluation.timeout, address=w.address,
                   cpus_per_worker=w.cpus_per_worker, gpus_per_worker=w.gpus_per_worker, memory_gb=w.memory_gb,
                   baseline_cache=baseline_cache_path(config), primitive_set=config.evolution.primitive_set)

    # ------------------------------------------------------------------ Ray

    def _connect(self, modules: list[str]) -> None:
        """Join (or start) Ray; `modules`: local code to ship to every actor (Ray takes local paths per job only)."""
        if ray.is_initialized():  # the caller's own Ray session (a notebook): used as it is, left open
            if modules:
                log.warning("Ray was initialised before the search: %s is not shipped to its workers, which must "
                            "be able to import it", ", ".join(modules))
            return
        try:
            ray.init(address=self.address or None, logging_level=logging.WARNING,
                     runtime_env={"py_modules": modules} if modules else None)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "Ray"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"workers.address: cannot connect to {where}: {first}") from None
        self._connected = True

    def _check_room(self) -> None:
        """Refuse a worker shape that no node of the cluster can hold (it would wait for ever)."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            return
        shape = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "none"
        raise ConfigError(f"no node of the Ray cluster has {self.cpus} CPU(s) and {self.gpus:g} GPU(s) for a worker "
                          f"(workers.cpus_per_worker, workers.gpus_per_worker); its nodes: {shape}")

    def _spawn(self) -> _Slot:
        index = self._next_index
        self._next_index += 1
        settings = {**self.settings, "worker": index}  # e.g. which GPU to take
        actor = self._actor_class.remote(self.factory, settings, self.cpus, self.memory_gb, self._mirror_token)
        return _Slot(index, actor, actor.ready.remote(), time.monotonic())

    def _replace(self, slot: _Slot) -> None:
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 -- already gone
            pass
        self.slots[self.slots.index(slot)] = self._spawn()

    # ------------------------------------------------------------------ the protocol

    def free_slots(self) -> int:
        return len(self.slots) - sum(s.job is not None for s in self.slots) - len(self.queue)

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self.slots:
            if not self.queue:
                return
            if slot.ready and slot.job is None:
                self._send(slot, self.queue.popleft())

    def _send(self, slot: _Slot, job: Job) -> None:
        version, entries = self._baselines.current()
        stale = entries if slot.baselines_version < version else None
        slot.job, slot.sent = job, time.monotonic()
        slot.ref = slot.actor.run.remote(job, version, stale)
        slot.baselines_version = version

    def cancel(self, job_id: int) -> None:
        """Stop a job now (its actor is killed and replaced); no completion comes for it."""
        self.queue = collections.deque(j for j in self.queue if j.id != job_id)
        for slot in list(self.slots):
            if slot.job is not None and slot.job.id == job_id:
                slot.job = None
                self._replace(slot)

    def _deadline(self, slot: _Slot) -> float:
        return slot.sent + self.timeout if slot.job.timed else math.inf

    def poll(self, timeout: float | None = None) -> list[Completion]:
        """Completions that are ready, waiting at most `timeout` seconds for the first."""
        busy = [s for s in self.slots if s.job is not None]
        starting = [s for s in self.slots if s.ready_ref is not None]
        refs = [s.ref for s in busy] + [s.ready_ref for s in starting]
        if not busy and not self.queue or not refs:
            return []
        now = time.monotonic()
        wait_for = min((self._deadline(s) for s in busy), default=now + (timeout or 1.0)) - now
        if self.queue and not any(s.ready for s in self.slots):
            wait_for = min(wait_for, min(s.created for s in self.slots) + RAY_STARTUP_GRACE - now)
        if timeout is not None:
            wait_for = min(wait_for, timeout)
        ready, _ = ray.wait(refs, num_returns=1, timeout=None if wait_for == math.inf else max(0.0, wait_for))
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        for slot in starting:  # first: a job's result may come with its actor's first answer
            if slot.ready_ref in ready_set:
                self._started(slot)
        completions: list[Completion] = []
        for slot in busy:
            if slot.ref in ready_set and slot in self.slots:
                completions.append(self._collect(slot))
            elif slot.job is not None and slot in self.slots and time.monotonic() > self._deadline(slot):
                completions.append(self._finish(slot, Status.TIMEOUT, None,
                                                f"no result after {self.timeout:g}s; worker killed",
                                                time.monotonic() - slot.sent))
                self._replace(slot)
        self._check_started()
        self._dispatch()
        return completions

    def _started(self, slot: _Slot) -> None:
        """The actor answered ready() (or died trying)."""
        ref, slot.ready_ref = slot.ready_ref, None
        try:
            broken, node, pid = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._early_death(_crash_reason(exc))
            self._replace(slot)
            return
        if broken is not None:
            raise RuntimeError(f"a Ray worker (on {node}, pid {pid}) could not start:\n{broken}")
        slot.ready = True

    def _check_started(self) -> None:
        waiting = [s for s in self.slots if not s.ready]
        if not waiting or not self.queue:
            return
        age = time.monotonic() - min(s.created for s in waiting)
        if age <= RAY_STARTUP_GRACE:
            return
        need = f"{self.cpus} CPU(s)" + (f" and {self.gpus:g} GPU(s)" if self.gpus else "")
        if not any(s.ready for s in self.slots):
            raise RuntimeError(f"no Ray worker started within {RAY_STARTUP_GRACE:g}s: the cluster has no room for an "
                               f"actor with {need}, or it cannot set one up (see `ray status` and Ray's logs)")
        if not self._warned_waiting:
            self._warned_waiting = True
            log.warning("%d of %d Ray workers are still waiting for %s each after %gs; the search goes on with "
                        "the others", len(waiting), len(self.slots), need, RAY_STARTUP_GRACE)

    def _early_death(self, why: str) -> None:
        self._early_deaths += 1
        if self._early_deaths >= MAX_EARLY_DEATHS:
            raise RuntimeError(f"{MAX_EARLY_DEATHS} Ray workers in a row died before finishing a job "
                               f"(last: {why})")

    def _collect(self, slot: _Slot) -> Completion:
        try:
            kind, value, started, seconds = ray.get(slot.ref)
        except ray.exceptions.RayTaskError as exc:  # the actor's method itself failed (e.g. an unpicklable result)
            return self._finish(slot, Status.ERROR, None, str(exc), time.monotonic() - slot.sent)
        except ray.exceptions.RayError as exc:  # the actor is gone: killed, crashed, OOM-killed, node lost
            why = _crash_reason(exc)
            if slot.fresh:
                self._early_death(why)
            completion = self._finish(slot, Status.CRASHED, None, f"worker process died ({why})",
                                      time.monotonic() - slot.sent)
            self._replace(slot)
            return completion
        ok = kind == "ok"
        return self._finish(slot, Status.OK if ok else Status.ERROR, value if ok else None, "" if ok else value,
                            seconds, started)

    def _finish(self, slot: _Slot, status: Status, result: Any, reason: str, seconds: float,
                started: float | None = None) -> Completion:
        if status is not Status.CRASHED:
            self._early_deaths = 0
        now = time.time()
        completion = Completion(slot.job, status, result, reason, slot.index, seconds,
                                started if started is not None else now - seconds, now)
        slot.job, slot.ref, slot.fresh = None, None, False
        return completion

    def close(self) -> None:
        """Kill the actors; disconnect from Ray, stopping it if this pool started it."""
        if ray is None:
            return
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 -- already gone, or the cluster is
                pass
        self.slots, self.queue = [], collections.deque()
        if self._connected:
            self._connected = False
            ray.shutdown()  # stops a local instance ray.init started; from a cluster, only disconnects


class _BaselineFeed:
    """The coordinator's baseline cache as Ray objects, re-read when the file changes."""

    def __init__(self, path: Path | None):
        self.path = path
        self.signature: tuple | None = None
        self.version = 0
        self.ref = None

    def current(self) -> tuple[int, Any]:
        if self.path is None:
            return self.version, None
        try:
            stat = os.stat(self.path)
        except OSError:
            return self.version, self.ref
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self.signature:
            try:
                entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self.version, self.ref  # being replaced, or damaged: the cache's own rule is to recompute
            self.signature = signature
            if isinstance(entries, dict):
                self.version += 1
                self.ref = ray.put(entries)
        return self.version, self.ref


def _crash_reason(exc: BaseException) -> str:
    """Ray's account of a lost actor, in one line: where, and why."""
    text = str(exc)
    because = re.search(r"The actor is dead because ([^\n]*)", text)
    detail = because.group(1) if because else (text.strip().splitlines() or [type(exc).__name__])[0]
    detail = detail.split(" Some common causes include")[0].strip()
    where = []
    for key in ("ip", "pid"):
        found = re.search(rf"^\s*{key}: (\S+)", text, re.MULTILINE)
        if found:
            where.append(f"{key} {found.group(1)}")
    return f"{type(exc).__name__}{' on ' + ', '.join(where) if where else ''}: {detail[:400]}"


def plugin_modules(primitive_set: str) -> list[str]:
    """The local code a plugin primitive set needs on the actors: its top-level module or package.

    Nothing for a built-in set, for optsearch's own packages, or for a plugin
    installed in site-packages (every node must have it installed, as it has optsearch).
    """
    module, sep, _ = primitive_set.partition(":")
    if not sep or not module:
        return []
    top = module.split(".")[0]
    if top in OWN_PACKAGES:
        return []
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return []  # the actors say why they cannot import it
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        if len(locations) != 1:
            return []  # a namespace package spread over folders: it must be installed on the nodes
        path = locations[0]
    elif spec.origin and spec.origin.endswith(".py"):
        path = spec.origin
    else:
        return []  # compiled or frozen: installed
    installed = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")} | set(
        p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    resolved = Path(path).resolve()
    if any(resolved.is_relative_to(Path(root).resolve()) for root in installed if root):
        return []
    return [str(resolved)]
