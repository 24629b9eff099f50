"""The command line's own hardening (issues 31 and 32): a fast --help and --version, unique run ids."""

from __future__ import annotations

import subprocess
import sys


def _imported(*args: str) -> set[str]:
    """The modules `python -m search ARGS` imports (read from -X importtime, not timed)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "search", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_and_version_import_neither_torch_nor_mlflow():
    for args in (["--version"], ["--help"]):
        modules = _imported(*args)
        assert "search.cli" in modules
        heavy = {m for m in modules if m.split(".")[0] in ("torch", "mlflow", "primitives", "sympy", "numpy")}
        assert not heavy, (args, sorted(heavy)[:10])
