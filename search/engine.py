"""The search loop: the state, the scheduler and the observers, wired together.

    propose (proposer.py) -> jobs (scheduler.py) -> workers (execution.py)
        -> completions -> events -> events.jsonl, state.apply (state.py), observers

Each finished job becomes zero or more events; each event is appended to
events.jsonl and applied to the state, in that order, and then shown to the
observers (tracker, display, plots). The state is never changed otherwise,
so a resumed search, which replays the log (replay.py), is the search that
was stopped. Only this process writes to the run directory (and to MLflow).

    run(config) / resume(run_dir)      the entry points; both return a SearchResult
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from proxy_tasks.scoring import ENTRY_KEYS
from search import replay
from search.config import RUN_ID, ConfigError, SearchConfig
from search.events import CacheHit, CandidateEvaluated, Event, HeldOutRequested, Restarted
from search.execution import Backend, make_backend
from search.funnel import Funnel
from search.individual import Individual
from search.jobs import make_evaluator, resolve_primitive_set, resolve_program
from search.observers import Observer, Snapshot
from search.plots import PlotWriter
from search.proposer import PopulationConverged, Proposer
from search.records import Completion, Counters, Job, JobKind, Status, finite_number
from search.run_store import RunDirError, RunStore
from search.scheduler import Scheduler
from search.state import SearchState

POLL_SECONDS = 0.25
log = logging.getLogger("optsearch")


@dataclasses.dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    hall_of_fame: list[Individual]  # ranked
    best: Individual | None
    counters: Counters
    seconds: float
    stopped_by: str  # max_evals, wall_time, target_score, exhausted, converged, interrupted


class BaselineError(RuntimeError):
    """Tuning the AdamW baseline failed: no candidate can be scored."""


class Search:
    """One search, new or resumed. run() returns a SearchResult."""

    def __init__(self, config: SearchConfig, store: RunStore, run_id: str, state: SearchState,
                 observers: Sequence[Observer] = (), elapsed_before: float = 0.0):
        self.config = config
        self.store = store
        self.run_id = run_id
        self.state = state
        self.observers = list(observers)
        self.deterministic = config.workers.serial
        warm = {name: resolve_program(name, state.primitive_set) for name in config.evolution.warm_start}
        self.proposer = Proposer(config, state.primitive_set, warm)
        self.evaluator = make_evaluator(config, state.primitive_set) if config.evaluation.kind == "proxy_tasks" else None
        self.funnel = Funnel(config, has_full_stage=self.evaluator is None or bool(self.evaluator.stages[JobKind.FULL]))
        self.scheduler = Scheduler(state, self.proposer, self.funnel)
        # Plots belong to the run directory: every search draws them, before the other observers
        # (the tracker logs them) see a checkpoint.
        self.observers = [PlotWriter(self._baseline_curves if self.evaluator else None), *self.observers]
        self.elapsed_before = elapsed_before
        self.phase = "starting"
        self.baselines_left = 0
        self._start = time.monotonic()
        self._setup_seconds = 0.0  # this session's start-up and baseline tuning: not counted against stop.wall_time
        self._checkpointed_at = state.counters.evaluated

    # ------------------------------------------------------------------ what observers see

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def searched(self) -> float:
        """What stop.wall_time counts: the time elapsed less this session's start-up and baseline tuning."""
        return self.elapsed() - self._setup_seconds

    def snapshot(self) -> Snapshot:
        return Snapshot(self.run_id, self.store.path, self.config, self.phase,
                        dataclasses.replace(self.state.counters), self.state.best_score, self.state.best(),
                        tuple(self.state.hall_of_fame.ranked()), self.elapsed(),
                        self.scheduler.candidates_in_progress, self.baselines_left)

    def _notify(self, hook: str, *args) -> None:
        if self.observers:
            snapshot = self.snapshot()
            for observer in self.observers:
                if hook == "on_event":
                    observer.on_event(args[0], snapshot)
                elif hook == "on_phase":
                    observer.on_phase(args[0], snapshot)
                elif hook == "on_checkpoint":
                    observer.on_checkpoint(snapshot, args[0])
                elif hook == "on_end":
                    observer.on_end(snapshot, args[0])
                else:
                    observer.on_start(snapshot)

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._notify("on_phase", phase)

    # ------------------------------------------------------------------ recording

    def record(self, event: Event) -> None:
        """Number the event, append it to the log, apply it, show it; then what it makes due."""
        changes: dict = {"seq": self.state.seq + 1}
        if hasattr(event, "time"):
            changes["time"] = None if self.deterministic else time.time()
        if isinstance(event, CandidateEvaluated) and self.deterministic:
            self.store.append_timing({"seq": changes["seq"], "id": event.id, "seconds": event.seconds})
            changes.update(seconds=None, started=None, finished=None)
        event = dataclasses.replace(event, **changes)
        self.store.append_event(event.to_dict())
        self.state.apply(event)
        self._notify("on_event", event)
        if isinstance(event, (CandidateEvaluated, CacheHit)):
            self._follow_up()

    def _follow_up(self) -> None:
        due = self.state.held_out_due()
        if due:
            self.record(HeldOutRequested(seq=0, ids=due))
            self.scheduler.queue_held_out(due)
        self.scheduler.queue_transfers()
        if self.state.plateau():
            best = self.state.population.best()
            self.record(Restarted(seq=0, best=best.id, score=best.score, members=self.state.restart_members()))

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, final: bool = False) -> None:
        self.store.write_checkpoint({
            "run_id": self.run_id, "config_digest": self.config.digest(), "state": self.state.summary(),
            "rng": self.proposer.rng.bit_generator.state, "elapsed": self.elapsed(),
        })
        self.store.write_hall_of_fame([_member_record(m) for m in self.state.hall_of_fame.ranked()])
        self._checkpointed_at = self.state.counters.evaluated
        self._notify("on_checkpoint", final)

    # ------------------------------------------------------------------ the loop

    def _stop_reason(self) -> str | None:
        stop = self.config.stop
        if self.state.counters.evaluated >= stop.max_evals:
            return "max_evals"
        if stop.wall_time and self.searched() >= stop.wall_time:
            return "wall_time"
        if self.state.reached_target():
            return "target_score"
        return None

    def _step(self, backend: Backend) -> None:
        """Take what finished (waiting at most POLL_SECONDS), then hand out jobs to free workers.

        In this order, a scheduler that is idle after a step had nothing to hand out.
        """
        for completion in backend.poll(POLL_SECONDS):
            for event in self.scheduler.complete(completion):
                self.record(event)
        if self.state.counters.evaluated - self._checkpointed_at >= self.config.persistence.checkpoint_every:
            self.checkpoint()
        while backend.free_slots():
            job = self.scheduler.next_job()
            if job is None:
                break
            backend.submit(job)

    def run(self) -> SearchResult:
        self._start = time.monotonic()
        previous_handler = signal.getsignal(signal.SIGINT)
        stopped_by = "interrupted"
        backend = None
        try:
            self._notify("on_start")
            self._enter("starting workers")
            backend = make_backend(self.config)
            self._compute_baselines(backend)
            self._setup_seconds = time.monotonic() - self._start  # the wall time counts from here
            self._enter("searching")
            self.scheduler.queue_held_out(sorted(self.state.held_out_pending))  # requested before a stop
            self.scheduler.queue_transfers()
            stopped_by = self._search(backend)
            if stopped_by in ("max_evals", "exhausted", "converged", "wall_time"):
                # after a wall-time stop, a bounded extra time (stop.final_seconds), said in the panel
                bounded = stopped_by == "wall_time"
                self._final_scoring(backend, self.config.stop.final_seconds if bounded else None)
        except KeyboardInterrupt:
            stopped_by = "interrupted"
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the checkpoint
            try:
                self.scheduler.abandon()  # what is still running is stopped with its workers, below
                self.checkpoint(final=True)
                if backend is not None:
                    backend.close()
                self._notify("on_end", stopped_by)
                self.store.close()
            finally:
                signal.signal(signal.SIGINT, previous_handler)
        return self.result(stopped_by)

    def _search(self, backend: Backend) -> str:
        while True:
            reason = self._stop_reason()
            if reason in ("wall_time", "target_score"):
                return reason  # in-flight work is abandoned
            try:
                self._step(backend)
            except PopulationConverged as exc:
                log.warning("%s; no new candidates are proposed", exc)
                self.scheduler.proposing = False
            if self.scheduler.idle or (reason == "max_evals" and not self.scheduler.candidates_in_progress):
                if self._stop_reason() == "max_evals":
                    return "max_evals"
                if self.scheduler.idle:
                    return "converged" if not self.scheduler.proposing else "exhausted"

    def _final_scoring(self, backend: Backend, budget: float | None = None) -> None:
        """Score what is due before stopping: the unscored hall of fame (held out), pending transfers.

        With a `budget` (seconds; a wall-time stop), the candidates in flight finish first and everything
        stops when the budget is spent; without one, the wall time (if any) bounds it as before.
        """
        self.scheduler.proposing = False
        deadline = None if budget is None else time.monotonic() + budget
        if deadline is not None:
            self._enter(f"final scoring (at most {budget:.0f} s)")
            while self.scheduler.candidates_in_progress and time.monotonic() < deadline:
                self._step(backend)
        if self.config.evaluation.meta_every:
            unscored = self.state.unscored_members()
            if unscored:
                self.record(HeldOutRequested(seq=0, ids=unscored))
                self.scheduler.queue_held_out(unscored)
        if self.scheduler.idle:
            return
        self._enter("final scoring" if deadline is None else f"final scoring (at most {budget:.0f} s)")
        while not self.scheduler.idle:
            if deadline is not None and time.monotonic() >= deadline:
                return
            if deadline is None and self.config.stop.wall_time and self.searched() >= self.config.stop.wall_time:
                return
            self._step(backend)

    # ------------------------------------------------------------------ baselines

    def _compute_baselines(self, backend: Backend) -> None:
        """AdamW tuned on every task whose baseline is not cached yet, by the workers, before any candidate."""
        if self.evaluator is None:
            return
        ev = self.evaluator
        cache = ev.baselines
        missing = [{"task": t.name} for t in ev.all_tasks if cache.get(t, ev.seeds, ev.device, ev.protocol) is None]
        self._run_baselines(backend, missing)
        if ev.transfer is not None:  # at the transfer scale, from the base-size rates just computed
            self._run_baselines(backend, [{"task": name, "transfer": True} for name in ev.transfer.missing_baselines()])

    def _run_baselines(self, backend: Backend, payloads: list[dict]) -> None:
        if not payloads:
            return
        self._enter("baselines")
        jobs = [Job(-1 - i, JobKind.BASELINE, payload, timed=False) for i, payload in enumerate(payloads)]
        running = 0
        self.baselines_left = len(jobs)
        while jobs or running:
            while jobs and backend.free_slots():
                backend.submit(jobs.pop(0))
                running += 1
            for completion in backend.poll(POLL_SECONDS):
                running -= 1
                self._store_baseline(completion)
                self.baselines_left = len(jobs) + running
                self._notify("on_phase", "baselines")

    def _store_baseline(self, completion: Completion) -> None:
        payload = completion.job.payload
        if completion.status is not Status.OK:
            raise BaselineError(f"tuning the AdamW baseline on {payload['task']} failed "
                                f"({completion.status}):\n{completion.reason}")
        ev = self.evaluator
        key = ev.transfer.baseline_key(payload["task"]) if payload.get("transfer") else \
            ev.baselines.key(ev.task(payload["task"]), ev.seeds, ev.device, ev.protocol)
        ev.baselines.put_entry(key, {k: completion.result[k] for k in ENTRY_KEYS})

    def _baseline_curves(self, task_names: list[str]) -> dict[str, list[float]]:
        """Tuned AdamW's median loss curve on each task (for the loss-curve plot)."""
        return self.evaluator.baseline_curves(task_names)

    def result(self, stopped_by: str = "") -> SearchResult:
        return SearchResult(self.store.path, self.state.hall_of_fame.ranked(), self.state.best(),
                            self.state.counters, self.elapsed(), stopped_by)


def _member_record(member: Individual) -> dict:
    """A hall-of-fame member as hall_of_fame.json shows it."""
    return {"id": member.id, "score": member.score, "held_out": member.held_out, "transfer": member.transfer,
            "complexity": member.complexity, "state_buffers": member.state_buffers,
            "state_bytes": member.state_bytes, "stage": member.stage,
            "mutation": member.mutation, "structural_hash": member.structural_hash,
            "program_text": member.program.text(), "program": member.to_dict()["program"]}


# ---------------------------------------------------------------------------
# Entry points


def default_run_id(config: SearchConfig) -> str:
    """<preset>-<UTC time>-<6 hex digits>: two searches started in one folder in the same second get two ids
    (the CLI's and the Python API's alike)."""
    import secrets

    return f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def _check_device(config: SearchConfig) -> None:
    """What this machine must have for the search to start (a run directory is read without it)."""
    config.workers.check_available()
    if config.evaluation.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"evaluation.device = {config.evaluation.device!r}, but CUDA is not available here")


def run(config: SearchConfig, run_dir: str | Path | None = None, observers: Sequence[Observer] = ()
        ) -> SearchResult:
    """Start a search in a new run directory; the notebook entry point."""
    config.check()
    _check_device(config)
    if run_dir is not None:
        path = Path(run_dir)
        run_id = config.persistence.run_id or path.name
    else:
        run_id = config.persistence.run_id or default_run_id(config)
        path = Path(config.persistence.run_dir) / run_id
    if not RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r} (from the run directory's name) is not a usable name: letters, "
                          f"digits, '.', '_' and '-'; set persistence.run_id")
    primitive_set = resolve_primitive_set(config.evolution.primitive_set)
    for name in config.evolution.warm_start:  # a bad warm start fails before anything is written
        resolve_program(name, primitive_set)
    store = RunStore(path)
    store.create({**config.to_dict(), "run_id": run_id})
    try:
        search = Search(config, store, run_id, SearchState(config, primitive_set), observers)
    except BaseException:
        store.close()
        raise
    return search.run()


def resume(run_dir: str | Path, overrides: list[str] | None = None, observers: Sequence[Observer] = (),
           observers_for: Callable[[SearchConfig], Sequence[Observer]] | None = None) -> SearchResult:
    """Continue a search from its run directory (after a crash, kill -9 or Ctrl-C, or with a larger budget)."""
    store = RunStore(run_dir)
    replay.read_config(store, overrides)  # a damaged config is refused before the lock is taken
    store.acquire()
    try:
        recorded = replay.load(run_dir, overrides, repair=True)
        _check_device(recorded.config)
        checkpoint = recorded.checkpoint or {}
        search = Search(recorded.config, store, recorded.run_id, recorded.state,
                        observers if observers_for is None else observers_for(recorded.config),
                        elapsed_before=_number(checkpoint.get("elapsed", 0.0), store))
        if "rng" in checkpoint:
            try:
                search.proposer.rng.bit_generator.state = checkpoint["rng"]
            except (TypeError, ValueError, KeyError) as exc:
                raise RunDirError(f"{store.checkpoint_path}: damaged random-generator state ({exc}); "
                                  f"nothing was changed") from None
    except BaseException:
        store.release()
        raise
    return search.run()


def _number(value, store: RunStore) -> float:
    if not finite_number(value) or value < 0:
        raise RunDirError(f"{store.checkpoint_path}: damaged elapsed time {value!r}; nothing was changed")
    return float(value)
