"""Exports: what the generated source may hold, names, arguments and provenance (issues 31 and 32)."""

from __future__ import annotations

import pytest

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
