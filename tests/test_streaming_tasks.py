"""Streaming proxy tasks: no example seen twice in a run, and the new tasks train."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from proxy_tasks.optimizers import parse_optimizer
from proxy_tasks.registry import HELD_OUT, TASKS, TRAINING
from proxy_tasks.runner import PoolTooSmallError, _stack, minibatch_indices, train, train_grid

STREAMING = sorted(name for name, task in TASKS.items() if task.streaming)
NEW_TASKS = ["lora", "deep_linear", "gratings_cnn", "synthetic_lm", "mlp", "cnn", "char_lm"]
SEEDS = (0, 1, 2)


def short(name: str, steps: int = 6):
    return dataclasses.replace(TASKS[name], steps=steps)


def test_the_suite_streams_where_it_must():
    assert len([n for n in TRAINING if TASKS[n].streaming]) >= 3
    assert len([n for n in HELD_OUT if TASKS[n].streaming]) >= 2
    assert len(HELD_OUT) >= 4 and "lora" in HELD_OUT
    assert "matrix_logistic" not in TASKS


@pytest.mark.parametrize("name", STREAMING)
def test_a_streaming_run_never_draws_an_example_twice(name):
    task = TASKS[name]
    data = task.data(0)
    count = task.example_count(data)
    full = {seed: minibatch_indices(task, data, seed) for seed in SEEDS}
    for seed, index in full.items():
        assert index.shape == (task.steps, task.batch_size)
        assert index.unique().numel() == index.numel()  # no example twice
        assert 0 <= int(index.min()) and int(index.max()) < count
    assert not torch.equal(full[0], full[1])  # each seed its own order
    shortened = short(name, steps=max(1, task.steps // 4))
    for seed in SEEDS:
        index = minibatch_indices(shortened, data, seed)
        assert index.shape == (shortened.steps, task.batch_size)
        assert index.unique().numel() == index.numel()
        assert torch.equal(index, full[seed][: shortened.steps])  # the full run's first batches


def test_char_lm_reads_non_overlapping_windows_of_the_text():
    task = TASKS["char_lm"]
    data = dict(task.data(0))
    data["ids"] = torch.arange(len(data["ids"]))  # each character replaced by its position
    span = task.context + 1
    for seed in SEEDS:
        index = minibatch_indices(task, data, seed)
        positions = torch.cat([task.sample(data, row)["windows"].reshape(-1) for row in index])
        assert positions.numel() == task.steps * task.batch_size * span
        assert positions.unique().numel() == positions.numel()  # no character read twice
        assert int(positions.max()) < len(data["ids"])


@pytest.mark.parametrize("name", STREAMING)
def test_stacked_seeds_get_the_batches_each_seed_gets_alone(name):
    task = short(name, steps=4)
    datas = [task.data(s) for s in SEEDS]
    indices = [minibatch_indices(task, d, s) for d, s in zip(datas, SEEDS)]
    stacked_data, stacked_index = _stack(datas), torch.stack(indices)
    for step in range(task.steps):
        together = torch.func.vmap(task.sample)(stacked_data, stacked_index[:, step])
        for i, seed in enumerate(SEEDS):
            alone = task.sample(task.data(seed), minibatch_indices(task, task.data(seed), seed)[step])
            assert together.keys() == alone.keys()
            assert all(torch.equal(together[k][i], alone[k]) for k in alone)


@pytest.mark.parametrize("name", ["mlp", "lora", "deep_linear", "synthetic_lm"])
def test_vmapped_streaming_seeds_train_as_they_do_alone(name):
    """Seeds stacked (and rates x seeds, as tuning trains them) see each seed's own batches."""
    task, spec = short(name, steps=5), parse_optimizer("AdamW")
    together = train(task, spec, 1e-2, SEEDS, batched=True)
    grid = train_grid(task, spec, (1e-3, 1e-2), SEEDS, batched=True)
    for seed, result in zip(SEEDS, together):
        (alone,) = train(task, spec, 1e-2, (seed,), batched=False)
        assert result.curve == pytest.approx(alone.curve, rel=1e-4, abs=1e-6)
        (in_grid,) = [r for r in grid[1e-2] if r.seed == seed]
        assert in_grid.curve == pytest.approx(alone.curve, rel=1e-4, abs=1e-6)


def test_a_pool_too_small_for_the_run_is_a_clear_error():
    task = dataclasses.replace(TASKS["lora"], pool=100)
    with pytest.raises(PoolTooSmallError, match=r"200 steps x batch 64 need 12800 examples .* pool holds 100"):
        minibatch_indices(task, task.data(0), 0)
    with pytest.raises(PoolTooSmallError, match="pool holds 100"):
        train(task, parse_optimizer("AdamW"), 1e-3, (0,))
    assert minibatch_indices(dataclasses.replace(task, steps=1), task.data(0), 0).shape == (1, 64)
    with pytest.raises(ValueError, match="needs a batch size"):
        minibatch_indices(dataclasses.replace(task, batch_size=None), task.data(0), 0)


EXPECTED_SHAPES = {
    "lora": {"A0": (8, 32), "B0": (64, 8), "A1": (8, 64), "B1": (32, 8)},
    "deep_linear": {"W0": (32, 32), "W1": (32, 32), "W2": (32, 32)},
    "gratings_cnn": {"conv1": (8, 1, 3, 3), "conv2": (16, 8, 3, 3), "W": (6, 256)},
    "synthetic_lm": {"embed": (16, 32), "qkv0": (96, 32), "head": (16, 32)},
    "mlp": {"W0": (64, 64), "W2": (10, 64)},
    "cnn": {"conv1": (8, 1, 3, 3), "W": (10, 256)},
    "char_lm": {"qkv1": (144, 48), "pos": (32, 48)},
}


def _adamw_steps(task, params, data, seed, steps, lr):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=lr)
    index = minibatch_indices(task, data, seed)
    for step in range(steps):
        optimizer.zero_grad()
        task.loss(params, task.sample(data, index[step])).backward()
        optimizer.step()
    return {k: v.detach() for k, v in params.items()}


@pytest.mark.parametrize("name", NEW_TASKS)
def test_new_tasks_have_their_shapes_and_a_few_adamw_steps_lower_the_loss(name):
    task = short(name, steps=20)
    data, params = task.data(0), task.init(0)
    for key, shape in EXPECTED_SHAPES[name].items():
        assert params[key].shape == shape
    batch = task.sample(data, minibatch_indices(task, data, 0)[0])
    assert task.loss(params, batch).shape == ()
    before = task.train_loss(params, data).item()
    after = task.train_loss(_adamw_steps(task, params, data, 0, task.steps, lr=1e-2), data).item()
    assert math.isfinite(after) and after < 0.95 * before
    assert task.eval_loss(params, data).item() == pytest.approx(before)  # a stream's eval is its training objective


def test_lora_trains_its_factors_and_leaves_the_base_frozen():
    task = short("lora", steps=20)
    data, params = task.data(0), task.init(0)
    assert set(params) == {"A0", "B0", "A1", "B1"}  # the base is data, not a parameter
    assert all(not params[f"B{i}"].any() for i in (0, 1))  # B = 0: training starts at the base network
    base = {k: v.clone() for k, v in data.items() if k.startswith(("base", "bias"))}
    trained = _adamw_steps(task, params, data, 0, task.steps, lr=1e-2)
    assert all(torch.equal(data[k], v) for k, v in base.items())  # the base did not move
    for i in (0, 1):
        assert trained[f"B{i}"].abs().max() > 0 and not torch.equal(trained[f"A{i}"], params[f"A{i}"])
        change = trained[f"B{i}"] @ trained[f"A{i}"]
        assert torch.linalg.matrix_rank(change) <= task.rank  # the learned change is low-rank
    # Muon-style optimizers see the factors as matrices (none routed to AdamW).
    optimizer = parse_optimizer("Muon").make({k: torch.nn.Parameter(v) for k, v in params.items()},
                                             task.adamw_params, 0.02, 1e-3, batch_dims=0)
    assert all(g.get("route") != "adamw" for g in optimizer.param_groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 4
