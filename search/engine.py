"""The search loop: generate, filter, evaluate, select, record.

    child = mutate(tournament(population))          re-mutated until valid and new
      -> structural hash      cache: a known structure is never generated twice
      -> fingerprint          cache: known behaviour takes the known score (a worker
                              computes it, so the coordinator never runs a program)
      -> cheap tier, hurdle, full suite               in a worker, with a timeout
      -> population (oldest dies), hall of fame, events.jsonl, checkpoint
    every `meta_every` evaluations, hall-of-fame members are scored on the
    held-out tasks (recorded, never used for selection)

The pool is kept full: a new job goes out as soon as a worker is free.
Only the coordinator writes to the run directory (and to MLflow).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from primitives.analysis import complexity, prune, state_buffers
from primitives.hashing import structural_hash
from primitives.primitive import PrimitiveSet
from primitives.program import Program
from primitives.serialize import from_dict, to_dict
from proxy_tasks.scoring import BaselineCache
from search import config as config_module
from search.config import SearchConfig
from search.hall_of_fame import HallOfFame
from search.individual import Individual
from search.jobs import baseline_cache_path, build_runner, make_evaluator, resolve_primitive_set, resolve_program
from search.mutation import Limits, make_child
from search.population import Population
from search.run_store import RunDirError, RunStore
from search.workers import Completion, Job, SerialPool, WorkerPool

FAILED = ("error", "timeout", "crashed")
POLL_SECONDS = 0.25
PLOT_EVERY_SECONDS = 60.0  # plots are redrawn at checkpoints at most this often, and at the end


@dataclasses.dataclass
class Counters:
    evaluated: int = 0  # candidates with a recorded result (the budget), failures included
    generated: int = 0  # mutations tried
    invalid: int = 0  # of which invalid or over the size limits
    structural_hits: int = 0  # of which structurally known (re-mutated)
    fingerprint_hits: int = 0  # new structure, known behaviour: score reused, not trained
    trained: int = 0  # candidates trained on proxy tasks (or scored, for behaviour)
    failed: int = 0  # error, timeout or crash
    cheap_only: int = 0  # stopped by the hurdle
    restarts: int = 0
    meta_evaluations: int = 0

    @property
    def cache_hit_rate(self) -> float:
        """Fraction of valid generated programs that needed no training (Lion: 89%)."""
        valid = self.generated - self.invalid
        return (self.structural_hits + self.fingerprint_hits) / valid if valid > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    hall_of_fame: list[Individual]
    best: Individual | None
    counters: Counters
    seconds: float
    stopped_by: str


class Interrupted(Exception):
    pass


def default_run_id(config: SearchConfig) -> str:
    return f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


class Search:
    """One search run (new or resumed). `run()` returns a SearchResult."""

    def __init__(self, config: SearchConfig, run_dir: Path, resume: bool = False,
                 tracker: Any = None, display: Any = None):
        self.config = config
        self.store = RunStore(run_dir)
        self.run_id = Path(run_dir).name
        self.primitive_set: PrimitiveSet = resolve_primitive_set(config.evolution.primitive_set)
        self.limits = Limits(config.evolution.max_statements, config.evolution.max_state)
        self.population = Population(config.evolution.population)
        self.hall_of_fame = HallOfFame()
        self.counters = Counters()
        self.rng = np.random.default_rng(config.seed)
        self.structures: set[str] = set()  # structural hashes generated so far
        self.behaviours: dict[str, dict] = {}  # fingerprint -> the result of its first evaluation
        self.seq = 0
        self.next_id = 0
        self.elapsed_before = 0.0
        self.best_score = -math.inf
        self.since_improvement = 0
        self.warm_started: list[str] = []
        self.tracker = tracker
        self.display = display
        self.deterministic = config.workers.serial
        self._start = time.monotonic()
        self._last_plots = -math.inf
        self.plot_paths: list[Path] = []
        self.next_job_id = 0
        self._jobs: dict[int, dict] = {}  # in flight: job id -> what it is for
        self._queue: list[dict] = []  # candidates waiting for a free worker
        self._meta_due: list[int] = []
        self._evaluated_at_last_meta = 0
        self._last_checkpoint = 0
        self.warm_programs = [resolve_program(name, self.primitive_set) for name in config.evolution.warm_start]
        if config.evaluation.kind == "proxy_tasks":  # task objects and the baseline cache (no program runs here)
            self._evaluator = make_evaluator(config, self.primitive_set)
            self._cache = BaselineCache(baseline_cache_path(config))
        if resume:
            self.store.acquire()
            try:
                self._restore()
            except BaseException:
                self.store.release()
                raise
        else:
            self.store.create({**config.to_dict(), "run_id": self.run_id})

    # ------------------------------------------------------------------ records

    def _event(self, kind: str, **fields) -> dict:
        self.seq += 1
        event = {"seq": self.seq, "type": kind, **fields}
        if not self.deterministic:
            event["time"] = time.time()
        self.store.append_event(event)
        return event

    def _individual(self, id_: int, program: Program, digest: str, fp: str, result: dict,
                    parent: int | None, mutation: str) -> Individual:
        return Individual(id_, program, digest, fp, float(result["score"]), result["stage"],
                          complexity(program, self.primitive_set), state_buffers(program), parent, mutation)

    def _accept(self, individual: Individual) -> None:
        """A scored individual joins the population and maybe the hall of fame."""
        self.population.add(individual)
        if self.hall_of_fame.consider(individual):
            self._meta_due.append(individual.id)
        if individual.score > self.best_score + 1e-12:
            self.best_score, self.since_improvement = individual.score, 0
        else:
            self.since_improvement += 1

    # ------------------------------------------------------------------ checkpoint / resume

    def _state(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "config_digest": self.config.digest(),
            "seq": self.seq,
            "next_id": self.next_id,
            "counters": dataclasses.asdict(self.counters),
            "rng": self.rng.bit_generator.state,
            "population": [m.to_dict() for m in self.population.members],
            "hall_of_fame": [m.to_dict() for m in self.hall_of_fame.members],
            "structures": sorted(self.structures),
            "behaviours": self.behaviours,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "since_improvement": self.since_improvement,
            "warm_started": self.warm_started,
            "elapsed": self._elapsed(),
            "meta_due": self._meta_due,
            "evaluated_at_last_meta": self._evaluated_at_last_meta,
        }

    def checkpoint(self, final: bool = False) -> None:
        self.store.write_checkpoint(self._state())
        self._last_checkpoint = self.counters.evaluated
        if final or time.monotonic() - self._last_plots >= PLOT_EVERY_SECONDS:
            self.plot_paths = self.write_plots()
            self._last_plots = time.monotonic()
        if self.tracker is not None:
            self.tracker.on_checkpoint(self, final)

    def write_plots(self) -> list[Path]:
        """Progress, Pareto front and the best candidate's loss curves, as PNGs in plots/."""
        from search import plots

        folder = self.store.path / "plots"
        folder.mkdir(exist_ok=True)
        events = self.store.read_events()
        paths = [plots.progress(events, self.config.evolution.population, folder / "progress.png"),
                 plots.pareto(events, {m.id for m in self.hall_of_fame.members}, folder / "pareto.png")]
        scored = [e for e in events if e["type"] == "candidate" and e["status"] not in FAILED]
        if scored and self.config.evaluation.kind == "proxy_tasks":
            best = max(scored, key=lambda e: e["score"])
            curves = plots.loss_curves(best, self._baseline_curves(best["tasks"]), folder / "loss_curves.png")
            paths += [curves] if curves else []
        return paths

    def _baseline_curves(self, task_names) -> dict[str, list[float]]:
        from search.evaluation import median_curve

        curves = {}
        for name in task_names:
            base = self._cache.get(self._evaluator.task(name), self._evaluator.seeds,
                                   self.config.evaluation.device, self._evaluator.protocol)
            if base is not None:
                curves[name] = median_curve(base.best)
        return curves

    def _restore(self) -> None:
        saved = self.store.read_config()
        if saved.get("run_id") != self.run_id:
            raise RunDirError(f"{self.store.config_path} belongs to run {saved.get('run_id')!r}, not {self.run_id!r}")
        state = self.store.read_checkpoint(self.run_id, self.config.digest())
        events = self.store.read_events(repair=True)
        if state is not None:
            try:
                self._load_state(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise RunDirError(f"checkpoint {self.store.checkpoint_path} is inconsistent ({exc}); "
                                  f"nothing was changed") from None
        for event in events:
            if event["seq"] > self.seq:
                self._replay(event)
        self.seq = max([self.seq] + [e["seq"] for e in events])

    def _load_state(self, state: dict[str, Any]) -> None:
        rebuild = lambda items: [Individual.from_dict(d, self.primitive_set) for d in items]  # noqa: E731
        self.seq = int(state["seq"])
        self.next_id = int(state["next_id"])
        self.counters = Counters(**state["counters"])
        self.rng.bit_generator.state = state["rng"]
        self.population.reset(rebuild(state["population"]))
        self.hall_of_fame = HallOfFame(rebuild(state["hall_of_fame"]))
        self.structures = set(state["structures"])
        self.behaviours = dict(state["behaviours"])
        self.best_score = -math.inf if state["best_score"] is None else float(state["best_score"])
        self.since_improvement = int(state["since_improvement"])
        self.warm_started = list(state["warm_started"])
        self.elapsed_before = float(state["elapsed"])
        self._meta_due = list(state["meta_due"])
        self._evaluated_at_last_meta = int(state["evaluated_at_last_meta"])

    def _replay(self, event: dict) -> None:
        """Apply a recorded event that the checkpoint does not include yet."""
        if event["type"] in ("candidate", "cache_hit"):
            program = from_dict(event["program"], self.primitive_set)
            self.next_id = max(self.next_id, event["id"] + 1)
            self.structures.add(event["structural_hash"])
            purpose = {"id": event["id"], "program": program, "hash": event["structural_hash"],
                       "parent": event.get("parent"), "mutation": event.get("mutation", ""),
                       **({"warm_start": event["warm_start"]} if "warm_start" in event else {})}
            if event["type"] == "cache_hit":
                self._cache_hit(purpose, event["fingerprint"],
                                {"score": event["score"], "stage": event["stage"], "id": event["same_as"]})
                return
            self._count(event)
            if "warm_start" in event:
                self.warm_started.append(event["warm_start"])
            if event["status"] not in FAILED:
                self.behaviours.setdefault(event["fingerprint"], {"score": event["score"], "stage": event["stage"],
                                                                 "id": event["id"]})
                self._accept(self._individual(event["id"], program, event["structural_hash"], event["fingerprint"],
                                              event, event.get("parent"), event.get("mutation", "")))
        elif event["type"] == "held_out":
            self._set_held_out(event["id"], event["score"])
        elif event["type"] == "restart":
            self._restart(record=False)
        elif event["type"] == "progress":
            for key in ("generated", "invalid", "structural_hits", "fingerprint_hits"):
                setattr(self.counters, key, max(getattr(self.counters, key), event["counters"][key]))

    # ------------------------------------------------------------------ bookkeeping

    def _count(self, event: dict) -> None:
        self.counters.evaluated += 1
        if event["status"] in FAILED:
            self.counters.failed += 1
        else:
            self.counters.trained += 1
            self.counters.cheap_only += event["stage"] == "cheap"

    def _set_held_out(self, id_: int, score: float) -> None:
        for member in self.hall_of_fame.members:
            if member.id == id_:
                self.hall_of_fame.update(dataclasses.replace(member, held_out=score))
        self.counters.meta_evaluations += 1

    def _restart(self, record: bool = True) -> None:
        best = self.population.best()
        self.population.reset([best])
        self.since_improvement = 0
        self.counters.restarts += 1
        if record:
            self._event("restart", best=best.id, score=best.score)

    # ------------------------------------------------------------------ jobs

    def _new_job(self, kind: str, payload: dict, purpose: dict) -> Job:
        job = Job(self.next_job_id, kind, payload)
        self.next_job_id += 1
        self._jobs[job.id] = purpose
        return job

    def _next_candidate(self) -> dict | None:
        """The next program to evaluate: a warm start, then children of the population."""
        pending = {p.get("warm_start") for p in list(self._jobs.values()) + self._queue}
        for name, program in zip(self.config.evolution.warm_start, self.warm_programs):
            if name in self.warm_started or name in pending:
                continue
            pruned = prune(program)
            digest = structural_hash(pruned, self.primitive_set, pruned=True)
            self.structures.add(digest)
            return {"program": pruned, "hash": digest, "parent": None, "mutation": f"warm start {name}",
                    "warm_start": name}
        if not len(self.population):
            return None  # wait for a warm start to be scored
        for _ in range(20):
            parent = self.population.select(self.rng, self.config.evolution.tournament)
            child = make_child(parent.program, self.rng, self.primitive_set, lambda h: h not in self.structures,
                               self.limits, self.config.evolution.max_attempts)
            if child is None:
                self.counters.generated += self.config.evolution.max_attempts
                continue
            self.counters.generated += child.attempts
            self.counters.invalid += child.invalid
            self.counters.structural_hits += child.duplicates
            self.structures.add(child.structural_hash)
            return {"program": child.program, "hash": child.structural_hash, "parent": parent.id,
                    "mutation": child.mutation}
        raise RuntimeError("no valid new child after 20 parents: the population has converged; "
                           "raise evolution.max_attempts or enable evolution.plateau restarts")

    def _submit_next(self, pool) -> bool:
        """Give a free worker something to do; False if there is nothing to give."""
        if self._meta_due and self.counters.evaluated - self._evaluated_at_last_meta >= self._meta_every():
            self._evaluated_at_last_meta = self.counters.evaluated
            for member in self.hall_of_fame.members:
                if member.id in self._meta_due and member.held_out is None:
                    self._queue.insert(0, {"held_out": member})
            self._meta_due = []
        if self._queue:
            item = self._queue.pop(0)
            if "held_out" in item:
                member = item["held_out"]
                pool.submit(self._new_job("held_out", {"program": to_dict(member.program)}, {"held_out": member.id}))
            else:
                pool.submit(self._new_job("candidate", {"program": to_dict(item["program"])}, item))
            return True
        in_flight = sum(1 for p in self._jobs.values() if "held_out" not in p)
        if self.counters.evaluated + in_flight + len(self._queue) >= self.config.stop.max_evals:
            return False
        candidate = self._next_candidate()
        if candidate is None:
            return False
        candidate["id"] = self.next_id
        self.next_id += 1
        pool.submit(self._new_job("fingerprint", {"program": to_dict(candidate["program"])}, candidate))
        return True

    def _meta_every(self) -> int:
        return self.config.evaluation.meta_every or math.inf  # type: ignore[return-value]

    def _handle(self, completion: Completion) -> None:
        purpose = self._jobs.pop(completion.job.id)
        kind = completion.job.kind
        if kind == "baseline":
            if completion.status != "ok":
                raise RuntimeError(f"computing the AdamW baseline failed ({completion.status}):\n{completion.reason}")
            self._store_baseline(completion.result)
        elif kind == "held_out":
            score = completion.result["score"] if completion.status == "ok" else -3.0
            self._set_held_out(purpose["held_out"], score)
            self._event("held_out", id=purpose["held_out"], score=score, status=completion.status,
                        tasks=(completion.result or {}).get("tasks", {}), reason=completion.reason)
            if self.tracker is not None:
                self.tracker.on_held_out(self, purpose["held_out"], score)
        elif kind == "fingerprint":
            if completion.status != "ok":
                self._record(purpose, "", {"status": completion.status, "stage": "fingerprint", "score": -3.0,
                                           "tasks": {}}, completion)
                return
            fp = completion.result
            known = self.behaviours.get(fp)
            if known is None:
                self._queue.append({**purpose, "fingerprint": fp})
                return
            # Known behaviour: the first evaluation's score stands, nothing is trained.
            self._event("cache_hit", id=purpose["id"], parent=purpose["parent"], mutation=purpose["mutation"],
                        program=to_dict(purpose["program"]), structural_hash=purpose["hash"], fingerprint=fp,
                        same_as=known["id"], score=known["score"], stage=known["stage"],
                        **({"warm_start": purpose["warm_start"]} if "warm_start" in purpose else {}))
            self._cache_hit(purpose, fp, known)
        elif kind == "candidate":
            result = completion.result if completion.status == "ok" else {
                "status": completion.status, "stage": "failed", "score": -3.0, "tasks": {}}
            self._record(purpose, purpose["fingerprint"], result, completion)

    def _cache_hit(self, purpose: dict, fp: str, known: dict) -> None:
        self.counters.fingerprint_hits += 1
        if "warm_start" in purpose:
            self.warm_started.append(purpose["warm_start"])
        self._accept(self._individual(purpose["id"], purpose["program"], purpose["hash"], fp, known,
                                      purpose["parent"], purpose["mutation"]))

    def _record(self, purpose: dict, fp: str, result: dict, completion: Completion) -> None:
        status = result["status"] if completion.status == "ok" else completion.status
        fields = dict(
            id=purpose["id"], parent=purpose["parent"], mutation=purpose["mutation"],
            program=to_dict(purpose["program"]), structural_hash=purpose["hash"], fingerprint=fp,
            stage=result["stage"], status=status, score=result["score"], tasks=result["tasks"],
            reason=completion.reason or result.get("reason", ""),
            complexity=complexity(purpose["program"], self.primitive_set),
            state_buffers=state_buffers(purpose["program"]), worker=completion.worker,
        )
        if "warm_start" in purpose:
            fields["warm_start"] = purpose["warm_start"]
        if self.deterministic:
            event = self._event("candidate", **fields)
            self.store.append_timing({"seq": event["seq"], "id": purpose["id"], "seconds": completion.seconds})
        else:
            event = self._event("candidate", **fields, seconds=completion.seconds)
        self._count(event)
        if "warm_start" in purpose:
            self.warm_started.append(purpose["warm_start"])
        if status not in FAILED:
            self.behaviours.setdefault(fp, {"score": result["score"], "stage": result["stage"], "id": purpose["id"]})
            self._accept(self._individual(purpose["id"], purpose["program"], purpose["hash"], fp, result,
                                          purpose["parent"], purpose["mutation"]))
        if self.tracker is not None:
            self.tracker.on_candidate(self, event)
        plateau = self.config.evolution.plateau
        if plateau and self.since_improvement >= plateau and len(self.population) > 1:
            self._restart()

    # ------------------------------------------------------------------ baselines

    def _baseline_jobs(self) -> list[Job]:
        """AdamW baselines missing from the cache, one job per task (computed by the workers)."""
        if self.config.evaluation.kind != "proxy_tasks":
            return []
        jobs = []
        for task in self._evaluator.all_tasks:
            if self._cache.get(task, self._evaluator.seeds, self.config.evaluation.device,
                               self._evaluator.protocol) is None:
                jobs.append(self._new_job("baseline", {"task": task.name}, {"baseline": task.name}))
        return jobs

    def _store_baseline(self, entry: dict) -> None:
        task = self._evaluator.task(entry["task"])
        key = self._cache.key(task, self._evaluator.seeds, self.config.evaluation.device, self._evaluator.protocol)
        self._cache.put_entry(key, {k: entry[k] for k in ("best_lr", "centre", "runs")})

    # ------------------------------------------------------------------ the loop

    def _stop_reason(self) -> str | None:
        stop = self.config.stop
        if self.counters.evaluated >= stop.max_evals:
            return "max_evals"
        if stop.wall_time and self._elapsed() >= stop.wall_time:
            return "wall_time"
        if stop.target_score is not None and self.best_score >= stop.target_score:
            return "target_score"
        return None

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def _make_pool(self):
        settings = {"config": self.config.to_dict()}
        if self.config.workers.serial:
            return SerialPool(build_runner, settings)
        return WorkerPool(self.config.workers.workers, build_runner, settings, self.config.evaluation.timeout,
                          self.config.workers.memory_gb)

    def run(self) -> SearchResult:
        self._start = time.monotonic()
        self._last_plots = -math.inf
        self.plot_paths: list[Path] = []
        self.next_job_id = 0
        previous_handler = signal.getsignal(signal.SIGINT)
        stopped_by = "interrupted"
        pool = None
        try:
            if self.tracker is not None:
                self.tracker.on_start(self)
            pool = self._make_pool()
            self._compute_baselines(pool)
            while True:
                stopped_by = self._stop_reason() or ""
                if stopped_by and stopped_by != "max_evals":
                    break  # wall time or target: in-flight work is abandoned
                while pool.idle and not stopped_by and self._submit_next(pool):
                    pass
                if not self._jobs:
                    stopped_by = stopped_by or "exhausted"
                    break
                for completion in pool.poll(POLL_SECONDS):
                    self._handle(completion)
                if self.counters.evaluated - self._last_checkpoint >= self.config.persistence.checkpoint_every:
                    self.checkpoint()
                    self._event("progress", counters=dataclasses.asdict(self.counters), best=self.best_score
                                if math.isfinite(self.best_score) else None)
                if self.display is not None:
                    self.display.update(self)
            if stopped_by in ("max_evals", "exhausted"):  # nothing in flight: score the final front
                self._final_meta_validation(pool)
        except KeyboardInterrupt:
            stopped_by = "interrupted"
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the checkpoint
            try:
                self.checkpoint(final=True)
                if pool is not None:
                    pool.close()
                if self.tracker is not None:
                    self.tracker.on_end(self, stopped_by)
                self.store.close()
            finally:
                signal.signal(signal.SIGINT, previous_handler)
        if self.display is not None:
            self.display.finish(self, stopped_by)
        return self.result(stopped_by)

    def _final_meta_validation(self, pool) -> None:
        """Score the final hall of fame on the held-out tasks (what is not scored yet)."""
        if not self.config.evaluation.meta_every:
            return
        self._queue = [{"held_out": m} for m in self.hall_of_fame.members if m.held_out is None]
        while self._queue or self._jobs:
            while pool.idle and self._queue:
                member = self._queue.pop(0)["held_out"]
                pool.submit(self._new_job("held_out", {"program": to_dict(member.program)}, {"held_out": member.id}))
            for completion in pool.poll(POLL_SECONDS):
                self._handle(completion)
            if self.display is not None:
                self.display.update(self)

    def _compute_baselines(self, pool) -> None:
        pending = self._baseline_jobs()
        while pending or any("baseline" in p for p in self._jobs.values()):
            while pending and pool.idle:
                pool.submit(pending.pop(0))
            for completion in pool.poll(POLL_SECONDS):
                self._handle(completion)
            if self.display is not None:
                self.display.baselines(self, len(pending) + sum("baseline" in p for p in self._jobs.values()))

    def result(self, stopped_by: str = "") -> SearchResult:
        ranked = self.hall_of_fame.ranked()
        best = self.population.best() if len(self.population) else None
        return SearchResult(self.store.path, ranked, best, self.counters, self._elapsed(), stopped_by)


def run(config: SearchConfig, run_dir: str | Path | None = None, tracker: Any = None,
        display: Any = None) -> SearchResult:
    """Start a search; the notebook entry point. Returns the hall of fame and statistics."""
    run_id = config.persistence.run_id or default_run_id(config)
    path = Path(run_dir) if run_dir is not None else Path(config.persistence.run_dir) / run_id
    return Search(config, path, tracker=tracker, display=display).run()


def resume(run_dir: str | Path, overrides: list[str] | None = None, tracker: Any = None,
           display: Any = None, tracker_factory: Callable[[SearchConfig], Any] | None = None) -> SearchResult:
    """Continue a search from its run directory (after a crash, kill -9 or Ctrl-C)."""
    store = RunStore(run_dir)
    saved = store.read_config()
    data = {k: v for k, v in saved.items() if k != "run_id"}
    config = config_module.from_dict(data, str(store.config_path))
    if overrides:
        config = config_module.merge(config, config_module.parse_overrides(overrides), "overrides")
    config.check()
    if tracker is None and tracker_factory is not None:
        tracker = tracker_factory(config)
    return Search(config, Path(run_dir), resume=True, tracker=tracker, display=display).run()

