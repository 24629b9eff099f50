"""discovered.SOAP against nikhilvyas/SOAP @ a1e5535 (soap.py), re-implemented here.

ReferenceSOAP below is an independent, loop-by-loop transcription of
upstream's step (it imports nothing from discovered.soap): m and v kept in the
parameter's shape, m rotated out of the eigenbasis and back in at every step
as upstream's update_preconditioner does, Rayleigh quotients as
diag(Q^T F Q), modes rotated by moving each dimension last and multiplying.
It runs in the parameter's dtype (upstream can only run in torch's default
dtype; see the SOAP docstring).

Round-off in a degenerate eigenspace: a factor is rank-deficient for its
first steps (rank one after one step of a 1-D tensor, rank 3 of 5 for a 5x3
matrix), and the basis eigh returns for its null space is decided by
round-off, so two implementations that build the factor, or rank the refreshed
basis, with different floating-point operations part ways there on some
machines (LAPACK builds differ) and not on others. The reference therefore
builds factors, Rayleigh quotients and power iterations with upstream's own
operations, as discovered.SOAP does, and `same_bases` asserts at every step
that both hold bit-identical eigenbases: identical inputs to the same
deterministic kernels, on any machine. The tolerances then only cover the
rotations of m and v, which are written differently here on purpose.

Set SOAP_UPSTREAM=/path/to/soap.py to also compare against upstream's own file
(float32; nothing is downloaded).
"""

from __future__ import annotations

import importlib.util
import io
import math
import os

import pytest
import torch

from discovered import SOAP


class ReferenceSOAP:
    """Upstream's semantics, one parameter and one dimension at a time."""

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.shampoo_beta = shampoo_beta if shampoo_beta >= 0 else betas[1]
        self.frequency, self.max_dim = precondition_frequency, max_precond_dim
        self.merge, self.precondition_1d, self.normalize = merge_dims, precondition_1d, normalize_grads
        self.channels_last, self.correct_bias = data_format == "channels_last", correct_bias
        self.state = {}

    # -- the tensor the factors describe (upstream's merge_dims) --------------
    def merged(self, x):
        if not self.merge:
            return x
        if self.channels_last and x.dim() == 4:
            x = x.permute(0, 3, 1, 2)
        shape, current = [], 1
        for n in x.shape:
            if current * n > self.max_dim:
                if current > 1:
                    shape.append(current)
                    current = n
                else:
                    shape.append(n)
                    current = 1
            else:
                current = current * n
        if current > 1 or len(shape) == 0:
            shape.append(current)
        return x.reshape(shape)

    def unmerged(self, x, shape):
        if not self.merge:
            return x
        if self.channels_last and len(shape) == 4:
            return x.reshape(shape[0], shape[3], shape[1], shape[2]).permute(0, 2, 3, 1)
        return x.reshape(shape)

    # -- rotations: dimension k times Q_k^T (into the basis) or Q_k (back) ----
    def rotate(self, x, bases, back):
        shape = x.shape
        x = self.merged(x)
        for k, Q in enumerate(bases):
            if Q is not None:
                moved = x.movedim(k, -1)
                moved = moved @ (Q.T if back else Q)
                x = moved.movedim(-1, k)
        return self.unmerged(x, shape)

    def gram(self, x, k):
        # upstream's own operations (an outer product in 1-D, tensordot otherwise): see the module docstring
        if x.dim() == 1:
            return x.unsqueeze(1) @ x.unsqueeze(0)
        others = [d for d in range(x.dim()) if d != k]
        return torch.tensordot(x, x, dims=[others] * 2)

    def eigenbasis(self, factor):
        eye = torch.eye(factor.shape[0], dtype=factor.dtype)
        _, vectors = torch.linalg.eigh(factor + 1e-30 * eye)
        return torch.flip(vectors, [1])

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        for p in self.params:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state.setdefault(p, {})
            view = self.merged(grad)
            if "Q" not in state:
                state["step"] = 0
                state["m"] = torch.zeros_like(grad)
                state["v"] = torch.zeros_like(grad)
                factors = []
                for k, n in enumerate(view.shape):
                    wanted = self.precondition_1d if grad.dim() == 1 else True
                    factors.append(torch.zeros(n, n, dtype=grad.dtype) if wanted and n <= self.max_dim else None)
                state["GG"] = factors
                for k in range(len(factors)):
                    if factors[k] is not None:
                        factors[k].lerp_(self.gram(view, k), 1 - self.shampoo_beta)
                state["Q"] = [None if f is None else self.eigenbasis(f) for f in factors]
                continue  # the first step does not move the parameter

            grad_rotated = self.rotate(grad, state["Q"], back=False)
            state["step"] += 1
            state["m"].mul_(beta1).add_(grad_rotated, alpha=1 - beta1)
            state["v"].mul_(beta2).add_(grad_rotated.square(), alpha=1 - beta2)
            direction = self.rotate(state["m"] / (state["v"].sqrt() + self.eps), state["Q"], back=True)
            if self.normalize:
                direction = direction / (1e-30 + torch.mean(direction**2) ** 0.5)
            step_size = self.lr
            if self.correct_bias:
                step_size = self.lr * (1 - beta2 ** state["step"]) ** 0.5 / (1 - beta1 ** state["step"])
            p.add_(direction, alpha=-step_size)
            if self.weight_decay > 0:
                p.add_(p, alpha=-self.lr * self.weight_decay)

            # upstream's update_preconditioner: m out of the basis, factors, refresh, m back in
            m = self.rotate(state["m"], state["Q"], back=True)
            for k, factor in enumerate(state["GG"]):
                if factor is not None:
                    factor.lerp_(self.gram(view, k), 1 - self.shampoo_beta)
            if state["step"] % self.frequency == 0:
                v = self.merged(state["v"])
                for k, (factor, Q) in enumerate(zip(state["GG"], state["Q"])):
                    if factor is None:
                        continue
                    estimates = torch.diag(Q.T @ factor @ Q)
                    order = torch.argsort(estimates, descending=True)
                    v = v.index_select(k, order)
                    state["Q"][k] = torch.linalg.qr(factor @ Q[:, order]).Q
                state["v"] = self.unmerged(v, grad.shape)
            state["m"] = self.rotate(m, state["Q"], back=False)


SHAPES = [(5, 3), (3, 5), (4,), (2, 3, 2, 2)]


def random_run(shapes, steps, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]
    return start, grads


def same_bases(opt, ref, ours, theirs, step):
    """discovered.SOAP's eigenbases are ReferenceSOAP's, bit for bit (see the module docstring)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        for k, (q, q_ref) in enumerate(zip(opt.state[a]["Q"], ref.state[b]["Q"])):
            assert (q is None) == (q_ref is None), f"param {i}, dimension {k}: factored in one only"
            assert q is None or torch.equal(q, q_ref), (
                f"param {i}, dimension {k}, step {step}: the eigenbases differ; the factor, Rayleigh quotient "
                "or power iteration no longer uses upstream's operations")


def compare(make_ours, make_reference, start, grads, rtol, atol, check=None):
    ours = [torch.nn.Parameter(x.clone()) for x in start]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    opt, ref = make_ours(ours), make_reference(theirs)
    for step, step_grads in enumerate(grads):
        for a, b, grad in zip(ours, theirs, step_grads):
            a.grad, b.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
        if check is not None:
            check(opt, ref, ours, theirs, step)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol,
                                       msg=lambda m, i=i, step=step: f"param {i} ({start[i].shape}), step {step}: {m}")
    return ours, theirs


CONFIGS = {
    "f1": {"precondition_frequency": 1},
    "f3": {"precondition_frequency": 3},
    "f1-1d": {"precondition_frequency": 1, "precondition_1d": True},
    "f3-1d": {"precondition_frequency": 3, "precondition_1d": True},
    "f3-merge": {"precondition_frequency": 3, "merge_dims": True, "max_precond_dim": 6},
    "f1-merge-channels-last": {"precondition_frequency": 1, "merge_dims": True, "max_precond_dim": 6,
                               "data_format": "channels_last"},
    "f3-skip-5": {"precondition_frequency": 3, "max_precond_dim": 4, "precondition_1d": True},
    "f1-merge-skip": {"precondition_frequency": 1, "merge_dims": True, "max_precond_dim": 4},
    "f3-normalize-no-bias-correction": {"precondition_frequency": 3, "normalize_grads": True,
                                        "correct_bias": False, "shampoo_beta": 0.5},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_the_reference_on_random_data(name, dtype):
    kwargs = {"lr": 1e-2, "weight_decay": 0.05, **CONFIGS[name]}
    start, grads = random_run(SHAPES, 25, dtype)
    tolerance = {"rtol": 2e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    ours, _ = compare(lambda ps: SOAP(ps, **kwargs), lambda ps: ReferenceSOAP(ps, **kwargs), start, grads,
                      check=same_bases, **tolerance)
    assert all(not torch.equal(p, x) for p, x in zip(ours, start))


DYADIC = {"lr": 2, "betas": (0.75, 0.75), "shampoo_beta": 0.5, "eps": 1e-15, "weight_decay": 0.125,
          "precondition_frequency": 1}


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (3, 5), (10, 10), (15, 31), (2, 3, 2, 2)])
def test_dyadic_recipe(shape, correct_bias):
    """spec 8(b).18 / NV's recipe: integer data, lr 2, betas 0.75, 7 steps, atol = rtol = 1e-5."""
    g = torch.Generator().manual_seed(17)
    start = [torch.randint(-2, 3, shape, generator=g).double()]
    grads = [[torch.randint(-2, 3, shape, generator=g).double()] for _ in range(7)]
    kwargs = {**DYADIC, "correct_bias": correct_bias}
    compare(lambda ps: SOAP(ps, **kwargs), lambda ps: ReferenceSOAP(ps, **kwargs), start, grads, rtol=1e-5, atol=1e-5,
            check=same_bases)


@pytest.mark.skipif(not os.environ.get("SOAP_UPSTREAM"), reason="set SOAP_UPSTREAM to a copy of upstream's soap.py")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_upstream_file(name):
    spec = importlib.util.spec_from_file_location("upstream_soap", os.environ["SOAP_UPSTREAM"])
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    kwargs = {"lr": 1e-2, "weight_decay": 0.05, **CONFIGS[name]}
    start, grads = random_run(SHAPES, 25, torch.float32)
    compare(lambda ps: SOAP(ps, **kwargs), lambda ps: upstream.SOAP(ps, **kwargs), start, grads, rtol=2e-5, atol=2e-6)


def test_first_step_only_builds_the_preconditioner():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 3, generator=g, dtype=torch.float64))
    start = p.detach().clone()
    opt = SOAP([p], lr=1.0, weight_decay=0.5, shampoo_beta=0.75)
    p.grad = torch.randn(5, 3, generator=g, dtype=torch.float64)
    opt.step()
    assert torch.equal(p, start), "no update and no decay on the first step"
    state = opt.state[p]
    assert state["step"] == 0
    L, R = state["GG"]
    torch.testing.assert_close(L, 0.25 * p.grad @ p.grad.T)
    torch.testing.assert_close(R, 0.25 * p.grad.T @ p.grad)
    for factor, Q in zip(state["GG"], state["Q"]):
        torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[0], dtype=Q.dtype))
        rayleigh = torch.diag(Q.T @ factor @ Q)
        assert torch.all(rayleigh[:-1] >= rayleigh[1:] - 1e-12), "eigenvectors sorted largest first"
    opt.step()
    assert not torch.equal(p, start)
    assert state["step"] == 1


@pytest.mark.parametrize("shape", [(4,), (5, 3)])
def test_weight_decay_is_applied_after_the_update(shape):
    """W <- (W - s N)(1 - lr wd), not W (1 - lr wd) - s N."""
    g = torch.Generator().manual_seed(1)
    start = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2)]
    lr, wd = 0.5, 0.5

    def two_steps(weight_decay):
        p = torch.nn.Parameter(start.clone())
        opt = SOAP([p], lr=lr, weight_decay=weight_decay)
        for grad in grads:
            p.grad = grad
            opt.step()
        return p.detach()

    decayed, plain = two_steps(wd), two_steps(0.0)
    torch.testing.assert_close(decayed, plain * (1 - lr * wd), rtol=1e-12, atol=1e-12)
    if len(shape) == 1:  # no factor: Adam at t = 1, so s N = lr g / (|g| + eps / sqrt(1 - b2))
        expected = (start - lr * grads[1] / (grads[1].abs() + 1e-8 / math.sqrt(0.05))) * (1 - lr * wd)
        torch.testing.assert_close(decayed, expected, rtol=1e-12, atol=1e-12)


def test_negative_shampoo_beta_means_beta2():
    start, grads = random_run([(5, 3)], 8, torch.float64)
    results = []
    for shampoo_beta in (-1, 0.8):
        p = torch.nn.Parameter(start[0].clone())
        opt = SOAP([p], betas=(0.9, 0.8), shampoo_beta=shampoo_beta, precondition_frequency=2)
        for (grad,) in grads:
            p.grad = grad
            opt.step()
        results.append(p.detach())
    assert torch.equal(*results)
    p = torch.nn.Parameter(start[0].clone())
    opt = SOAP([p], betas=(0.9, 0.8), shampoo_beta=0.5, precondition_frequency=2)
    for (grad,) in grads:
        p.grad = grad
        opt.step()
    assert not torch.allclose(p, results[0])


def test_data_format_only_matters_with_merge_dims():
    start, grads = random_run([(3, 2, 2, 4)], 6, torch.float64)
    runs = {}
    for merge in (False, True):
        for data_format in ("channels_first", "channels_last"):
            p = torch.nn.Parameter(start[0].clone())
            opt = SOAP([p], merge_dims=merge, data_format=data_format, max_precond_dim=8, precondition_frequency=2)
            for (grad,) in grads:
                p.grad = grad
                opt.step()
            runs[merge, data_format] = p.detach()
    assert torch.equal(runs[False, "channels_first"], runs[False, "channels_last"])
    assert not torch.allclose(runs[True, "channels_first"], runs[True, "channels_last"])


def make_groups(params):
    return [{"params": params[:2]}, {"params": params[2:], "merge_dims": True, "max_precond_dim": 6, "lr": 3e-3}]


def test_state_dict_round_trip_mid_run_continues_identically():
    start, grads = random_run(SHAPES, 16, torch.float32)

    def run(params, opt, step_grads):
        for gs in step_grads:
            for p, grad in zip(params, gs):
                p.grad = grad.clone()
            opt.step()

    reference = [torch.nn.Parameter(x.clone()) for x in start]
    run(reference, SOAP(make_groups(reference), lr=1e-2, precondition_frequency=3), grads)

    params = [torch.nn.Parameter(x.clone()) for x in start]
    opt = SOAP(make_groups(params), lr=1e-2, precondition_frequency=3)
    run(params, opt, grads[:8])  # 7 moving steps: between two refreshes
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
    # Different hyperparameters at construction: everything must come from the checkpoint.
    opt = SOAP(make_groups(resumed), lr=0.5, precondition_frequency=7)
    opt.load_state_dict(saved["optimizer"])
    assert opt.param_groups[0]["precondition_frequency"] == 3
    run(resumed, opt, grads[8:])
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


def test_lr_scheduler_drives_the_step():
    start, grads = random_run(SHAPES, 8, torch.float64)
    lrs = [0.1, 0.1, 0.05, 0.02, 0.01, 0.0, 0.0, 0.0]

    scheduled = [torch.nn.Parameter(x.clone()) for x in start]
    opt = SOAP(scheduled, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lrs[min(step, 7)] / 0.1)
    manual = [torch.nn.Parameter(x.clone()) for x in start]
    manual_opt = SOAP(manual, lr=0.1)
    for step, step_grads in enumerate(grads):
        before = [p.detach().clone() for p in scheduled]
        for p, q, grad in zip(scheduled, manual, step_grads):
            p.grad, q.grad = grad, grad
        opt.step()
        scheduler.step()
        for group in manual_opt.param_groups:
            group["lr"] = lrs[step]
        manual_opt.step()
        moved = any(not torch.equal(a, b) for a, b in zip(before, scheduled))
        assert moved == (0 < step < 5), step  # step 0 builds the preconditioner; lr is 0 from step 5
        for a, b in zip(scheduled, manual):
            assert torch.equal(a, b)


def test_closure_runs_with_grad_enabled():
    model = torch.nn.Linear(4, 2)
    opt = SOAP(model.parameters(), lr=1e-2)
    x = torch.randn(8, 4)

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(3)]
    assert losses[2] < losses[0]


def test_bfloat16_parameters_train():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.bfloat16))
    target = torch.randn(6, 4, dtype=torch.bfloat16)
    opt = SOAP([p], lr=0.2, precondition_frequency=2)
    first = None
    for _ in range(20):
        p.grad = (p - target).detach()
        loss = (p - target).float().square().mean().item()
        first = first if first is not None else loss
        opt.step()
    assert torch.isfinite(p).all() and loss < 0.5 * first
    state = opt.state[p]
    assert state["exp_avg"].dtype == torch.bfloat16 and state["Q"][0].dtype == torch.bfloat16


def test_invalid_hyperparameters_are_refused():
    p = [torch.nn.Parameter(torch.zeros(3, 3))]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"betas": (1.0, 0.9)}, "Invalid beta parameter at index 0"),
        ({"shampoo_beta": 1.5}, "Invalid shampoo_beta"),
        ({"eps": -1.0}, "Invalid eps"),
        ({"weight_decay": -0.1}, "Invalid weight_decay"),
        ({"precondition_frequency": 0}, "Invalid precondition_frequency"),
        ({"precondition_frequency": 2.5}, "Invalid precondition_frequency"),
        ({"max_precond_dim": -3}, "Invalid max_precond_dim"),
        ({"precondition_1d": 1}, "Invalid precondition_1d"),
        ({"normalize_grads": None}, "Invalid normalize_grads"),
        ({"correct_bias": "no"}, "Invalid correct_bias"),
        ({"data_format": "NCHW"}, "Invalid data_format"),
    ]:
        with pytest.raises(ValueError, match=match):
            SOAP(p, **kwargs)
    opt = SOAP(p)
    with pytest.raises(ValueError, match="Invalid data_format"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "data_format": "NHWC"})
    assert len(opt.param_groups) == 1

