"""SOAP as a program (primitives.known.SOAP, run by ProgramOptimizer) against discovered.SOAP.

Where they can agree, they agree to round-off: on matrices (tall, wide,
square), on a conv kernel that SOAP's merge_dims views as the program does
((out, in, kh, kw) -> (out, in*kh*kw)) and on vectors under route "rule"
(SOAP without precondition_1d: Adam, with SOAP's bias correction and its
first step that does not move).

Two differences are by design (primitives/known.py says why):
  * decay: the program steps w - lr (N + wd w), SOAP (w - lr N)(1 - lr wd);
  * m is rotated out of its basis and back in every step (upstream SOAP does
    the same; discovered.SOAP only when the basis changes), and the refreshed
    basis keeps its columns in their slots where SOAP sorts them and permutes
    v: the same numbers in other places.
And one is SOAP's own: at the first step the statistic of the longer side of
a non-square matrix is singular, and eigh's basis of its null space is fixed
by round-off, so two implementations whose statistics differ in the last bit
(x @ x.T and a tensordot) get different bases and different updates. The
agreement tests use integer-valued gradients (the recipe of NVIDIA-NeMo's SOAP
test), whose statistics are exact in every implementation; on random
gradients only square matrices, whose statistics are regular, are compared.
"""

from __future__ import annotations

import pytest
import torch

from discovered import SOAP, ProgramOptimizer
from primitives.analysis import state_buffers, state_bytes, uses_matrix_primitives
from primitives.known import SOAP as SOAP_PROGRAM

SHAPES = [(6, 4), (3, 5), (4, 4), (7,)]
NV_RECIPE = {"betas": (0.75, 0.75), "shampoo_beta": 0.5, "eps": 1e-15, "precondition_frequency": 1}
DEFAULTS = {"betas": (0.95, 0.95), "shampoo_beta": -1, "eps": 1e-8, "precondition_frequency": 3}


def program_constants(settings: dict, wd: float) -> dict:
    beta1, beta2 = settings["betas"]
    shampoo_beta = settings["shampoo_beta"] if settings["shampoo_beta"] >= 0 else beta2
    return {"beta1": beta1, "beta2": beta2, "shampoo_beta": shampoo_beta, "eps": settings["eps"],
            "k": settings["precondition_frequency"], "wd": wd}


def trajectories(shapes, steps, settings, lr, dtype=torch.float64, wd=0.0, integer=True, seed=0, **soap_kwargs):
    """Both optimizers on the same parameters and gradients: [(discovered.SOAP's, the program's) per step]."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape):
        if integer:
            return torch.randint(-3, 4, shape, generator=g).to(dtype)
        return torch.randn(shape, generator=g, dtype=dtype)

    init = [draw(s) for s in shapes]
    a = [torch.nn.Parameter(p.clone()) for p in init]
    b = [torch.nn.Parameter(p.clone()) for p in init]
    soap = SOAP(a, lr=lr, weight_decay=wd, **settings, **soap_kwargs)
    program = ProgramOptimizer(b, SOAP_PROGRAM, lr=lr, route="rule", constants=program_constants(settings, wd))
    history = [([p.detach().clone() for p in a], [p.detach().clone() for p in b])]
    for _ in range(steps):
        grads = [draw(s) for s in shapes]
        for p, q, grad in zip(a, b, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        soap.step()
        program.step()
        history.append(([p.detach().clone() for p in a], [p.detach().clone() for p in b]))
    return history


def assert_agree(history, rtol):
    """Every parameter at every step, to rtol of how far the parameters have moved."""
    start = history[0][0]
    for step, (ours, program) in enumerate(history[1:], start=1):
        for p0, p, q in zip(start, ours, program):
            moved = float((p - p0).abs().max())
            torch.testing.assert_close(q, p, rtol=0, atol=rtol * max(moved, 1e-30), msg=f"step {step}, {tuple(p.shape)}")


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("settings,lr,steps", [(NV_RECIPE, 2.0, 7), (DEFAULTS, 1e-2, 30)], ids=["nv-recipe", "defaults"])
def test_program_agrees_with_discovered_soap(settings, lr, steps, dtype, rtol):
    assert_agree(trajectories(SHAPES, steps, settings, lr, dtype), rtol)


def test_program_agrees_on_a_conv_kernel_that_soap_merges_as_the_program_views_it():
    """(6, 3, 2, 2): the program sees (6, 12); SOAP merges dims into (6, 12) with max_precond_dim 12."""
    history = trajectories([(6, 3, 2, 2)], 20, DEFAULTS, 1e-2, merge_dims=True, max_precond_dim=12)
    assert_agree(history, 1e-12)


def test_program_agrees_on_random_gradients_where_the_statistics_are_regular():
    assert_agree(trajectories([(5, 5), (3, 3)], 30, DEFAULTS, 1e-2, integer=False), 1e-11)


def test_the_first_step_only_builds_the_preconditioner():
    history = trajectories(SHAPES, 2, DEFAULTS, 1e-2, wd=0.1)
    for p0, q1, q2 in zip(history[0][1], history[1][1], history[2][1]):
        assert torch.equal(q1, p0)  # no move and no decay at the first step
        assert not torch.equal(q2, p0)


def test_decay_is_folded_into_the_update():
    """The program decays w before the step's direction is applied; SOAP after: lr^2 wd N apart a step."""
    lr, wd, steps = 1e-2, 0.5, 12
    folded = trajectories(SHAPES, steps, DEFAULTS, lr, wd=wd)
    plain = trajectories(SHAPES, steps, DEFAULTS, lr, wd=0.0)
    # SOAP without decay, plus lr wd w_old from its second step: exactly the program.
    expected = [p.clone() for p in plain[0][0]]
    for step in range(1, steps + 1):
        directions = [after - before for before, after in zip(plain[step - 1][0], plain[step][0])]
        expected = [w + d - (lr * wd * w if step > 1 else 0) for w, d in zip(expected, directions)]
        for w, program in zip(expected, folded[step][1]):
            torch.testing.assert_close(program, w, rtol=0, atol=1e-12)
    # and SOAP proper is within O(lr^2 wd) a step of it
    for p0, p, q in zip(folded[0][0], folded[-1][0], folded[-1][1]):
        assert float((p - q).abs().max()) < 3 * lr * wd * float((p - p0).abs().max())


def test_stacked_parameters_and_batch_dims_train_as_if_alone():
    """Same-shape parameters share one batched eigh/QR; stacked seeds (batch_dims=1) too."""
    g = torch.Generator().manual_seed(3)
    shapes = [(5, 4)] * 3
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    together = [torch.nn.Parameter(p.clone()) for p in init]
    alone = [[torch.nn.Parameter(p.clone())] for p in init]
    stacked = [torch.nn.Parameter(torch.stack(init))]
    constants = {"k": 2}
    opt = ProgramOptimizer(together, SOAP_PROGRAM, lr=1e-2, constants=constants)
    opts = [ProgramOptimizer(p, SOAP_PROGRAM, lr=1e-2, constants=constants) for p in alone]
    seeds = ProgramOptimizer(stacked, SOAP_PROGRAM, lr=1e-2, constants=constants, batch_dims=1)
    for _ in range(6):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        for p, q, grad in zip(together, alone, grads):
            p.grad, q[0].grad = grad.clone(), grad.clone()
        stacked[0].grad = torch.stack(grads)
        for o in [opt, *opts, seeds]:
            o.step()
    for i, (p, q) in enumerate(zip(together, alone)):
        torch.testing.assert_close(p.data, q[0].data, rtol=0, atol=1e-12)
        torch.testing.assert_close(stacked[0].data[i], q[0].data, rtol=0, atol=1e-12)


def test_soap_program_is_a_matrix_program_with_six_buffers():
    assert uses_matrix_primitives(SOAP_PROGRAM)
    assert state_buffers(SOAP_PROGRAM) == 6
    assert state_bytes(SOAP_PROGRAM) == pytest.approx(2 * (27 + 19) / 12 + 2)
    matrix, vector = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    opt = ProgramOptimizer([matrix, vector], SOAP_PROGRAM, lr=1e-2)
    matrix.grad, vector.grad = torch.randn(4, 3), torch.randn(3)
    opt.step()
    assert "exp_avg_sq" in opt.state[vector]  # route "auto": vectors go to AdamW, as for every matrix program
