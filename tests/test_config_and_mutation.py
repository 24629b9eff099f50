"""Search configuration and the mutation operators."""

from __future__ import annotations

import numpy as np
import pytest

from primitives import ALL, ELEMENTWISE_SET
from primitives.analysis import prune
from primitives.hashing import structural_hash
from primitives.known import ADAMW, KNOWN_PROGRAMS, LION
from primitives.program import validate
from search import config as C
from search.mutation import MUTATIONS, OPERATORS, Limits, make_child


@pytest.mark.parametrize("preset", C.preset_names())
def test_presets_load_and_check(preset):
    config = C.load(preset)
    assert config.preset == preset
    assert C.from_dict(config.to_dict()) == config  # what a run directory stores reads back the same


def test_presets_are_the_ones_users_were_promised():
    assert {"smoke", "quickstart", "lion-space", "matrix-space"} <= set(C.preset_names())
    assert C.load("lion-space").evolution.primitive_set == "elementwise"
    assert set(C.load("matrix-space").evolution.warm_start) >= {"adamw", "muon", "polargrad", "shampoo"}


def test_file_then_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('seed = 7\n[evolution]\npopulation = 33\nwarm_start = ["lion", "adamw"]\n')
    config = C.load("smoke", path, ["--evolution.population=44", "stop.max_evals=5"])
    assert (config.seed, config.evolution.population, config.stop.max_evals) == (7, 44, 5)
    assert config.evolution.warm_start == ("lion", "adamw")


@pytest.mark.parametrize("override,message", [
    ("--evolution.populaton=3", "did you mean 'population'"),
    ("--evolutoin.population=3", "did you mean 'evolution'"),
    ("--evolution.population=many", "must be an integer"),
    ("--evolution.population=2.5", "must be an integer"),
    ("--stop.max_evals=0", "must be positive"),
    ("--workers.serial=perhaps", "true or false"),
    ("--evaluation.kind=magic", "must be one of"),
    ("--evaluation.step_fraction=2", "(0, 1]"),
    ("population", "--section.key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(C.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        C.load("smoke", overrides=[override])


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("[evolution\npopulation = 3")
    with pytest.raises(C.ConfigError, match="not valid TOML"):
        C.load("smoke", tmp_path / "bad.toml")
    with pytest.raises(C.ConfigError, match="cannot read"):
        C.load("smoke", tmp_path / "missing.toml")
    with pytest.raises(C.ConfigError, match="did you mean 'smoke'"):
        C.load("smok")


def test_digest_ignores_budget_and_workers_but_not_the_search():
    base = C.load("smoke")
    assert C.load("smoke", overrides=["stop.max_evals=99", "workers.workers=7"]).digest() == base.digest()
    assert C.load("smoke", overrides=["evolution.population=9"]).digest() != base.digest()


# --- mutations ---------------------------------------------------------------


@pytest.mark.parametrize("kind", MUTATIONS)
def test_each_operator_changes_programs_and_children_validate(kind):
    rng = np.random.default_rng(0)
    changed = valid = 0
    for program in KNOWN_PROGRAMS.values():
        for _ in range(10):
            try:
                child, description = OPERATORS[kind](program, rng, ALL, Limits())
            except ValueError:
                continue  # this operator does not apply to this program
            assert description.startswith(kind)
            changed += child != program
            try:
                validate(child)
                valid += 1
            except ValueError:
                pass
    assert changed > 0 and valid > 0


def test_make_child_gives_valid_new_pruned_children_within_limits():
    rng = np.random.default_rng(1)
    seen = {structural_hash(ADAMW)}
    limits = Limits(max_statements=12, max_state=2)
    parent = ADAMW
    for _ in range(300):
        child = make_child(parent, rng, ELEMENTWISE_SET, lambda h: h not in seen, limits)
        assert child is not None
        validate(child.program, ELEMENTWISE_SET)
        assert prune(child.program) == child.program
        assert child.structural_hash not in seen and child.structural_hash == structural_hash(child.program)
        assert len(child.program.body) <= 12 and len(child.program.state) <= 2
        assert all(s.op in ELEMENTWISE_SET for s in child.program.body)
        seen.add(child.structural_hash)
        parent = child.program if rng.random() < 0.5 else parent


def test_mutation_is_deterministic_for_a_seed():
    def children(seed):
        rng = np.random.default_rng(seed)
        return [make_child(LION, rng, ALL, lambda h: True).program for _ in range(50)]

    assert children(3) == children(3)
    assert children(3) != children(4)


def test_perturbation_keeps_momentum_constants_meaningful_and_moves_zeros():
    from search.mutation import perturb_const

    rng = np.random.default_rng(0)
    moved: dict[str, list[float]] = {"beta1": [], "beta2": [], "wd": []}
    for _ in range(300):
        child, _ = perturb_const(LION, rng, ALL, Limits())
        for (name, value), (_, old) in zip(child.constants, LION.constants):
            if value != old:
                moved[name].append(value)
    # 1 - beta is what gets scaled: a beta stays below 1 and never jumps past it.
    assert moved["beta1"] and all(v < 1.0 for v in moved["beta1"] + moved["beta2"])
    assert max(moved["beta2"]) > 0.99 > min(moved["beta2"])
    # Lion's weight decay of 0 can still grow into a real decay.
    assert moved["wd"] and all(v > 0 for v in moved["wd"])


def test_duplicate_copies_a_statement_with_its_own_constants_and_keeps_the_behaviour():
    """Signum's momentum, duplicated: the same updates, and a constant free to move (towards Lion)."""
    from primitives.fingerprint import fingerprint
    from primitives.known import SIGNUM
    from search.mutation import duplicate

    child, description = duplicate(SIGNUM, np.random.default_rng(0), ALL, Limits())
    assert description.startswith("duplicate") and len(child.body) == len(SIGNUM.body) + 1
    assert len(child.constants) == len(SIGNUM.constants) + 1
    assert fingerprint(child) == fingerprint(SIGNUM)
    copy = child.body[0]
    assert copy.op == "interp" and copy.consts != SIGNUM.body[0].consts and child.body[-1].args == (copy.out,)


def test_extra_edits_make_children_that_differ_by_several_edits():
    from primitives.known import ADAMW

    rng = np.random.default_rng(3)
    several = [make_child(ADAMW, rng, ALL, lambda h: True, Limits(), extra_edit=0.7) for _ in range(40)]
    assert any(c.mutation.count(" | ") >= 2 for c in several if c is not None)
    single = [make_child(ADAMW, rng, ALL, lambda h: True, Limits()) for _ in range(40)]
    assert all(" | " not in c.mutation for c in single if c is not None)
