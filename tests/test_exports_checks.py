"""Exports: what the generated source may hold, names, arguments and provenance (issues 31 and 32)."""

from __future__ import annotations

import pytest
import torch

from primitives.known import LION, MUON
from primitives.library import ALL
from search import codegen


def test_check_source_accepts_exactly_the_imports_codegen_emits():
    good = codegen.module_source(MUON, "Fine", "A rule.", {"run": "r"}, 1e-3, ALL)
    modules = codegen.program_modules(MUON, ALL)
    assert "primitives.polar" in modules
    codegen.check_source(good, "Fine", "A rule.", standalone=False, modules=modules)
    codegen.check_source(good, "Fine", "A rule.", standalone=False)  # the built-in set's modules by default
    emitted = "import primitives.polar as _polar"
    assert emitted in good
    for tampered in ("import os as _polar", "import primitives.polar as polar", "import subprocess as _subprocess",
                     "import primitives.polar as _polar, os", "from os import system",
                     "from discovered.rule_optimizer import *", "from discovered.rule_optimizer import RuleOptimizer",
                     "import primitives.library as _library"):
        bad = good.replace(emitted, tampered)
        with pytest.raises(codegen.CodegenError, match="unexpected import"):
            codegen.check_source(bad, "Fine", "A rule.", standalone=False, modules=modules)
    # A module of the program's primitive set that this program does not call is no more acceptable.
    lion = codegen.module_source(LION, "Fine", "A rule.", {}, 1e-3, ALL)
    with pytest.raises(codegen.CodegenError, match="unexpected import"):
        codegen.check_source(lion + "\nimport primitives.polar as _polar\n" + lion[lion.index("class Fine"):],
                             "Fine", "A rule.", standalone=False, modules=codegen.program_modules(LION, ALL))


def test_a_standalone_file_imports_only_torch_and_the_standard_library():
    good = codegen.module_source(MUON, "Fine", "A rule.", {}, 1e-3, ALL, standalone=True)
    codegen.check_source(good, "Fine", "A rule.", standalone=True)
    first = next(line for line in good.splitlines() if line.startswith("import torch"))
    for tampered in ("import numpy as torch", "import primitives.polar as torch", "from . import torch"):
        with pytest.raises(codegen.CodegenError, match="unexpected import"):
            codegen.check_source(good.replace(first, tampered, 1), "Fine", "A rule.", standalone=True)


def _package_copy(tmp_path):
    import shutil
    from pathlib import Path

    import discovered

    package = tmp_path / "discovered"
    shutil.copytree(Path(discovered.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


@pytest.mark.parametrize("name", ["EXPORTED", "REGISTRY", "OptimizerInfo", "ProgramOptimizer", "RuleOptimizer",
                                  "Soap"])
def test_register_refuses_the_packages_own_names(tmp_path, name):
    """`--register --name EXPORTED` replaced discovered.EXPORTED: `import discovered` broke for run, bench, export."""
    from search.export import ExportError, export

    package = _package_copy(tmp_path)
    before = {p.name: p.read_bytes() for p in package.iterdir() if p.is_file()}
    with pytest.raises(ExportError, match="invalid name .*choose another name, e.g. "):
        export(LION, name, folder=package, register=True)
    assert {p.name: p.read_bytes() for p in package.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("name", ["Torch", "Math", "Typing", "Os", "Enum", "Numpy", "Sympy", "Discovered",
                                  "Primitives"])
def test_names_whose_module_shadows_the_standard_library_or_a_package_are_refused(tmp_path, name):
    from search.cli import main
    from search.export import ExportError, export

    with pytest.raises(ExportError, match=f"would shadow .*e.g. {name}Optimizer"):
        export(LION, name, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []
    from primitives.serialize import save

    save(LION, tmp_path / "lion.json")
    assert main(["export", str(tmp_path / "lion.json"), "--name", name, "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_an_export_may_replace_its_own_module_on_the_path(tmp_path, monkeypatch):
    """A module found on sys.path that is this export's own earlier file is no reason to refuse (with --force)."""
    from search.export import export

    export(LION, "Cobra", folder=tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    export(LION, "Cobra", folder=tmp_path, force=True)


# --- provenance of a candidate that diverged on a task (issue 31) ---------------------------------


def _load(path, name):
    import importlib.util

    import sys

    spec = importlib.util.spec_from_file_location(f"exports_checks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a standalone file's dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_a_candidate_that_diverged_on_a_task_exports_with_the_divergence_recorded(tmp_path):
    """inf and NaN losses (a run that diverged) made PROVENANCE `inf`, a name: 'not one literal table'."""
    import math

    from search.export import DIVERGED, Provenance, TaskResult, export

    tasks = (TaskResult("quadratic", 0.4, lr=0.01, train_loss=0.1, eval_loss=0.2),
             TaskResult("mlp", -3.0, lr=0.02, train_loss=math.inf, eval_loss=math.nan),
             TaskResult("logistic", math.nan, lr=math.inf, train_loss=-math.inf))
    provenance = Provenance(run="r1", candidate=3, score=-0.87, stage="full", held_out=math.nan, tasks=tasks)
    result = export(LION, "Diverged", provenance, folder=tmp_path)
    module = _load(result.path, "Diverged")
    recorded = module.PROVENANCE
    assert recorded["tasks"]["mlp"] == {"score": -3.0, "lr": 0.02, "train_loss": DIVERGED, "eval_loss": DIVERGED}
    # A rate that is not finite is no rate: none is recorded.
    assert recorded["tasks"]["logistic"] == {"score": DIVERGED, "train_loss": DIVERGED}
    assert recorded["held_out"] == DIVERGED
    assert "mlp: -3.000 (tuned lr 0.02, train loss diverged, eval loss diverged)" in module.__doc__
    assert "score -0.8700 against tuned AdamW (stage full), held-out diverged" in module.__doc__
    assert module.Diverged.__init__.__defaults__[0] == 0.015  # the median of the finite rates


@pytest.mark.parametrize("value", ["__import__('os')", [1.0], {"a": 1}, True, 10 ** 400])
def test_provenance_numbers_that_are_not_numbers_are_still_refused(value):
    from search.export import ExportError, Provenance, TaskResult

    with pytest.raises(ExportError, match="is not a number"):
        Provenance(tasks=(TaskResult("mlp", 0.1, train_loss=value),))
    with pytest.raises(ExportError, match="is not a number"):
        Provenance(score=value)


# --- constants and arguments (issue 31) ----------------------------------------------------------


@pytest.mark.parametrize("constant", ["lr", "self", "params", "options", "super", "route", "g", "adamw_lr",
                                      "State", "_elementwise", "interp", "update", "weight_decay"])
@pytest.mark.parametrize("standalone", [False, True])
def test_constants_named_like_generated_identifiers_are_renamed(tmp_path, constant, standalone):
    from primitives.serialize import parse
    from search.export import export

    program = parse(LION.text().replace("beta1", constant))
    result = export(program, "Renamed", folder=tmp_path, standalone=standalone, simplify_program=False)
    cls = _load(result.path, "Renamed").Renamed
    import inspect

    keywords = inspect.signature(cls).parameters
    # A module alias is a name only of the importing module, a primitive's function only of a standalone file.
    if standalone in {"_elementwise": (True,), "interp": (False,)}.get(constant, ()):
        assert keywords[constant].default == 0.9
        return
    assert f"{constant}_" in keywords and keywords[f"{constant}_"].default == 0.9
    if constant == "lr":
        assert keywords["lr"].default == 1e-3  # the learning rate is still the learning rate
    opt = cls([torch.nn.Parameter(torch.ones(3))], lr=0.1, **{f"{constant}_": 0.5})
    assert opt.param_groups[0][f"{constant}_"] == 0.5 and opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("lr", ["nan", "inf", "-inf", "0", "-1", "1e-400"])
def test_export_refuses_a_default_learning_rate_that_cannot_train(tmp_path, lr, capsys):
    from primitives.serialize import save
    from search.cli import main

    save(LION, tmp_path / "lion.json")
    assert main(["export", str(tmp_path / "lion.json"), "--name", "Cobra", "--out", str(tmp_path / "out"),
                 f"--lr={lr}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--lr" in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments,message", [
    ({"lr": float("nan")}, "--lr must be a finite number > 0"), ({"lr": 0}, "--lr must be"), ({"lr": True}, "--lr"),
    ({"lr": "0.1"}, "--lr"), ({"force": "yes"}, "force must be true or false"),
    ({"standalone": 1}, "standalone must be"), ({"provenance": {"run": "x"}}, "provenance must be"),
    ({"primitive_set": "all"}, "primitive_set must be"), ({"folder": 3}, "--out must be"),
])
def test_export_arguments_are_checked_as_the_configuration_is(tmp_path, arguments, message):
    from primitives.errors import OptsearchError
    from search.export import export

    with pytest.raises(OptsearchError, match=message):
        export(LION, "Cobra", **{"folder": tmp_path / "out", **arguments})
    assert not (tmp_path / "out").exists()
    with pytest.raises(OptsearchError, match="must be a primitives.program.Program"):
        export(LION.text(), "Cobra", folder=tmp_path / "out")


# --- what help() shows (issue 32) ---------------------------------------------------------------


def test_help_of_an_export_shows_the_rule_and_names_constants_by_role(tmp_path):
    import pydoc

    from primitives.known import ADAMW
    from primitives.serialize import parse
    from search.export import export

    made_up = ADAMW.text().replace("beta1", "c0").replace("beta2", "c1").replace("eps", "c2").replace("wd", "c3")
    result = export(parse(made_up), "Found", folder=tmp_path)
    cls = _load(result.path, "Found").Found
    import inspect

    assert list(inspect.signature(cls).parameters) == ["params", "lr", "beta1", "beta2", "eps", "wd", "options"]
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "the rule above" not in text
    assert "u = w*wd + (beta1*m + g*(1 - beta1))" in text and "v <- beta2*v" in text
    assert "c0" not in result.source and "c1" not in result.source
    assert "beta1: EMA coefficient: interp(a, b; beta1) = (1 - beta1) a + beta1 b (found: 0.9)" in text
    assert "eps: offset (add_const) (found: 1e-08)" in text
    assert "wd: decoupled weight decay: u + wd w (found: 0.01)" in text
    # Mutation's names in a Lion-like rule: beta1 for the first EMA used, beta2 for the next.
    lion = parse(LION.text().replace("beta1", "c1").replace("beta2", "c0").replace("wd", "c5"))
    source = export(lion, "Found2", folder=tmp_path).source
    assert "beta1: float = 0.9, beta2: float = 0.99, wd: float = 0.0" in source


def test_help_of_program_optimizer_is_concise():
    import pydoc

    from discovered import ProgramOptimizer

    text = pydoc.render_doc(ProgramOptimizer, renderer=pydoc.plaintext)
    assert "Primitive(" not in text  # the built-in primitive set's repr, as a default, was 40 KB of it
    assert len(text) <= len(pydoc.render_doc(torch.optim.AdamW, renderer=pydoc.plaintext))


def test_export_from_a_run_whose_candidate_diverged_on_a_task(tmp_path, capsys):
    """The run's events hold Infinity and NaN losses, as a run that diverged writes them: the export works."""
    import json
    import math

    from search import config as config_module
    from search.cli import main
    from search.engine import run

    run(config_module.load(None, overrides=["evaluation.kind=behaviour", "workers.serial=true",
                                            "tracking.enabled=false", "stop.max_evals=2"]), run_dir=tmp_path / "run")
    path = tmp_path / "run" / "events.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["type"] == "candidate" and first["id"] == 0
    first["tasks"] = {**first.get("tasks", {}), "mlp": {"score": -3.0, "lr": 0.01, "train_loss": math.inf,
                                                        "eval_loss": math.nan}}
    lines[0] = json.dumps(first)
    path.write_text("\n".join(lines) + "\n")
    assert main(["export", str(tmp_path / "run"), "0", "--name", "Diverged", "--out", str(tmp_path / "out")]) == 0, \
        capsys.readouterr().err
    module = _load(tmp_path / "out" / "diverged.py", "Diverged")
    assert module.PROVENANCE["tasks"]["mlp"]["train_loss"] == "diverged"
