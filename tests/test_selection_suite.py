"""The selection suite and its funnel: rolling-hurdle rungs, the rate protocol, standardised scores.

Unit tests, without workers: the rung promotion rule, selection on the
highest rung both reached, rate offsets recorded and inherited through the
state and the scheduler, the tuning protocol's exact training runs (with a
fake trainer whose loss is a known function of the rate), per-task
standardisation and partial credit for a late divergence, and the new
selection tasks (stochastic, streamed, an exact excess risk).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from primitives.fingerprint import fingerprint
from primitives.hashing import structural_hash
from primitives.known import ADAMW, LION, SIGNUM
from primitives.library import ALL
from primitives.serialize import to_dict
from proxy_tasks import tuning
from proxy_tasks.optimizers import parse_optimizer
from proxy_tasks.registry import TASKS, TRAINING, select_tasks
from proxy_tasks.scoring import SCORE_CLIP, diverged_credit, run_score, score_task, seed_score
from proxy_tasks.task import RunResult
from proxy_tasks.tuning import TuningProtocol, offset_of, tune
from search import config as config_module
from search.events import CandidateEvaluated
from search.funnel import Funnel, promoted
from search.individual import Individual
from search.proposer import Proposal, Proposer
from search.records import Completion, JobKind, Stage, Status
from search.scheduler import InProgress, Scheduler, Work
from search.state import SearchState


def config(*overrides):
    return config_module.load(None, overrides=["tracking.enabled=false", "evolution.population=8", *overrides])


# ---------------------------------------------------------------- the suite

def test_the_selection_rungs_are_stochastic_and_the_toys_left_selection():
    cheap, full = select_tasks("tier0"), select_tasks("tier1")
    assert {t.name for t in cheap} == {"noisy_regression", "teacher_student"}
    assert {t.name for t in full} == {"noisy_regression", "teacher_student", "logistic", "mlp"}
    for task in full:  # minibatch noise on every selection task; standardised so that every task counts
        assert task.minibatch_keys and task.batch_size is not None
        assert 0 < task.score_scale < 1
    for name in ("quadratic", "matrix_regression", "rosenbrock", "matrix_completion", "cnn", "char_lm"):
        assert name in TRAINING and TASKS[name].tier >= 2
    # long enough for beta2 = 0.99's memory: 10 / (1 - 0.99) steps
    assert all(t.steps >= 800 for t in cheap)


def test_noisy_regression_scores_the_exact_excess_risk():
    task = dataclasses.replace(TASKS["noisy_regression"], steps=10)
    data = task.data(0)
    assert task.train_loss({"W": data["teacher"]}, data).item() == pytest.approx(0.0, abs=1e-10)
    away = task.train_loss({"W": data["teacher"] + 0.1}, data).item()
    # 1/2 ||D^(1/2) E S^(1/2)||^2 is the expected minibatch loss minus the noise floor
    x, y = data["x"][:4000], data["y"][:4000]
    residual = (x @ (data["teacher"] + 0.1).T - y) @ data["output_root"]
    noise = (x @ data["teacher"].T - y) @ data["output_root"]
    empirical = 0.5 * (residual**2).sum(-1).mean() - 0.5 * (noise**2).sum(-1).mean()
    assert away == pytest.approx(empirical.item(), rel=0.1)


def test_teacher_student_scores_against_the_teachers_noiseless_outputs():
    data = TASKS["teacher_student"].data(0)
    assert not torch.equal(data["y"][:8], data["y_test"][:8])  # noisy training targets, clean test targets
    assert data["x"].shape[0] >= TASKS["teacher_student"].steps * TASKS["teacher_student"].batch_size


# ---------------------------------------------------------------- rungs

def test_a_rolling_hurdle_promotes_the_top_fraction_of_the_window():
    window = [float(v) for v in range(10)]  # 0 .. 9
    # top 30% of the 11 scores (window and newcomer): fewer than ceil(3.3) = 4 strictly better
    assert promoted(6.5, window, 0.3) and promoted(6.0, window, 0.3)
    assert not promoted(5.5, window, 0.3)
    assert promoted(-100.0, window[:3], 0.3, min_window=4)  # a short window promotes everything
    assert promoted(1.0, [1.0] * 20, 0.3)  # ties go to the newcomer: a flat window never blocks


def test_the_funnel_promotes_warm_starts_and_judges_children_against_the_window():
    funnel = Funnel(config("evaluation.promote=0.25", "evaluation.min_window=4"))
    window = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    low, high = {"a": {"score": -0.8}}, {"a": {"score": 0.65}}
    assert funnel.after(JobKind.CHEAP, low, window) is None
    assert funnel.after(JobKind.CHEAP, high, window) is JobKind.FULL
    assert funnel.after(JobKind.CHEAP, low, window, warm_start=True) is JobKind.FULL  # a reference always climbs
    assert funnel.after(JobKind.FULL, high, window) is None
    floor = Funnel(config("evaluation.hurdle=-1.0"))
    assert floor.after(JobKind.CHEAP, {"a": {"score": -2.0}}, [], warm_start=True) is None  # below the floor


def _individual(id_, score, stage, cheap=None):
    return Individual(id_, LION, f"h{id_}", f"f{id_}", score, stage, 1.0, 1, cheap_score=cheap)


def test_selection_compares_on_the_highest_rung_both_reached():
    full = _individual(1, score=0.2, stage=Stage.FULL, cheap=0.1)
    cheap_only = _individual(2, score=0.5, stage=Stage.CHEAP, cheap=0.5)
    assert cheap_only.beats(full, "full")  # on the cheap rung: 0.5 against 0.1, not 0.5 against 0.2
    better_full = _individual(3, score=0.3, stage=Stage.FULL, cheap=-0.4)
    assert better_full.beats(full, "full") and not full.beats(better_full, "full")  # both full: full scores


def candidate(seq, id_, program=LION, score=0.5, stage=Stage.FULL, tasks=None, parent=None, cheap=None):
    return CandidateEvaluated(
        seq=seq, id=id_, program=to_dict(program), structural_hash=structural_hash(program) + f"{id_:x}",
        fingerprint=f"{id_:016x}", parent=parent, mutation="test", attempts=1, invalid=0, duplicates=0,
        stage=stage, status=Status.OK, score=score, tasks=tasks or {"t": {"score": score}}, complexity=3.0,
        state_buffers=1, cheap_score=cheap)


def test_the_state_keeps_the_rung_window_and_the_offsets_from_events():
    state = SearchState(config("evaluation.window=3"), ALL)
    for seq in range(1, 6):
        state.apply(candidate(seq, seq, score=0.1 * seq, cheap=0.1 * seq,
                              tasks={"a": {"score": 0.0, "offset": seq}, "b": {"score": 0.0, "offset": "x"}}))
    assert list(state.rung_window) == pytest.approx([0.3, 0.4, 0.5])  # the last `window` cheap scores
    assert state.parent_offsets(4) == {"a": 4}  # a malformed offset is not inherited
    assert state.parent_offsets(None) == {} and state.parent_offsets(99) == {}
    state.apply(candidate(6, 6, cheap=math.nan))
    assert len(state.rung_window) == 3 and 0.5 in state.rung_window  # a non-finite score stays out


def _completion(job, result):
    return Completion(job, Status.OK, result, "", 0, 0.5, 1.0, 2.0)


def test_a_child_inherits_its_parents_offsets_and_its_event_records_the_cheap_score():
    cfg = config("evolution.warm_start=lion,signum")
    state = SearchState(cfg, ALL)
    state.apply(candidate(1, 0, tasks={"a": {"score": 0.2, "offset": 3}}, cheap=0.2))
    scheduler = Scheduler(state, Proposer(cfg, ALL, {"lion": LION, "signum": SIGNUM}), Funnel(cfg))
    child = Proposal(5, ADAMW, structural_hash(ADAMW), parent=0, mutation="test", warm_start=None, attempts=1,
                     invalid=0, duplicates=0)
    scheduler.candidates[5] = InProgress(child)
    job_id = 100
    from search.records import Job

    scheduler.running[job_id] = Work(JobKind.FINGERPRINT, 5, ADAMW)
    scheduler.complete(_completion(Job(job_id, JobKind.FINGERPRINT, {}), fingerprint(ADAMW)))
    cheap = scheduler.next_job()
    assert cheap.kind is JobKind.CHEAP and cheap.payload["offsets"] == {"a": 3}
    # the window holds 0.2 only (shorter than min_window): promoted, and the full job inherits too
    assert scheduler.complete(_completion(cheap, {"tasks": {"a": {"score": -0.5}}})) == []
    full = scheduler.next_job()
    assert full.kind is JobKind.FULL and full.payload["offsets"] == {"a": 3}
    (event,) = scheduler.complete(_completion(full, {"tasks": {"b": {"score": 0.1}}}))
    assert event.cheap_score == pytest.approx(-0.5) and event.score == pytest.approx(-0.2)


# ---------------------------------------------------------------- the rate protocol

def _fake_trainer(best_offset: float, calls: list, diverge_above: float = math.inf):
    """train_grid whose loss is (log10-rate distance from the optimum)^2 + 1, recording each batch."""

    def train_grid(task, spec, lrs, seeds, device="cpu", aux_lr=1e-3, batched=None, schedule="cosine"):
        calls.append((tuple(lrs), tuple(seeds)))
        results = {}
        for lr in lrs:
            k = 2 * math.log10(lr / CENTRE)
            loss = math.inf if k > diverge_above else 1.0 + (k - best_offset) ** 2
            results[float(lr)] = tuple(RunResult(s, lr, loss, loss, (loss,), None if math.isfinite(loss) else 3, 0.0)
                                       for s in seeds)
        return results

    return train_grid


CENTRE = 1e-2


@pytest.fixture
def fake_tuning(monkeypatch):
    monkeypatch.setattr(tuning, "centre_lr", lambda *args: CENTRE)

    def install(best_offset, diverge_above=math.inf):
        calls = []
        monkeypatch.setattr(tuning, "train_grid", _fake_trainer(best_offset, calls, diverge_above))
        return calls

    return install


def _offsets(calls):
    return [tuple(round(2 * math.log10(lr / CENTRE)) for lr in lrs) for lrs, _ in calls]


def test_a_child_trains_the_bracket_then_the_best_on_fresh_seeds_only(fake_tuning):
    calls = fake_tuning(best_offset=3.2)
    result = tune(TASKS["logistic"], parse_optimizer("SGD"), (0, 1, 2), offset=3)
    assert _offsets(calls) == [(2, 3, 4), (3,)]
    assert calls[1][1] == tuning.fresh((0, 1, 2))
    assert result.offset == 3 and result.run_count == 4 * 3  # 3S + S: at most 13 runs a task, against 39


def test_a_best_rate_at_an_edge_extends_the_bracket_by_half_decades(fake_tuning):
    calls = fake_tuning(best_offset=5.0)
    result = tune(TASKS["logistic"], parse_optimizer("SGD"), (0, 1), offset=2)
    assert _offsets(calls) == [(1, 2, 3), (4,), (5,), (5,)]  # two extensions (the protocol's limit), fresh at 5
    assert result.offset == 5 and sorted(offset_of(lr, CENTRE) for lr in result.runs) == [1, 2, 3, 4, 5]


def test_a_wide_search_never_retrains_a_rate_and_refines_around_its_best(fake_tuning):
    calls = fake_tuning(best_offset=3.0)
    result = tune(TASKS["logistic"], parse_optimizer("SGD"), (0, 1))
    trained = [k for batch in _offsets(calls)[:-1] for k in batch]
    assert _offsets(calls)[0] == TuningProtocol().first_exponents and len(trained) == len(set(trained))
    assert _offsets(calls)[-1] == (3,) and result.offset == 3


def test_when_every_rate_diverges_the_bracket_walks_down(fake_tuning):
    calls = fake_tuning(best_offset=0.0, diverge_above=-5.0)
    result = tune(TASKS["logistic"], parse_optimizer("SGD"), (0,), offset=0)
    assert _offsets(calls)[:3] == [(-1, 0, 1), (-2,), (-3,)]
    assert all(math.isinf(r.train_loss) for r in result.best)


# ---------------------------------------------------------------- scores

def _run(seed, loss, diverged=None, curve=(1.0,) * 10):
    return RunResult(seed, 1e-2, loss, loss, curve, diverged, 0.0)


def test_scores_are_standardised_by_the_tasks_panel_spread():
    task = TASKS["noisy_regression"]
    raw = math.log(1.25)
    scored = score_task(task, (_run(0, 0.8),), (_run(0, 1.0),), 1e-2)
    assert scored.score == pytest.approx(raw / task.score_scale)
    assert seed_score(1.0, 1e-9, spread=0.1) == SCORE_CLIP  # clipped after standardising


def test_a_late_divergence_gets_partial_credit_and_never_beats_adamw():
    task = dataclasses.replace(TASKS["logistic"], steps=100)
    adamw = _run(0, 1.0, curve=(1.0,) * 10)
    early, late = _run(0, math.inf, diverged=1), _run(0, math.inf, diverged=91, curve=(0.5,) * 10)
    assert run_score(task, early, adamw) == -SCORE_CLIP  # its first update blew up: it never trained
    credit = run_score(task, late, adamw)
    assert -SCORE_CLIP < credit <= 0.0  # trained 90% of the way with a loss half AdamW's: credited, not above 0
    assert credit == pytest.approx(-SCORE_CLIP * 0.1)
    # halfway, twice AdamW's minibatch loss at the same step (the curves are compared, whatever the metric)
    halfway = diverged_credit(_run(0, math.inf, diverged=51, curve=(2.0,) * 10), adamw, 100, 1.0)
    assert halfway == pytest.approx(-1.5 + 0.5 * math.log(0.5))
    assert run_score(task, _run(0, 0.9), adamw) == pytest.approx(math.log(1 / 0.9) / task.score_scale)


# ---------------------------------------------------------------- baselines shipped with the package

def _entry(seeds, lr=0.01):
    runs = [RunResult(s, lr, 1.0, 1.0, (1.0,), None, 0.0).to_dict() for s in seeds]
    return {"best_lr": lr, "centre": lr, "runs": [[lr, runs]], "scored": [dict(r, seed=r["seed"]) for r in
                                                                          [RunResult(s, lr, 1.0, 1.0, (1.0,), None,
                                                                                     0.0).to_dict()
                                                                           for s in tuning.fresh(seeds)]]}


def test_a_shipped_baseline_is_used_on_a_miss_and_a_damaged_one_is_a_miss(tmp_path):
    import json

    from proxy_tasks.scoring import BaselineCache

    task, seeds, protocol = TASKS["logistic"], (0, 1), TuningProtocol()
    key = BaselineCache.key(task, seeds, "cpu", protocol)
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps({key: _entry(seeds)}))
    cache = BaselineCache(tmp_path / "user.json", shipped=shipped)
    assert cache.get(task, seeds, "cpu", protocol).best_lr == 0.01
    assert not (tmp_path / "user.json").exists()  # reading a shipped entry writes nothing
    hostile = [{**_entry(seeds), "best_lr": "nan"}, {**_entry(seeds), "best_lr": -1.0}, {**_entry(seeds), "runs": 7},
               {**_entry((5, 6))}, {**_entry(seeds), "scored": [{"seed": "0"}]}, [], "x"]
    for entry in hostile:
        shipped.write_text(json.dumps({key: entry}))
        assert BaselineCache(tmp_path / "user.json", shipped=shipped).get(task, seeds, "cpu", protocol) is None
    for text in ("{", "[1, 2]", "\x00" * 10):
        shipped.write_text(text)
        assert BaselineCache(tmp_path / "user.json", shipped=shipped).get(task, seeds, "cpu", protocol) is None


def test_the_quickstart_starts_without_tuning_a_baseline():
    """Every baseline the quickstart asks for ships with the package (benchmarks/ship_baselines.py)."""
    from proxy_tasks.scoring import BaselineCache
    from search.evaluation import ProxyTaskEvaluator

    config = config_module.load("quickstart", overrides=["tracking.enabled=false"])
    evaluator = ProxyTaskEvaluator(config, ALL, None)
    shipped = BaselineCache(None)  # nothing but the shipped file
    evaluator.baselines = shipped
    evaluator.transfer.baselines = shipped
    missing = [t.name for t in evaluator.all_tasks
               if shipped.get(t, evaluator.seeds, evaluator.device, evaluator.protocol) is None]
    missing += [f"{name} (transfer)" for name in evaluator.transfer.missing_baselines()]
    assert not missing, f"re-run benchmarks/ship_baselines.py: no shipped baseline for {missing}"


# ---------------------------------------------------------------- this round's event fields, tampered

@pytest.mark.parametrize("value", ["0.5", True, [1.0], {"a": 1}])
def test_a_tampered_cheap_score_is_refused_when_the_log_is_read(value):
    from search.events import EventError, from_dict

    record = candidate(1, 0, cheap=0.5).to_dict()
    record["cheap_score"] = value
    with pytest.raises(EventError, match="cheap_score"):
        from_dict(record)


@pytest.mark.parametrize("offset", [1.5, True, 10**9, "3", None, [3], -(10**6)])
def test_a_tampered_rate_offset_is_never_inherited(offset):
    state = SearchState(config(), ALL)
    state.apply(candidate(1, 0, tasks={"a": {"score": 0.1, "offset": offset}}, cheap=math.inf))
    assert state.parent_offsets(0) == {} and list(state.rung_window) == []
