"""Export a program as an importable torch optimizer.

    optsearch export RUN_DIR CANDIDATE_ID --name Cobra          ./cobra.py
    optsearch export program.json --name Cobra --out somewhere  somewhere/cobra.py
    optsearch export ... --standalone                           one file that imports only torch
    optsearch export ... --register                             discovered/cobra.py, `from discovered import Cobra`

The module (search/codegen.py writes it) is the (simplified) program as
straight-line calls of the primitives' torch functions over the runtime in
discovered/rule_optimizer.py, with the update rule and its provenance in the
docstring. Before anything is written, the source is parsed back and checked,
then imported from a temporary folder and run side by side with the program:
an export that does not reproduce its program is refused.

What it guarantees: a run directory (events.jsonl, config.json) or a program
file reaches the generated source only as validated values written with
repr() or formatted as numbers: the run id (a safe name), the candidate id
(an integer), hashes (hexadecimal), task names (safe names), scores, losses and
learning rates (finite numbers, or the string "diverged" where a run recorded
inf or NaN); the program itself is rebuilt and validated first (register and
constant names are identifiers, ops are looked up in the primitive set), and
its constants are named as the class names them (codegen.exported_program:
c0 -> beta1 by role, lr -> lr_ where a name is the generated code's own).
The docstring must parse back exactly as written and the module's top level
must be the statements the generator writes, or nothing is imported or
written. Names are Python class names that shadow nothing the
bench or scoring resolves, nothing of the discovered package, and no module
of the standard library or an installed package. Every argument is checked
first (the default learning rate a finite number > 0).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import keyword
import re
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from primitives.analysis import prune, state_bytes, uses_matrix_primitives
from primitives.errors import OptsearchError
from primitives.files import atomic_write_text
from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import Program, ProgramError, validate
from primitives.serialize import from_dict
from search import codegen
from search.config import RUN_ID
from search.records import finite_number

MANIFEST = "exported.json"
REGISTRY_MODULE = "_exported.py"
# Python class names: a capital letter first (PEP 8), letters and digits, at most 64.
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,63}\Z")
_HEX = re.compile(r"[0-9a-f]{8,64}\Z")
_TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
SIGNIFICANT_DIGITS = 3  # of the default learning rate


class ExportError(OptsearchError):
    """A name, candidate or program that cannot be exported; nothing was written."""


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def discovered_dir() -> Path:
    import discovered

    return Path(discovered.__file__).parent


# Modules of discovered/ an export may never replace.
_RESERVED_MODULES = {"registry", "program_optimizer", "rule_optimizer", "lion", "muon", "polargrad", "soap"}


def _refuse(name: str, why: str) -> None:
    """A one-line refusal with a name that would do (Cobra -> CobraOptimizer)."""
    raise ExportError(f"invalid name {name!r}: {why}; choose another name, e.g. {name}Optimizer")


def _package_names(folder: Path, manifest: dict, register: bool) -> tuple[set[str], set[str]]:
    """(module files, public names) of the discovered package that an export may not take.

    An export registered as EXPORTED would replace discovered.EXPORTED in the package's namespace
    (and `registry` its module): `import discovered` itself would break. Earlier exports are not
    the package's own: replacing one is --force's business.
    """
    import discovered

    packages = {discovered_dir(), folder} if register else {discovered_dir()}  # folder: a copy of the package
    modules = {p.stem for base in packages for p in base.glob("*.py")} | _RESERVED_MODULES
    names = {n for n in dir(discovered) if not n.startswith("_")} | {n for n in discovered.__all__}
    return modules - {entry["module"] for entry in manifest.values()}, names - set(manifest)


def _shadowed_module(module: str, folder: Path) -> str | None:
    """What a module file called `module` would shadow on sys.path: the standard library or an installed package."""
    if module in sys.stdlib_module_names:
        return f"the standard library's {module}"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    own = str((folder / f"{module}.py").resolve())
    if spec is not None and not (spec.origin and str(Path(spec.origin).resolve()) == own):  # not its own earlier export
        return f"the importable package {module}"
    return None


def check_name(name: str, folder: Path, force: bool, register: bool = False) -> str:
    """A Python class name, never a path, shadowing nothing (an existing export only with force)."""
    if not isinstance(name, str) or not _CLASS_NAME.match(name) or keyword.iskeyword(name):
        raise ExportError(f"invalid name {name!r}: an optimizer name is a Python class name (a capital "
                          f"letter, then letters and digits), e.g. Cobra")
    module = snake_case(name)
    if module in _RESERVED_MODULES:
        _refuse(name, f"its module name {module!r} is reserved (a module of the discovered package)")
    from discovered import REGISTRY
    from proxy_tasks.optimizers import shadowed_names

    if name in shadowed_names():
        raise ExportError(f"invalid name {name!r}: it would shadow torch.optim.{name} or a name "
                          f"`optsearch bench` resolves; choose another name")
    shadowed = _shadowed_module(module, folder)
    if shadowed is not None:
        _refuse(name, f"its module file {module}.py would shadow {shadowed}")
    manifest = _read_manifest(folder)
    modules, names = _package_names(folder, manifest, register)
    if module in modules:
        _refuse(name, f"its module name {module!r} is reserved (a module of the discovered package)")
    if name in names:
        _refuse(name, f"discovered.{name} is the package's own name")
    if name in REGISTRY and name not in manifest:
        raise ExportError(f"{name!r} is already an optimizer in discovered/; choose another name")
    owner = {entry["module"]: other for other, entry in manifest.items()}
    if owner.get(module, name) != name:
        raise ExportError(f"{name!r} would write {module}.py, which belongs to {owner[module]!r}")
    if not force and (name in manifest or (folder / f"{module}.py").exists()):
        raise ExportError(f"{name!r} already exists ({folder / (module + '.py')}); pass --force to replace it")
    return module


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ExportError(f"{path} is damaged ({exc}); fix or remove it before exporting") from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and _CLASS_NAME.match(k) and isinstance(v, dict)
            and isinstance(v.get("module"), str) and v["module"].isidentifier()
            and finite_number(v.get("lr")) and isinstance(v.get("matrix"), bool)
            for k, v in data.items()):
        raise ExportError(f"{path} is not an export manifest; fix or remove it before exporting")
    return data


# ---------------------------------------------------------------------------
# Provenance: every value validated before it goes near the source


# What a provenance records for a number that is not finite: a run that diverged has an infinite (or NaN)
# loss, and repr(inf) is the name `inf`, which is no literal (the generated module must hold only literals).
DIVERGED = "diverged"


@dataclasses.dataclass(frozen=True)
class TaskResult:
    task: str
    score: float | str
    lr: float | None = None
    train_loss: float | str | None = None
    eval_loss: float | str | None = None


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where an exported program came from, as validated values (the only run data an export writes).

    A number that is not finite (a task that diverged: its loss is inf or NaN) is recorded as the string
    "diverged" (DIVERGED), a tuned rate that is not finite as None: every value is a literal.
    """

    run: str | None = None  # a run id
    candidate: int | None = None
    source_file: str | None = None  # a program file's name
    score: float | str | None = None
    stage: str | None = None
    held_out: float | str | None = None
    transfer: float | str | None = None
    tasks: tuple[TaskResult, ...] = ()
    ablation: tuple[str, int, float, float] | None = None  # (tasks, statements removed, score before, after)

    def __post_init__(self):
        if self.run is not None and not (isinstance(self.run, str) and RUN_ID.match(self.run)):
            raise ExportError(f"run id {self.run!r:.80} is not a safe name")
        if self.candidate is not None and type(self.candidate) is not int:
            raise ExportError(f"candidate id {self.candidate!r:.80} is not an integer")
        if self.source_file is not None and not (isinstance(self.source_file, str) and _TASK.match(self.source_file)):
            object.__setattr__(self, "source_file", "(a program file)")  # an odd file name is not repeated
        if self.stage is not None and self.stage not in ("cheap", "full", "behaviour"):
            raise ExportError(f"stage {self.stage!r:.80} is not a stage")
        for label in ("score", "held_out", "transfer"):
            object.__setattr__(self, label, _number(getattr(self, label), label))
        if not isinstance(self.tasks, tuple) or not all(isinstance(t, TaskResult) for t in self.tasks):
            raise ExportError("the per-task results are not a tuple of TaskResult")
        tasks = []
        for entry in self.tasks:
            if not (isinstance(entry.task, str) and _TASK.match(entry.task)):
                raise ExportError(f"task name {entry.task!r:.80} is not a safe name")
            if entry.score is None:
                raise ExportError(f"{entry.task}.score is missing")
            lr = _number(entry.lr, f"{entry.task}.lr")
            tasks.append(TaskResult(entry.task, _number(entry.score, f"{entry.task}.score"),
                                    None if lr == DIVERGED else lr,
                                    _number(entry.train_loss, f"{entry.task}.train_loss"),
                                    _number(entry.eval_loss, f"{entry.task}.eval_loss")))
        object.__setattr__(self, "tasks", tuple(tasks))
        if self.ablation is not None:
            tasks, removed, before, after = self.ablation
            if not (isinstance(tasks, str) and re.fullmatch(r"[A-Za-z0-9_.,-]{1,200}", tasks) and type(removed) is int):
                raise ExportError("ablation note is not valid")
            _finite(before, "ablation score")
            _finite(after, "ablation score")

    def lines(self) -> list[str]:
        """The docstring's provenance lines (validated values only)."""
        out = []
        if self.run is not None:
            out.append(f"run {self.run}, candidate {self.candidate}")
        if self.source_file is not None:
            out.append(f"program file {self.source_file}")
        if self.score is not None:
            scores = f"score {_signed(self.score, 4)} against tuned AdamW (stage {self.stage})"
            scores += "".join(f", {label} {_signed(value, 4)}" for label, value in (("held-out", self.held_out),
                                                                                   ("transfer", self.transfer))
                              if value is not None)
            out.append(scores)
        for entry in self.tasks:
            details = ", ".join(f"{label} {value if value == DIVERGED else format(value, '.4g')}"
                                for label, value in (("tuned lr", entry.lr), ("train loss", entry.train_loss),
                                                     ("eval loss", entry.eval_loss))
                                if value is not None)
            out.append(f"  {entry.task}: {_signed(entry.score, 3)}" + (f" ({details})" if details else ""))
        if self.ablation is not None:
            tasks, removed, before, after = self.ablation
            out.append(f"ablation on {tasks}: removed {removed} statement(s), score {before:+.3f} -> {after:+.3f}")
        return out

    def to_dict(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, ())}
        if self.tasks:
            data["tasks"] = {t.task: {k: v for k, v in dataclasses.asdict(t).items() if k != "task" and v is not None}
                             for t in self.tasks}
        return data

    def tuned_lr(self) -> float | None:
        rates = [t.lr for t in self.tasks if t.lr is not None and t.lr > 0]
        return statistics.median(rates) if rates else None


def _number(value, label: str) -> float | str | None:
    """A recorded number as the provenance keeps it: None, a finite number, or DIVERGED for inf and NaN."""
    if value is None or value == DIVERGED or finite_number(value):
        return value
    if type(value) is float:  # inf or NaN: what a diverged run records
        return DIVERGED
    raise ExportError(f"{label} {value!r:.80} is not a number")


def _signed(value: float | str, digits: int) -> str:
    return value if value == DIVERGED else f"{value:+.{digits}f}"


def _finite(value, label: str) -> None:
    if value is not None and not finite_number(value):
        raise ExportError(f"{label} {value!r:.80} is not a finite number")


def _round(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    return float(f"{value:.{digits - 1}e}")


# ---------------------------------------------------------------------------
# Checking an export against its program


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # our own generated code, its structure checked first
    return module


def agrees_with_program(cls, program: Program, primitive_set: PrimitiveSet, steps: int = 30) -> tuple[bool, str]:
    """Run the class and ProgramOptimizer side by side (float64) on several shapes."""
    from discovered.program_optimizer import ProgramOptimizer

    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (3, 5), (2, 3, 2, 2), (6,)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    ours = [torch.nn.Parameter(p.clone()) for p in init]
    theirs = [torch.nn.Parameter(p.clone()) for p in init]
    a = cls(ours, lr=1e-3, route="rule")
    b = ProgramOptimizer(theirs, program, lr=1e-3, route="rule", primitive_set=primitive_set)
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = grad, grad.clone()
        a.step()
        b.step()
    for p, q, shape in zip(ours, theirs, shapes):
        if not torch.allclose(p, q, rtol=1e-9, atol=1e-12, equal_nan=True):
            return False, f"parameters of shape {shape} differ by {float((p - q).abs().max()):.3g}"
    return True, ""


# ---------------------------------------------------------------------------
# Front door


@dataclasses.dataclass(frozen=True)
class Exported:
    name: str
    path: Path
    program: Program
    simplified: bool
    note: str
    source: str


def candidate_from_run(run_dir: str | Path, candidate_id: int,
                       primitive_set_name: str | None = None) -> tuple[Program, Provenance, PrimitiveSet]:
    """The program of a run's candidate (a cache hit's id too), and its provenance.

    primitive_set_name: the user's own --primitive-set, which may import a
    plugin; the name found in the run's config.json never does. The run is
    read back and checked as resume would (search/replay.py), without a lock.
    """
    from search import replay
    from search.run_store import RunDirError

    try:
        recorded = replay.load(run_dir, primitive_set_name=primitive_set_name, trusted=False)
    except RunDirError as exc:
        raise ExportError(str(exc)) from None
    events = recorded.store.read_events()
    by_id = {e["id"]: e for e in events if e["type"] in ("candidate", "cache_hit")}
    event = by_id.get(candidate_id)
    if event is None:
        ids = sorted(by_id)
        raise ExportError(f"no candidate {candidate_id} in {run_dir} (candidates: {_ranges(ids) or 'none'})")
    scored = by_id.get(event["same_as"], event) if event["type"] == "cache_hit" else event
    if scored.get("status") in ("error", "timeout", "crashed"):
        raise ExportError(f"candidate {candidate_id} of {run_dir} failed ({scored['status']}); there is nothing "
                          f"to export")
    later = {(e["type"], e["id"]): e["score"] for e in events if e["type"] in ("held_out", "transfer")}
    provenance = Provenance(
        run=recorded.run_id, candidate=candidate_id, score=event["score"], stage=event["stage"],
        held_out=later.get(("held_out", scored["id"])), transfer=later.get(("transfer", scored["id"])),
        tasks=tuple(TaskResult(task, entry["score"], entry.get("lr"), entry.get("train_loss"), entry.get("eval_loss"))
                    for task, entry in scored.get("tasks", {}).items()))
    return from_dict(event["program"], recorded.primitive_set), provenance, recorded.primitive_set


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(f"{start}" if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def _docstring(name: str, text: str, latex: str, provenance: Provenance, program_hash: str, behaviour: str,
               lr: float, lr_note: str, note: str, state_bytes: float = 0.0) -> str:
    formula = textwrap.indent(text, "    ")
    math_block = f"\nIn LaTeX:\n\n{textwrap.indent(latex, '    ')}\n" if latex else ""
    origin = "\n".join(f"    {line}" for line in provenance.lines())
    return f"""{name}: an optimizer found by optsearch (written by `optsearch export`).

Update rule, applied as w <- w - lr * u after each step (a state register on
the right of "<-" holds the previous step's value):

{formula}
{math_block}
Default learning rate {lr:.{SIGNIFICANT_DIGITS - 1}e}: {lr_note}.
Optimizer state: {state_bytes:.3g} bytes per parameter byte (on a transformer block's matrices).

Provenance:
{origin}
    program hash {program_hash}, behavioural fingerprint {behaviour}
    {note}

The update function below is the program as straight-line torch code, each
line commented with its statement; state, checks and routing are
RuleOptimizer's. Edit it freely; re-export to regenerate.
"""


_NOTES = {True: "simplified with SymPy; the simplified rule was checked equal to the found one on random inputs",
          False: "exported as found (pruned of dead code)"}


def export(program: Program, name: str, provenance: Provenance | None = None, folder: str | Path | None = None,
           force: bool = False, simplify_program: bool = True, primitive_set: PrimitiveSet = ALL,
           register: bool = False, standalone: bool = False, lr: float | None = None) -> Exported:
    """Write the module into `folder` (default: the working directory, or discovered/ with `register`).

    register: also add it to the package's manifest and registry (discovered/_exported.py), so that
    `from discovered import Name` works and the conformance suite covers it.
    """
    from primitives.simplify import render, simplify, symbolic_form

    _check_arguments(program, provenance, folder, force, simplify_program, primitive_set, register, standalone, lr)
    if register and standalone:
        raise ExportError("a standalone file is for other projects; it is not registered in discovered/")
    folder = Path(folder) if folder is not None else discovered_dir() if register else Path.cwd()
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"--out {folder} is a file, not a folder")
    module = check_name(name, folder, force, register)
    try:
        validate(program, primitive_set)
        # Constants named as the class will name them (c0 -> beta1, lr -> lr_), so that the docstring's
        # formula and the constructor's keywords agree.
        program = codegen.exported_program(program, primitive_set, standalone)
    except ProgramError as exc:
        raise ExportError(f"invalid program: {exc}") from None
    except codegen.CodegenError as exc:
        raise ExportError(str(exc)) from None
    provenance = provenance or Provenance()
    if simplify_program:
        result = simplify(program, primitive_set)
        final, simplified, latex, text = result.simplified, result.accepted, result.latex, result.text
    else:
        final, simplified = prune(program), False
        try:
            latex, text = render(symbolic_form(final, primitive_set))
        except ValueError:  # too large, or a primitive without a SymPy counterpart: the program's own text
            latex, text = "", final.text()
    final = codegen.exported_program(final, primitive_set, standalone)  # constants simplification made up
    tuned = provenance.tuned_lr()
    default_lr = _round(lr if lr is not None else tuned if tuned is not None else 1e-3)
    lr_note = ("given by the exporter" if lr is not None else
               f"the median over {len(provenance.tasks)} task(s) of the rates the search tuned for it "
               f"(rounded to {SIGNIFICANT_DIGITS} digits); tune it for your problem" if tuned is not None else
               "not tuned (the program came without tuned rates): tune it for your problem")
    program_hash = structural_hash(final, primitive_set)
    behaviour = fingerprint(final, primitive_set=primitive_set)
    docstring = _docstring(name, text, latex, provenance, program_hash, behaviour, default_lr, lr_note,
                           _NOTES[simplified], state_bytes(final))
    record = {**provenance.to_dict(), "program_hash": program_hash, "fingerprint": behaviour,
              "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        source = codegen.module_source(final, name, docstring, record, default_lr, primitive_set, standalone, text)
        codegen.check_source(source, name, docstring, standalone, codegen.program_modules(final, primitive_set))
    except codegen.CodegenError as exc:
        raise ExportError(str(exc)) from None
    agree, why = _self_check(source, module, name, final, primitive_set, standalone)
    if not agree:
        raise ExportError(f"the generated {name} does not reproduce its program ({why}); nothing was written")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    atomic_write_text(path, source)
    if register:
        manifest = _read_manifest(folder)
        manifest[name] = {"module": module, "lr": default_lr, "matrix": uses_matrix_primitives(final, primitive_set)}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        atomic_write_text(folder / REGISTRY_MODULE, registry_source(manifest))
    return Exported(name, path, final, simplified, _NOTES[simplified], source)


def _check_arguments(program, provenance, folder, force, simplify_program, primitive_set, register, standalone,
                     lr) -> None:
    """Every argument of export() checked as the configuration checks its settings: one line, before any work."""
    if not isinstance(program, Program):
        raise ExportError(f"the program must be a primitives.program.Program, got {type(program).__name__}")
    if provenance is not None and not isinstance(provenance, Provenance):
        raise ExportError(f"provenance must be a search.export.Provenance, got {type(provenance).__name__}")
    if folder is not None and not isinstance(folder, (str, Path)):
        raise ExportError(f"--out must be a folder's path, got {type(folder).__name__}")
    if not isinstance(primitive_set, PrimitiveSet):
        raise ExportError(f"primitive_set must be a PrimitiveSet, got {type(primitive_set).__name__}")
    for label, value in (("force", force), ("simplify", simplify_program), ("register", register),
                         ("standalone", standalone)):
        if type(value) is not bool:
            raise ExportError(f"{label} must be true or false, got {value!r:.80}")
    # A default learning rate of 0 never moves, a negative one climbs, nan and inf poison the first step.
    if lr is not None and not (finite_number(lr) and lr > 0):
        raise ExportError(f"--lr must be a finite number > 0 (the default learning rate), got {lr!r:.80}")
    if lr is not None and _round(lr) <= 0:
        raise ExportError(f"--lr {lr!r} is too small to be written as a float; give a larger rate")


def _self_check(source: str, module: str, name: str, program: Program, primitive_set: PrimitiveSet,
                standalone: bool) -> tuple[bool, str]:
    """Import the checked source from a temporary folder and run it beside the program."""
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / f"{module}.py"
        trial.write_text(source)
        module_name = f"_optsearch_export_check_{module}"
        try:
            generated = _import_file(trial, module_name)
            return agrees_with_program(getattr(generated, name), program, primitive_set)
        finally:
            sys.modules.pop(module_name, None)


def registry_source(manifest: dict) -> str:
    """discovered/_exported.py from the (validated) manifest: names and modules are identifiers, lr a number."""
    lines = ['"""Optimizers exported by `optsearch export --register` (generated from exported.json; do not edit)."""',
             "", "from __future__ import annotations", ""]
    for name in sorted(manifest):
        lines.append(f"from discovered.{manifest[name]['module']} import {name}")
    lines += ["", "# name -> (class, default keywords for the conformance suite, treats matrices as matrices)",
              "EXPORTED = {"]
    for name in sorted(manifest):
        entry = manifest[name]
        lines.append(f"    {name!r}: ({name}, {{'lr': {float(entry['lr'])!r}}}, {bool(entry['matrix'])!r}),")
    lines.append("}")
    return "\n".join(lines) + "\n"
