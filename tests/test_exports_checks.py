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
