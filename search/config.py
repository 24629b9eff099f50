"""Search configuration: frozen dataclasses, one source of truth for every default.

A configuration comes from a named preset (search/presets/NAME.toml), an
optional TOML file on top of it, and command-line overrides on top of that:

    optsearch run --preset quickstart --config mine.toml --evolution.population=64

Unknown sections and keys are errors with a "did you mean" hint; values are
converted to the field's type and checked. The resolved configuration is
saved in the run directory (config.json) and a resumed run reads it back.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from primitives.errors import OptsearchError


class ConfigError(OptsearchError):
    """A configuration value, key or file is not acceptable."""


STRATEGIES = ("evolution", "random", "constants")
OPERATOR_NAMES = ("insert", "delete", "change_arg", "change_op", "perturb_const", "swap", "duplicate")


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """Regularized (aging) evolution with tournament selection (Real et al. 2019)."""

    population: int = 100  # the oldest individual dies when a child would exceed this
    tournament: int = 4  # individuals sampled per selection; the best becomes the parent
    warm_start: tuple[str, ...] = ("adamw",)  # known program names or program files
    primitive_set: str = "all"  # a built-in set, or "package.module:NAME" (a plugin)
    max_statements: int = 24
    max_state: int = 4  # state registers a program may carry (optimizer memory)
    max_attempts: int = 200  # re-mutations allowed to find a valid, structurally new child
    plateau: int = 0  # restart after this many evaluations without improvement (0: never)
    # What a restart keeps: "hall_of_fame" (its front, diverse in score, size and memory, and the
    # best) or "best" (the best alone).
    restart_from: str = "hall_of_fame"
    # Probability of each further edit of a child after its first (search/mutation.py's make_child).
    extra_edit: float = 0.0
    # The mutation operators a child is made with (search/mutation.py), drawn uniformly; "duplicate"
    # is there to be chosen (benchmarks/mechanics.py measured no gain from it on finding Lion).
    operators: tuple[str, ...] = ("insert", "delete", "change_arg", "change_op", "perturb_const", "swap")
    # "evolution": tournament selection from the population; "random": the same mutations
    # applied to the warm starts, no selection; "constants": only constant perturbations of
    # the warm starts (a hyperparameter search at the same budget).
    strategy: str = "evolution"

    def check(self) -> None:
        _choice("evolution.strategy", self.strategy, STRATEGIES)
        _choice("evolution.restart_from", self.restart_from, ("hall_of_fame", "best"))
        unknown = set(self.operators) - set(OPERATOR_NAMES)
        if unknown or not self.operators:
            raise ConfigError(f"evolution.operators must name some of {', '.join(OPERATOR_NAMES)}; "
                              f"got {', '.join(self.operators) or 'none'}")
        if not 0.0 <= self.extra_edit < 1.0:
            raise ConfigError(f"evolution.extra_edit must be in [0, 1), got {self.extra_edit}")
        _positive("evolution.population", self.population)
        _positive("evolution.tournament", self.tournament)
        _positive("evolution.max_statements", self.max_statements)
        _positive("evolution.max_attempts", self.max_attempts)
        _at_least("evolution.max_state", self.max_state, 0)
        _at_least("evolution.plateau", self.plateau, 0)
        if not self.warm_start:
            raise ConfigError("evolution.warm_start needs at least one program")


DEVICE = re.compile(r"(cpu|cuda(:[0-9]+)?)\Z")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """How candidates are scored: the funnel of proxy tasks, or behaviour (tests)."""

    kind: str = "proxy_tasks"  # or "behaviour": distance to `target` on the fingerprint probe
    cheap_tasks: str = "tier0"  # task selection (proxy_tasks.registry.select_tasks)
    full_tasks: str = "tier1"
    held_out_tasks: str = "held-out"
    # Rolling hurdle (AutoML-Zero): the cheap rung promotes a candidate to the full rung when its cheap
    # score is in the top `promote` fraction of the last `window` cheap scores (warm starts always, and
    # every candidate while the window holds fewer than `min_window`). `hurdle` is an absolute floor below
    # which nothing is promoted (-3: only what never trained is held back).
    promote: float = 0.3
    window: int = 64
    min_window: int = 8
    hurdle: float = -3.0
    seeds: int = 3
    step_fraction: float = 1.0  # scales every task's number of steps (smoke runs)
    lr_extensions: int = 2  # tuning budget (proxy_tasks.tuning.TuningProtocol)
    lr_refine: bool = True
    lr_fresh_seeds: bool = True  # score on fresh seeds at the rate the tuning seeds chose (proxy_tasks/tuning.py)
    polar_backend: str = "ns"
    device: str = "cpu"
    timeout: float = 900.0  # seconds per candidate before its worker is killed
    meta_every: int = 25  # evaluations between held-out scoring of the hall of fame (0: never)
    target: str = "lion"  # behaviour: a known program name or file
    target_constants: tuple[tuple[str, float], ...] = ()  # behaviour: constants of the target
    baseline_cache: str = ""  # "" = ~/.cache/optsearch/baselines.json
    select_on: str = "full"  # what selection and the hall of fame rank: the suite score, or "transfer"

    def check(self) -> None:
        _choice("evaluation.kind", self.kind, ("proxy_tasks", "behaviour"))
        _choice("evaluation.select_on", self.select_on, ("full", "transfer"))
        if not DEVICE.match(self.device):
            raise ConfigError(f"evaluation.device must be cpu, cuda or cuda:N, got {self.device!r}")
        _positive("evaluation.seeds", self.seeds)
        if not 0 < self.step_fraction <= 1:
            raise ConfigError(f"evaluation.step_fraction must be in (0, 1], got {self.step_fraction}")
        _at_least("evaluation.lr_extensions", self.lr_extensions, 0)
        if not 0 < self.promote <= 1:
            raise ConfigError(f"evaluation.promote must be in (0, 1], got {self.promote}")
        _positive("evaluation.window", self.window)
        _at_least("evaluation.min_window", self.min_window, 0)
        _choice("evaluation.polar_backend", self.polar_backend, ("ns", "polar_express", "qdwh", "svd"))
        if self.timeout <= 0:
            raise ConfigError(f"evaluation.timeout must be positive, got {self.timeout}")
        _at_least("evaluation.meta_every", self.meta_every, 0)


MAX_MEMORY_GB = 1 << 20  # a petabyte: beyond it the address-space limit cannot be set


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """The transfer stage, after the full suite: does a win hold at a longer horizon and a wider model?

    A candidate scoring at least `hurdle` on the full suite is trained again on
    `tasks` with `steps_factor` times the steps and `width_factor` times the
    width, starting from the learning rate tuned at the base size carried over
    by muP's rule, then re-tuned `retune` half-decades either side; AdamW is
    treated the same way. Its transfer score and the rate's drift are recorded
    (events, MLflow, the hall of fame); evaluation.select_on = "transfer" ranks by it.
    """

    enabled: bool = False
    tasks: str = "mlp,teacher_student"
    steps_factor: int = 4
    width_factor: int = 4
    hurdle: float = 0.0
    retune: int = 1

    def check(self) -> None:
        _positive("transfer.steps_factor", self.steps_factor)
        _positive("transfer.width_factor", self.width_factor)
        _at_least("transfer.retune", self.retune, 0)


BACKENDS = ("multiprocess", "ray")
# What ray.init() accepts as a cluster to join: "auto" (the cluster this machine is part of), the
# head's GCS as HOST:PORT, or a Ray Client server as ray://HOST[:PORT]. ("" is not matched: it is the default.)
RAY_ADDRESS = re.compile(r"(auto|ray://[^\s/:]+(:[0-9]{1,5})?|[^\s/:]+:[0-9]{1,5})\Z")
RAY_INSTALL = 'pip install "optsearch[ray]"'


@dataclasses.dataclass(frozen=True)
class WorkersConfig:
    """Who evaluates candidates. Not part of a search's identity (config digest): a resume may change any of it."""

    workers: int = 2  # long-lived worker processes or Ray actors (one torch thread each on CPU)
    serial: bool = False  # evaluate in the coordinator, one at a time: deterministic
    # Address-space limit per worker (0: none); a big allocation fails cleanly. A Ray actor reserves
    # gigabytes of address space it never touches, so on Ray this much comes on top of what the actor holds
    # once started.
    memory_gb: float = 8.0
    # "multiprocess": worker processes on this machine; "ray": actors on a Ray cluster (search/ray_backend.py).
    backend: str = "multiprocess"
    # Ray only. "": what ray.init() does (RAY_ADDRESS if set, else a new local Ray instance, stopped at the
    # end); "auto", "HOST:PORT" or "ray://HOST:10001": an existing cluster, left running.
    address: str = ""
    cpus_per_worker: int = 1  # Ray only: CPUs reserved for each actor, and its torch threads
    gpus_per_worker: float = 0.0  # Ray only: GPUs reserved for each actor (0.25: four share one; 0: none)

    def check(self) -> None:
        _positive("workers.workers", self.workers)
        _at_least("workers.memory_gb", self.memory_gb, 0)
        if self.memory_gb > MAX_MEMORY_GB:
            raise ConfigError(f"workers.memory_gb must be at most {MAX_MEMORY_GB} (0: no limit), got {self.memory_gb}")
        _choice("workers.backend", self.backend, BACKENDS)
        if self.address and not RAY_ADDRESS.match(self.address):
            raise ConfigError(f"workers.address must be \"\" (what ray.init() does), auto, HOST:PORT or "
                              f"ray://HOST:PORT; got {self.address!r}")
        _positive("workers.cpus_per_worker", self.cpus_per_worker)
        _at_least("workers.gpus_per_worker", self.gpus_per_worker, 0)
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            # Ray's own rule: a fraction of one GPU, or whole GPUs.
            raise ConfigError(f"workers.gpus_per_worker above 1 must be a whole number, got {self.gpus_per_worker}")
        if self.backend == "ray" and self.serial:
            raise ConfigError("workers.serial evaluates in this process; it cannot be combined with "
                              "workers.backend = \"ray\"")

    def check_available(self) -> None:
        """What this machine must have to run the workers (checked when a search starts, not when a run is read)."""
        import importlib.util  # find_spec: whether Ray is there, without the seconds importing it takes

        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError(f"workers.backend = \"ray\" needs Ray, which is not installed here: {RAY_INSTALL}")


@dataclasses.dataclass(frozen=True)
class StopConfig:
    max_evals: int = 200  # candidates evaluated (trained or failed), warm starts included
    # seconds of searching (0: no limit); the clock starts once the AdamW baselines are tuned
    wall_time: float = 0.0
    target_score: float | None = None
    # after a wall-time stop: at most this many more seconds to finish the candidates in flight and score
    # the hall of fame (held out) and the transfer stage's pending candidates
    final_seconds: float = 120.0

    def check(self) -> None:
        _positive("stop.max_evals", self.max_evals)
        _at_least("stop.wall_time", self.wall_time, 0)
        _at_least("stop.final_seconds", self.final_seconds, 0)


# A run id names a folder and appears in MLflow and in exported provenance.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclasses.dataclass(frozen=True)
class PersistenceConfig:
    run_dir: str = "runs"  # the parent folder of runs/<run_id>/
    run_id: str = ""  # "" = <preset>-<UTC time>
    checkpoint_every: int = 10  # evaluations between checkpoints

    def check(self) -> None:
        _positive("persistence.checkpoint_every", self.checkpoint_every)
        if self.run_id and not RUN_ID.match(self.run_id):
            raise ConfigError(f"persistence.run_id {self.run_id!r} is not a usable name: letters, digits, "
                              f"'.', '_' and '-', starting with a letter or digit (at most 128)")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    uri: str = ""  # "" = MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str = ""  # "" = optsearch-<preset>

    def check(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    preset: str = "custom"
    seed: int = 0
    evolution: EvolutionConfig = EvolutionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    workers: WorkersConfig = WorkersConfig()
    stop: StopConfig = StopConfig()
    persistence: PersistenceConfig = PersistenceConfig()
    tracking: TrackingConfig = TrackingConfig()
    transfer: TransferConfig = TransferConfig()

    def check(self) -> SearchConfig:
        _at_least("seed", self.seed, 0)
        for section in SECTIONS:
            getattr(self, section).check()
        if self.evaluation.select_on == "transfer" and not self.transfer.enabled:
            raise ConfigError("evaluation.select_on = \"transfer\" needs the transfer stage: set transfer.enabled = true")
        if self.transfer.enabled and self.evaluation.kind == "proxy_tasks":
            self._check_transfer_tasks()
        return self

    def _check_transfer_tasks(self) -> None:
        """Transfer tasks carry a candidate's tuned rate: they must be tasks it is scored on, and have a width."""
        from proxy_tasks.registry import UnknownTaskError, select_tasks

        try:
            transfer = select_tasks(self.transfer.tasks)
            scored = {t.name for spec in (self.evaluation.cheap_tasks, self.evaluation.full_tasks)
                      for t in select_tasks(spec)}
        except UnknownTaskError as exc:
            raise ConfigError(str(exc)) from None
        for task in transfer:
            if task.name not in scored:
                raise ConfigError(f"transfer task {task.name!r} is not among the cheap or full tasks, so a "
                                  f"candidate has no tuned rate on it to carry")
            if not task.width_fields:
                raise ConfigError(f"transfer task {task.name!r} has no width to scale")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Identity of what the search does (a resumed run must match it)."""
        data = self.to_dict()
        for volatile in ("stop", "persistence", "tracking", "workers"):
            data.pop(volatile)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


SECTIONS = ("evolution", "evaluation", "transfer", "workers", "stop", "persistence", "tracking")
# Sections where a saved run may lack keys a later version added: how the work is run and watched,
# not what the search is (the digest leaves them out), so today's defaults change no result.
DEFAULTABLE = ("workers", "tracking")
TOP_LEVEL = ("preset", "seed")

# ---------------------------------------------------------------------------
# Checks


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def _at_least(name: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# ---------------------------------------------------------------------------
# Building a config from dicts (TOML, JSON, overrides)


def _did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(options)}"


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """A TOML/JSON/command-line value as the field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _convert(value, options[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be {'an integer' if annotation is int else 'a number'}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != number:
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if annotation is float and not math.isfinite(number):  # a NaN timeout would never fire
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = typing.get_args(annotation)[0]
        if typing.get_origin(inner) is tuple:  # (name, value) pairs, given as a table or "a=1,b=2"
            if isinstance(value, dict):
                value = list(value.items())
            pairs = []
            for item in value:
                if isinstance(item, str):
                    key, sep, number = item.partition("=")
                    if not sep:
                        raise ConfigError(f"{where}: expected name=value, got {item!r}")
                    item = (key.strip(), number)
                if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                    raise ConfigError(f"{where}: expected (name, value) pairs, got {item!r:.60}")
                pairs.append((str(item[0]), _convert(item[1], float, f"{where}.{item[0]}")))
            return tuple(pairs)
        return tuple(_convert(v, inner, f"{where}[]") for v in value)
    raise ConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def _section(cls, values: dict[str, Any], base, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key {where}.{key}{_did_you_mean(key, hints)}")
        changes[key] = _convert(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base, **changes)


def merge(config: SearchConfig, data: dict[str, Any], origin: str = "config") -> SearchConfig:
    """`config` with the values of a nested dict (as TOML gives) applied."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a table of sections")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            section_cls = type(getattr(config, key))
            changes[key] = _section(section_cls, value, getattr(config, key), key)
        elif key in TOP_LEVEL:
            changes[key] = _convert(value, typing.get_type_hints(SearchConfig)[key], key)
        else:
            raise ConfigError(f"{origin}: unknown section or key {key!r}{_did_you_mean(key, SECTIONS + TOP_LEVEL)}")
    return dataclasses.replace(config, **changes)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["evolution.population=64", "seed=3"] -> {"evolution": {"population": "64"}, "seed": "3"}."""
    data: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.lstrip("-").partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        section, dot, name = key.partition(".")
        if dot:
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"override {item!r}: {section} is not a section")
            data[section][name] = value
        else:
            data[key] = value
    return data


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("search").joinpath("presets").iterdir() if p.name.endswith(".toml"))


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None


def load(preset: str | None = "quickstart", config_file: str | Path | None = None,
         overrides: list[str] | dict | None = None) -> SearchConfig:
    """Preset, then file, then overrides; checked."""
    config = SearchConfig()
    if preset is not None:
        if preset not in preset_names():
            raise ConfigError(f"unknown preset {preset!r}{_did_you_mean(preset, preset_names())}")
        text = resources.files("search").joinpath("presets", f"{preset}.toml").read_text()
        config = merge(config, tomllib.loads(text), f"preset {preset}")
        config = dataclasses.replace(config, preset=preset)
    if config_file is not None:
        config = merge(config, read_toml(config_file), str(config_file))
    if overrides:
        data = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        config = merge(config, data, "overrides")
    return config.check()


def from_dict(data: dict[str, Any], origin: str = "saved config") -> SearchConfig:
    """A complete resolved configuration (a run's config.json): every section and key present, checked.

    A saved configuration is never completed from today's defaults: a run
    resumed under defaults it did not start with would be another search.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a table of sections, got {type(data).__name__}")
    for section in SECTIONS:
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{origin}: section [{section}] is missing")
        expected = {f.name for f in dataclasses.fields(type(getattr(SearchConfig(), section)))}
        missing = sorted(expected - set(data[section]))
        if missing and section not in DEFAULTABLE:
            raise ConfigError(f"{origin}: [{section}] lacks {', '.join(missing)}")
    for key in TOP_LEVEL:
        if key not in data:
            raise ConfigError(f"{origin}: {key!r} is missing")
    return merge(SearchConfig(), data, origin).check()
