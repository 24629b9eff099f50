"""MLflow tracking of a search: one parent run per search, one child run per candidate.

Layout (one experiment per campaign, "optsearch-<preset>" unless configured; a classic ML experiment,
tag mlflow.experimentKind, with a saved view of the run table: the candidates, best score first, with
their score, held-out score, stage, status, complexity and state buffers as columns; `optsearch ui`
opens it, see view_url):
  parent run   params: the resolved config (section.key); tags: engine,
               primitive-set and task-suite versions, run directory and id;
               metrics over evaluations: best score, held-out score of the
               best, cache hit rate, evals/s, invalid and failed counts;
               artifacts: plots/, hall_of_fame.json
  child runs   one per evaluated candidate (failures too, with their status),
               named "#<id> <score> <simplified update u>", with the
               candidate's own start and end time; description: the update
               rule, the program and its LaTeX; tags: candidate id, program
               hash, fingerprint, parent hash, mutation, stage, status, the
               program text; params: program length, state buffers,
               complexity, tuned learning rate per task; metrics: score,
               complexity, state buffers, each task's score and final losses,
               each task's loss curve as loss.<task> (step = window), the
               held-out and transfer scores (and curves) when they come;
               artifacts: program.json, program.txt and program.tex
Cache hits are counted on the parent, not logged as runs.

The tracker is an observer (search/observers.py); only the coordinator writes.
events.jsonl is the source of truth, and MLflow holds exactly one child run
per recorded candidate, however often the search was killed and resumed:
which candidates are logged is read back from MLflow itself (the child runs'
candidate-id tags; a child left half-written by a kill is deleted and logged
again), never from a counter that a kill could leave behind. tracking.json in
the run directory only names the parent run (and the store it is in).

The parent run is known by the run's identity (identity.json's UUID, tag
optsearch.run_uuid), never by its run id alone: two folders' runs/exp are two
searches. A parent run that tracking.json names but the store no longer holds
(another tracking URI, a recreated mlflow.db, a deleted run) is not an error
that stops tracking: the search says so, makes a new parent run and logs every
candidate into it.

A tracking failure (server down, disk full, locked database) warns once and
the search goes on; what is not logged yet waits in a backlog, retried now
and then and picked up by a resumed search. A new SQLite store is created
under a file lock (concurrent first-time initialisation of one SQLite file
fails), and a failed connection is retried like any other failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from primitives.errors import OptsearchError
from primitives.files import atomic_write_text
from primitives.serialize import from_dict
from search.events import CacheHit, CandidateEvaluated, Event, HeldOutScored, TransferScored
from search.observers import Observer, Snapshot
from search.records import FAILED

log = logging.getLogger("optsearch.tracking")


class TrackingError(OptsearchError):
    """A tracking store or experiment that does not exist or cannot be read."""


RETRY_SECONDS = 30.0  # after a failure, wait this long before trying again
STATE_FILE = "tracking.json"
TAG_LIMIT = 5000  # MLflow tag values are limited in length


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// store; None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: mlruns/ beside the database.

    MLflow's default is ./mlruns of whatever folder the process runs in, so a search (or a
    test) in one folder tracking into a store in another scattered artifacts into the first.
    Other stores keep their own default (None).
    """
    import uuid

    database = sqlite_path(uri)
    if database is None:
        return None
    return (database.absolute().parent / "mlruns" / uuid.uuid4().hex).as_uri()


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock beside a SQLite store while it is opened (and maybe created); no-op for others.

    Another process may hold it for long (a search creating the store on a slow disk): waiting
    for it is said, never silent.
    """
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = database.with_name(database.name + ".lock")
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for %s: another optsearch process holds it while it creates or opens the MLflow "
                        "store %s (a process stopped with SIGSTOP or on a hung disk holds it until it goes on)",
                        lock, database)
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.warning("got %s after %.0f s", lock, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(uri: str, reading: bool = False):
    """An MlflowClient on `uri`, its store created (under store_lock) if it is new.

    reading (leaderboard, ui): a store that is not there is an error, not created, and an
    existing one is opened without the lock, so that nothing is written beside it (a store
    in a read-only folder can be read).
    """
    from mlflow.tracking import MlflowClient

    database = sqlite_path(uri)
    if reading and database is not None:
        if not database.is_file():
            raise TrackingError(f"no MLflow store at {database}: run a search here first (optsearch run), or name "
                                f"the store with --tracking-uri (or MLFLOW_TRACKING_URI)")
        if database.stat().st_size > 0:  # an empty file is a store another process is creating: wait for it
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            return client
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # the first call creates a new store's tables
    return client


# --------------------------------------------------------------------------- what MLflow's UI opens on

# MLflow 3's UI reads an experiment's kind from this tag: a classic ML experiment opens on its runs, not on
# the GenAI overview of traces (the values are those of MLflow 3.17's JS bundle, ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_KIND = "custom_model_development"
# A saved view of the run table (MLflow's "shared view state": an experiment tag, opened by the URL's
# viewStateShareKey): the candidates only, best score first, with the columns that say what they are.
VIEW_KEY = "optsearch-candidates"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_NAME = "optsearch: candidates by score"
CANDIDATE_FILTER = "tags.`optsearch.kind` = 'candidate'"
VIEW_COLUMNS = ("metrics.`score`", "metrics.`held_out_score`", "metrics.`transfer_score`", "tags.`optsearch.stage`",
                "tags.`optsearch.status`", "metrics.`complexity`", "metrics.`state_bytes`", "metrics.`state_buffers`",
                "tags.`optsearch.mutation`")
RUN_NAME_COLUMN = "attributes.`Run Name`"


def view_state() -> dict[str, Any]:
    """The run table's state as MLflow 3.17's UI reads a saved view: search facets and UI state together."""
    return {"searchFilter": CANDIDATE_FILTER, "orderByKey": "metrics.`score`", "orderByAsc": False,
            "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": list(VIEW_COLUMNS), "columnOrder": [RUN_NAME_COLUMN, *VIEW_COLUMNS],
            "columnWidths": {RUN_NAME_COLUMN: 380}, "runsHiddenMode": "SHOW_ALL", "compareRunsMode": "TABLE"}


def _view_envelope() -> str:
    """The saved-view tag's value: {name, createdAt, updatedAt, state} with the state as a JSON string."""
    now = int(time.time() * 1000)
    return json.dumps({"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(view_state())})


def experiment_tags() -> dict[str, str]:
    """The tags of an experiment optsearch creates: a classic ML experiment, with the candidates' view."""
    return {EXPERIMENT_KIND_TAG: CLASSIC_KIND, VIEW_TAG: _view_envelope()}


def prepare_experiment(client, experiment) -> None:
    """An existing experiment gets the candidates' view, and an optsearch-* one its kind, where they lack them.

    A view the user has changed and saved in the UI is theirs: it is never replaced.
    """
    tags = experiment.tags or {}
    if experiment.name.startswith("optsearch") and EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_KIND)
    if VIEW_TAG not in tags:
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, _view_envelope())


def view_url(server: str, experiment_id: str | None) -> str:
    """The address of an experiment's candidates view (the MLflow UI's home without an experiment)."""
    from urllib.parse import quote, urlencode

    base = server.rstrip("/") + "/"
    if experiment_id is None:
        return base
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY}, quote_via=quote)
    return f"{base}#/experiments/{quote(str(experiment_id))}/runs?{query}"


def ui_experiment(client, name: str = ""):
    """The experiment `optsearch ui` opens on: the named one, else the latest search's (or None)."""
    if name:
        found = client.get_experiment_by_name(name)
        if found is None:
            names = [e.name for e in client.search_experiments()]
            raise TrackingError(f"no experiment named {name!r}; experiments: {', '.join(names) or 'none'}")
        return found
    ours = {e.experiment_id: e for e in client.search_experiments() if e.name.startswith("optsearch")}
    if not ours:
        return None
    latest = client.search_runs(list(ours), "tags.`optsearch.kind` = 'search'", max_results=1,
                                order_by=["attributes.start_time DESC"])
    if latest:
        return ours[latest[0].info.experiment_id]
    return max(ours.values(), key=lambda e: e.last_update_time or 0)


class MlflowTracker(Observer):
    def __init__(self, uri: str = "", experiment: str = ""):
        _quiet_http()
        self.uri = tracking_uri(uri)
        self.experiment_name = experiment
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.children: dict[int, str] = {}  # candidate id -> its child run
        self.backlog: list[dict] = []  # candidate events recorded but not yet logged
        self.failed_at: float | None = None
        self.warned = False
        self.logged = 0
        self.seconds = 0.0  # time spent in tracking (the overhead benchmark reads it)
        self._hashes: dict[int, str] = {}  # candidate id -> structural hash (children tag their parent's)
        self._run_dir: Path | None = None
        self.run_uuid = ""  # the run's identity (identity.json), read at on_start
        self._config = None  # the search's configuration (on_start), for AdamW's curves
        self._evaluator = None  # built on first use: the tasks and baseline cache the search scores against

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

    @property
    def connected(self) -> bool:
        return self.parent_id is not None and self.client is not None

    def _ensure_connected(self, snapshot: Snapshot) -> bool:
        if self.connected:
            return True
        return self._may_try() and self._guard("connecting", self._connect, snapshot)

    # --------------------------------------------------------------- hooks

    def on_start(self, snapshot: Snapshot) -> None:
        from search.run_store import RunStore

        self._run_dir = snapshot.run_dir
        self._config = snapshot.config
        self.primitive_set_name = snapshot.config.evolution.primitive_set
        self.run_uuid = RunStore(snapshot.run_dir).identity()
        for line in _event_lines(snapshot.run_dir):
            if line.get("type") == "candidate":
                self._hashes[line["id"]] = line["structural_hash"]
                self.backlog.append(line)  # logged ones are dropped once MLflow says which
        self._ensure_connected(snapshot)
        self.flush()

    def _saved_parent(self) -> str | None:
        """The parent run named in tracking.json, if this store still holds it; else None, saying why.

        A damaged file is set aside with a warning, never fatal. A parent of another
        store, or one this store lost (recreated, deleted), is replaced by a new one.
        """
        from search.run_store import read_file

        path = self._run_dir / STATE_FILE
        try:
            saved = json.loads(read_file(path))
            parent = saved["parent_run_id"]
            if not isinstance(parent, str) or not parent.isalnum():
                raise ValueError(f"parent_run_id {parent!r}")
            uri = saved.get("uri", self.uri)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            aside = path.with_name(f"{STATE_FILE}.damaged-{int(time.time())}")
            os.replace(path, aside)
            log.warning("%s is damaged (%s); kept as %s; looking the search's parent run up in MLflow by the "
                        "run's identity instead", path, exc, aside.name)
            return None
        if uri != self.uri:
            log.warning("this search was tracked in %s and is now tracked in %s: its parent run there is looked "
                        "up by the run's identity, or a new one is made, and every candidate is logged there",
                        uri, self.uri)
            return None
        lost = self._lost(parent)
        if lost:
            log.warning("the parent run %s that %s names is %s in %s: a new parent run is made and every "
                        "candidate of this search is logged into it", parent, path, lost, self.uri)
        return None if lost else parent

    def _lost(self, parent: str) -> str:
        """Why this store cannot continue `parent` ("" if it can); a store that does not answer raises."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_run(parent)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return "not there (the store was recreated, or the run was deleted for good)"
            raise
        if found.info.lifecycle_stage == "deleted":
            return "deleted"
        if found.info.experiment_id != self.experiment_id:
            return "in another experiment"
        if found.data.tags.get("optsearch.run_uuid", self.run_uuid) != self.run_uuid:
            return "the parent of another search"
        return ""

    def _connect(self, snapshot: Snapshot) -> None:
        self.client = open_client(self.uri)
        name = self.experiment_name or snapshot.config.tracking.experiment or f"optsearch-{snapshot.config.preset}"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(name, tags=experiment_tags(),
                                                                   artifact_location=artifact_location(self.uri))
            except Exception:  # noqa: BLE001 -- another search created it first: use theirs
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        if experiment is not None:
            prepare_experiment(self.client, experiment)
        parent = self._saved_parent() or self._find_parent()
        if parent is None:
            parent = self._create_parent(snapshot)
        else:
            self.client.update_run(parent, status="RUNNING")
            self.client.set_tag(parent, "optsearch.run_uuid", self.run_uuid)  # a parent made before identities
        self.parent_id = parent
        atomic_write_text(self._run_dir / STATE_FILE, json.dumps({"uri": self.uri, "parent_run_id": parent}))
        self._read_logged_children()

    def _find_parent(self) -> str | None:
        """The live parent run of this search (by its identity: a run id alone repeats across folders)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`optsearch.run_uuid` = '{self.run_uuid}' and "
                                                             f"tags.`optsearch.kind` = 'search'", max_results=2)
        return runs[0].info.run_id if runs else None

    def _create_parent(self, snapshot: Snapshot) -> str:
        from mlflow.entities import Param

        from proxy_tasks.registry import TASKS

        run = self.client.create_run(self.experiment_id, run_name=snapshot.run_id, tags={
            "optsearch.kind": "search", "optsearch.run_dir": str(snapshot.run_dir),
            "optsearch.run_id": snapshot.run_id, "optsearch.run_uuid": self.run_uuid,
            "optsearch.engine_version": engine_version(),
            "optsearch.primitive_set": snapshot.config.evolution.primitive_set,
            "optsearch.primitive_set_version": _primitive_set(snapshot.config.evolution.primitive_set).version,
            "optsearch.task_suite": ",".join(sorted(t.key for t in TASKS.values()))[:TAG_LIMIT],
        })
        params = [Param(k, v[:6000]) for k, v in flatten(snapshot.config.to_dict()).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        return run.info.run_id

    def _read_logged_children(self) -> None:
        """Which candidates MLflow already holds; a child a kill left half-written is deleted (logged again)."""
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                                           max_results=1000, page_token=token)
            for run in page:
                candidate = run.data.tags.get("optsearch.candidate_id")
                if candidate is None:
                    continue
                if run.info.status == "RUNNING" or int(candidate) in self.children:
                    self.client.delete_run(run.info.run_id)
                else:
                    self.children[int(candidate)] = run.info.run_id
            token = page.token
            if not token:
                break
        self.backlog = [e for e in self.backlog if e["id"] not in self.children]

    def on_event(self, event: Event, snapshot: Snapshot) -> None:
        if isinstance(event, CandidateEvaluated):
            record = event.to_dict()
            self._hashes[event.id] = event.structural_hash
            self.backlog.append(record)
            if self._ensure_connected(snapshot):
                self.flush()
        elif isinstance(event, (HeldOutScored, TransferScored)) and self.connected and self._may_try():
            name = "held_out_score" if isinstance(event, HeldOutScored) else "transfer_score"
            self._guard(f"logging a {name}", self._log_later_score, event, name, snapshot)
        elif isinstance(event, CacheHit):
            pass  # counted in the parent's progress metrics

    def _log_later_score(self, event, name: str, snapshot: Snapshot) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        child = self.children.get(event.id)
        if child is not None:
            metrics = [Metric(name, float(event.score), now, 0)]
            metrics += [Metric(f"{name}.{task}", float(entry["score"]), now, 0) for task, entry in event.tasks.items()]
            metrics += _curves(event.tasks, name.replace("_score", "_loss"), now)
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(child, metrics=metrics[start:start + 1000])
        best = snapshot.best
        if isinstance(event, HeldOutScored) and best is not None and best.id == event.id:
            self.client.log_batch(self.parent_id, metrics=[Metric("held_out_score_of_best", float(event.score), now,
                                                                  snapshot.counters.evaluated)])

    def flush(self) -> None:
        if not self.backlog or not self.connected or not self._may_try():
            return
        while self.backlog:
            if not self._guard("logging a candidate", self._log_candidate, self.backlog[0]):
                return
            self.backlog.pop(0)
            self.logged += 1
        self.failed_at = None

    def _log_candidate(self, event: dict) -> None:
        from mlflow.entities import Metric, Param

        program_text = from_dict(event["program"], _primitive_set(self.primitive_set_name)).text()
        latex, formula = _formulas(event["program"], self.primitive_set_name)
        parent_hash = self._hashes.get(event.get("parent"), "") if event.get("parent") is not None else ""
        tags = {
            "mlflow.parentRunId": self.parent_id, "optsearch.kind": "candidate",
            "optsearch.candidate_id": str(event["id"]), "optsearch.program_hash": event["structural_hash"],
            "optsearch.fingerprint": event["fingerprint"], "optsearch.parent_hash": parent_hash,
            "optsearch.mutation": event["mutation"][:TAG_LIMIT], "optsearch.stage": event["stage"],
            "optsearch.status": event["status"], "optsearch.program": program_text[:TAG_LIMIT],
            "mlflow.note.content": _description(event, program_text, formula, latex)[:TAG_LIMIT],
        }
        if event.get("reason"):
            tags["optsearch.reason"] = event["reason"][-TAG_LIMIT:]
        started = event.get("started")
        run = self.client.create_run(self.experiment_id, run_name=run_name(event, formula), tags=tags,
                                     start_time=int(started * 1000) if started else None)
        timestamp = int(time.time() * 1000)
        metrics = [Metric(k, float(event[k]), timestamp, 0) for k in ("score", "complexity", "state_buffers")
                   + (("state_bytes",) if "state_bytes" in event else ())]
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
        metrics += _curves(event["tasks"], "loss", timestamp)
        # tuned AdamW's curve on the same tasks, so each candidate's charts show the bar it is scored against
        baseline = self._baseline_curves(list(event["tasks"]))
        metrics += _curves({t: {"curve": c} for t, c in baseline.items()}, "loss_adamw", timestamp)
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000],
                                  params=params if start == 0 else [])
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "program.json").write_text(json.dumps(event["program"], indent=2))
            Path(folder, "program.txt").write_text(program_text + "\n")
            if latex:
                Path(folder, "program.tex").write_text(latex + "\n")
            self.client.log_artifacts(run.info.run_id, folder)
        finished = event.get("finished")
        self.client.set_terminated(run.info.run_id, status="FAILED" if event["status"] in FAILED else "FINISHED",
                                   end_time=int(finished * 1000) if finished else None)
        self.children[event["id"]] = run.info.run_id

    def _baseline_curves(self, task_names: list[str]) -> dict[str, list[float]]:
        """AdamW's curves from the run's baseline cache (none for a behaviour search, or when it cannot be read)."""
        if self._evaluator is None and self._config is not None \
                and self._config.evaluation.kind == "proxy_tasks":
            from search.evaluation import ProxyTaskEvaluator
            from search.jobs import baseline_cache_path

            self._evaluator = ProxyTaskEvaluator(self._config, _primitive_set(self.primitive_set_name),
                                                 baseline_cache_path(self._config))
        try:
            return self._evaluator.baseline_curves(task_names) if self._evaluator is not None else {}
        except Exception as exc:  # noqa: BLE001 -- a curve beside the candidate's is never worth a failed log
            log.debug("no AdamW curves for MLflow: %s", exc)
            return {}

    def on_checkpoint(self, snapshot: Snapshot, final: bool) -> None:
        if not self._ensure_connected(snapshot):
            return
        self.flush()
        if self._may_try():
            self._guard("logging progress", self._log_progress, snapshot)

    def _log_progress(self, snapshot: Snapshot) -> None:
        from mlflow.entities import Metric

        c = snapshot.counters
        step, now = c.evaluated, int(time.time() * 1000)
        values = {"evaluated": c.evaluated, "trained": c.trained, "failed": c.failed, "invalid": c.invalid,
                  "cache_hit_rate": c.cache_hit_rate, "fingerprint_hits": c.fingerprint_hits,
                  "evals_per_second": snapshot.rate}
        if snapshot.best_score > -float("inf"):
            values["best_score"] = snapshot.best_score
        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])
        hall_of_fame = snapshot.run_dir / "hall_of_fame.json"
        if hall_of_fame.exists():
            self.client.log_artifact(self.parent_id, str(hall_of_fame))
        plots = sorted((snapshot.run_dir / "plots").glob("*.png"))
        if plots:
            with tempfile.TemporaryDirectory() as folder:
                for path in plots:
                    Path(folder, path.name).write_bytes(path.read_bytes())
                self.client.log_artifacts(self.parent_id, folder, "plots")

    def on_end(self, snapshot: Snapshot, stopped_by: str) -> None:
        if not self.connected:
            return
        self.failed_at = None  # one last try at the backlog
        self.flush()
        self._guard("closing the parent run", self._end, stopped_by)

    def _end(self, stopped_by: str) -> None:
        self.client.set_tag(self.parent_id, "optsearch.stopped_by", stopped_by)
        self.client.set_terminated(self.parent_id, status="KILLED" if stopped_by == "interrupted" else "FINISHED")


def _event_lines(run_dir: Path) -> list[dict]:
    """The run's events as dicts (the engine has checked them)."""
    from search.run_store import read_file

    try:
        raw = read_file(run_dir / "events.jsonl")
    except FileNotFoundError:
        return []
    # Split on newlines only (as the run store does): the piece after the last one is a torn write, or nothing.
    return [json.loads(line) for line in raw.split(b"\n")[:-1] if line.strip()]


def _primitive_set(name: str):
    from search.jobs import resolve_primitive_set

    return resolve_primitive_set(name)


NAME_FORMULA_CHARS = 60  # of the update u in a child run's name


def _formulas(program_dict: dict, primitive_set_name: str) -> tuple[str, str]:
    """The simplified update rule as (LaTeX, plain text), one SymPy pass; ("", "") when there is none."""
    from primitives.analysis import prune
    from primitives.simplify import NoCounterpart, TooLarge, render, symbolic_form

    primitive_set = _primitive_set(primitive_set_name)
    try:
        return render(symbolic_form(prune(from_dict(program_dict, primitive_set)), primitive_set))
    except (TooLarge, NoCounterpart):
        return "", ""
    except Exception:  # noqa: BLE001 -- a formula is a nicety, never a reason to lose the run
        return "", ""


def run_name(event: dict, formula: str) -> str:
    """What a candidate is, at a glance: '#35 +1.53 polar(interp(g, m))' (a failure says its status)."""
    update = formula.splitlines()[0].removeprefix("u = ") if formula else f"{len(event['program']['body'])} statements"
    if len(update) > NAME_FORMULA_CHARS:
        update = update[:NAME_FORMULA_CHARS - 1] + "\u2026"
    judged = event["status"] if event["status"] in FAILED else f"{round(event['score'], 2) + 0.0:+.2f}"  # no -0.00
    return f"#{event['id']} {judged} {update}"


def _description(event: dict, program_text: str, formula: str, latex: str) -> str:
    """The child run's description (Markdown): the update rule, the program, the LaTeX."""
    parts = [f"Candidate #{event['id']}: score {event['score']:+.4f}, stage {event['stage']}, status "
             f"{event['status']}, mutation `{event['mutation']}`."]
    if formula:
        parts.append(f"Update rule (simplified; w <- w - lr * u):\n\n```\n{formula}\n```")
    parts.append(f"Program:\n\n```\n{program_text}\n```")
    if latex:
        parts.append(f"LaTeX:\n\n```latex\n{latex}\n```")
    if event.get("reason"):
        parts.append(f"Reason:\n\n```\n{event['reason'][-1500:]}\n```")
    return "\n\n".join(parts)


def _curves(tasks: dict, prefix: str, timestamp: int) -> list:
    """Each task's down-sampled loss curve as a step metric '<prefix>.<task>' (step = window index)."""
    from mlflow.entities import Metric

    return [Metric(f"{prefix}.{task}", float(value), timestamp, step)
            for task, entry in tasks.items() for step, value in enumerate(entry.get("curve") or ())]


def make_tracker(config) -> MlflowTracker | None:
    if not config.tracking.enabled:
        return None
    return MlflowTracker(config.tracking.uri, config.tracking.experiment)


def leaderboard(uri: str = "", experiment: str = "", top: int = 20) -> list[dict[str, Any]]:
    """The best candidates across searches, from MLflow."""
    _quiet_http()
    try:
        return _leaderboard(uri, experiment, top)
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a dead server or a foreign store is the user's to fix
        raise TrackingError(f"cannot read the tracking store {tracking_uri(uri)}: {exc}") from None


def _leaderboard(uri: str, experiment: str, top: int) -> list[dict[str, Any]]:
    client = open_client(tracking_uri(uri), reading=True)
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
        metrics, tags = run.data.metrics, run.data.tags
        rows.append({"score": metrics.get("score"), "held_out": metrics.get("held_out_score"),
                     "transfer": metrics.get("transfer_score"), "search": parents.get(parent, ""),
                     "candidate": int(tags["optsearch.candidate_id"]) if "optsearch.candidate_id" in tags else None,
                     "complexity": _number(run.data.params.get("complexity")),
                     "state_buffers": _number(run.data.params.get("state_buffers"), int),
                     "hash": tags.get("optsearch.program_hash"), "name": run.info.run_name,
                     "program": tags.get("optsearch.program", "")})
    return rows


def _number(text: str | None, kind=float) -> float | int | None:
    """A number logged as a param, or None."""
    try:
        return kind(float(text))
    except (TypeError, ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------- optsearch ui

def ui_view(uri: str, experiment: str = "") -> str | None:
    """The id of the experiment `optsearch ui` opens on (its candidates' view made if missing), or None."""
    _quiet_http()
    try:
        client = open_client(uri, reading=True)
        found = ui_experiment(client, experiment)
        if found is not None:
            try:
                prepare_experiment(client, found)
            except Exception as exc:  # noqa: BLE001 -- a read-only store is still worth a look
                log.warning("could not save the candidates' view in %s (%s); the UI opens on the experiment "
                            "without it", uri, str(exc).splitlines()[0][:200])
        return None if found is None else found.experiment_id
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a dead server or a foreign store is the user's to fix
        raise TrackingError(f"cannot read the tracking store {uri}: {exc}") from None


def open_browser(url: str, disabled: bool = False) -> None:
    """Open `url` in a browser where there is a screen to show it on (never a text browser in this terminal)."""
    import sys
    import webbrowser

    if disabled or (sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                              os.environ.get("WAYLAND_DISPLAY"))):
        return
    try:
        webbrowser.open(url)
    except Exception:  # noqa: BLE001 -- the address is printed; a browser is a convenience
        pass
