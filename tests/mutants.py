"""Mutation check: each mutant below is a real defect the tests once let through; a test must catch it.

    python tests/mutants.py            every mutant (a few minutes on 2 cores)
    python tests/mutants.py NAME ...   only those

For each mutant: copy the repository (without .venv, .git and run outputs) into a
temporary folder, apply the edit there, and run the tests that should catch it
(`pytest -x -q`, the relevant tests only) with this Python and the copy first on
PYTHONPATH. No file of the real tree is ever changed. Before any mutant, the same
tests run once on an unmutated copy and must pass there (a mutant "caught" by a test
that fails anyway proves nothing). Prints a table; the exit status is 1 if a mutant
survived, 2 if a mutant no longer applies (its code changed: update the mutant) or the
unmutated copy fails.

Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(".venv", ".git", ".hypothesis", ".pytest_cache", "__pycache__", "*.egg-info",
                                "mlruns", "mlflow.db", "runs", "bench_out", "build", "dist")
ORACLES = "tests/test_oracles.py"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository
    edits: tuple[tuple[str, str], ...]  # (text that must occur exactly once, its replacement)
    tests: tuple[str, ...]  # pytest arguments: files and -k expressions
    what: str


MUTANTS = [
    Mutant("score-on-train-loss", "proxy_tasks/scoring.py", (
        ("by_seed = {r.seed: r.metric(task.metric) for r in baseline}",
         "by_seed = {r.seed: r.train_loss for r in baseline}"),
        ("seed_score(by_seed[r.seed], r.metric(task.metric)) for r in candidate",
         "seed_score(by_seed[r.seed], r.train_loss) for r in candidate"),
    ), (ORACLES, "-k", "score_task"), "score_task scores every task on its training loss"),
    Mutant("seeds-paired-in-reverse", "proxy_tasks/scoring.py", (
        ("seed_scores = tuple(seed_score(by_seed[r.seed], r.metric(task.metric)) for r in candidate)",
         "seed_scores = tuple(seed_score(b.metric(task.metric), r.metric(task.metric)) "
         "for r, b in zip(candidate, reversed(baseline)))"),
    ), (ORACLES, "-k", "score_task"), "score_task pairs seed i with the baseline of the seed listed last-i"),
    Mutant("seeds-paired-by-position", "proxy_tasks/scoring.py", (
        ("seed_scores = tuple(seed_score(by_seed[r.seed], r.metric(task.metric)) for r in candidate)",
         "seed_scores = tuple(seed_score(b.metric(task.metric), r.metric(task.metric)) "
         "for r, b in zip(candidate, baseline))"),
    ), (ORACLES, "-k", "score_task"), "score_task pairs runs by their position, not their seed"),
    Mutant("children-ignore-size-limits", "search/mutation.py", (
        ("if not within_limits(pruned, limits):", "if False:"),
    ), (ORACLES, "-k", "size_limits"), "make_child returns children over max_statements / max_state"),
    Mutant("swap-exchanges-arguments", "search/mutation.py", (
        ("    body[i], body[j] = body[j], body[i]\n    return dataclasses.replace(program, body=tuple(body)), "
         "f\"swap: statements",
         "    body[i], body[j] = (dataclasses.replace(body[i], args=body[j].args),\n"
         "                        dataclasses.replace(body[j], args=body[i].args))\n"
         "    return dataclasses.replace(program, body=tuple(body)), f\"swap: statements"),
    ), (ORACLES, "-k", "swap"), "swap exchanges the statements' arguments (85% invalid children)"),
    Mutant("adamw-without-bias-correction", "discovered/_contract.py", (
        ('m_hat = exp_avg / (1 - beta1 ** state["step"])', "m_hat = exp_avg"),
        ('v_hat = exp_avg_sq / (1 - beta2 ** state["step"])', "v_hat = exp_avg_sq"),
    ), (ORACLES, "-k", "builtin_adamw"), "the built-in AdamW of Muon/PolarGrad skips bias correction"),
    Mutant("resume-forgets-the-rng", "search/engine.py", (
        ('search.proposer.rng.bit_generator.state = checkpoint["rng"]', "pass"),
    ), (ORACLES, "-k", "resume"), "resume starts the proposer's generator from the seed again"),
    Mutant("hash-without-refinement", "primitives/hashing.py", (
        ("for _ in range(len(keys)):", "for _ in range(0):"),
    ), (ORACLES, "-k", "hash"), "structural_hash labels state registers by kind only"),
    Mutant("workers-without-memory-limit", "search/workers.py", (
        ("resource.setrlimit(resource.RLIMIT_AS, (limit, limit))", "pass"),
    ), (ORACLES, "-k", "hog"), "a worker's workers.memory_gb sets no limit"),
]


def copy_tree(target: Path) -> Path:
    tree = target / "tree"
    shutil.copytree(ROOT, tree, ignore=IGNORE, symlinks=True)
    return tree


def apply(mutant: Mutant, tree: Path) -> str | None:
    """Edit the copy; None, or why the mutant does not apply."""
    path = tree / mutant.path
    text = path.read_text()
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            return f"{mutant.path}: {old!r} occurs {count} times (expected once)"
        text = text.replace(old, new)
    path.write_text(text)
    return None


def run_tests(tree: Path, arguments: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "tests")])}
    env.pop("HYPOTHESIS_PROFILE", None)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *arguments]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=1800)


def first_failure(output: str) -> tuple[str, str]:
    """(the failing test, the first line of its error)."""
    test = re.search(r"^FAILED (\S+)", output, re.MULTILINE)
    error = re.search(r"^E +(.+)$", output, re.MULTILINE)
    return (test.group(1).split("::", 1)[-1] if test else "?"), (error.group(1)[:150] if error else "")


def check_imports_come_from(tree: Path, mutants: list[Mutant]) -> None:
    """The modules the mutants edit are imported from the copy there (not from the editable install)."""
    modules = sorted({m.path.removesuffix(".py").replace("/", ".") for m in mutants})
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import importlib\n" + "".join(f"print(importlib.import_module({m!r}).__file__)\n" for m in modules)
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    files = done.stdout.split()
    if done.returncode or len(files) != len(modules) or not all(Path(f).is_relative_to(tree) for f in files):
        sys.exit(f"the copy's modules are not the ones imported there: {done.stdout}{done.stderr}")


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or m.name in argv]
    unknown = set(argv) - {m.name for m in MUTANTS}
    if unknown:
        sys.exit(f"unknown mutant(s): {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in MUTANTS)}")
    rows, errors, status = [], {}, 0
    with tempfile.TemporaryDirectory(prefix="optsearch-mutants-") as scratch:
        clean = copy_tree(Path(scratch) / "clean")
        check_imports_come_from(clean, chosen)
        for arguments in dict.fromkeys(m.tests for m in chosen):
            done = run_tests(clean, arguments)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-2000:])
                sys.exit(f"the unmutated copy fails {' '.join(arguments)}: fix that first")
        for mutant in chosen:
            start = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"{mutant.name}-", dir=scratch) as folder:
                tree = copy_tree(Path(folder))
                problem = apply(mutant, tree)
                if problem is not None:
                    rows.append((mutant.name, f"DOES NOT APPLY: {problem}", "n/a", 0.0))
                    status = max(status, 2)
                    continue
                done = run_tests(tree, mutant.tests)
            seconds = time.monotonic() - start
            # 1: tests failed. Anything else (2 collection error, 5 nothing ran) is not a catch.
            caught = done.returncode == 1
            if not caught:
                status = max(status, 1)
            caught_by, error = first_failure(done.stdout) if caught else (f"(pytest exit {done.returncode})", "")
            rows.append((mutant.name, caught_by, "yes" if caught else "NO", seconds))
            errors[mutant.name] = error
            print(f"{mutant.name}: {'caught' if caught else 'SURVIVED'} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    width = [max(len(str(r[i])) for r in rows + [("mutant", "caught by", "caught", 0)]) for i in range(3)]
    print(f"{'mutant':<{width[0]}}  {'caught by':<{width[1]}}  caught  seconds")
    for name, caught_by, caught, seconds in rows:
        print(f"{name:<{width[0]}}  {caught_by:<{width[1]}}  {caught:<6}  {seconds:7.0f}")
    print()
    for mutant in chosen:
        print(f"{mutant.name}: {mutant.path}: {mutant.what}")
        if errors.get(mutant.name):
            print(f"    {errors[mutant.name]}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
