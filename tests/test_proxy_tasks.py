"""Proxy tasks, the runner, tuning and scoring."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from primitives.known import ADAMW, SGD
from primitives.serialize import save
from proxy_tasks.optimizers import OptimizerSpec, UnknownOptimizerError, parse_optimizer
from proxy_tasks.registry import HELD_OUT, TASKS, TRAINING, UnknownTaskError, get_task, select_tasks
from proxy_tasks.runner import lr_factor, train, train_grid
from proxy_tasks.scoring import BaselineCache, score_task, seed_score, suite_score
from proxy_tasks.task import RunResult
from proxy_tasks.tuning import TuningProtocol, fresh, objective, tune

SHORT = {name: dataclasses.replace(task, steps=12) for name, task in TASKS.items()}


def test_suite_has_the_training_and_held_out_tasks():
    assert set(TRAINING) == {"noisy_regression", "teacher_student", "quadratic", "rosenbrock", "matrix_regression",
                             "matrix_completion", "logistic", "mlp", "cnn", "char_lm"}
    assert {"lora", "deep_linear", "gratings_cnn", "synthetic_lm"} <= set(HELD_OUT)
    assert any(n.endswith("_x100") for n in HELD_OUT)
    assert select_tasks("tier0") and all(t.tier == 0 for t in select_tasks("tier0"))
    with pytest.raises(UnknownTaskError, match="Did you mean quadratic"):
        get_task("quadratc")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_deterministic_for_a_seed(name):
    task = SHORT[name]
    for build in (task.data, task.init):
        a, b, other = build(1), build(1), build(2)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    init_a, init_b = task.init(1), task.init(2)
    assert any(not torch.equal(init_a[k], init_b[k]) for k in init_a)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_trains_with_adamw_and_returns_a_result(name):
    task = SHORT[name]
    (result,) = train(task, parse_optimizer("AdamW"), 1e-3, (0,))
    assert math.isfinite(result.train_loss) and math.isfinite(result.eval_loss)
    assert result.diverged_step is None and 0 < len(result.curve) <= 50
    assert result.seconds > 0


@pytest.mark.parametrize("name", ["quadratic", "mlp", "cnn", "matrix_completion"])
@pytest.mark.parametrize("optimizer", ["AdamW", "Muon", "program:lion"])
def test_vmapped_seeds_equal_one_at_a_time(name, optimizer):
    task, spec = SHORT[name], parse_optimizer(optimizer)
    together = train(task, spec, 1e-2, (0, 1, 2), batched=True)
    alone = train(task, spec, 1e-2, (0, 1, 2), batched=False)
    for a, b in zip(together, alone):
        assert a.seed == b.seed
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-6)
        assert a.curve == pytest.approx(b.curve, rel=1e-4, abs=1e-6)


def test_divergence_stops_a_run_and_counts_as_infinite_loss():
    task = SHORT["quadratic"]
    results = train(task, parse_optimizer("SGD"), 1e3, (0, 1))
    assert all(r.diverged_step is not None and r.train_loss == math.inf for r in results)
    assert all(r.diverged_step < task.steps for r in results)


def test_schedules_warm_up_then_anneal_or_stay_constant():
    steps = 100
    cosine = [lr_factor(step, steps) for step in range(steps)]
    assert cosine[0] == pytest.approx(0.2) and max(cosine) == pytest.approx(1.0)  # 5 warmup steps
    assert all(a >= b for a, b in zip(cosine[5:], cosine[6:])) and cosine[-1] < 1e-3
    assert all(lr_factor(step, steps, "constant") == 1.0 for step in range(steps))
    task = SHORT["quadratic"]
    spec = parse_optimizer("SGD")
    annealed, constant = (train(task, spec, 0.1, (0,), schedule=s)[0] for s in ("cosine", "constant"))
    assert annealed.train_loss != constant.train_loss
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        train(task, spec, 0.1, (0,), schedule="linear")


@pytest.mark.parametrize("method", ["svd", "qdwh"])
def test_a_diverged_seed_does_not_stop_the_seeds_beside_it(method):
    """Seeds stacked along a batch dimension: NaN in one seed's gradient reaches svd/cholesky."""
    from discovered import PolarGrad

    torch.manual_seed(0)
    start = torch.randn(2, 5, 3)
    grad = torch.randn(2, 5, 3)
    grad[1, 0, 0] = math.nan
    stacked = torch.nn.Parameter(start.clone())
    alone = torch.nn.Parameter(start[0].clone())
    stacked.grad, alone.grad = grad.clone(), grad[0].clone()
    PolarGrad([stacked], lr=0.1, method=method, batch_dims=1).step()
    PolarGrad([alone], lr=0.1, method=method).step()
    torch.testing.assert_close(stacked.detach()[0], alone.detach())
    assert torch.isnan(stacked.detach()[1]).all()


def test_seed_scores():
    assert seed_score(1.0, 1.0) == 0.0
    assert seed_score(math.e, 1.0) == pytest.approx(1.0)
    assert seed_score(1.0, 1e-9) == 3.0 and seed_score(1e-9, 1.0) == -3.0
    assert seed_score(1.0, math.inf) == -3.0 and seed_score(1.0, math.nan) == -3.0
    # A gap to the optimum a hair below 0 (f - f* in float32) is the optimum reached, not a failure.
    assert seed_score(1e-3, -1e-7) == 3.0 and seed_score(-1e-7, -2e-7) == 0.0
    task = SHORT["quadratic"]
    run = lambda seed, loss: RunResult(seed, 0.1, loss, loss, (loss,), None, 0.0)  # noqa: E731
    scored = score_task(task, (run(0, 1.0), run(1, 0.5), run(2, math.inf)), (run(0, 1.0), run(1, 1.0), run(2, 1.0)), 0.1)
    assert scored.seed_scores == (0.0, pytest.approx(math.log(2)), -3.0)
    assert scored.score == 0.0  # the median
    assert suite_score([scored, dataclasses.replace(scored, score=1.0)]) == 0.5


def test_tuning_stays_within_its_budget_and_is_scale_free():
    """A program and the same program times 100 are tuned to the same run, at 1/100 the lr."""
    task = SHORT["quadratic"]
    protocol = TuningProtocol()
    plain = tune(task, OptimizerSpec.for_program(SGD), (0, 1), protocol=protocol)
    assert len(plain.runs) <= protocol.budget
    from primitives.serialize import parse

    scaled_sgd = parse("const c = 100\nu = scale(g; c)\nreturn u")
    scaled = tune(task, OptimizerSpec.for_program(scaled_sgd), (0, 1), protocol=protocol)
    assert scaled.best_lr == pytest.approx(plain.best_lr / 100, rel=1e-6)
    assert [r.train_loss for r in scaled.best] == pytest.approx([r.train_loss for r in plain.best], rel=1e-4)


def test_the_rate_is_chosen_on_the_tuning_seeds_and_scored_on_fresh_ones():
    task = SHORT["quadratic"]
    result = tune(task, parse_optimizer("SGD:momentum=0.9"), (0, 1))
    assert {r.seed for runs in result.runs.values() for r in runs} == {0, 1}
    assert [r.seed for r in result.best] == list(fresh((0, 1))) and {r.lr for r in result.best} == {result.best_lr}
    objectives = {lr: objective(runs, task.metric) for lr, runs in result.runs.items()}
    assert objectives[result.best_lr] == min(objectives.values())  # the choice used the tuning seeds only
    old = tune(task, parse_optimizer("SGD:momentum=0.9"), (0, 1), protocol=TuningProtocol(fresh_seeds=False))
    assert [r.seed for r in old.best] == [0, 1] and old.best_lr == result.best_lr


@pytest.mark.parametrize("name,optimizer", [("quadratic", "AdamW"), ("quadratic", "Lion"),
                                            ("matrix_regression", "program:muon"), ("logistic", "SGDM")])
def test_batched_tuning_agrees_with_tuning_run_by_run(name, optimizer):
    """All rates and seeds of a stage as one vmapped batch, or each run alone: the same choice and scores."""
    task, spec = SHORT[name], parse_optimizer(optimizer)
    batched = tune(task, spec, (0, 1), batched=True)
    alone = tune(task, spec, (0, 1), batched=False)
    assert batched.best_lr == pytest.approx(alone.best_lr, rel=1e-9)
    assert sorted(batched.runs) == pytest.approx(sorted(alone.runs), rel=1e-9)
    for got, expected in zip(batched.best, alone.best):
        # float32 round-off differs between a batched and a single matmul; seed noise is far larger
        assert got.train_loss == pytest.approx(expected.train_loss, rel=2e-2)


def test_a_diverged_instance_does_not_stop_the_others_in_its_batch():
    task, spec = SHORT["quadratic"], parse_optimizer("SGD")
    runs = train_grid(task, spec, (0.1, 1e3), (0, 1))
    assert all(r.diverged_step is not None and r.train_loss == math.inf for r in runs[1e3])
    alone = train_grid(task, spec, (0.1,), (0, 1))
    assert all(r.diverged_step is None for r in runs[0.1])
    assert [r.train_loss for r in runs[0.1]] == pytest.approx([r.train_loss for r in alone[0.1]], rel=1e-6)


def test_a_candidate_that_diverges_at_every_rate_scores_the_worst_on_fresh_seeds(tmp_path):
    from faulty_primitives import FAULTY
    from primitives.serialize import parse
    from proxy_tasks.scoring import tune_and_score

    not_a_number = parse("v = nan(g)\nu = add(v, g)\nreturn u", FAULTY)
    spec = OptimizerSpec.for_program(not_a_number, primitive_set=FAULTY)
    scored = tune_and_score(SHORT["quadratic"], spec, (0, 1), BaselineCache(tmp_path / "b.json"))
    assert scored.diverged_everywhere and scored.score == -3.0
    assert [r.seed for r in scored.runs] == list(fresh((0, 1)))


def test_tuning_moves_towards_the_better_side():
    task = SHORT["quadratic"]
    result = tune(task, parse_optimizer("SGD"), (0,))
    losses = {lr: runs[0].train_loss for lr, runs in result.runs.items()}
    assert losses[result.best_lr] == min(losses.values())


def test_baseline_cache_round_trips_and_is_keyed_by_task_version(tmp_path):
    task = SHORT["quadratic"]
    cache = BaselineCache(tmp_path / "baselines.json")
    first = cache.baseline(task, (0,))
    reloaded = BaselineCache(tmp_path / "baselines.json").get(task, (0,), "cpu", TuningProtocol())
    assert reloaded == first
    changed = dataclasses.replace(task, steps=13)
    assert BaselineCache(tmp_path / "baselines.json").get(changed, (0,), "cpu", TuningProtocol()) is None
    (tmp_path / "broken.json").write_text("{not json")
    assert BaselineCache(tmp_path / "broken.json").get(task, (0,), "cpu", TuningProtocol()) is None


def test_parse_optimizer_names_keywords_programs_and_errors(tmp_path):
    assert parse_optimizer("AdamW").factory is torch.optim.AdamW
    sgd = parse_optimizer("SGD:momentum=0.9,nesterov=true")
    assert dict(sgd.kwargs) == {"momentum": 0.9, "nesterov": True}
    assert dict(parse_optimizer("SGDM").kwargs) == {"momentum": 0.9}
    assert parse_optimizer("Muon").routes and not parse_optimizer("Lion").routes
    assert parse_optimizer("program:adamw").program == ADAMW
    save(ADAMW, tmp_path / "mine.json")
    assert parse_optimizer(str(tmp_path / "mine.json")).program == ADAMW
    assert not parse_optimizer("LBFGS").batchable
    with pytest.raises(UnknownOptimizerError, match="Did you mean Lion"):
        parse_optimizer("Lino")
    with pytest.raises(UnknownOptimizerError, match="unknown program"):
        parse_optimizer("program:nope")
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "optsearch.program"}))
    with pytest.raises(UnknownOptimizerError, match="cannot use program file"):
        parse_optimizer(str(tmp_path / "bad.json"))


def test_muon_style_optimizers_hand_embeddings_to_adamw():
    task = SHORT["char_lm"]
    params = {k: torch.nn.Parameter(v) for k, v in task.init(0).items()}
    optimizer = parse_optimizer("Muon").make(params, task.adamw_params, 0.02, 1e-3, batch_dims=0)
    routed = {id(p) for g in optimizer.param_groups if g["route"] == "adamw" for p in g["params"]}
    assert routed == {id(params[k]) for k in ("embed", "pos", "head")}
    assert all(g["ns_dtype"] == "float32" for g in optimizer.param_groups)  # CPU
