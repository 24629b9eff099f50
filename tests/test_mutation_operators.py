"""The mutation operators' contracts: the state kinds insert reaches, duplicate's exact behaviour, crossover's validity.

Every loop draws from an explicit, seeded numpy Generator, so a failure
reproduces with the same seed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from primitives import ALL, ELEMENTWISE_SET
from primitives.analysis import live_mask, prune
from primitives.kinds import Kind
from primitives.known import ADAFACTOR, ADAMW, KNOWN_PROGRAMS, LION, RMSPROP, SHAMPOO, SIGNUM, SGD_NESTEROV
from primitives.probe import probe_updates
from primitives.program import ProgramError, validate
from search import config as C
from search.mutation import (
    Limits,
    crossover,
    duplicate,
    insert,
    make_child,
    make_crossover_child,
    reachable_state_kinds,
)

STATE_KINDS = (Kind.PARAM, Kind.ROW, Kind.COL, Kind.ROWVEC, Kind.COLVEC)


def _inserts(parent, primitive_set, seed, draws):
    """(child, new state registers) of every insert draw that did not raise; each child must validate."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        try:
            child, description = insert(parent, rng, primitive_set, Limits())
        except ProgramError:
            continue  # an edit that does not apply (no room, no argument fits): no program at all
        validate(child, primitive_set)  # never an invalid program
        new = [d for d in child.state if d.name not in parent.state_names]
        out.append((child, new, description))
    return out


# --- insert: every state kind the set supports ---------------------------------------------


def test_reachable_state_kinds_follow_the_primitive_set():
    assert reachable_state_kinds(ALL) == STATE_KINDS
    assert reachable_state_kinds(ELEMENTWISE_SET) == (Kind.PARAM,)  # no Gram or factored primitives there


@pytest.mark.parametrize("kind", STATE_KINDS, ids=lambda k: k.name)
def test_insert_creates_each_state_kind_of_the_full_set_and_the_update_reads_it(kind):
    made = []
    for child, new, description in _inserts(ADAMW, ALL, seed=list(STATE_KINDS).index(kind), draws=600):
        if not new:
            continue
        # Pruning keeps every new register, as state carried to the next step: the update reads it.
        pruned = prune(child)
        _, carried = live_mask(pruned)
        assert {d.name for d in new} <= carried, f"{description}\n{pruned}"
        for decl in new:
            # Gram statistics start at eps * I, as the kinds module provides; the rest at zero.
            assert decl.init == ("eye" if decl.kind in (Kind.ROW, Kind.COL) else "zeros")
        if any(d.kind is kind for d in new):
            made.append(child)
    assert made, f"600 inserts from AdamW made no {kind} state"
    # It runs: finite updates on both probes (the recipe starts from each slot's default constants).
    with np.errstate(all="ignore"):
        assert np.isfinite(probe_updates(made[0], primitive_set=ALL)).all(), made[0].text()


def test_insert_with_the_elementwise_set_makes_only_param_state():
    kinds = set()
    for child, new, _ in _inserts(ADAMW, ELEMENTWISE_SET, seed=7, draws=600):
        assert all(s.op in ELEMENTWISE_SET for s in child.body)
        kinds |= {d.kind for d in new}
    assert kinds == {Kind.PARAM}


def test_a_new_state_reaches_the_output_when_the_program_returns_an_input():
    """SGD (`return g`, no statements): the only use is the returned value."""
    sgd = KNOWN_PROGRAMS["sgd"]
    made = [(child, new) for child, new, _ in _inserts(sgd, ALL, seed=3, draws=400) if new]
    assert made
    for child, new in made:
        assert {d.name for d in new} <= live_mask(prune(child))[1]


def test_insert_is_deterministic_for_a_seed():
    def texts(seed):
        return [child.text() for child, _, _ in _inserts(ADAMW, ALL, seed, 200)]

    assert texts(11) == texts(11) and texts(11) != texts(12)


# --- duplicate: the same behaviour, exactly ------------------------------------------------


def test_duplicate_children_behave_exactly_as_their_parents():
    """2,000 draws on each program: a copy into a new register changes no update on the probe, bit for bit.

    RMSprop's `d = sqrt(v); d = add_const(d; eps); u = div(g, d)` is the case
    that broke: div reads the second d, and rewiring it to a copy of sqrt
    dropped eps (417 of 2,000 draws).
    """
    rng = np.random.default_rng(2024)
    for parent in (RMSPROP, ADAMW, ADAFACTOR, LION, SIGNUM, SHAMPOO, SGD_NESTEROV):
        with np.errstate(all="ignore"):
            expected = probe_updates(parent, primitive_set=ALL)
        seen = set()
        for _ in range(2000):
            child, description = duplicate(parent, rng, ALL, Limits())
            if child in seen:
                continue  # a draw already checked: the probe is deterministic
            seen.add(child)
            validate(child, ALL)
            with np.errstate(all="ignore"):
                actual = probe_updates(child, primitive_set=ALL)
            assert np.array_equal(actual, expected, equal_nan=True), f"{parent.name}: {description}\n{child}"
        assert seen


def test_duplicate_of_a_redefined_register_only_feeds_the_next_definition():
    rng = np.random.default_rng(0)
    readers = set()
    for _ in range(300):
        child, _ = duplicate(RMSPROP, rng, ALL, Limits())
        copy = child.body[[s.op for s in child.body].index("sqrt")]
        if copy.out != "d":  # sqrt was the statement copied: who reads the copy?
            readers |= {s.op for s in child.body if copy.out in s.args}
    assert readers == {"add_const"}


# --- crossover -----------------------------------------------------------------------------


def _hall_of_fame(seed: int, primitive_set, size: int = 6):
    """Stand-ins for a run's hall of fame: known programs and a few generations of their mutants."""
    rng = np.random.default_rng(seed)
    members = [p for p in KNOWN_PROGRAMS.values() if all(s.op in primitive_set for s in p.body)]
    for start in list(members):
        program = start
        for _ in range(size):
            child = make_child(program, rng, primitive_set, lambda h: True)
            if child is not None:
                program = child.program
        members.append(program)
    return members


@pytest.mark.parametrize("primitive_set", [ALL, ELEMENTWISE_SET], ids=lambda s: s.name)
def test_crossover_children_are_valid_pruned_and_within_limits(primitive_set):
    members = _hall_of_fame(5, primitive_set)
    rng = np.random.default_rng(6)
    limits = Limits()
    made = raw_valid = 0
    for first, second in itertools.product(members, repeat=2):
        for _ in range(3):  # the bare operator: a program that validates, or a ProgramError
            try:
                child, description = crossover(first, second, rng, primitive_set, limits)
            except ProgramError:
                continue
            validate(child, primitive_set)
            raw_valid += 1
        child = make_crossover_child(first, second, rng, primitive_set, lambda h: True, limits)
        if child is None:
            continue  # no state of a common kind, or nothing within the limits
        made += 1
        validate(child.program, primitive_set)
        assert prune(child.program) == child.program
        assert len(child.program.body) <= limits.max_statements and len(child.program.state) <= limits.max_state
        assert child.mutation.startswith("crossover")
    assert made > len(members) and raw_valid > len(members)


def test_crossover_puts_one_parents_state_under_the_others_update():
    """Lion's update with AdamW's second moment as its momentum; AdamW's update with Lion's beta2."""
    rng = np.random.default_rng(1)
    children = []
    for _ in range(40):
        child = make_crossover_child(LION, ADAMW, rng, ALL, lambda h: True).program
        children.append(child)
    texts = [c.text() for c in children]
    assert any("sign(c)" in t and "interp(g2, m" in t for t in texts)  # Lion's sign of AdamW's v
    assert any("div(m_hat, d)" in c.text() and 0.99 in c.constant_values.values()
               for c in children)  # AdamW, its m moving at Lion's beta2


def test_crossover_without_a_common_state_kind_gives_no_child():
    rng = np.random.default_rng(0)
    assert make_crossover_child(KNOWN_PROGRAMS["sgd"], LION, rng, ALL, lambda h: True) is None


# --- lion-space's evolution setting --------------------------------------------------------


def test_lion_space_is_sized_for_thousands_of_evaluations():
    evolution = C.load("lion-space").evolution
    assert (evolution.population, evolution.tournament) == (100, 4)
