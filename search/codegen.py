"""An update rule written out as torch source: a module over discovered/'s runtime, or one standalone file.

    module_source(program, name, docstring, provenance, lr, primitive_set)
        a module that imports the runtime (discovered/rule_optimizer.py) and the
        primitives' torch functions, and holds only what is this rule's own: its
        docstring, PROVENANCE, one update function per layout (straight-line
        calls of the primitives, each commented with its statement) and a
        RuleOptimizer subclass declaring its state and constants
    module_source(..., standalone=True)
        the same, with the runtime and the primitives' functions copied in (the
        top-level definitions they need, found by reading their modules' source),
        so the file imports nothing but torch and the standard library

The class's docstring shows the update rule (help() of an export reads it
there) and what each constant does; constants are named by exported_program()
(made-up names by role: beta1, beta2, eps, wd; a name the generated code uses
itself, such as lr or options, with a trailing underscore).

Nothing from a run directory is written here except through repr() of values
the caller has validated, and the docstrings, which the caller builds from
validated values; check_source() parses the result back and refuses it
unless its structure, imports and docstring are exactly what was meant.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import keyword
import re
import sys
from pathlib import Path

from discovered._contract import ROUTING_DEFAULTS
from primitives.analysis import uses_matrix_primitives
from primitives.kinds import Layout
from primitives.primitive import PrimitiveSet
from primitives.program import Program
from primitives.errors import OptsearchError

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The runtime a generated module stands on (a standalone file carries these definitions).
RUNTIME = ("discovered.rule_optimizer", ("Constant", "RuleOptimizer", "State"))


class CodegenError(OptsearchError):
    """A rule that cannot be written as source (a plugin primitive without an importable function)."""


# ---------------------------------------------------------------------------
# The primitives' torch functions


def function_ref(fn) -> tuple[str, str, dict]:
    """(module, function name, fixed keywords) of a primitive's torch function."""
    keywords = {}
    if isinstance(fn, functools.partial):
        keywords, fn = dict(fn.keywords), fn.func
    module, name = getattr(fn, "__module__", None), getattr(fn, "__name__", "")
    if not (isinstance(module, str) and _DOTTED.match(module) and _IDENTIFIER.match(name)) or name == "<lambda>":
        raise CodegenError(f"{fn!r} is not a module-level function, so an export cannot call it: give the "
                           f"primitive's row a function defined at the top level of a module")
    if getattr(importlib.import_module(module), name, None) is not fn:
        raise CodegenError(f"{module}.{name} is not importable by that name, so an export cannot call it")
    for key, value in keywords.items():
        if not (isinstance(value, (int, float, str, bool)) or value is None):
            raise CodegenError(f"{module}.{name}: fixed keyword {key}={value!r} is not a plain value")
    return module, name, keywords


def _alias(module: str) -> str:
    return "_" + module.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------
# Constants as Python names: readable, and clear of every name the generated code uses

# Names a rule's constant may not take in generated code: the update functions' parameters, the
# constructor's (and super, which it calls), and the param-group keys RuleOptimizer and its routing
# keep beside the constants (a constant `lr` or `route` would be both a keyword and a group key).
GENERATED_NAMES = frozenset({
    "g", "w", "t", "self", "params", "lr", "options", "super", "update", "matrix_update", "vector_update",
    "float", "staticmethod", "rule_constants", "constants", "weight_decay",
    "polar_backend", "polar_steps", "polar_dtype", *ROUTING_DEFAULTS, *RUNTIME[1],
})
# Names a search or SymPy makes up (mutation's c0, c1; simplification's k, k_3): renamed by role.
_GENERIC = re.compile(r"(c\d+|k(_\d+)?)\Z")
# A constant's role from the slot it fills: (op, slot) -> name; an interp's or debias's beta is
# numbered (beta1, beta2, ...) in the order the rule first uses each.
_ROLES = {("add_const", "c"): "eps", ("scale", "c"): "scale", ("clip", "c"): "clip", ("add_scaled", "c"): "coef",
          ("abspow", "p"): "power", ("rms_clip", "d"): "max_rms", ("eigenbasis", "k"): "every",
          ("kron_precondition", "p"): "root"}


def generated_names(program: Program, primitive_set: PrimitiveSet, standalone: bool = False) -> frozenset[str]:
    """Every name the module for `program` defines or calls besides the rule's own (see GENERATED_NAMES)."""
    refs = _all_refs(program, primitive_set)
    if not standalone:
        return GENERATED_NAMES | {_alias(module) for module, _ in refs}
    runtime = Standalone()
    runtime.need(*[(RUNTIME[0], n) for n in RUNTIME[1]], *sorted(refs))
    return GENERATED_NAMES | runtime.names() | {function for _, function in refs}


def _role(program: Program, primitive_set: PrimitiveSet, constant: str, betas: list[str]) -> str:
    for stmt in program.body:
        prim = primitive_set.get(stmt.op)
        for spec, name in zip(prim.consts, stmt.consts):
            if name != constant:
                continue
            if stmt.op in ("interp", "debias"):
                return "beta" if len(betas) == 1 else f"beta{betas.index(constant) + 1}"
            if stmt.op == "add_scaled" and stmt.args[1:] == ("w",):
                return "wd"  # decoupled weight decay: u + wd w
            if spec.name == "eps":
                return "eps"
            role = _ROLES.get((stmt.op, spec.name))
            return role or (spec.name if len(spec.name) > 1 else f"{stmt.op}_{spec.name}")[:60]
    return constant


def exported_program(program: Program, primitive_set: PrimitiveSet, standalone: bool = False) -> Program:
    """The program with its constants named as the generated code names them (the same rule).

    A made-up name (c0, k_3) becomes its role (beta1, beta2, eps, wd, scale, ...: from the slot it
    fills); a name the generated code uses itself (lr, self, params, options, super, route, a
    module's alias) gets a trailing underscore. Applying it twice changes nothing.
    """
    taken = generated_names(program, primitive_set, standalone)
    betas = []
    for stmt in program.body:
        if stmt.op in ("interp", "debias"):
            betas += [c for c in stmt.consts if _GENERIC.match(c) and c not in betas]
    renames, used = {}, set()
    # The author's names first: a made-up one gets its role only where that name is free.
    for constant in sorted(program.constant_values, key=lambda c: bool(_GENERIC.match(c))):
        name = _role(program, primitive_set, constant, betas) if _GENERIC.match(constant) else constant
        while name in taken or keyword.iskeyword(name):
            name += "_"
        base, number = name, 1
        while name in used:
            number += 1
            name = f"{base}{number}" if base[-1].isalpha() else f"{base}_{number}"
        renames[constant] = name
        used.add(name)
    if all(k == v for k, v in renames.items()):
        return program
    body = tuple(dataclasses.replace(s, consts=tuple(renames[c] for c in s.consts)) for s in program.body)
    return dataclasses.replace(program, constants=tuple((renames[c], v) for c, v in program.constants), body=body)


# ---------------------------------------------------------------------------
# The update functions


def _local_names(program: Program, reserved: set[str]) -> dict[str, str]:
    """Register -> Python local name, renamed where it would shadow a constant or a name the code uses."""
    taken = set(program.constant_values) | reserved
    names = {}
    for register in ["g", "w", "t", *program.state_names, *(s.out for s in program.body)]:
        if register in names:
            continue
        local = register
        while register not in ("g", "w", "t") and (local in taken or keyword.iskeyword(local)):
            local += "_"
        names[register] = local
    return names


def _update_body(program: Program, layout: Layout, primitive_set: PrimitiveSet, names: dict[str, str],
                 refer) -> list[str]:
    lines = []
    for stmt in program.body:
        prim = primitive_set.get(stmt.op)
        if not _IDENTIFIER.match(prim.name):
            raise CodegenError(f"primitive name {prim.name!r} is not an identifier")
        module, function, keywords = function_ref(prim.matrix_fn if layout is Layout.MATRIX else prim.vector_fn)
        args = [names[a] for a in stmt.args]
        args += [f"{spec.name}={constant}" for spec, constant in zip(prim.consts, stmt.consts)]
        args += [f"{k}={v!r}" for k, v in keywords.items()]
        args += [f"{o}=options[{o!r}]" for o in prim.options]
        lines.append(f"    {names[stmt.out]} = {refer(module, function)}({', '.join(args)})  # {stmt.text()}")
    state = "".join(f"{names[r]}, " for r in program.state_names)
    lines.append(f"    return {names[program.output]}, ({state})")
    return lines


def update_functions(program: Program, primitive_set: PrimitiveSet, refer, reserved: set[str]
                     ) -> tuple[str, str, str]:
    """(source, matrix function name, vector function name): one function when both layouts agree."""
    names = _local_names(program, reserved | {"options", "update", "matrix_update", "vector_update"})
    state = [names[r] for r in program.state_names]
    constants = list(program.constant_values)
    signature = ", ".join(["g", "w", "t", *state, "*", *constants, "options"])
    matrix = _update_body(program, Layout.MATRIX, primitive_set, names, refer)
    vector = _update_body(program, Layout.VECTOR, primitive_set, names, refer)
    doc = '    """One step on a batch of {what}: (u, the new state)."""'
    if matrix == vector:
        return "\n".join([f"def update({signature}):", doc.format(what="parameters"), *matrix]), "update", "update"
    source = "\n\n\n".join([
        "\n".join([f"def matrix_update({signature}):", doc.format(what="matrices (..., m, n)"), *matrix]),
        "\n".join([f"def vector_update({signature}):",
                   doc.format(what="vectors (..., n), matrix primitives acting on diag(x)"), *vector]),
    ])
    return source, "matrix_update", "vector_update"


# ---------------------------------------------------------------------------
# The class


def _constant_specs(program: Program, primitive_set: PrimitiveSet) -> dict[str, tuple]:
    """Per constant: (value, low, high, low_open, high_open), the intersection of the slots it fills."""
    slots: dict[str, list] = {}
    for stmt in program.body:
        for spec, constant in zip(primitive_set.get(stmt.op).consts, stmt.consts):
            slots.setdefault(constant, []).append(spec)
    specs = {}
    for constant, value in program.constant_values.items():
        bounds = slots.get(constant, [])
        low = max(bounds, key=lambda s: (s.low, s.low_open), default=None)
        high = min(bounds, key=lambda s: (s.high, not s.high_open), default=None)
        specs[constant] = (value, low.low if low else -1e300, high.high if high else 1e300,
                           bool(low and low.low_open), bool(high and high.high_open))
    return specs


def _class_source(program: Program, name: str, lr: float, primitive_set: PrimitiveSet,
                  matrix_fn: str, vector_fn: str, rule: str) -> str:
    specs = _constant_specs(program, primitive_set)
    uses_polar = any(primitive_set.get(s.op).options for s in program.body)
    state = "".join(f"State({d.name!r}, {d.kind.value!r}, {d.init!r}, {d.eps!r}), " for d in program.state)
    constants = "".join(f"\n        {c!r}: Constant({v!r}, {lo!r}, {hi!r}, {lo_open!r}, {hi_open!r}),"
                        for c, (v, lo, hi, lo_open, hi_open) in specs.items())
    args = "".join(f"        {c}: {_constant_doc(program, primitive_set, c)} (found: {v!r}).\n"
                   for c, (v, *_) in specs.items())
    polar = "        polar_backend, polar_steps, polar_dtype: how polar factors are computed.\n" if uses_polar else ""
    parameters = "".join(f", {c}: float = {v!r}" for c, (v, *_) in specs.items())
    values = ", ".join(f"{c!r}: {c}" for c in specs)
    shown = "\n".join(f"        {line}" for line in (rule or program.text()).splitlines())
    return f'''class {name}(RuleOptimizer):
    r"""{name}(params, lr={lr!r}{"".join(f", {c}={v!r}" for c, (v, *_) in specs.items())}).

    Update rule, applied as w <- w - lr * u after each step (a state register
    on the right of "<-" holds the previous step's value):

{shown}

    Args:
        lr: learning rate; the default is explained in the module docstring.
{args}{polar}        route, batch_dims, adamw_*: see discovered._contract.MatrixOptimizer.
    """

    STATE = ({state})
    CONSTANTS = {{{constants}
    }}
    ELEMENTWISE = {not uses_matrix_primitives(program, primitive_set)!r}
    POLAR = {uses_polar!r}
    matrix_update = staticmethod({matrix_fn})
    vector_update = staticmethod({vector_fn})

    def __init__(self, params, lr: float = {lr!r}{parameters}, **options):
        super().__init__(params, lr, {{{values}}}, **options)
'''


def _constant_doc(program: Program, primitive_set: PrimitiveSet, constant: str) -> str:
    """What a constant does, from the first slot it fills: "EMA coefficient (interp(a, b; beta1) = ...)"."""
    for stmt in program.body:
        for spec, name in zip(primitive_set.get(stmt.op).consts, stmt.consts):
            if name != constant:
                continue
            if stmt.op == "interp":
                return f"EMA coefficient: interp(a, b; {constant}) = (1 - {constant}) a + {constant} b"
            if stmt.op == "debias":
                return f"EMA coefficient whose bias is corrected: x / (1 - {constant}^t)"
            if stmt.op == "add_scaled" and stmt.args[1:] == ("w",):
                return f"decoupled weight decay: u + {constant} w"
            if re.fullmatch(r"[\w ,.:;()'+*/=<>^|-]{1,80}", spec.doc) and _IDENTIFIER.match(stmt.op):
                return f"{spec.doc} ({stmt.op})"  # a plugin's doc only if it is plain text
    return "constant of the update rule"


# ---------------------------------------------------------------------------
# The module


def module_source(program: Program, name: str, docstring: str, provenance: dict, lr: float,
                  primitive_set: PrimitiveSet, standalone: bool = False, rule: str = "") -> str:
    """The source of an optimizer module for `program` (see the module docstring).

    rule: the update rule as the class docstring shows it (the simplified formula; default: the
    program's text). The program's constants are named as exported_program() names them.
    """
    for text in (docstring, rule):
        if '"""' in text or re.search(r'\\("|\Z)', text):
            raise CodegenError("the docstring would not read back as written")
    program = exported_program(program, primitive_set, standalone)
    functions_used: dict[str, tuple[str, str]] = {}  # how the code refers to a function -> (module, name)

    def refer(module: str, function: str) -> str:
        local = function if standalone else f"{_alias(module)}.{function}"
        if functions_used.setdefault(local, (module, function)) != (module, function):
            raise CodegenError(f"two primitives' functions are both called {function}; a standalone file "
                               f"cannot hold both")
        return local

    if standalone:
        runtime = Standalone()
        runtime.need(*[(RUNTIME[0], n) for n in RUNTIME[1]])
        update_functions(program, primitive_set, refer, set())  # learn which functions are called
        runtime.need(*functions_used.values())
        reserved = runtime.names()
    else:
        reserved = {_alias(m) for m, _ in _all_refs(program, primitive_set)}
    functions, matrix_fn, vector_fn = update_functions(program, primitive_set, refer, reserved)
    if standalone:
        header = runtime.source()
    else:
        modules = sorted({module for module, _ in functions_used.values()})
        header = "\n".join([f"from {RUNTIME[0]} import {', '.join(RUNTIME[1])}"] +
                           [f"import {m} as {_alias(m)}" for m in modules])
    provenance_source = "PROVENANCE = {\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in provenance.items()) + "}"
    return "\n".join([f'r"""{docstring}"""', "", "from __future__ import annotations", "", header, "",
                      provenance_source, "", "", functions, "", "",
                      _class_source(program, name, lr, primitive_set, matrix_fn, vector_fn, rule)])


def _all_refs(program: Program, primitive_set: PrimitiveSet) -> set[tuple[str, str]]:
    refs = set()
    for stmt in program.body:
        prim = primitive_set.get(stmt.op)
        for fn in (prim.matrix_fn, prim.vector_fn):
            refs.add(function_ref(fn)[:2])
    return refs


def program_modules(program: Program, primitive_set: PrimitiveSet) -> frozenset[str]:
    """The modules whose functions a module (not standalone) for `program` imports: check_source's allow-list."""
    return frozenset(module for module, _ in _all_refs(program, primitive_set))


def set_modules(primitive_set: PrimitiveSet) -> frozenset[str]:
    """The modules of every function of a primitive set (what any program over it may import)."""
    return frozenset(function_ref(fn)[0] for prim in primitive_set for fn in (prim.matrix_fn, prim.vector_fn))


def check_source(source: str, name: str, docstring: str, standalone: bool, modules: frozenset[str] | None = None
                 ) -> None:
    """Refuse generated source whose docstring or structure is not exactly what was meant (before any import).

    modules: the primitives' modules the program calls (program_modules; by default those of the
    built-in primitive set, set_modules(ALL)). An import is accepted only
    as the generator writes it: `from __future__ import annotations`, the runtime's one import and
    `import <module> as _<last part>` of those modules; a standalone file's own imports are torch's
    and the standard library's (what the runtime and primitives import). Anything else could only
    come from a tampered generator or data, and the file is about to be imported.
    """
    if modules is None:
        from primitives.library import ALL

        modules = set_modules(ALL)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CodegenError(f"the generated source does not parse ({exc})") from None
    if ast.get_docstring(tree, clean=False) != docstring:
        raise CodegenError("the generated docstring does not read back as written")
    provenance = [node for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "PROVENANCE" for t in node.targets)]
    if len(provenance) != 1 or not _is_literal(provenance[0].value):
        raise CodegenError("PROVENANCE is not one literal table")
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    if classes[-1:] != [name] or not isinstance(tree.body[-1], ast.ClassDef):
        raise CodegenError(f"the generated module does not end with class {name}")
    allowed = (ast.FunctionDef, ast.ClassDef, ast.ImportFrom, ast.Import, ast.Assign) + \
        ((ast.AnnAssign,) if standalone else ())
    for node in tree.body[1:]:
        if not isinstance(node, allowed):
            raise CodegenError(f"unexpected top-level statement at line {node.lineno} of the generated source")
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _emitted_import(node, standalone, modules):
            raise CodegenError(f"unexpected import at line {node.lineno} of the generated source")


def _emitted_import(node: ast.Import | ast.ImportFrom, standalone: bool, modules: frozenset[str]) -> bool:
    """Whether an import is one the generator writes (see check_source)."""
    names = [(alias.name, alias.asname) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level != 0:
            return False
        if node.module == "__future__":
            return names == [("annotations", None)]
        if standalone:
            return _standalone_module(node.module or "") and all(n != "*" for n, _ in names)
        return node.module == RUNTIME[0] and names == [(n, None) for n in RUNTIME[1]]
    if standalone:
        return all(_standalone_module(n) for n, _ in names)
    return len(names) == 1 and names[0][0] in modules and names[0][1] == _alias(names[0][0])


def _standalone_module(module: str) -> bool:
    """torch or the standard library: all a standalone file may import."""
    top = module.split(".")[0]
    return bool(_DOTTED.match(module)) and (top == "torch" or top in sys.stdlib_module_names)


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _is_literal(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    return False


# ---------------------------------------------------------------------------
# A standalone file: the definitions it needs, read from their modules' source


class Standalone:
    """Top-level definitions of project modules, with everything they refer to, in dependency order."""

    PROJECT = ("primitives", "discovered")

    def __init__(self):
        self._modules: dict[str, dict] = {}
        self._order: list[tuple[str, str]] = []  # (module, name), dependencies first
        self._imports: dict[str, str] = {}  # local name -> import statement (torch, the standard library)
        self._owner: dict[str, tuple[str, str]] = {}  # name in the file -> (module, name)

    def _module(self, module: str) -> dict:
        if module not in self._modules:
            source = Path(inspect.getsourcefile(importlib.import_module(module))).read_text()
            tree = ast.parse(source)
            definitions, imports, project = {}, {}, {}
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in self.PROJECT:
                    for alias in node.names:
                        project[alias.asname or alias.name] = (node.module, alias.name)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                        continue
                    for alias in node.names:
                        local = (alias.asname or alias.name).split(".")[0]
                        imports[local] = ast.get_source_segment(source, node) if len(node.names) == 1 else \
                            _single_import(node, alias)
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)):
                    names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                        [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                    text = "\n".join(source.splitlines()[first - 1:node.end_lineno])
                    refs = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                    for name in names:
                        definitions[name] = (text, refs)
            self._modules[module] = {"definitions": definitions, "imports": imports, "project": project}
        return self._modules[module]

    def need(self, *wanted: tuple[str, str]) -> None:
        for module, name in wanted:
            self._visit(module, name, set())

    def _visit(self, module: str, name: str, active: set) -> None:
        if (module, name) in self._order or (module, name) in active:
            return
        info = self._module(module)
        if name in info["project"]:
            self._visit(*info["project"][name], active)
            return
        if name not in info["definitions"]:
            raise CodegenError(f"{module} has no top-level definition of {name}")
        owner = self._owner.setdefault(name, (module, name))
        if owner != (module, name):
            raise CodegenError(f"a standalone file cannot hold both {owner[0]}.{name} and {module}.{name}")
        active.add((module, name))
        text, refs = info["definitions"][name]
        for ref in sorted(refs):
            if ref in info["definitions"] and ref != name:
                self._visit(module, ref, active)
            elif ref in info["project"]:
                self._visit(*info["project"][ref], active)
            elif ref in info["imports"]:
                statement = self._imports.setdefault(ref, info["imports"][ref])
                if statement != info["imports"][ref]:
                    raise CodegenError(f"{ref} is imported two ways ({statement!r}, {info['imports'][ref]!r})")
        active.discard((module, name))
        self._order.append((module, name))

    def names(self) -> set[str]:
        return {name for _, name in self._order} | set(self._imports)

    def source(self) -> str:
        imports = "\n".join(sorted(set(self._imports.values())))
        seen, blocks = set(), []
        for module, name in self._order:
            text = self._modules[module]["definitions"][name][0]
            if text not in seen:  # one assignment may define several names
                seen.add(text)
                blocks.append(f"# from {module}\n{text}")
        return imports + "\n\n\n" + "\n\n\n".join(blocks)


def _single_import(node: ast.ImportFrom | ast.Import, alias: ast.alias) -> str:
    as_ = f" as {alias.asname}" if alias.asname else ""
    if isinstance(node, ast.Import):
        return f"import {alias.name}{as_}"
    return f"from {node.module} import {alias.name}{as_}"

