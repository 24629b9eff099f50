"""Simplification (SymPy identities, verified by execution) and export to importable optimizers."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch

import test_conformance as conformance
from discovered import Lion, ProgramOptimizer
from discovered.registry import OptimizerInfo
from primitives import symbolic
from primitives.known import ADAMW, LION, LION_RAW, MUON, POLARGRAD, POLARGRAD_POLAR_FIRST
from primitives.serialize import parse, save
from search.export import ExportError, Provenance, TaskResult, export
from primitives.simplify import canonical, equivalent, simplify, to_sympy

# --- identities ----------------------------------------------------------------

x, y = sympy.symbols("x y", real=True)
c = sympy.Symbol("c", positive=True)
a, b = sympy.symbols("a b", positive=True)


def test_primitive_identities():
    assert sympy.sign(c * x) == sympy.sign(x)
    assert sympy.sign(sympy.sign(x)) == sympy.sign(x)
    assert symbolic.Polar(3 * c * x) == symbolic.Polar(x)
    assert symbolic.Polar(-x) == -symbolic.Polar(x)
    assert symbolic.Polar(symbolic.Polar(x)) == symbolic.Polar(x)
    assert symbolic.Rms(-2 * x) == 2 * symbolic.Rms(x)
    assert symbolic.Inner(x, symbolic.Polar(x)) == symbolic.NuclearNorm(x)
    assert symbolic.AspectScale(2 * x) == 2 * symbolic.AspectScale(x)


def test_rewrites_sign_ratios_and_nested_interps():
    constants = {a, b, c}
    assert canonical(x / sympy.sqrt(sympy.Abs(x * x)), constants) == sympy.sign(x)
    assert canonical(sympy.Abs(x) * sympy.sign(x), constants) == x
    assert canonical(x * sympy.sign(x), constants) == sympy.Abs(x)
    nested = (1 - b) * x + b * ((1 - a) * x + a * y)
    assert sympy.expand(canonical(nested, constants) - ((1 - a * b) * x + a * b * y)) == 0
    assert canonical(nested, constants).count(y) == 1  # one term in y: collected


def test_symbolic_form_of_a_program():
    sym = to_sympy(LION)
    g, m, w = (sym.registers[k] for k in ("g", "m", "w"))
    beta1, beta2, wd = sorted(sym.constants, key=lambda s: s.name)
    assert sympy.expand(sym.state["m"] - ((1 - beta2) * g + beta2 * m)) == 0
    assert sym.u == sympy.sign((1 - beta1) * g + beta1 * m) + wd * w


# --- the Lion paper's raw program ------------------------------------------------


def test_lion_raw_program_simplifies_to_lion():
    result = simplify(LION_RAW)
    assert result.accepted, result.note
    program = result.simplified
    assert [s.op for s in program.body] == ["interp", "sign", "add_scaled", "scale", "interp"]
    assert program.state_names == ("v",)
    constants = program.constant_values
    assert constants["b1"] == pytest.approx(0.899)
    beta2 = next(v for k, v in constants.items() if k not in ("b1", "wd", "lr_scale"))
    assert beta2 == pytest.approx(0.899 * 1.109)  # the two interps composed
    assert "cosh" not in program.text() and "div" not in program.text()
    assert r"\operatorname{sign}" in result.latex


def test_exported_lion_raw_equals_discovered_lion(tmp_path):
    module = export(LION_RAW, "RawLion", folder=tmp_path)
    RawLion = _load(module.path, "RawLion")
    constants = module.program.constant_values
    beta2 = next(v for k, v in constants.items() if k not in ("b1", "wd", "lr_scale"))
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(7,), (16, 32), (3, 8, 5)]]
    ours = [torch.nn.Parameter(p.clone()) for p in init]
    reference = [torch.nn.Parameter(p.clone()) for p in init]
    eta = 0.5
    opt = RawLion(ours, lr=eta)
    lion = Lion(reference, lr=eta * constants["lr_scale"], betas=(constants["b1"], beta2),
                weight_decay=constants["wd"])
    for _ in range(100):
        for p, q in zip(ours, reference):
            grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.grad, q.grad = grad, grad.clone()
        opt.step()
        lion.step()
    for p, q in zip(ours, reference):
        torch.testing.assert_close(p.data, q.data, rtol=0, atol=1e-12)


# --- export ----------------------------------------------------------------------


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"exported_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


EXPORTS = {"AdamWProgram": ADAMW, "LionProgram": LION, "MuonProgram": MUON, "PolarGradProgram": POLARGRAD,
           "PolarFirstProgram": POLARGRAD_POLAR_FIRST}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    return {name: (_load(export(program, name, folder=folder).path, name), program)
            for name, program in EXPORTS.items()}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_exported_optimizer_equals_its_program_over_100_steps(exported, name):
    cls, program = exported[name]
    g = torch.Generator().manual_seed(1)
    shapes = [(6, 4), (4, 6), (2, 3, 2, 2), (5,)]
    init = [torch.randn(s, generator=g) for s in shapes]
    ours = [torch.nn.Parameter(p.clone()) for p in init]
    theirs = [torch.nn.Parameter(p.clone()) for p in init]
    a, b = cls(ours, lr=1e-2), ProgramOptimizer(theirs, program, lr=1e-2)
    for _ in range(100):
        for p, q in zip(ours, theirs):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = grad, grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)


CHECKS = [conformance.test_state_dict_round_trip_is_bit_exact, conformance.test_closure_runs_with_grad_and_returns_the_loss,
          conformance.test_param_groups_keep_their_own_settings, conformance.test_parameters_without_grad_are_skipped,
          conformance.test_gradients_are_never_written_into, conformance.test_sparse_gradients_are_refused,
          conformance.test_lr_schedulers_drive_the_step, conformance.test_zero_gradients_give_no_nan,
          conformance.test_loss_falls_on_a_small_problem, conformance.test_unknown_keywords_raise_type_error]


@pytest.mark.parametrize("name", ["AdamWProgram", "LionProgram", "MuonProgram"])
def test_exported_modules_pass_the_conformance_suite(exported, name):
    cls, program = exported[name]
    matrix = name == "MuonProgram"
    info = OptimizerInfo(name, cls, {"lr": {"AdamWProgram": 1e-2, "LionProgram": 3e-3, "MuonProgram": 0.05}[name],
                                     **({"adamw_lr": 3e-2} if matrix else {})},
                         matrix=matrix, no_momentum={"beta": 0.0} if matrix else {})
    for check in CHECKS:
        check(info)
    with pytest.raises(ValueError, match="Invalid"):
        cls([torch.nn.Parameter(torch.zeros(2, 2))], **({"beta": 3.0} if matrix else {"beta1": 2.5}))
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decay'"):  # its decay is `wd`
        cls([torch.nn.Parameter(torch.zeros(2, 2))], weight_decay=0.1)
    if matrix:
        conformance.test_batch_dims_update_each_copy_as_if_alone(info)
        conformance.test_routing(info)


def test_export_registers_the_optimizer_in_the_package(tmp_path):
    """Into a copy of discovered/: `from discovered import Cobra` works, and the registry lists it."""
    import discovered

    package = tmp_path / "discovered"
    shutil.copytree(Path(discovered.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    export(LION, "Cobra", Provenance(run="test"), folder=package, register=True)
    program = f"""
import sys; sys.path.insert(0, {str(tmp_path)!r})
import discovered
assert discovered.__file__.startswith({str(tmp_path)!r})
from discovered import Cobra, REGISTRY
assert REGISTRY["Cobra"].source == "exported" and REGISTRY["Cobra"].cls is Cobra
print(Cobra.__doc__.splitlines()[0])
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Cobra" in done.stdout
    with pytest.raises(ExportError, match="already exists"):
        export(LION, "Cobra", folder=package, register=True)
    export(MUON, "Cobra", folder=package, register=True, force=True)  # replaced on request
    assert "polar" in (package / "cobra.py").read_text()


@pytest.mark.parametrize("name,message", [
    ("../evil", "invalid name"), ("with space", "invalid name"), ("class", "invalid name"),
    ("9lives", "invalid name"), ("Lion", "reserved"), ("Registry", "reserved"), ("", "invalid name"),
])
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, name, message):
    with pytest.raises(ExportError, match=message):
        export(LION, name, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_invalid_program_and_unknown_candidate_are_refused(tmp_path):
    from primitives.program import Program, Statement
    from search.export import candidate_from_run

    broken = Program((), (), (Statement("u", "sign", ("nowhere",)),), "u")
    with pytest.raises(ExportError, match="invalid program"):
        export(broken, "Broken", folder=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from search import config as config_module
    from search.engine import run

    run(config_module.load(None, overrides=["evaluation.kind=behaviour", "workers.serial=true",
                                            "tracking.enabled=false", "stop.max_evals=3"]), run_dir=tmp_path / "run")
    with pytest.raises(ExportError, match="no candidate 99"):
        candidate_from_run(tmp_path / "run", 99)
    program, provenance, _ = candidate_from_run(tmp_path / "run", 0)
    assert provenance.candidate == 0 and provenance.run == "run" and provenance.score is not None


def test_equivalence_check_rejects_a_wrong_rewrite():
    wrong = parse(LION.text().replace("c = interp(g, m; beta1)", "c = interp(g, m; beta2)"))
    agree, why = equivalent(LION, wrong)
    assert not agree and "differ" in why
    assert equivalent(LION, parse(LION.text()))[0]


def test_simplify_and_export_commands(tmp_path, capsys):
    from search.cli import main

    save(LION_RAW, tmp_path / "raw.json")
    assert main(["simplify", str(tmp_path / "raw.json")]) == 0
    out = capsys.readouterr().out
    assert "pruned" in out and "simplified (verified equal" in out and "\\operatorname{sign}" in out
    assert main(["export", str(tmp_path / "raw.json"), "--name", "Raw", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "raw.py").exists()
    assert main(["export", str(tmp_path / "raw.json"), "--name", "../x", "--out", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()


def test_ablation_drops_what_does_not_matter_and_keeps_what_does():
    """With a stand-in score (agreement with Lion's updates), a harmless extra statement goes and sign stays."""
    from primitives.library import ALL
    from primitives.ablation import ablate
    from search.evaluation import BehaviourEvaluator

    noisy = parse(LION.text().replace("u = add_scaled(s, w; wd)", "u = add_scaled(s, w; wd)\nu = clip(u; big)")
                  .replace("const beta1 = 0.9", "const big = 1000.0, beta1 = 0.9"))
    behaviour = BehaviourEvaluator(LION, ALL)
    result = ablate(noisy, lambda p: behaviour.evaluate(p).score, ALL, tolerance=1e-9)
    assert result.removed == ("u = clip(u; big)",) and result.program == LION
    assert result.evaluations >= 2 and result.score == result.original_score == 0.0


STANDALONE_TRAINING = """
import sys
for name in ("primitives", "discovered", "search", "proxy_tasks"):
    sys.modules[name] = None  # optsearch cannot be imported here
sys.path.insert(0, {folder!r})
import torch
from {module} import {name}
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
model = model.double()
optimizer = {name}(model.parameters(), lr={lr!r})
x = torch.randn(64, 8, dtype=torch.float64)
y = torch.sin(x[:, :1]) * x[:, 1:2]
losses = []
for _ in range(30):
    optimizer.zero_grad()
    loss = torch.mean((model(x) - y) ** 2)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(" ".join(repr(v) for v in losses))
"""


def _train_with_program(program, lr):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    optimizer = ProgramOptimizer(model.parameters(), program, lr=lr, adamw_lr=3e-4)
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.sin(x[:, :1]) * x[:, 1:2]
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("program,name,lr", [(LION, "LionAlone", 1e-3), (MUON, "MuonAlone", 0.02)])
def test_a_standalone_export_trains_where_optsearch_cannot_be_imported(tmp_path, program, name, lr):
    result = export(program, name, folder=tmp_path, standalone=True)
    imports = [line for line in result.source.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in ("torch", "__future__", "collections", "typing", "dataclasses",
                                                 "enum", "functools", "math") for line in imports), imports
    script = STANDALONE_TRAINING.format(folder=str(tmp_path), module=result.path.stem, name=name, lr=lr)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [float(v) for v in done.stdout.split()]
    assert losses[-1] < losses[0]
    # The standalone class is the program: the same losses as ProgramOptimizer (its AdamW part at 3e-4).
    np.testing.assert_allclose(losses, _train_with_program(program, lr), rtol=1e-9)


def test_export_writes_to_the_working_directory_a_readable_module_with_a_rounded_tuned_lr(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    previous = os.umask(0o022)
    try:
        tasks = (TaskResult("quadratic", 0.5, lr=0.0123456, train_loss=0.1), TaskResult("mlp", 0.2, lr=0.0234567))
        result = export(LION, "Viper", Provenance(run="quickstart-1", candidate=7, score=0.35, stage="full",
                                                  tasks=tasks))
    finally:
        os.umask(previous)
    assert result.path == tmp_path / "viper.py"
    assert result.path.stat().st_mode & 0o777 == 0o644
    cls = _load(result.path, "Viper")
    assert inspect.signature(cls).parameters["lr"].default == 0.0179  # median of the two, 3 digits
    docstring = ast.get_docstring(ast.parse(result.source))
    assert "median over 2 task(s) of the rates the search tuned" in docstring
    assert "run quickstart-1, candidate 7" in docstring


@pytest.mark.parametrize("name", ["cobra", "Snake_case", "Cobra!", "AdamW", "SGD"])
def test_export_names_are_class_names_that_shadow_nothing(tmp_path, name):
    with pytest.raises(ExportError):
        export(LION, name, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []
