"""Our Lion, Muon and PolarGrad against the published implementations and their identities."""

from __future__ import annotations

import lion_pytorch  # a dev dependency (pyproject's dev extra): the outside oracle for Lion
import pytest
import torch

from discovered import Lion, Muon, PolarGrad
from primitives.polar import MUON_COEFFICIENTS, POLARGRAD_NS_COEFFICIENTS, newton_schulz, polar_svd


def random_problem(shapes, steps, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def run_side_by_side(make_a, make_b, init, grads):
    a = [torch.nn.Parameter(p.clone()) for p in init]
    b = [torch.nn.Parameter(p.clone()) for p in init]
    opt_a, opt_b = make_a(a), make_b(b)
    for step_grads in grads:
        for p, q, g in zip(a, b, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    return a, b, opt_a, opt_b


# --- Lion --------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.95, 0.98)])
def test_lion_equals_lion_pytorch(weight_decay, betas):
    init, grads = random_problem([(7,), (16, 32), (3, 8, 5)], steps=100)
    ours, theirs, _, _ = run_side_by_side(
        lambda p: Lion(p, lr=1e-3, betas=betas, weight_decay=weight_decay),
        lambda p: lion_pytorch.Lion(p, lr=1e-3, betas=betas, weight_decay=weight_decay),
        init, grads,
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_lion_with_zero_betas_is_sign_descent():
    init, grads = random_problem([(5, 4)], steps=3)
    params = [torch.nn.Parameter(init[0].clone())]
    opt = Lion(params, lr=0.1, betas=(0.0, 0.0))
    expected = init[0].clone()
    for (g,) in grads:
        params[0].grad = g
        opt.step()
        expected -= 0.1 * torch.sign(g)
    torch.testing.assert_close(params[0].data, expected)


def test_lion_decays_the_old_weights():
    """theta <- (1 - lr wd) theta - lr sign(c): with a zero gradient only the decay acts."""
    p = torch.nn.Parameter(torch.full((3,), 2.0))
    opt = Lion([p], lr=0.5, weight_decay=0.1)
    p.grad = torch.zeros(3)
    opt.step()
    torch.testing.assert_close(p.data, torch.full((3,), 2.0 * (1 - 0.05)))


# --- Muon --------------------------------------------------------------------


def kj_single_device_muon_step(params, bufs, lr, momentum, weight_decay):
    """KellerJordan/Muon @857d1ad SingleDeviceMuon.step, from the spec (section 3.1).

    Test fixture only: it writes the Nesterov mix into p.grad and multiplies the
    bf16 direction by the shape factor, as KJ does.
    """
    for p, buf in zip(params, bufs):
        buf.lerp_(p.grad, 1 - momentum)
        update = p.grad.lerp_(buf, momentum)
        if update.ndim == 4:
            update = update.view(len(update), -1)
        X = update.bfloat16()
        if update.size(-2) > update.size(-1):
            X = X.mT
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        a, b, c = 3.4445, -4.7750, 2.0315
        for _ in range(5):
            A = X @ X.mT
            B = b * A + c * A @ A
            X = a * X + B @ X
        if update.size(-2) > update.size(-1):
            X = X.mT
        X *= max(1, update.size(-2) / update.size(-1)) ** 0.5
        p.mul_(1 - lr * weight_decay)
        p.add_(X.reshape(p.shape), alpha=-lr)


def test_muon_equals_keller_jordans_single_device_muon():
    shapes = [(64, 32), (32, 64), (48, 48), (16, 8, 3, 3)]
    init, grads = random_problem(shapes, steps=50)
    ours = [torch.nn.Parameter(p.clone()) for p in init]
    opt = Muon(ours, lr=0.02, weight_decay=0.01)
    theirs = [p.clone() for p in init]
    bufs = [torch.zeros_like(p) for p in init]
    for step_grads in grads:
        for p, q, g in zip(ours, theirs, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        with torch.no_grad():
            kj_single_device_muon_step(theirs, bufs, 0.02, 0.95, 0.01)
    for p, q, buf, start in zip(ours, theirs, bufs, init):
        assert torch.equal(opt.state[p]["momentum_buffer"], buf)  # fp32 lerp: bit-exact
        if p.shape[0] <= p[0].numel():  # wide or square: shape factor 1, same ops
            assert torch.equal(p.data, q)
        else:  # tall: KJ rounds sqrt(2) * O to bf16, ours folds it into the fp32 step
            assert (p.data - q).norm() / (q - start).norm() < 1e-3


def _torch_muon_with_our_newton_schulz(monkeypatch):
    import torch.optim._muon as torch_muon

    monkeypatch.setattr(
        torch_muon, "_zeropower_via_newtonschulz",
        lambda grad, coefficients, steps, eps: newton_schulz(grad, coefficients, steps),
    )


def test_muon_conventions_equal_torch_optim_muon(monkeypatch):
    """Momentum, Nesterov, shape factor and decay: bit-exact once both use the same NS kernel.

    torch.optim.Muon evaluates its quintic with fused addmm in bf16; that op
    order alone moves results by bf16 round-off (checked separately below).
    """
    init, grads = random_problem([(64, 32), (32, 64), (48, 48)], steps=20)
    _torch_muon_with_our_newton_schulz(monkeypatch)
    ours, theirs, _, _ = run_side_by_side(
        lambda p: Muon(p, lr=0.02, weight_decay=0.1),
        lambda p: torch.optim.Muon(p, lr=0.02, weight_decay=0.1),
        init, grads,
    )
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_muon_tracks_torch_optim_muon_within_bf16_round_off():
    init, grads = random_problem([(64, 32), (32, 64), (48, 48)], steps=20)
    ours, theirs, opt_a, opt_b = run_side_by_side(
        lambda p: Muon(p, lr=0.02, weight_decay=0.1),
        lambda p: torch.optim.Muon(p, lr=0.02, weight_decay=0.1),
        init, grads,
    )
    for a, b, start in zip(ours, theirs, init):
        assert torch.equal(opt_a.state[a]["momentum_buffer"], opt_b.state[b]["momentum_buffer"])
        assert (a - b).norm() / (b - start).norm() < 2e-2


# --- PolarGrad ---------------------------------------------------------------


def test_polargrad_without_momentum_steps_by_the_nuclear_norm():
    """momentum 0 + exact polar: W <- W - lr ||G||_* polar(G) (spec identity 15)."""
    init, grads = random_problem([(12, 7)], steps=1, dtype=torch.float64)
    p = torch.nn.Parameter(init[0].clone())
    opt = PolarGrad([p], lr=0.01, momentum=0.0, method="svd")
    p.grad = grads[0][0]
    opt.step()
    G = grads[0][0]
    expected = init[0] - 0.01 * torch.linalg.matrix_norm(G, "nuc") * polar_svd(G)
    torch.testing.assert_close(p.data, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["qdwh", "ns", "polar_express", "svd"])
def test_polar_first_equals_momentum_first_without_momentum(method):
    init, grads = random_problem([(10, 6), (6, 10)], steps=5)
    a, b, _, _ = run_side_by_side(
        lambda p: PolarGrad(p, lr=0.01, momentum=0.0, method=method),
        lambda p: PolarGrad(p, lr=0.01, momentum=0.0, method=method, polar_first=True),
        init, grads,
    )
    for x, y, start in zip(a, b, init):
        if method in ("qdwh", "svd"):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
        else:  # momentum-first rounds nu * U to bf16 (as PolarGrad does); polar-first keeps fp32
            assert (x - y).norm() / (y - start).norm() < 1e-2


def test_polargrad_qdwh_converged_equals_exact_polar():
    init, grads = random_problem([(20, 8), (8, 20)], steps=10, dtype=torch.float64)
    a, b, _, _ = run_side_by_side(
        lambda p: PolarGrad(p, lr=0.01, momentum=0.9, method="qdwh", inner_steps=6),
        lambda p: PolarGrad(p, lr=0.01, momentum=0.9, method="svd"),
        init, grads,
    )
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)


# Newton-Schulz coefficients as upstream writes them, typed here (not imported):
# KellerJordan/Muon @857d1ad muon.py::zeropower_via_newtonschulz5 has
# a, b, c = (3.4445, -4.7750, 2.0315); timlautk/polargrad @79f3c6f
# polar_grad.py::PolarGrad.__init__ defaults to a=3.4445, b=-4.7750, c=2.031.
KJ_NS = (3.4445, -4.7750, 2.0315)
PG_NS = (3.4445, -4.7750, 2.031)


def literal_quintic(G, coefficients, steps, dtype):
    """KJ's / PolarGrad's eager Newton-Schulz: cast, transpose tall, X / (||X||_F + 1e-7), quintic."""
    a, b, c = coefficients
    X = G.to(dtype)
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def scalar_composite(sigma, coefficients, steps):
    """What the quintic does to one singular value of the normalised input (spec 1.4)."""
    a, b, c = coefficients
    for _ in range(steps):
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    return sigma


def diagonal(sigma, m, n):
    """An m x n float64 matrix with sigma on its diagonal: its polar factor is diagonal too."""
    G = torch.zeros(m, n, dtype=torch.float64)
    G[range(len(sigma)), range(len(sigma))] = torch.tensor(sigma, dtype=torch.float64)
    return G


SIGMA = [3.0, 2.1, 0.9, 0.15, 0.006]


def test_ns_coefficients_are_upstreams_literals():
    assert MUON_COEFFICIENTS == KJ_NS
    assert POLARGRAD_NS_COEFFICIENTS == PG_NS
    # The spec's computed table (section 1.4): KJ x 5 maps [1e-3, 1] into [0.4705, 1.2024].
    image = scalar_composite(torch.linspace(1e-3, 1, 200001, dtype=torch.float64), KJ_NS, 5)
    assert image.min().item() == pytest.approx(0.4705, abs=1e-4)
    assert image.max().item() == pytest.approx(1.2024, abs=1e-4)


@pytest.mark.parametrize("steps", [2, 5])
@pytest.mark.parametrize("shape", [(5, 5), (8, 5), (5, 8)], ids=["square", "tall", "wide"])
def test_polargrad_ns_maps_singular_values_by_polargrads_quintic(shape, steps):
    """float64 NS on diag(sigma): U = diag(phi(sigma / ||sigma||)) with c = 2.031, nu = sum sigma phi."""
    G = diagonal(SIGMA, *shape)
    p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    p.grad = G
    PolarGrad([p], lr=1.0, momentum=0.0, method="ns", inner_steps=steps, ns_dtype="float64").step()
    sigma = torch.tensor(SIGMA, dtype=torch.float64)
    phi = scalar_composite(sigma / (sigma.norm() + 1e-7), PG_NS, steps)
    expected = -torch.sum(sigma * phi) * diagonal(phi.tolist(), *shape)
    torch.testing.assert_close(p.data, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 5), (5, 8)], ids=["square", "wide"])
def test_muon_ns_maps_singular_values_by_keller_jordans_quintic(shape):
    """float64 NS on diag(sigma), momentum 0 (the Nesterov mix is G itself), shape factor 1."""
    p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    p.grad = diagonal(SIGMA, *shape)
    Muon([p], lr=1.0, momentum=0.0, ns_dtype="float64").step()
    sigma = torch.tensor(SIGMA, dtype=torch.float64)
    phi = scalar_composite(sigma / (sigma.norm() + 1e-7), KJ_NS, 5)
    torch.testing.assert_close(p.data, -diagonal(phi.tolist(), *shape), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 5), (5, 9)], ids=["tall", "wide"])
def test_polargrad_ns_is_polargrads_bf16_quintic_and_bf16_nuclear_estimate(shape):
    """Default precision: bf16 iteration with literal (a, b, c) and nu, nu * U rounded in bf16, as upstream."""
    init, grads = random_problem([shape], steps=1)
    p = torch.nn.Parameter(init[0].clone())
    opt = PolarGrad([p], lr=0.1, momentum=0.0, method="ns", inner_steps=5)
    G = grads[0][0]
    p.grad = G
    opt.step()
    U = literal_quintic(G, PG_NS, 5, torch.bfloat16)
    nu = torch.sum(G.to(U.dtype) * U)
    assert torch.equal(p.data, init[0].clone().add_(nu * U, alpha=-0.1))


def test_polargrad_momentum_first_keeps_an_ema_of_gradients():
    init, grads = random_problem([(6, 4)], steps=3)
    p = torch.nn.Parameter(init[0].clone())
    opt = PolarGrad([p], lr=0.0, momentum=0.9)
    ema = torch.zeros(6, 4)
    for (g,) in grads:
        p.grad = g
        opt.step()
        ema = 0.9 * ema + 0.1 * g
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], ema)
