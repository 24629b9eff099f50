"""MLflow tracking of a search: one parent run per search, one child run per candidate.

Layout (one experiment per campaign, "optsearch-<preset>" unless configured):
  parent run   params: the resolved config (section.key); tags: engine,
               primitive-set and task-suite versions, run directory;
               metrics over evaluations: best score, held-out score of the
               best, cache hit rate, evals/s, invalid and failed counts;
               artifacts: plots/, hall_of_fame.json
  child runs   one per evaluated candidate (failures too, with their status);
               tags: program hash, fingerprint, parent hash, mutation, stage,
               status, the program text; params: program length, state
               buffers, tuned learning rate per task; metrics: score, and
               each task's score and final losses; artifacts: program.json,
               program.txt (and program.tex once it can be simplified)
Cache hits are counted on the parent, not logged as runs.

Only the coordinator writes, and it creates the store before any worker
starts (concurrent first-time initialisation of one SQLite file fails).
events.jsonl is the source of truth: a tracking failure (server down, disk
full, locked database) warns once and the search goes on; candidates not
yet logged wait in a backlog that is retried now and then, and that a
resumed search picks up from tracking.json in the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from primitives.errors import OptsearchError
from primitives.serialize import from_dict
from search.run_store import atomic_write_json

log = logging.getLogger("optsearch.tracking")


class TrackingError(OptsearchError):
    """A tracking store or experiment that does not exist or cannot be read."""
RETRY_SECONDS = 30.0  # after a failure, wait this long before trying again
STATE_FILE = "tracking.json"
PROGRAM_TAG_LIMIT = 5000  # MLflow tag values are limited in length


def tracking_uri(configured: str = "") -> str:
    """--tracking-uri / tracking.uri, else MLFLOW_TRACKING_URI, else ./mlflow.db (MLflow's SQLite store)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _quiet_http() -> None:
    """A dead server must cost seconds, not MLflow's default minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optsearch")
    except PackageNotFoundError:
        return "unknown"


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


class MlflowTracker:
    """The search's hooks: on_start, on_candidate, on_held_out, on_checkpoint, on_end."""

    def __init__(self, uri: str = "", experiment: str = ""):
        _quiet_http()
        self.uri = tracking_uri(uri)
        self.experiment_name = experiment
        self.client = None
        self.parent_id: str | None = None
        self.backlog: list[dict] = []  # events recorded but not yet logged
        self.failed_at: float | None = None
        self.warned = False
        self.logged = 0
        self.seconds = 0.0  # time spent in tracking (the overhead benchmark reads it)
        self._state_path: Path | None = None
        self._hashes: dict[int, str] = {}  # candidate id -> structural hash (children tag their parent's)

    # --------------------------------------------------------------- failure handling

    def _guard(self, action: str, fn, *args) -> bool:
        """Run a tracking call; on failure warn once, remember when, return False."""
        start = time.perf_counter()
        try:
            fn(*args)
            return True
        except Exception as exc:  # noqa: BLE001 -- tracking must never stop a search
            self.failed_at = time.monotonic()
            if not self.warned:
                log.warning("MLflow tracking failed (%s: %s); the search goes on and events.jsonl stays "
                            "complete; logging resumes when %s answers again", action, exc, self.uri)
                self.warned = True
            return False
        finally:
            self.seconds += time.perf_counter() - start

    def _may_try(self) -> bool:
        return self.failed_at is None or time.monotonic() - self.failed_at >= RETRY_SECONDS

    # --------------------------------------------------------------- hooks

    def on_start(self, search) -> None:
        self.primitive_set = search.primitive_set
        self._state_path = search.store.path / STATE_FILE
        saved = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
        self.parent_id = saved.get("parent_run_id")
        logged_seq = saved.get("logged_seq", 0)
        for event in search.store.read_events():
            if event["type"] == "candidate":
                self._hashes[event["id"]] = event["structural_hash"]
                if event["seq"] > logged_seq:
                    self.backlog.append(event)  # recorded while tracking was down or before a crash
        self._guard("connecting", self._connect, search)

    def _connect(self, search) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        name = self.experiment_name or search.config.tracking.experiment or f"optsearch-{search.config.preset}"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        if self.parent_id is None:
            from mlflow.entities import Param

            from proxy_tasks.registry import TASKS

            run = self.client.create_run(experiment_id, run_name=search.run_id, tags={
                "optsearch.kind": "search", "optsearch.run_dir": str(search.store.path),
                "optsearch.engine_version": engine_version(),
                "optsearch.primitive_set": search.config.evolution.primitive_set,
                "optsearch.primitive_set_version": search.primitive_set.version,
                "optsearch.task_suite": ",".join(sorted(t.key for t in TASKS.values()))[:PROGRAM_TAG_LIMIT],
            })
            self.parent_id = run.info.run_id
            params = [Param(k, v[:6000]) for k, v in flatten(search.config.to_dict()).items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(self.parent_id, params=params[start:start + 100])
        else:
            self.client.update_run(self.parent_id, status="RUNNING")
        self.experiment_id = experiment_id
        self._save_state(search)

    def _save_state(self, search) -> None:
        done = max((e["seq"] for e in search.store.read_events() if e["type"] == "candidate"), default=0)
        pending = min((e["seq"] for e in self.backlog), default=None)
        logged_seq = done if pending is None else pending - 1
        atomic_write_json(self._state_path, {"uri": self.uri, "parent_run_id": self.parent_id,
                                             "logged_seq": logged_seq})

    def on_candidate(self, search, event: dict) -> None:
        self._hashes[event["id"]] = event["structural_hash"]
        self.backlog.append(event)
        self.flush()

    def flush(self) -> None:
        if not self.backlog or not self._may_try():
            return
        if self.client is None or self.parent_id is None:
            return
        while self.backlog:
            if not self._guard("logging a candidate", self._log_candidate, self.backlog[0]):
                return
            self.backlog.pop(0)
            self.logged += 1
        self.failed_at = None

    def _log_candidate(self, event: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        program_text = from_dict(event["program"], self.primitive_set).text()
        parent_hash = self._hashes.get(event.get("parent"), "") if event.get("parent") is not None else ""
        tags = {
            "mlflow.parentRunId": self.parent_id, "optsearch.kind": "candidate",
            "optsearch.candidate_id": str(event["id"]), "optsearch.program_hash": event["structural_hash"],
            "optsearch.fingerprint": event["fingerprint"], "optsearch.parent_hash": parent_hash,
            "optsearch.mutation": event["mutation"][:PROGRAM_TAG_LIMIT], "optsearch.stage": event["stage"],
            "optsearch.status": event["status"], "optsearch.program": program_text[:PROGRAM_TAG_LIMIT],
        }
        if event.get("reason"):
            tags["optsearch.reason"] = event["reason"][-PROGRAM_TAG_LIMIT:]
        run = self.client.create_run(self.experiment_id, run_name=f"candidate-{event['id']}", tags=tags)
        timestamp = int(time.time() * 1000)
        metrics = [Metric("score", float(event["score"]), timestamp, 0)]
        params = [Param("program_length", str(len(event["program"]["body"]))),
                  Param("state_buffers", str(event["state_buffers"])),
                  Param("complexity", str(event["complexity"]))]
        for task, entry in event["tasks"].items():
            metrics.append(Metric(f"score.{task}", float(entry["score"]), timestamp, 0))
            for key in ("train_loss", "eval_loss"):
                if key in entry:
                    metrics.append(Metric(f"{key}.{task}", float(entry[key]), timestamp, 0))
            if "lr" in entry:
                params.append(Param(f"lr.{task}", f"{entry['lr']:.6g}"))
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "program.json").write_text(json.dumps(event["program"], indent=2))
            Path(folder, "program.txt").write_text(program_text + "\n")
            latex = _program_latex(event["program"])
            if latex:
                Path(folder, "program.tex").write_text(latex + "\n")
            self.client.log_artifacts(run.info.run_id, folder)
        status = "FAILED" if event["status"] in ("error", "timeout", "crashed") else "FINISHED"
        self.client.set_terminated(run.info.run_id, status=status)

    def on_held_out(self, search, candidate_id: int, score: float) -> None:
        if self.client is None or not self._may_try():
            return
        best = search.population.best() if len(search.population) else None
        if best is not None and best.id == candidate_id:
            self._guard("logging a held-out score", self._metric, "held_out_score_of_best", score,
                        search.counters.evaluated)

    def _metric(self, name: str, value: float, step: int) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.parent_id, metrics=[Metric(name, float(value), int(time.time() * 1000), step)])

    def on_checkpoint(self, search, final: bool = False) -> None:
        if self.client is None:
            if not self._may_try():
                return
            if not self._guard("connecting", self._connect, search):
                return
        self.flush()
        if not self._may_try():
            return
        self._guard("logging progress", self._log_progress, search, final)
        self._guard("saving tracking state", self._save_state, search)

    def _log_progress(self, search, final: bool) -> None:
        from mlflow.entities import Metric

        c = search.counters
        step, now = c.evaluated, int(time.time() * 1000)
        values = {"evaluated": c.evaluated, "trained": c.trained, "failed": c.failed, "invalid": c.invalid,
                  "cache_hit_rate": c.cache_hit_rate, "fingerprint_hits": c.fingerprint_hits,
                  "evals_per_second": c.evaluated / max(search._elapsed(), 1e-9)}
        if search.best_score > -float("inf"):
            values["best_score"] = search.best_score
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.parent_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as folder:
            members = [m.to_dict() for m in search.hall_of_fame.ranked()]
            Path(folder, "hall_of_fame.json").write_text(json.dumps(members, indent=1))
            self.client.log_artifacts(self.parent_id, folder)
        plots = [p for p in getattr(search, "plot_paths", []) if p and Path(p).exists()]
        if plots:
            with tempfile.TemporaryDirectory() as folder:
                for path in plots:
                    Path(folder, Path(path).name).write_bytes(Path(path).read_bytes())
                self.client.log_artifacts(self.parent_id, folder, "plots")

    def on_end(self, search, stopped_by: str) -> None:
        if self.client is None or self.parent_id is None:
            return
        self.failed_at = None  # one last try at the backlog
        self.flush()
        status = "KILLED" if stopped_by == "interrupted" else "FINISHED"
        self._guard("closing the parent run", self._end, search, status)

    def _end(self, search, status: str) -> None:
        self.client.set_tag(self.parent_id, "optsearch.stopped_by", search.result().stopped_by or status.lower())
        self.client.set_terminated(self.parent_id, status=status)
        self._save_state(search)


def _program_latex(program_dict: dict) -> str:
    """The simplified update rule in LaTeX, when the simplifier is available."""
    try:
        from primitives.simplify import latex_of_dict
    except ImportError:
        return ""
    try:
        return latex_of_dict(program_dict)
    except Exception:  # noqa: BLE001 -- a formula is a nicety, never a reason to lose the run
        return ""


def make_tracker(config) -> MlflowTracker | None:
    if not config.tracking.enabled:
        return None
    return MlflowTracker(config.tracking.uri, config.tracking.experiment)


def leaderboard(uri: str = "", experiment: str = "", top: int = 20) -> list[dict[str, Any]]:
    """The best candidates across searches, from MLflow."""
    _quiet_http()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(uri))
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments()]
            raise TrackingError(f"no experiment named {experiment!r} in {tracking_uri(uri)}; "
                             f"experiments: {', '.join(names) or 'none'}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("optsearch")]
    if not ids:
        return []
    runs = client.search_runs(ids, "tags.`optsearch.kind` = 'candidate' and tags.`optsearch.stage` = 'full'",
                              max_results=top, order_by=["metrics.score DESC"])
    parents = {}
    rows = []
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId", "")
        if parent and parent not in parents:
            parents[parent] = client.get_run(parent).info.run_name
        rows.append({"score": run.data.metrics.get("score"), "search": parents.get(parent, ""),
                     "candidate": run.data.tags.get("optsearch.candidate_id"),
                     "hash": run.data.tags.get("optsearch.program_hash"),
                     "program": run.data.tags.get("optsearch.program", "")})
    return rows
