"""Export a program as an importable torch optimizer in discovered/.

    optsearch export RUN_DIR CANDIDATE_ID --name Cobra
    optsearch export program.json --name Cobra

writes discovered/cobra.py: a torch.optim.Optimizer class whose step is the
(simplified) program as straight-line torch code, calling the same primitive
functions the interpreter calls (no interpreter, no eval or exec), with the
update rule in its docstring and a provenance header. The named constants
become constructor arguments, checked against the ranges the primitives
accept. discovered/_exported.py is regenerated to register every export, so
`from discovered import Cobra` works and the conformance suite covers it.

Before anything is written, the generated module is imported from a
temporary folder and run side by side with the program: an export that does
not reproduce its program is refused. Bad names, unknown candidates and
invalid programs are refused before that, and nothing is written then.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import json
import keyword
import os
import re
import statistics
import tempfile
import textwrap
from pathlib import Path

import torch

from primitives.analysis import prune, uses_matrix_primitives
from primitives.errors import OptsearchError
from primitives.files import atomic_write_text
from primitives.kinds import Layout
from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import Program, ProgramError, validate
from primitives.serialize import from_dict

MANIFEST = "exported.json"
REGISTRY_MODULE = "_exported.py"
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# Module aliases in generated code (register names never collide with them).
_ALIASES = {"primitives.elementwise": "_ew", "primitives.normalisers": "_norm", "primitives.polar": "_polar",
            "primitives.kronecker": "_kron", "primitives.factored": "_factored"}
_RESERVED = {"g", "w", "t", "state", "torch", "group", "options"} | set(_ALIASES.values())


class ExportError(OptsearchError):
    """A name, candidate or program that cannot be exported; nothing was written."""


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def discovered_dir() -> Path:
    import discovered

    return Path(discovered.__file__).parent


# Modules of discovered/ an export may never replace.
_RESERVED_MODULES = {"registry", "program_optimizer", "lion", "muon", "polargrad"}


def check_name(name: str, folder: Path, force: bool) -> str:
    """A Python class name, not a keyword, never a path, not an existing optimizer (unless force)."""
    if not isinstance(name, str) or not _CLASS_NAME.match(name) or keyword.iskeyword(name):
        raise ExportError(f"invalid name {name!r}: an optimizer name is a Python identifier "
                          f"(letters, digits and _, not starting with a digit), e.g. Cobra")
    module = snake_case(name)
    if keyword.iskeyword(module) or module.startswith("_") or module in _RESERVED_MODULES:
        raise ExportError(f"invalid name {name!r}: its module name {module!r} is reserved")
    from discovered import REGISTRY
    from proxy_tasks.optimizers import shadowed_names

    if name in shadowed_names() or name.lower() == "program":
        raise ExportError(f"invalid name {name!r}: it would shadow torch.optim.{name} or a name "
                          f"`optsearch bench` resolves; choose another name")
    manifest = _read_manifest(folder)
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
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is damaged ({exc}); fix or remove it before exporting") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} is not an export manifest")
    return data


# ---------------------------------------------------------------------------
# Code generation


def _function_ref(fn) -> tuple[str, dict]:
    """(alias.name, fixed keywords) of a primitive's torch function."""
    keywords = {}
    if isinstance(fn, functools.partial):
        keywords, fn = dict(fn.keywords), fn.func
    alias = _ALIASES.get(fn.__module__)
    if alias is None:
        raise ExportError(f"primitive function {fn.__module__}.{fn.__name__} is not exportable "
                          f"(only built-in primitives are)")
    return f"{alias}.{fn.__name__}", keywords


def _locals(program: Program) -> dict[str, str]:
    """Register -> Python local name (renamed where it would shadow something)."""
    names = {}
    constants = set(program.constant_values)
    for register in ["g", "w", "t", *program.state_names, *(s.out for s in program.body)]:
        if register in names:
            continue
        local = register
        if register not in ("g", "w", "t") and (register in _RESERVED or register in constants):
            local = f"{register}_"
        while local in constants:
            local += "_"
        names[register] = local
    return names


def _update_body(program: Program, layout: Layout, primitive_set: PrimitiveSet) -> list[str]:
    names = _locals(program)
    lines = []
    for register in program.state_names:
        lines.append(f"    {names[register]} = state[{register!r}]")
    for stmt in program.body:
        prim = primitive_set.get(stmt.op)
        ref, keywords = _function_ref(prim.matrix_fn if layout is Layout.MATRIX else prim.vector_fn)
        args = [names[a] for a in stmt.args]
        args += [f"{spec.name}={c}" for spec, c in zip(prim.consts, stmt.consts)]
        args += [f"{k}={v!r}" for k, v in keywords.items()]
        args += [f"{o}=options[{o!r}]" for o in prim.options]
        lines.append(f"    {names[stmt.out]} = {ref}({', '.join(args)})  # {stmt.text()}")
    state = ", ".join(f"{r!r}: {names[r]}" for r in program.state_names)
    lines.append(f"    return {names[program.output]}, {{{state}}}")
    return lines


def _update_functions(program: Program, primitive_set: PrimitiveSet) -> tuple[str, str, str]:
    """(source, function for matrices, function for vectors): one function when both layouts agree."""
    signature = ", ".join(["g", "w", "t", "state", *program.constant_values, "options"])
    matrix = _update_body(program, Layout.MATRIX, primitive_set)
    vector = _update_body(program, Layout.VECTOR, primitive_set)
    if matrix == vector:
        source = "\n".join([f"def _update({signature}):",
                             '    """One step on a batch of parameters: returns (u, new state)."""', *matrix])
        return source, "_update", "_update"
    source = "\n\n\n".join([
        "\n".join([f"def _matrix_update({signature}):",
                   '    """One step on a batch of matrices (..., m, n): returns (u, new state)."""', *matrix]),
        "\n".join([f"def _vector_update({signature}):",
                   '    """One step on a batch of vectors (..., n), matrix primitives on diag(x)."""', *vector]),
    ])
    return source, "_matrix_update", "_vector_update"


def _range_checks(program: Program, primitive_set: PrimitiveSet) -> list[str]:
    """One check per constant: the intersection of the intervals of the slots it fills."""
    bounds: dict[str, list] = {}
    for stmt in program.body:
        for spec, const in zip(primitive_set.get(stmt.op).consts, stmt.consts):
            bounds.setdefault(const, []).append(spec)
    lines = []
    for const, specs in bounds.items():
        low = max(specs, key=lambda s: (s.low, s.low_open))
        high = min(specs, key=lambda s: (s.high, not s.high_open))
        lines.append(f"        _check_constant({const!r}, group[{const!r}], {low.low!r}, {high.high!r}, "
                     f"{low.low_open!r}, {high.high_open!r})")
    return lines


def _docstring_rule(text: str, latex: str) -> str:
    return textwrap.indent(text, "    ") + "\n\nIn LaTeX:\n\n" + textwrap.indent(latex, "    ")


def generate(program: Program, name: str, provenance: dict, lr: float, text: str, latex: str,
             primitive_set: PrimitiveSet = ALL) -> str:
    """The source of an optimizer module for `program`."""
    validate(program, primitive_set)
    matrix = uses_matrix_primitives(program, primitive_set)
    constants = program.constant_values
    uses_polar = any(primitive_set.get(s.op).options for s in program.body)
    modules = sorted({_function_ref(fn)[0].split(".")[0] for s in program.body
                      for fn in (primitive_set.get(s.op).matrix_fn, primitive_set.get(s.op).vector_fn)})
    inverse = {v: k for k, v in _ALIASES.items()}
    imports = "\n".join(f"from {inverse[a].rsplit('.', 1)[0]} import {inverse[a].rsplit('.', 1)[1]} as {a}"
                        for a in modules)
    header = "\n".join(f"    {k}: {v}" for k, v in provenance.items())
    ctor_constants = "".join(f"\n        {c}: float = {v!r}," for c, v in constants.items())
    polar_args = ('\n        polar_backend: str = "ns",\n        polar_steps: int | None = None,'
                  '\n        polar_dtype: str | None = None,') if uses_polar else ""
    defaults = ", ".join([f'"lr": lr'] + [f"{c!r}: {c}" for c in constants])
    options = ('{"backend": group["polar_backend"], "steps": group["polar_steps"], '
               '"compute_dtype": None if group["polar_dtype"] is None else getattr(torch, group["polar_dtype"])}'
               if uses_polar else "{}")
    polar_defaults = ', "polar_backend": polar_backend, "polar_steps": polar_steps, "polar_dtype": polar_dtype' \
        if uses_polar else ""
    polar_checks = ('\n        if group["polar_backend"] not in _polar.BACKENDS:\n'
                    '            raise ValueError(f"Invalid polar_backend: {group[\'polar_backend\']!r}")') \
        if uses_polar else ""
    if uses_polar and "_polar" not in modules:
        imports += "\nfrom primitives import polar as _polar"
    checks = "\n".join(_range_checks(program, primitive_set)) or "        pass"
    constant_args = ", ".join(f"group[{c!r}]" for c in constants)
    call_constants = f", {constant_args}" if constant_args else ""
    auto = "" if matrix else '''
    def _auto_takes(self, p: torch.Tensor, group: dict) -> bool:
        return True  # an elementwise rule: every parameter, as the program does
'''
    state_names = list(program.state_names)
    functions, matrix_fn, vector_fn = _update_functions(program, primitive_set)
    return f'''r"""{name}: an optimizer found by optsearch (generated by `optsearch export`).

Update rule, with w <- w - lr * u after each step (state on the right of
"<-" is the previous step's value):

{_docstring_rule(text, latex)}

Provenance:
{header}

The step below is the program as straight-line torch code, calling the same
primitive functions (primitives/) that the search's interpreter ran. Edit it
freely; re-export to regenerate.
"""

from __future__ import annotations

import torch

from discovered._contract import MatrixOptimizer, matrix_view
{imports}

PROGRAM_HASH = {provenance.get("program hash", "")!r}
STATE = {tuple(state_names)!r}


def _check_constant(name, value, low, high, low_open, high_open):
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not (isinstance(value, (int, float)) and inside):
        interval = f"{{'(' if low_open else '['}}{{low:g}}, {{high:g}}{{')' if high_open else ']'}}"
        raise ValueError(f"Invalid {{name}} value: {{value}} (expected a number in {{interval}})")


{functions}


class {name}(MatrixOptimizer):
    """{name}(params, lr={lr!r}{''.join(f", {c}={v!r}" for c, v in constants.items())}).

    Args:
        lr: learning rate (w <- w - lr * u).
{''.join(f"        {c}: constant of the update rule (found: {v!r})." + chr(10) for c, v in constants.items())}\
        route, batch_dims, adamw_*: see discovered._contract.MatrixOptimizer.
    """

    def __init__(
        self,
        params,
        lr: float = {lr!r},{ctor_constants}{polar_args}
        **routing,
    ):
        super().__init__(params, {{{defaults}{polar_defaults}, **routing}})

    def _check_rule(self, group: dict) -> None:
{checks}{polar_checks}
{auto}
    def _rule_step(self, group: dict, params: list[torch.Tensor]) -> None:
        options = {options}
        for p in params:
            view = matrix_view(p, group["batch_dims"])
            core = view.shape[group["batch_dims"]:]
            w = view.reshape(-1, *core)
            g = p.grad.reshape(w.shape)
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state.update(_initial_state(w))
            state["step"] += 1
            t = torch.full((w.shape[0],) + (1,) * len(core), float(state["step"]), dtype=w.dtype, device=w.device)
            update = {matrix_fn} if len(core) == 2 else {vector_fn}
            u, new = update(g, w, t, {{k: state[k] for k in STATE}}{call_constants}, options)
            p.add_(torch.broadcast_to(u, w.shape).reshape(p.shape), alpha=-group["lr"])
            state.update(new)


def _initial_state(w: torch.Tensor) -> dict:
    """Zeros (or eps * I for Gram statistics) in each register's shape."""
{_initial_state_body(program)}
'''


def _initial_state_body(program: Program) -> str:
    if not program.state:
        return "    return {}"
    lines = ["    batch, core = w.shape[0], w.shape[1:]",
             "    m, n = (core[0], core[1]) if len(core) == 2 else (1, core[0])",
             "    matrix = len(core) == 2",
             "    state = {}"]
    shapes = {
        "param": "tuple(core)", "scalar": "(1, 1) if matrix else (1,)",
        "row": "(m, m) if matrix else (n,)", "col": "(n, n) if matrix else (n,)",
        "rowvec": "(m, 1) if matrix else (1,)", "colvec": "(1, n) if matrix else (n,)",
    }
    for decl in program.state:
        lines.append(f"    value = torch.zeros((batch, *({shapes[decl.kind.value]})), dtype=w.dtype, device=w.device)")
        if decl.init == "eye":
            lines.append(f"    value = value + {decl.eps!r} * (torch.eye(value.shape[-1], dtype=w.dtype, "
                         f"device=w.device) if matrix else 1.0)")
        lines.append(f"    state[{decl.name!r}] = value")
    lines.append("    return state")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Checking an export against its program


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # our own generated code, checked with compile() first
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


def candidate_from_run(run_dir: str | Path, candidate_id: int,
                       primitive_set_name: str | None = None) -> tuple[Program, dict, PrimitiveSet]:
    """The program of a run's candidate, and its provenance.

    primitive_set_name: the user's own --primitive-set, which may import a
    plugin; the name found in the run's config.json never does.
    """
    from search.jobs import resolve_primitive_set
    from search.run_store import RunStore

    store = RunStore(run_dir)
    config = store.read_config()
    saved = (config.get("evolution") or {}).get("primitive_set", "all")
    if primitive_set_name is not None and primitive_set_name != saved:
        raise ExportError(f"the run used primitive set {saved!r}, not {primitive_set_name!r}")
    primitive_set = resolve_primitive_set(saved, trusted=primitive_set_name is not None)
    for event in store.read_events():
        if event["type"] == "candidate" and event["id"] == candidate_id:
            if event["status"] in ("error", "timeout", "crashed"):
                raise ExportError(f"candidate {candidate_id} of {run_dir} failed ({event['status']}); "
                                  f"there is nothing to export")
            provenance = {
                "run": config.get("run_id", Path(run_dir).name), "candidate": candidate_id,
                "program hash": event["structural_hash"], "fingerprint": event["fingerprint"],
                "score": f"{event['score']:+.4f} (stage {event['stage']})",
            }
            for task, entry in event["tasks"].items():
                details = ", ".join(f"{label} {entry[key]:.4g}" for key, label in
                                    (("train_loss", "train loss"), ("eval_loss", "eval loss"), ("lr", "lr"))
                                    if key in entry)
                provenance[f"  {task}"] = f"{entry['score']:+.3f}" + (f" vs tuned AdamW ({details})" if details else "")
            lrs = [entry["lr"] for entry in event["tasks"].values() if "lr" in entry]
            provenance["_lr"] = statistics.median(lrs) if lrs else 1e-3
            return from_dict(event["program"], primitive_set), provenance, primitive_set
    ids = [e["id"] for e in store.read_events() if e["type"] == "candidate"]
    raise ExportError(f"no candidate {candidate_id} in {run_dir} (candidates: "
                      f"{min(ids) if ids else '-'}..{max(ids) if ids else '-'})")


def export(program: Program, name: str, provenance: dict | None = None, folder: str | Path | None = None,
           force: bool = False, simplify_program: bool = True, primitive_set: PrimitiveSet = ALL,
           register: bool | None = None) -> Exported:
    """Write the module (and register it when writing into discovered/)."""
    from primitives.simplify import render, simplify, simplify_symbolic, to_sympy

    folder = Path(folder) if folder is not None else discovered_dir()
    register = (folder.resolve() == discovered_dir().resolve()) if register is None else register
    module = check_name(name, folder, force)
    try:
        validate(program, primitive_set)
    except ProgramError as exc:
        raise ExportError(f"invalid program: {exc}") from None
    provenance = dict(provenance or {})
    lr = float(provenance.pop("_lr", 1e-3))
    if simplify_program:
        result = simplify(program, primitive_set)
        final, simplified, note, latex, text = result.simplified, result.accepted, result.note, result.latex, result.text
    else:
        final, simplified, note = prune(program), False, "not simplified (--no-simplify)"
        latex, text = render(simplify_symbolic(to_sympy(final, primitive_set)))
    from primitives.fingerprint import fingerprint
    from primitives.hashing import structural_hash

    provenance.setdefault("program hash", structural_hash(final, primitive_set))
    provenance.setdefault("fingerprint", fingerprint(final, primitive_set=primitive_set))
    provenance = {**provenance, "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "simplification": note}
    source = generate(final, name, provenance, lr, text, latex, primitive_set)
    compile(source, f"{module}.py", "exec")  # a syntax check; nothing runs
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / f"{module}.py"
        trial.write_text(source)
        generated = _import_file(trial, f"_optsearch_export_check_{module}")
        agree, why = agrees_with_program(getattr(generated, name), final, primitive_set)
    if not agree:
        raise ExportError(f"the generated {name} does not reproduce its program ({why}); nothing was written")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    atomic_write_text(path, source)
    if register:
        manifest = _read_manifest(folder)
        manifest[name] = {"module": module, "lr": lr, "matrix": uses_matrix_primitives(final, primitive_set),
                          "program_hash": provenance.get("program hash", "")}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        atomic_write_text(folder / REGISTRY_MODULE, registry_source(manifest))
    return Exported(name, path, final, simplified, note)


def registry_source(manifest: dict) -> str:
    lines = ['"""Optimizers exported by `optsearch export` (generated from exported.json; do not edit)."""', "",
             "from __future__ import annotations", ""]
    for name in sorted(manifest):
        lines.append(f"from discovered.{manifest[name]['module']} import {name}")
    lines += ["", "# name -> (class, default keywords for the conformance suite, treats matrices as matrices)",
              "EXPORTED = {"]
    for name in sorted(manifest):
        entry = manifest[name]
        lines.append(f"    {name!r}: ({name}, {{'lr': {entry['lr']!r}}}, {entry['matrix']!r}),")
    lines.append("}")
    return "\n".join(lines) + "\n"
