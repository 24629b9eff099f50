"""The torch.optim contract, checked for every optimizer in the discovered registry."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from discovered import REGISTRY
from helpers import train_quadratic_mlp

INFOS = list(REGISTRY.values())
IDS = [info.name for info in INFOS]


def make_model(seed: int = 0) -> torch.nn.Module:
    """Matrices, a conv kernel (4-D), biases and a gain: every routing case."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 8),
        torch.nn.LayerNorm(8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 1),
    )


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 1, 6, 6, generator=g)
    return x, x.mean(dim=(1, 2, 3)).unsqueeze(1).sin()


def loss_fn(model, step):
    x, y = batch(step)
    return torch.mean((model(x) - y) ** 2)


def run(model, optimizer, steps, start=0):
    for step in range(start, start + steps):
        optimizer.zero_grad()
        loss_fn(model, step).backward()
        optimizer.step()


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_state_dict_round_trip_is_bit_exact(info):
    reference = make_model()
    opt = info.make(reference.parameters())
    run(reference, opt, 100)

    model = make_model()
    opt = info.make(model.parameters())
    run(model, opt, 50)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = make_model(seed=1)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt = info.make(resumed.parameters())
    opt.load_state_dict(saved["optimizer"])
    run(resumed, opt, 50, start=50)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_closure_runs_with_grad_and_returns_the_loss(info):
    model = make_model()
    opt = info.make(model.parameters())

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = loss_fn(model, 0)
        loss.backward()
        return loss

    before = [p.clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    opt.step(closure)  # SOAP's first step only builds its preconditioner; by the second, every optimizer moved
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_param_groups_keep_their_own_settings(info):
    model = make_model()
    frozen, trained = list(model[0].parameters()), list(model[2].parameters())
    opt = info.make([{"params": frozen, "lr": 0.0, "adamw_lr": 0.0}, {"params": trained}])
    assert opt.param_groups[1]["lr"] == info.kwargs["lr"]
    before = [p.clone() for p in frozen + trained]
    run(model, opt, 3)
    assert all(torch.equal(a, b) for a, b in zip(before[: len(frozen)], frozen))
    assert all(not torch.equal(a, b) for a, b in zip(before[len(frozen):], trained))


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_parameters_without_grad_are_skipped(info):
    model = make_model()
    opt = info.make(model.parameters())
    loss_fn(model, 0).backward()
    skipped = model[2].weight
    skipped.grad = None
    before = skipped.clone()
    opt.step()
    assert torch.equal(skipped, before)
    assert len(opt.state[skipped]) == 0


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_gradients_are_never_written_into(info):
    model = make_model()
    opt = info.make(model.parameters())
    loss_fn(model, 0).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    opt.step()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_sparse_gradients_are_refused(info):
    embedding = torch.nn.Embedding(10, 4, sparse=True)
    opt = info.make(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_invalid_hyperparameters_raise_value_error(info):
    assert info.error_inputs, "every optimizer lists the bad inputs it refuses"
    for error in info.error_inputs:
        with pytest.raises(error.error, match=error.match):
            info.make([torch.nn.Parameter(torch.zeros(3, 3))], **error.kwargs)
    # A bad group added later is refused too, and the optimizer stays as it was.
    opt = info.make([torch.nn.Parameter(torch.zeros(3, 3))])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_lr_schedulers_drive_the_step(info):
    model = make_model()
    opt = info.make(model.parameters(), **({"adamw_lr": 0.0} if info.matrix else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 if step < 2 else 0.0)
    run(model, opt, 1)
    scheduler.step()
    run(model, opt, 1)
    scheduler.step()  # lr is now 0: nothing may move any more
    assert opt.param_groups[0]["lr"] == 0.0
    before = copy.deepcopy(model.state_dict())
    run(model, opt, 2)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_zero_gradients_give_no_nan(info):
    model = make_model()
    opt = info.make(model.parameters())
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for state in opt.state.values():
        assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_loss_falls_on_a_small_problem(info):
    first, last = train_quadratic_mlp(info.make, steps=200)
    assert last < 0.3 * first, (first, last)


@pytest.mark.parametrize("info", [i for i in INFOS if i.matrix], ids=[i.name for i in INFOS if i.matrix])
def test_batch_dims_update_each_copy_as_if_alone(info):
    """Stacked copies (vmapped seeds) with batch_dims=1 equal separate optimizers."""
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (4, 3, 2, 2), (5,)]
    copies = [[torch.randn(s, generator=g) for s in shapes] for _ in range(3)]
    grads = [[[torch.randn(s, generator=g) for s in shapes] for _ in range(3)] for _ in range(4)]

    separate = [[torch.nn.Parameter(p.clone()) for p in params] for params in copies]
    optimizers = [info.make(params) for params in separate]
    stacked = [torch.nn.Parameter(torch.stack([c[i] for c in copies])) for i in range(len(shapes))]
    stacked_opt = info.make(stacked, batch_dims=1)
    for step_grads in grads:
        for params, opt, gs in zip(separate, optimizers, step_grads):
            for p, gr in zip(params, gs):
                p.grad = gr
            opt.step()
        for i, p in enumerate(stacked):
            p.grad = torch.stack([gs[i] for gs in step_grads])
        stacked_opt.step()
    for i, p in enumerate(stacked):
        for c in range(3):
            torch.testing.assert_close(p[c], separate[c][i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("info", [i for i in INFOS if i.matrix], ids=[i.name for i in INFOS if i.matrix])
def test_routing(info):
    matrix, vector = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    opt = info.make([{"params": [matrix, vector]}])
    matrix.grad, vector.grad = torch.randn(4, 3), torch.randn(3)
    opt.step()
    assert "exp_avg_sq" in opt.state[vector] and "exp_avg_sq" not in opt.state[matrix]

    opt = info.make([{"params": [matrix, vector], "route": "adamw"}])
    opt.step()
    assert "exp_avg_sq" in opt.state[vector] and "exp_avg_sq" in opt.state[matrix]

    opt = info.make([{"params": [matrix, vector], "route": "rule"}], lr=0.1, **info.no_momentum)
    before = vector.clone()
    opt.step()
    # A vector under the rule is diag(x): polar factors and Kronecker roots act
    # elementwise, and move each coordinate against its gradient.
    assert "exp_avg_sq" not in opt.state[vector]
    assert torch.equal(torch.sign(before - vector), torch.sign(vector.grad))


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_unknown_keywords_raise_type_error(info):
    """As torch.optim does: a misspelt or foreign keyword (weight_decay to a rule without decay) is no silent no-op."""
    for keyword in ("no_such_keyword", "weight_dacay"):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'"):
            info.make([torch.nn.Parameter(torch.zeros(3, 3))], **{keyword: 0.1})
