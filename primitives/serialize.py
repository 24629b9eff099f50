"""Programs to and from JSON and their readable text form.

Loading never executes anything: op names are looked up in the primitive set,
every field is type-checked, and the program is validated before it is
returned. Each malformation raises its own ProgramError subclass.

JSON (schema "optsearch.program", version 1):

    {"schema": "optsearch.program", "version": 1, "name": "lion",
     "state": [{"name": "m", "kind": "param", "init": "zeros"}],
     "constants": {"beta1": 0.9, "beta2": 0.99, "wd": 0.0},
     "body": [{"out": "c", "op": "interp", "args": ["g", "m"], "consts": ["beta1"]}, ...],
     "output": "u"}

Text (what Program.text() prints; `#` starts a comment):

    program lion
      state m: PARAM = 0
      const beta1 = 0.9, beta2 = 0.99, wd = 0
      c = interp(g, m; beta1)
      ...
      return u
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from primitives.kinds import Kind
from primitives.library import ALL
from primitives.primitive import PrimitiveSet
from primitives.program import MalformedProgramError, Program, StateDecl, Statement, validate

SCHEMA = "optsearch.program"
VERSION = 1
_KINDS = {k.value: k for k in Kind}
_TOP_KEYS = {"schema", "version", "name", "state", "constants", "body", "output"}


def to_dict(program: Program) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "name": program.name,
        "state": [
            {"name": s.name, "kind": s.kind.value, "init": s.init, **({"eps": s.eps} if s.init == "eye" else {})}
            for s in program.state
        ],
        "constants": dict(program.constants),
        "body": [{"out": s.out, "op": s.op, "args": list(s.args), "consts": list(s.consts)} for s in program.body],
        "output": program.output,
    }


def to_json(program: Program, indent: int | None = 2) -> str:
    return json.dumps(to_dict(program), indent=indent)


def _expect(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    """value if it has one of `types` (a bool is not taken for a number); else a clear error."""
    if type(value) is types:  # the common case, decided at a fraction of the checks' cost
        return value
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise MalformedProgramError(f"{where} must be a {names}, got {type(value).__name__} {value!r:.60}")
    return value


def _strings(value: Any, where: Callable[[], str]) -> tuple[str, ...]:
    """A list of strings as a tuple; where() names it in an error (built only then)."""
    if type(value) is not list or not all(type(v) is str for v in value):
        items = _expect(value, list, where())
        for i, v in enumerate(items):
            _expect(v, str, f"{where()}[{i}]")
    return tuple(value)


def _number(value: Any, where: str) -> float:
    try:
        number = float(_expect(value, (int, float), where))
    except OverflowError:  # an integer too large for a float: 10**400
        raise MalformedProgramError(f"{where} must be finite, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(number):
        raise MalformedProgramError(f"{where} must be finite, got {value!r}")
    return number


_STATEMENT_FIELDS = frozenset({"out", "op", "args", "consts"})


def _statement(entry: Any, index: int) -> Statement:
    """body[index] of a program's JSON. A worker decodes a program for every job: the messages of
    the checks are built only when one fails."""
    if type(entry) is not dict:
        _expect(entry, dict, f"body[{index}]")
    if not entry.keys() <= _STATEMENT_FIELDS:
        extra = ", ".join(sorted(set(entry) - _STATEMENT_FIELDS))
        raise MalformedProgramError(f"body[{index}]: unknown field(s) {extra}")
    out, op = entry.get("out"), entry.get("op")
    if type(out) is not str or type(op) is not str:
        _expect(out, str, f"body[{index}].out")
        _expect(op, str, f"body[{index}].op")
    return Statement(out, op, _strings(entry.get("args"), lambda: f"body[{index}].args"),
                     _strings(entry.get("consts", []), lambda: f"body[{index}].consts"))


def from_dict(data: Any, primitive_set: PrimitiveSet = ALL) -> Program:
    """Build and validate a program from parsed JSON."""
    _expect(data, dict, "a program")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise MalformedProgramError(f"unknown program field(s): {', '.join(sorted(unknown))}")
    if data.get("schema") != SCHEMA:
        raise MalformedProgramError(f"not an optsearch program (schema {data.get('schema')!r}, expected {SCHEMA!r})")
    if data.get("version") != VERSION:
        raise MalformedProgramError(f"unsupported program version {data.get('version')!r} (this optsearch reads {VERSION})")
    for key in ("state", "constants", "body", "output"):
        if key not in data:
            raise MalformedProgramError(f"program is missing the field {key!r}")

    state = []
    for i, entry in enumerate(_expect(data["state"], list, "state")):
        where = f"state[{i}]"
        _expect(entry, dict, where)
        extra = set(entry) - {"name", "kind", "init", "eps"}
        if extra:
            raise MalformedProgramError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        kind = _expect(entry.get("kind"), str, f"{where}.kind")
        if kind not in _KINDS:
            raise MalformedProgramError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(_KINDS)})")
        state.append(StateDecl(
            _expect(entry.get("name"), str, f"{where}.name"),
            _KINDS[kind],
            _expect(entry.get("init", "zeros"), str, f"{where}.init"),
            _number(entry.get("eps", 0.0), f"{where}.eps"),
        ))
    constants = tuple(
        (_expect(k, str, "constant name"), _number(v, f"constants.{k}"))
        for k, v in _expect(data["constants"], dict, "constants").items()
    )
    body = []
    for i, entry in enumerate(_expect(data["body"], list, "body")):
        body.append(_statement(entry, i))
    program = Program(
        tuple(state), constants, tuple(body),
        _expect(data["output"], str, "output"), _expect(data.get("name", ""), str, "name"),
    )
    validate(program, primitive_set)
    return program


def from_json(text: str, primitive_set: PrimitiveSet = ALL) -> Program:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedProgramError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedProgramError("not a program: JSON nested too deeply") from None
    return from_dict(data, primitive_set)


def load(path: str | Path, primitive_set: PrimitiveSet = ALL) -> Program:
    """Read a program file: JSON (.json) or the text form (anything else)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedProgramError(f"cannot read program file {path}: {exc}") from None
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        return from_json(text, primitive_set)
    return parse(text, primitive_set)


def save(program: Program, path: str | Path) -> None:
    Path(path).write_text(to_json(program) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------
# The text form

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STATEMENT = re.compile(rf"({_IDENT})\s*=\s*({_IDENT})\(([^;()]*)(?:;([^()]*))?\)\Z")
_STATE = re.compile(rf"({_IDENT})\s*:\s*({_IDENT})\s*=\s*(0|([0-9.eE+-]+)\s*\*\s*I)\Z")
_CONST = re.compile(rf"({_IDENT})\s*=\s*(\S+)\Z")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",")) if text.strip() else ()


def parse(text: str, primitive_set: PrimitiveSet = ALL) -> Program:
    """Parse the readable form (see the module docstring) and validate it."""
    name, state, constants, body, output = "", [], [], [], None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number} `{line}`"
        if output is not None:
            raise MalformedProgramError(f"{where}: nothing may follow `return`")
        keyword_, _, rest = line.partition(" ")
        if keyword_ == "program":
            name = rest.strip()
        elif keyword_ == "state":
            for part in _names(rest):
                match = _STATE.match(part)
                if not match:
                    raise MalformedProgramError(f"{where}: expected `name: KIND = 0` or `name: KIND = eps * I`, got {part!r}")
                kind = match.group(2).lower()
                if kind not in _KINDS:
                    raise MalformedProgramError(f"{where}: unknown kind {match.group(2)!r}")
                if match.group(4) is None:
                    state.append(StateDecl(match.group(1), _KINDS[kind]))
                else:
                    state.append(StateDecl(match.group(1), _KINDS[kind], "eye", _parse_float(match.group(4), where)))
        elif keyword_ == "const":
            for part in _names(rest):
                match = _CONST.match(part)
                if not match:
                    raise MalformedProgramError(f"{where}: expected `name = number`, got {part!r}")
                constants.append((match.group(1), _parse_float(match.group(2), where)))
        elif keyword_ == "return":
            output = rest.strip()
        else:
            match = _STATEMENT.match(line)
            if not match:
                raise MalformedProgramError(f"{where}: expected `out = op(args; consts)`")
            body.append(Statement(match.group(1), match.group(2), _names(match.group(3)), _names(match.group(4) or "")))
    if output is None:
        raise MalformedProgramError("the program has no `return` line")
    program = Program(tuple(state), tuple(constants), tuple(body), output, name)
    validate(program, primitive_set)
    return program


def _parse_float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MalformedProgramError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise MalformedProgramError(f"{where}: {text!r} is not finite")
    return value
