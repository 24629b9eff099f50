"""The known programs, run by the interpreter, against torch.optim and discovered/."""

from __future__ import annotations

import pytest
import torch

from discovered import Lion, Muon, PolarGrad, ProgramOptimizer
from primitives import ExecutionOptions
from primitives.known import (
    ADAFACTOR,
    ADAMW,
    KNOWN_PROGRAMS,
    LION,
    MUON,
    POLARGRAD,
    POLARGRAD_POLAR_FIRST,
    RMSPROP,
    SGD,
    SGD_MOMENTUM,
    SGD_NESTEROV,
    SHAMPOO,
    SIGNSGD,
    SIGNUM,
)

SHAPES = [(6, 4), (3, 5), (7,), (2, 3, 2, 2)]


def run_both(make_a, make_b, steps=100, shapes=SHAPES, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    a = [torch.nn.Parameter(p.clone()) for p in init]
    b = [torch.nn.Parameter(p.clone()) for p in init]
    opt_a, opt_b = make_a(a), make_b(b)
    for _ in range(steps):
        grads = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt_a.step()
        opt_b.step()
    return a, b


def assert_params_close(a, b, atol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.data, y.data, rtol=0, atol=atol)


def everywhere(program, **kwargs):
    """The program on every parameter (matrices and vectors), as the reference class does."""
    return lambda params: ProgramOptimizer(params, program, route="rule", **kwargs)


@pytest.mark.parametrize("dtype,wd,atol", [
    (torch.float64, 0.01, 1e-10),
    (torch.float32, 0.0, 1e-6),
    # torch decays w *= 1 - lr wd before the step, the program folds wd w into
    # u: each order rounds w differently, one fp32 ulp of |w| per step.
    (torch.float32, 0.01, 1e-5),
])
def test_adamw_program_equals_torch_adamw(dtype, wd, atol):
    a, b = run_both(
        everywhere(ADAMW, lr=1e-2, constants={"wd": wd}),
        lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd),
        dtype=dtype,
    )
    assert_params_close(a, b, atol=atol)


@pytest.mark.parametrize("program,kwargs", [
    (SGD, {}), (SGD_MOMENTUM, {"momentum": 0.9}), (SGD_NESTEROV, {"momentum": 0.9, "nesterov": True}),
])
def test_sgd_programs_equal_torch_sgd(program, kwargs):
    a, b = run_both(everywhere(program, lr=1e-2), lambda p: torch.optim.SGD(p, lr=1e-2, **kwargs))
    assert_params_close(a, b, atol=1e-6)


def test_rmsprop_program_equals_torch_rmsprop():
    a, b = run_both(everywhere(RMSPROP, lr=1e-3), lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8))
    assert_params_close(a, b, atol=1e-6)


def test_adafactor_program_equals_torch_adafactor():
    """Conventions coincide when lr <= 1/sqrt(t) for every step (then rho_t = lr).

    torch factors the last two dims of a >2-D tensor; we factor the
    (out, in*kh*kw) view, so the comparison uses matrices and vectors.
    """
    a, b = run_both(
        everywhere(ADAFACTOR, lr=1e-2),
        lambda p: torch.optim.Adafactor(p, lr=1e-2),
        shapes=[(6, 4), (3, 5), (7,)],
    )
    assert_params_close(a, b, atol=1e-6)


@pytest.mark.parametrize("dtype,wd,atol", [(torch.float32, 0.0, 0.0), (torch.float64, 0.1, 1e-12)])
def test_lion_program_equals_lion_class(dtype, wd, atol):
    """Bit-exact without decay (same lerps, same sign); decay order differs by round-off only."""
    a, b = run_both(
        everywhere(LION, lr=1e-3, constants={"beta1": 0.9, "beta2": 0.99, "wd": wd}),
        lambda p: Lion(p, lr=1e-3, betas=(0.9, 0.99), weight_decay=wd),
        dtype=dtype,
    )
    assert_params_close(a, b, atol=atol)


def test_muon_program_equals_muon_class():
    options = ExecutionOptions(polar_backend="ns", polar_steps=5, polar_dtype="bfloat16")
    a, b = run_both(
        lambda p: ProgramOptimizer(p, MUON, lr=0.02, options=options, constants={"wd": 0.01}, adamw_lr=1e-3),
        lambda p: Muon(p, lr=0.02, weight_decay=0.01, adamw_lr=1e-3),
        steps=30,
    )
    assert_params_close(a, b, atol=1e-5)


@pytest.mark.parametrize("program,polar_first", [(POLARGRAD, False), (POLARGRAD_POLAR_FIRST, True)])
def test_polargrad_programs_equal_polargrad_class(program, polar_first):
    options = ExecutionOptions(polar_backend="qdwh", polar_steps=2)
    a, b = run_both(
        lambda p: ProgramOptimizer(p, program, lr=1e-3, options=options, constants={"beta": 0.9, "wd": 0.01}),
        lambda p: PolarGrad(p, lr=1e-3, momentum=0.9, polar_first=polar_first, weight_decay=0.01),
        steps=30,
    )
    assert_params_close(a, b, atol=1e-5)


def test_signsgd_and_signum_move_by_signs():
    a, b = run_both(everywhere(SIGNSGD, lr=0.1), everywhere(SIGNUM, lr=0.1, constants={"beta": 0.0}), steps=5)
    assert_params_close(a, b, atol=0)


def test_every_known_program_trains_a_small_model():
    from helpers import train_quadratic_mlp

    lrs = {"sgd": 0.1, "sgd_momentum": 0.05, "sgd_nesterov": 0.05, "signsgd": 3e-3, "signum": 3e-3, "rmsprop": 3e-3,
           "adamw": 1e-2, "adafactor": 3e-2, "lion": 3e-3, "muon": 0.05, "polargrad": 0.2,
           "polargrad_polar_first": 0.2, "shampoo": 0.3, "soap": 0.03, "one_sided_shampoo": 0.03,
           "shampoo_grafted": 0.03}
    assert set(lrs) == set(KNOWN_PROGRAMS)
    for name, program in KNOWN_PROGRAMS.items():
        first, last = train_quadratic_mlp(lambda p: ProgramOptimizer(p, program, lr=lrs[name], adamw_lr=0.03))
        assert last < 0.5 * first, (name, first, last)


def test_stacked_parameters_equal_one_at_a_time():
    """Same-shape parameters run as one batch; the result must not depend on it."""
    g = torch.Generator().manual_seed(3)
    shapes = [(5, 4)] * 3 + [(4,)] * 2
    init = [torch.randn(s, generator=g) for s in shapes]
    together = [torch.nn.Parameter(p.clone()) for p in init]
    alone = [[torch.nn.Parameter(p.clone())] for p in init]
    opt = ProgramOptimizer(together, SHAMPOO, lr=0.1, route="rule")
    opts = [ProgramOptimizer(p, SHAMPOO, lr=0.1, route="rule") for p in alone]
    for _ in range(5):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p, q, gr in zip(together, alone, grads):
            p.grad, q[0].grad = gr, gr.clone()
        opt.step()
        for o in opts:
            o.step()
    for p, q in zip(together, alone):
        torch.testing.assert_close(p.data, q[0].data, rtol=1e-5, atol=1e-6)


def test_auto_route_sends_vectors_to_adamw_only_for_matrix_programs():
    matrix, vector = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    for program, vector_rule in [(MUON, False), (LION, True)]:
        opt = ProgramOptimizer([matrix, vector], program)
        matrix.grad, vector.grad = torch.randn(4, 3), torch.randn(3)
        opt.step()
        assert ("exp_avg_sq" not in opt.state[vector]) == vector_rule, program.name


def test_program_optimizer_rejects_what_is_not_a_program():
    with pytest.raises(TypeError, match="must be a primitives.program.Program"):
        ProgramOptimizer([torch.nn.Parameter(torch.zeros(2))], "lion")


def test_one_sided_shampoo_without_moments_is_the_polar_factor_at_rms_0_2():
    """ASGO's identity: with beta1 = beta2 = 0, (G G^T)^(-1/2) G = U V^T, rescaled to RMS 0.2."""
    from primitives.interpreter import compile_program, trajectory
    from primitives.kinds import Layout
    from primitives.known import ONE_SIDED_SHAMPOO

    program = ONE_SIDED_SHAMPOO.with_constants(beta1=0.0, beta2=0.0, wd=0.0)  # eps 1e-10: G G^T is singular
    for shape in [(7, 4), (4, 7), (5, 5)]:
        g = torch.Generator().manual_seed(1)
        w = torch.randn(2, *shape, dtype=torch.float64, generator=g)
        grads = [torch.randn(2, *shape, dtype=torch.float64, generator=g) for _ in range(3)]
        updates = trajectory(compile_program(program, Layout.MATRIX), w, grads, 1e-2)
        for u, grad in zip(updates, grads):
            U, _, Vh = torch.linalg.svd(grad, full_matrices=False)
            polar = U @ Vh
            expected = 0.2 * polar / polar.square().mean(dim=(-2, -1), keepdim=True).sqrt()
            torch.testing.assert_close(u, expected, rtol=0, atol=1e-6)


def test_grafted_shampoo_steps_along_shampoo_at_the_length_of_adam():
    """Per parameter: u = ||adam|| / ||shampoo|| shampoo, shampoo = L^-1/4 M^ R^-1/4, adam = M^ / (sqrt(V^) + eps)."""
    from primitives.kronecker import kron_precondition
    from primitives.known import SHAMPOO_GRAFTED

    g = torch.Generator().manual_seed(2)
    param = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64, generator=g))
    opt = ProgramOptimizer([param], SHAMPOO_GRAFTED, lr=1e-2, route="rule")
    L, R = 1e-6 * torch.eye(6, dtype=torch.float64), 1e-6 * torch.eye(4, dtype=torch.float64)
    m, v = torch.zeros(6, 4, dtype=torch.float64), torch.zeros(6, 4, dtype=torch.float64)
    for t in range(1, 6):
        grad = torch.randn(6, 4, dtype=torch.float64, generator=g)
        L, R = L + grad @ grad.T, R + grad.T @ grad
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        shampoo = kron_precondition(L, m_hat, R, 4.0, 1e-12)
        adam = m_hat / (v_hat.sqrt() + 1e-8)
        expected = param.detach() - 1e-2 * adam.norm() / shampoo.norm() * shampoo
        param.grad = grad
        opt.step()
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-12)


def test_state_bytes_count_bytes_of_state_per_parameter_byte():
    from primitives.analysis import REFERENCE_SHAPES, state_buffers, state_bytes
    from primitives.known import ONE_SIDED_SHAMPOO, SHAMPOO_GRAFTED, SOAP
    from primitives.serialize import parse

    assert state_bytes(SGD) == 0 and state_bytes(LION) == 1 and state_bytes(ADAMW) == 2
    row, col = 27 / 12, 19 / 12  # sum m^2 / sum m n and sum n^2 / sum m n over a transformer block's matrices
    assert REFERENCE_SHAPES == ((3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096))
    assert state_bytes(SHAMPOO) == pytest.approx(row + col + 1)
    assert state_bytes(SOAP) == pytest.approx(2 * (row + col) + 2)
    assert state_bytes(ONE_SIDED_SHAMPOO) == pytest.approx(row + 1)  # R is never written: a constant
    assert state_bytes(SHAMPOO_GRAFTED) == pytest.approx(row + col + 2)
    assert state_bytes(ADAFACTOR) == pytest.approx((9 + 7) / 12288)
    assert state_bytes(SHAMPOO, shapes=((8, 2),)) == pytest.approx(8 / 2 + 2 / 8 + 1)
    adam8 = parse("""
    state m: PARAM = 0, v: PARAM = 0
    const b1 = 0.9, b2 = 0.999
    m1 = interp(g, m; b1)
    m = quantize8(m1)
    g2 = square(g)
    v = interp(g2, v; b2)
    v = quantize4(v)
    r = rsqrt(v; b1)
    u = mul(m, r)
    return u
    """)
    # 8 bits (4 bits) a value and a float32 scale per 64 values, over 4 bytes a parameter
    assert state_bytes(adam8) == pytest.approx((1 + 4 / 64) / 4 + (0.5 + 4 / 64) / 4)
    assert state_buffers(adam8) == 2
    # what is carried is the last write: quantising before a full-precision write saves nothing
    late = parse("state m: PARAM = 0\nconst b = 0.9\nq = quantize8(m)\nm = interp(g, q; b)\nu = sign(m)\nreturn u")
    assert state_bytes(late) == 1
