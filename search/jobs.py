"""What a worker does with a job (search/records.py's JobKind); the same code runs in-process in serial mode.

Jobs carry programs as JSON dicts: a worker rebuilds (and validates) the
program, so nothing but data crosses into it from the coordinator.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from primitives.fingerprint import fingerprint
from primitives.known import KNOWN_PROGRAMS
from primitives.library import PRIMITIVE_SETS
from primitives.primitive import PrimitiveSet
from primitives.program import Program
from primitives.serialize import from_dict, load
from search.config import ConfigError, SearchConfig
from search.config import from_dict as config_from_dict
from search.evaluation import BehaviourEvaluator, ProxyTaskEvaluator
from search.records import Job, JobKind


def resolve_primitive_set(name: str, trusted: bool = True) -> PrimitiveSet:
    """A built-in set by name, or a plugin "package.module:NAME" (imported, like PySR's custom operators).

    Importing a plugin runs its module. Only a name the user gave (a config
    file, a command-line option, a run being resumed) is trusted with that;
    commands that only read a run directory (show, export) pass
    trusted=False for the name they find in it, and a plugin is refused.
    """
    if not isinstance(name, str):
        raise ConfigError(f"a primitive set is named by a string, got {name!r}")
    if name in PRIMITIVE_SETS:
        return PRIMITIVE_SETS[name]
    module, sep, attribute = name.partition(":")
    if not sep:
        raise ConfigError(f"unknown primitive set {name!r}; built-in: {', '.join(PRIMITIVE_SETS)}, "
                          f"or a plugin as package.module:NAME")
    if not trusted:
        raise ConfigError(f"the run uses the plugin primitive set {name!r}; reading a run directory never "
                          f"imports code named in it: pass --primitive-set {name} to import it")
    try:
        value = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load primitive set {name!r}: {exc}") from None
    if not isinstance(value, PrimitiveSet):
        raise ConfigError(f"{name!r} is not a PrimitiveSet")
    return value


def resolve_program(name: str, primitive_set: PrimitiveSet) -> Program:
    """A known program by name, or a program file."""
    if name in KNOWN_PROGRAMS:
        return KNOWN_PROGRAMS[name]
    if Path(name).is_file():
        return load(name, primitive_set)
    raise ConfigError(f"unknown program {name!r}: not a known program ({', '.join(KNOWN_PROGRAMS)}) nor a file")


def baseline_cache_path(config: SearchConfig) -> Path:
    from proxy_tasks.scoring import default_cache_path

    return Path(config.evaluation.baseline_cache) if config.evaluation.baseline_cache else default_cache_path()


def worker_device(configured: str, worker: int) -> str:
    """Worker i trains on GPU i mod the GPU count when the device is "cuda": one worker per GPU slot."""
    if configured == "cuda":
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            return f"cuda:{worker % count}"
    return configured


def make_evaluator(config: SearchConfig, primitive_set: PrimitiveSet, worker: int = 0):
    if config.evaluation.kind == "behaviour":
        target = resolve_program(config.evaluation.target, primitive_set)
        if config.evaluation.target_constants:
            target = target.with_constants(**dict(config.evaluation.target_constants))
        return BehaviourEvaluator(target, primitive_set)
    return ProxyTaskEvaluator(config, primitive_set, baseline_cache_path(config),
                              worker_device(config.evaluation.device, worker))


def build_runner(settings: dict[str, Any]):
    """settings -> run(job); called once in each worker (and once in serial mode)."""
    config = config_from_dict(settings["config"])
    primitive_set = resolve_primitive_set(config.evolution.primitive_set)
    evaluator = make_evaluator(config, primitive_set, settings.get("worker", 0))
    if hasattr(evaluator, "warm_up"):
        evaluator.warm_up()

    def run(job: Job) -> Any:
        if job.kind is JobKind.BASELINE:
            return evaluator.baseline(job.payload["task"], job.payload.get("transfer", False))
        program = from_dict(job.payload["program"], primitive_set)  # validates
        if job.kind is JobKind.FINGERPRINT:
            return fingerprint(program, primitive_set=primitive_set)
        if job.kind is JobKind.TRANSFER:
            return evaluator.evaluate(program, job.kind, job.payload["base_lrs"]).to_dict()
        return evaluator.evaluate(program, job.kind, offsets=job.payload.get("offsets")).to_dict()

    return run
