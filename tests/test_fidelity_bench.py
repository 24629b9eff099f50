"""The fidelity panel (benchmarks/fidelity.py): its members, its statistics, and a tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fidelity  # noqa: E402
import fidelity_panel  # noqa: E402

from primitives.hashing import structural_hash  # noqa: E402
from primitives.known import KNOWN_PROGRAMS  # noqa: E402
from primitives.library import ALL  # noqa: E402
from primitives.program import validate  # noqa: E402
from primitives.serialize import from_dict  # noqa: E402
from proxy_tasks.registry import select_tasks  # noqa: E402


# ---------------------------------------------------------------------------- rank statistics


def test_tau_and_rho_on_known_rankings():
    x = [0.1, 0.5, 0.2, 0.9, -1.0]
    assert fidelity.kendall_tau(x, x) == pytest.approx(1.0)
    assert fidelity.spearman_rho(x, x) == pytest.approx(1.0)
    assert fidelity.kendall_tau(x, [-v for v in x]) == pytest.approx(-1.0)
    assert fidelity.spearman_rho(x, [-v for v in x]) == pytest.approx(-1.0)
    # one adjacent swap of four: 5 concordant pairs, 1 discordant; rho = 1 - 6 * 2 / (4 * 15)
    assert fidelity.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert fidelity.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: tau-b and tie-averaged ranks, as scipy.stats.kendalltau and spearmanr compute them
    assert fidelity.kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert fidelity.spearman_rho([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(5 / 6)
    assert np.isnan(fidelity.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_brackets_a_perfect_agreement():
    records = [{"tasks": {"a": {"score": float(i), "seed_scores": [i - 0.01, i, i + 0.01]}},
                "targets": {"t": {"score": float(i), "seed_scores": [i, i]}}} for i in range(6)]
    stats = fidelity.bootstrap(records, ("tasks", ("a",)), ("targets", ("t",)), resamples=100)
    assert stats["tau"] == pytest.approx(1.0) and stats["rho"] == pytest.approx(1.0)
    assert stats["tau_interval"] == [pytest.approx(1.0), pytest.approx(1.0)]


# ---------------------------------------------------------------------------- the panel


def _constant(member, name):
    if member.program is not None:
        return member.program.constant_values[name]
    return dict(member.kwargs)[name]


def test_panel_has_the_named_pairs_and_random_children():
    members = fidelity_panel.panel()
    assert len(members) >= 24
    assert len({m.name for m in members}) == len(members)
    family = lambda name: [m for m in members if m.family == name]  # noqa: E731
    assert sorted(_constant(m, "betas")[1] for m in family("lion")) == [0.95, 0.99]
    assert sorted(_constant(m, "beta") for m in family("signum")) == [0.75, 0.9]
    assert sorted(_constant(m, "momentum") for m in family("muon")) == [0.85, 0.95]
    assert sorted(dict(m.kwargs).get("weight_decay", 0.01) for m in family("adamw")) == [0.0, 0.01, 0.1]
    assert sorted(_constant(m, "beta") for m in family("ema_sgd")) == [0.86, 0.94]
    pair_families = {a.family for a, _ in fidelity_panel.pairs(members)}
    assert {"lion", "signum", "muon", "adamw", "ema_sgd"} <= pair_families

    children = family("child")
    assert len(children) >= 8
    references = {structural_hash(p, ALL) for p in KNOWN_PROGRAMS.values()}
    references |= {structural_hash(m.program, ALL) for m in members if m.program is not None and m.family != "child"}
    hashes = [structural_hash(m.program, ALL) for m in children]
    assert len(set(hashes)) == len(hashes)  # distinct from each other
    assert not set(hashes) & references  # and from every warm start and reference program
    for m in children:
        validate(m.program, ALL)
        assert from_dict(m.record()["program"]) == m.program  # recorded as the project's JSON
    # the same panel in every process: the children come from a fixed seed
    assert [m.program for m in fidelity_panel.random_children()] == \
        [m.program for m in fidelity_panel.random_children()]


def test_every_member_builds_its_optimizer():
    for member in fidelity_panel.panel():
        spec = member.spec()
        assert spec.batchable, f"{member.name} would train seed by seed"
        json.dumps(member.record())


# ---------------------------------------------------------------------------- a tiny run


# The suite's first cheap task and first held-out task, whatever they are today, at 5% of their steps.
CHEAP = select_tasks("tier0")[0].name
TARGET = select_tasks("held-out")[0].name
TINY = ["--cheap", CHEAP, "--full", CHEAP, "--held-out", TARGET, "--scaled", "none", "--step-fraction", "0.05",
        "--seeds", "2", "--target-seeds", "2", "--resamples", "50", "--no-plot"]


def test_tiny_run_writes_incrementally_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTSEARCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fidelity.json"
    first = fidelity.main([*TINY, "--members", "^AdamW$", "--out", str(out)])
    assert list(first["members"]) == ["AdamW"] and out.exists()

    seen = []
    data = fidelity.main([*TINY, "--members", "^(AdamW|Lion-b2-0.99|Lion-b2-0.95)$", "--out", str(out), "--resume"],
                         on_checkpoint=lambda d: seen.append(json.loads(out.read_text())))
    # a checkpoint after each new member, the file rewritten each time; AdamW kept from the first run
    assert [len(d["members"]) for d in seen] == [2, 3, 3]
    assert [d["complete"] for d in seen] == [False, False, True]
    assert data["members"]["AdamW"] == first["members"]["AdamW"]

    written = json.loads(out.read_text())
    for key in ("tau", "tau_interval", "rho", "rho_interval", "tau_cheap_vs_full", "command", "pairs", "members",
                "agreement", "settings"):
        assert key in written
    assert written["command"][-1] == "--resume"
    assert len(written["tau_interval"]) == 2
    assert {"full_vs_targets", "cheap_vs_full", "cheap_vs_targets", "full_vs_target"} <= set(written["agreement"])
    assert set(written["agreement"]["full_vs_target"]) == {TARGET}
    lion = written["members"]["Lion-b2-0.95"]
    assert lion["family"] == "lion" and lion["optimizer"] == "Lion" and lion["kwargs"] == {"betas": [0.9, 0.95]}
    assert set(lion["tasks"]) == {CHEAP} and set(lion["targets"]) == {TARGET}
    assert len(lion["tasks"][CHEAP]["seed_scores"]) == 2
    assert {"cheap", "full", "target"} <= set(lion)
    [pair] = [p for p in written["pairs"] if p["family"] == "lion"]
    assert {"cheap", "full", "target", "cheap_agrees", "full_agrees"} <= set(pair)
