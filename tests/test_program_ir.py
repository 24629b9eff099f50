"""The program representation: validation errors, pruning, hashing, fingerprints, JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import ALL, Layout
from primitives.analysis import prune, state_buffers
from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.interpreter import compile_program, trajectory
import primitives.program as program_module
from primitives.known import ADAMW, KNOWN_PROGRAMS, LION, LION_RAW, MUON
from primitives.program import (
    ArityError,
    ConstantRangeError,
    MalformedProgramError,
    ProgramError,
    ProgramKindError,
    UndefinedRegisterError,
    UnknownOpError,
    UnreachableOutputError,
    validate,
)
from primitives.serialize import from_json, load, parse, save, to_dict, to_json
from search.run_store import CHECKPOINT_VERSION
from strategies import corrupted_programs, programs, raw_programs, rename

# --- pruning -----------------------------------------------------------------


def test_lion_raw_program_loses_its_dead_cosh_and_a_state_buffer():
    pruned = prune(LION_RAW)
    assert "cosh" not in [s.op for s in pruned.body]
    assert pruned.state_names == ("v",)  # m is assigned before it is read: a temporary
    assert state_buffers(LION_RAW) == 1 == state_buffers(LION)
    assert len(pruned.body) == len(LION_RAW.body) - 1


def run_program(program, steps=6, seed=0, layout=Layout.MATRIX):
    """Updates of `program` over a few steps on random data (float64)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 5, 3) if layout is Layout.MATRIX else (2, 4)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]
    return torch.stack(trajectory(compile_program(program, layout), w, grads, 1e-2))


def test_pruning_keeps_lion_raws_behaviour():
    assert torch.equal(run_program(LION_RAW), run_program(prune(LION_RAW)))


def test_state_write_overwritten_before_it_is_read_is_dead():
    program = parse("""
    state m: PARAM = 0
    m = sign(g)
    u = add(m, g)
    m = square(g)
    return u
    """)
    assert [s.text() for s in prune(program).body] == ["m = sign(g)", "u = add(m, g)"]
    assert prune(program).state == ()


def test_state_read_in_a_later_step_keeps_its_writer():
    program = parse("""
    state m: PARAM = 0
    u = add(m, g)
    m = square(g)
    return u
    """)
    assert prune(program) == program


# --- structural hash ---------------------------------------------------------


def test_hash_ignores_names_dead_code_argument_order_and_constant_noise():
    base = structural_hash(LION)
    assert structural_hash(rename(LION)) == base
    swapped = dataclasses.replace(LION, body=tuple(
        dataclasses.replace(s, args=s.args[::-1]) if s.op == "add" else s for s in LION.body))
    assert structural_hash(swapped) == base
    noisy = LION.with_constants(beta1=0.90001, beta2=0.990004)
    assert structural_hash(noisy) == base
    with_dead = parse(LION.text().replace("return u", "junk = exp(g)\nm2 = cosh(u)\nreturn u"))
    assert structural_hash(with_dead) == base


def test_hash_ignores_commutative_order_and_independent_statement_order():
    a = parse("a = sign(g)\nb = abs(w)\nu = mul(a, b)\nreturn u")
    b = parse("b = abs(w)\na = sign(g)\nu = mul(b, a)\nreturn u")
    assert structural_hash(a) == structural_hash(b)


def test_hash_differs_when_the_computation_differs():
    hashes = {structural_hash(p) for p in KNOWN_PROGRAMS.values()}
    assert len(hashes) == len(KNOWN_PROGRAMS)
    assert structural_hash(LION.with_constants(beta2=0.98)) != structural_hash(LION)
    sub_ab = parse("u = sub(g, w)\nreturn u")
    sub_ba = parse("u = sub(w, g)\nreturn u")  # sub is not commutative
    assert structural_hash(sub_ab) != structural_hash(sub_ba)
    # The same statements wired through the state differently.
    ema_of_g = parse("state m: PARAM = 0\nconst b = 0.9\nm = interp(g, m; b)\nu = sign(m)\nreturn u")
    ema_of_w = parse("state m: PARAM = 0\nconst b = 0.9\nm = interp(w, m; b)\nu = sign(m)\nreturn u")
    assert structural_hash(ema_of_g) != structural_hash(ema_of_w)


def test_hash_tells_state_registers_apart_by_their_updates():
    """Two state registers, swapped roles: same structure up to renaming, so same hash."""
    a = parse("""
    state m: PARAM = 0, v: PARAM = 0
    const b1 = 0.9, b2 = 0.99
    m = interp(g, m; b1)
    g2 = square(g)
    v = interp(g2, v; b2)
    u = div(m, v)
    return u
    """)
    b = parse("""
    state v: PARAM = 0, m: PARAM = 0
    const b1 = 0.9, b2 = 0.99
    g2 = square(g)
    m = interp(g2, m; b2)
    v = interp(g, v; b1)
    u = div(v, m)
    return u
    """)
    assert structural_hash(a) == structural_hash(b)
    c = parse("""
    state m: PARAM = 0, v: PARAM = 0
    const b1 = 0.9, b2 = 0.99
    m = interp(g, m; b1)
    g2 = square(g)
    v = interp(g2, v; b2)
    u = div(v, m)
    return u
    """)
    assert structural_hash(c) != structural_hash(a)


def test_hash_is_invariant_to_state_declaration_order():
    for program in (ADAMW, KNOWN_PROGRAMS["adafactor"], KNOWN_PROGRAMS["shampoo"]):
        assert len(program.state) >= 2
        reordered = dataclasses.replace(program, state=program.state[::-1])
        assert structural_hash(reordered) == structural_hash(program)


def test_hash_of_symmetric_states():
    """Two registers with the same update cannot be told apart, and need not be: renaming swaps them."""
    twins = "state m: PARAM = 0, v: PARAM = 0\nconst b = 0.9\nm = interp(g, m; b)\nv = interp(g, v; b)\n"
    unlike = twins.replace("v = interp(g, v; b)", "v = interp(w, v; b)")
    hashed = lambda states, output: structural_hash(parse(f"{states}u = {output}\nreturn u"))  # noqa: E731
    assert hashed(twins, "sub(m, v)") == hashed(twins, "sub(v, m)")
    assert hashed(twins, "sub(m, v)") != hashed(twins, "add(m, v)")
    assert hashed(unlike, "sub(m, v)") != hashed(unlike, "sub(v, m)")


# Structural hashes and fingerprints are stored: in run directories (the
# search's duplicate and behaviour checks on resume) and in MLflow tags. Values
# that change must come with a new CHECKPOINT_VERSION, so that a run hashed the
# old way is not resumed. Hashes are unchanged since version 2.
HASHES_OF_CHECKPOINT_VERSION_3 = {
    "sgd": "10355f7ae1f433cf",
    "lion": "64f3b07ac19cd3cf",
    "adamw": "f50ab996cb96e5d6",
    "shampoo": "8fcb54ae1df223fc",
    "adafactor": "23a82f378580604c",
    "muon": "4bee101d34bee45a",
}


# Only programs of exact ops (sign, interp, add): transcendental functions may
# differ in the last bit between CPUs, which rounding hides almost always.
FINGERPRINTS_OF_CHECKPOINT_VERSION_3 = {
    "sgd": "1c4d5811026364db",
    "sgd_momentum": "11bc8b7339a45511",
    "signum": "4188175fa1ffbac8",
    "lion": "13bcd6f72d21ac02",
}


def test_hash_and_fingerprint_values_are_those_of_the_checkpoint_version():
    # Version 4 changed the checkpoint's format (event-sourced state) and moved the probe from NumPy
    # twins to the torch interpreter; these programs' hashes and fingerprints stayed as version 3's.
    assert CHECKPOINT_VERSION == 4
    assert {name: structural_hash(KNOWN_PROGRAMS[name]) for name in HASHES_OF_CHECKPOINT_VERSION_3} == \
        HASHES_OF_CHECKPOINT_VERSION_3
    assert {name: fingerprint(KNOWN_PROGRAMS[name]) for name in FINGERPRINTS_OF_CHECKPOINT_VERSION_3} == \
        FINGERPRINTS_OF_CHECKPOINT_VERSION_3


def test_hash_is_the_same_in_every_process():
    """Python salts str hashes per process: none may reach the structural hash."""
    code = ("from primitives.known import KNOWN_PROGRAMS; from primitives.hashing import structural_hash; "
            "print(' '.join(structural_hash(p) for p in KNOWN_PROGRAMS.values()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}, cwd=Path(__file__).parents[1])
    assert other.stdout.split() == [structural_hash(p) for p in KNOWN_PROGRAMS.values()]


# --- fingerprint -------------------------------------------------------------


def test_fingerprint_sees_equivalences_the_hash_cannot():
    sign_m = parse("state m: PARAM = 0\nconst b = 0.9\nm = interp(g, m; b)\nu = sign(m)\nreturn u")
    ratio = parse("state m: PARAM = 0\nconst b = 0.9\nm = interp(g, m; b)\nm2 = mul(m, m)\nr = sqrt(m2)\n"
                  "u = div(m, r)\nreturn u")
    assert structural_hash(sign_m) != structural_hash(ratio)
    assert fingerprint(sign_m) == fingerprint(ratio)

    one = parse("state m: PARAM = 0\nconst b = 0.72\nm = interp(g, m; b)\nu = sign(m)\nreturn u")
    two = parse("state m: PARAM = 0\nconst a = 0.8, b = 0.9\nx = interp(g, m; a)\nm = interp(g, x; b)\n"
                "u = sign(m)\nreturn u")
    assert structural_hash(one) != structural_hash(two)
    assert fingerprint(one) == fingerprint(two)

    double = parse("u = add(g, g)\nreturn u")
    scaled = parse("const c = 2\nu = scale(g; c)\nreturn u")
    assert fingerprint(double) == fingerprint(scaled)


def test_fingerprint_separates_different_behaviour():
    prints = {fingerprint(p) for p in KNOWN_PROGRAMS.values()}
    assert len(prints) == len(KNOWN_PROGRAMS)
    assert fingerprint(LION) != fingerprint(LION.with_constants(beta1=0.8))
    assert fingerprint(LION_RAW) == fingerprint(prune(LION_RAW))


# --- serialisation -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KNOWN_PROGRAMS))
def test_known_programs_round_trip_json_and_text(name):
    program = KNOWN_PROGRAMS[name]
    assert from_json(to_json(program)) == program
    assert parse(program.text()) == program


def test_save_and_load(tmp_path):
    save(ADAMW, tmp_path / "adamw.json")
    assert load(tmp_path / "adamw.json") == ADAMW
    (tmp_path / "muon.txt").write_text(MUON.text())
    assert load(tmp_path / "muon.txt") == MUON


def _edit(program, **changes):
    data = to_dict(program)
    data.update(changes)
    return json.dumps(data)


def _lion_body(**statement):
    body = to_dict(LION)["body"]
    body[0] = {**body[0], **statement}
    return body


MALFORMED = [
    ("{not json", MalformedProgramError, "not valid JSON"),
    ("[1, 2]", MalformedProgramError, "a program must be a dict"),
    (_edit(LION, schema="something.else"), MalformedProgramError, "not an optsearch program"),
    (_edit(LION, version=99), MalformedProgramError, "unsupported program version 99"),
    (_edit(LION, extra=1), MalformedProgramError, "unknown program field"),
    (_edit(LION, state=[{"name": "m", "kind": "tensor"}]), MalformedProgramError, "unknown kind 'tensor'"),
    (_edit(LION, constants={"beta1": "0.9"}), MalformedProgramError, "constants.beta1 must be a int or float"),
    (_edit(LION, constants={"beta1": float("nan"), "beta2": 0.99, "wd": 0.0}), MalformedProgramError, "finite"),
    (_edit(LION, body=_lion_body(op="interpolate")), UnknownOpError, "did you mean interp"),
    (_edit(LION, body=_lion_body(args=["g"])), ArityError, "takes 2 argument"),
    (_edit(LION, body=_lion_body(args=["g", "q"])), UndefinedRegisterError, "register 'q' is used before"),
    (_edit(LION, body=_lion_body(consts=["gamma"])), UndefinedRegisterError, "constant 'gamma' is not declared"),
    (_edit(LION, constants={"beta1": 3.0, "beta2": 0.99, "wd": 0.0}), ConstantRangeError, "beta in [0, 2)"),
    (_edit(LION, output="nowhere"), UnreachableOutputError, "never defined"),
    (_edit(LION, body=_lion_body(op="gram_left", args=["g"], consts=[])), ProgramKindError, "ROW"),
    (_edit(LION, body=_lion_body(out="__import__('os')")), MalformedProgramError, "invalid register name"),
    (_edit(LION, body=_lion_body(out="g")), MalformedProgramError, "input 'g' cannot be assigned"),
    (_edit(LION, body=[["c", "interp"]]), MalformedProgramError, "body[0] must be a dict, got list"),
    (_edit(LION, body=_lion_body(color="red")), MalformedProgramError, "body[0]: unknown field(s) color"),
    (_edit(LION, body=_lion_body(out=3)), MalformedProgramError, "body[0].out must be a str, got int"),
    (_edit(LION, body=_lion_body(op=None)), MalformedProgramError, "body[0].op must be a str, got NoneType"),
    (_edit(LION, body=_lion_body(args="g, m")), MalformedProgramError, "body[0].args must be a list, got str"),
    (_edit(LION, body=_lion_body(args=["g", 1])), MalformedProgramError, "body[0].args[1] must be a str"),
    (_edit(LION, body=_lion_body(consts=[None])), MalformedProgramError, "body[0].consts[0] must be a str"),
    (_edit(LION, state=[{"name": "m", "kind": "param"}, {"name": "m", "kind": "param"}]),
     MalformedProgramError, "declared twice"),
    (_edit(LION, state=[{"name": "m", "kind": "param", "init": "eye", "eps": 0.1}]), ProgramKindError, "needs kind ROW"),
]


@pytest.mark.parametrize("text,error,match", MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_programs_get_their_own_clear_error(text, error, match):
    with pytest.raises(error, match=re.escape(match)):
        from_json(text)


def test_programs_built_in_python_get_their_structure_checked():
    stmt = LION.body[0]
    for bad, match in [
        (dataclasses.replace(LION, body=list(LION.body)), "must be tuples"),
        (dataclasses.replace(LION, body=(*LION.body, "u = sign(g)")), "is not a Statement"),
        (dataclasses.replace(LION, body=(dataclasses.replace(stmt, args=list(stmt.args)), *LION.body[1:])), "tuple args"),
        (dataclasses.replace(LION, output=["u"]), "invalid output name"),
        (dataclasses.replace(LION, constants=(("beta1", "0.9"), *LION.constants[1:])), "must be a number"),
    ]:
        with pytest.raises(MalformedProgramError, match=match):
            validate(bad)


def test_output_must_be_a_param():
    with pytest.raises(ProgramKindError, match="is a SCALAR, not a PARAM"):
        parse("u = rms(g)\nreturn u")


def test_text_form_errors_name_the_line():
    with pytest.raises(MalformedProgramError, match="line 2"):
        parse("u = sign(g)\nthis is not a statement\nreturn u")
    with pytest.raises(MalformedProgramError, match="no `return`"):
        parse("u = sign(g)")


def test_loading_executes_nothing(tmp_path):
    """Op names are looked up, never evaluated: a payload in an op name is just an unknown op."""
    marker = tmp_path / "pwned"
    body = _lion_body(op=f"__import__('pathlib').Path('{marker}').touch")
    with pytest.raises((UnknownOpError, MalformedProgramError)):
        from_json(_edit(LION, body=body))
    assert not marker.exists()


# --- properties over random programs -------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(programs())
def test_symbolic_layer_never_crashes_on_valid_programs(program):
    validate(program)
    pruned = prune(program)
    validate(pruned)
    assert structural_hash(program) == structural_hash(pruned)
    assert len(fingerprint(program)) == 16


@PROPERTY_SETTINGS
@given(programs())
def test_pruned_program_behaves_exactly_like_the_original(program):
    for layout in Layout:
        torch.testing.assert_close(
            run_program(program, steps=4, layout=layout), run_program(prune(program), steps=4, layout=layout),
            rtol=0, atol=0, equal_nan=True,
        )


@PROPERTY_SETTINGS
@given(programs())
def test_random_programs_round_trip_and_hash_is_name_invariant(program):
    assert from_json(to_json(program)) == program
    assert parse(program.text()) == program
    assert structural_hash(rename(program)) == structural_hash(program)
    assert structural_hash(dataclasses.replace(program, state=program.state[::-1])) == structural_hash(program)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.one_of(raw_programs(), corrupted_programs()))
def test_validation_accepts_or_explains_and_never_crashes(program):
    """Any program built in Python, well formed or not, is valid or gets a ProgramError saying why."""
    try:
        validate(program)
    except ProgramError as exc:
        assert str(exc)
    else:
        assert prune(program) == prune(prune(program))
