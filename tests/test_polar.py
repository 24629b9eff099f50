"""Polar-factor backends against the exact SVD factor, each to the accuracy it should reach.

The polynomial backends map each singular value sigma of X through a fixed
scalar map phi(sigma / ||X||_F); the bands below are that map's range on
[1e-3, 1] (computed from the published coefficients in
shared/spec/reference-optimizers.md, section 1.4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primitives.polar import (
    MUON_COEFFICIENTS,
    NS_EPS,
    PE_SAFETY,
    POLAR_EXPRESS_COEFFICIENTS,
    coefficient_schedule,
    newton_schulz,
    polar,
    polar_express,
    polar_svd,
)
from primitives.qdwh import qdwh, qdwh_coefficients


def gaussian(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def with_singular_values(sigma, m, n, seed=0):
    """An m x n float64 matrix with the given singular values and random singular vectors."""
    U, _ = torch.linalg.qr(gaussian(m, len(sigma), seed=seed))
    V, _ = torch.linalg.qr(gaussian(n, len(sigma), seed=seed + 1))
    return U @ torch.diag(torch.as_tensor(sigma, dtype=torch.float64)) @ V.T


def composite(x, coefficients, steps):
    """The composite odd polynomial x -> a x + b x^3 + c x^5, step after step."""
    x = np.asarray(x, dtype=np.float64)
    for a, b, c in coefficient_schedule(coefficients, steps):
        x = a * x + b * x**3 + c * x**5
    return x


def scalar_map(sigma, coefficients, steps, norm, norm_scale=1.0):
    """What NS does to a singular value sigma of X with ||X||_F = norm."""
    return composite(np.asarray(sigma) / (norm * norm_scale + NS_EPS), coefficients, steps)


SHAPES = [(64, 16), (16, 64), (3, 24, 8)]


@pytest.mark.parametrize("shape", SHAPES, ids=["tall", "wide", "batched"])
def test_qdwh_six_iterations_is_the_exact_polar_factor_in_float64(shape):
    x = gaussian(*shape, seed=1)
    torch.testing.assert_close(qdwh(x, 6), polar_svd(x), rtol=0, atol=1e-10)


def test_qdwh_on_an_ill_conditioned_matrix():
    x = with_singular_values(np.logspace(0, -6, 12), 48, 12, seed=2)
    torch.testing.assert_close(qdwh(x, 6), polar_svd(x), rtol=0, atol=1e-8)


def test_qdwh_coefficients_reproduce_polargrads_truncated_default():
    """fp32, 2 iterations: two QR-form steps with these (a, b, c) (spec section 1.5)."""
    (a1, b1, c1), (a2, b2, c2) = qdwh_coefficients(torch.finfo(torch.float32).eps, 2)
    np.testing.assert_allclose([a1, b1, c1], [1.04032e5, 2.70561e9, 2.70571e9], rtol=1e-5)
    np.testing.assert_allclose([a2, b2, c2], [47.074, 530.70, 576.78], rtol=1e-4)
    # fp32 converges in 4 weighted steps and fp64 in 6; later steps are Halley's.
    assert qdwh_coefficients(torch.finfo(torch.float32).eps, 10)[4:] == ((3.0, 1.0, 3.0),) * 6
    assert qdwh_coefficients(torch.finfo(torch.float64).eps, 10)[5] != (3.0, 1.0, 3.0)
    assert qdwh_coefficients(torch.finfo(torch.float64).eps, 10)[6:] == ((3.0, 1.0, 3.0),) * 4


def test_truncated_qdwh_lands_in_its_guaranteed_band():
    """The guaranteed lower bound after 2 steps is 0.537, mapped by the final NS step to ~0.728."""
    x = with_singular_values(np.logspace(0, -6, 16), 40, 16, seed=3).float()
    sigma = torch.linalg.svdvals(qdwh(x, 2).double())
    assert sigma.min() >= 0.72 and sigma.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=["tall", "wide", "batched"])
def test_newton_schulz_applies_its_scalar_map_to_each_singular_value(shape):
    x = gaussian(*shape, seed=4)
    out = newton_schulz(x, MUON_COEFFICIENTS, 5, compute_dtype=None)
    sigma = torch.linalg.svdvals(x).numpy()
    norm = torch.linalg.matrix_norm(x).numpy()[..., None]
    expected = scalar_map(sigma, MUON_COEFFICIENTS, 5, norm)
    np.testing.assert_allclose(torch.linalg.svdvals(out).numpy(), np.sort(expected)[..., ::-1], rtol=1e-9)
    # Same singular vectors as the exact factor: out = U phi(S) V^T.
    U, S, Vh = torch.linalg.svd(x, full_matrices=False)
    torch.testing.assert_close(out, U @ torch.diag_embed(torch.as_tensor(expected.copy())) @ Vh, rtol=0, atol=1e-9)


def test_polar_express_applies_its_schedule():
    x = gaussian(30, 12, seed=5)
    out = polar_express(x, 7, compute_dtype=None)
    sigma = torch.linalg.svdvals(x).numpy()
    expected = scalar_map(sigma, POLAR_EXPRESS_COEFFICIENTS, 7, torch.linalg.matrix_norm(x).item(), PE_SAFETY)
    np.testing.assert_allclose(torch.linalg.svdvals(out).numpy(), np.sort(expected)[::-1], rtol=1e-9)


@pytest.mark.parametrize(
    "coefficients,steps,norm_scale,band",
    [
        (MUON_COEFFICIENTS, 5, 1.0, (0.4705, 1.2024)),
        (POLAR_EXPRESS_COEFFICIENTS, 5, PE_SAFETY, (0.8401, 1.1236)),
        (POLAR_EXPRESS_COEFFICIENTS, 8, PE_SAFETY, (1.0000, 1.0000)),
    ],
    ids=["muon-5", "polar-express-5", "polar-express-8"],
)
def test_composite_maps_land_in_their_published_bands(coefficients, steps, norm_scale, band):
    """On sigma in [1e-3, 1] (spec section 1.4 table, 4 decimals), Polar Express after sigma / 1.01."""
    image = composite(np.logspace(-3, 0, 2001) / norm_scale, coefficients, steps)
    assert image.min() == pytest.approx(band[0], abs=2e-4)
    assert image.max() == pytest.approx(band[1], abs=2e-4)


def test_polar_express_table_after_the_safety_division():
    """NV's emerging_optimizers lists the 1.01-divided table rounded to 4 decimals."""
    nv = [(8.2051, -22.9019, 16.4607), (4.0664, -2.8612, 0.5184), (3.9096, -2.8234, 0.5250),
          (3.2856, -2.4153, 0.4853), (2.2779, -1.6198, 0.3985), (1.8726, -1.2307, 0.3585),
          (1.8564, -1.2132, 0.3568), (1.8750, -1.2500, 0.3750)]
    np.testing.assert_allclose(POLAR_EXPRESS_COEFFICIENTS, nv, atol=1e-4)


def test_bfloat16_newton_schulz_golden_value():
    """kozistr/pytorch_optimizer's golden test of Muon's bf16 NS5 (rtol = atol = 3e-2)."""
    x = torch.tensor([[-1.5724165, 1.5850062], [-0.87536967, 0.31970903], [-0.18436244, -0.16805087]])
    expected = torch.tensor([[-0.3359375, 0.671875], [-0.734375, -0.38671875], [-0.3828125, -0.3984375]])
    out = newton_schulz(x, MUON_COEFFICIENTS, 5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("backend", ["ns", "polar_express", "qdwh", "svd"])
def test_zero_matrix_has_zero_polar_factor(backend):
    for shape in [(5, 3), (3, 5), (2, 4, 4)]:
        assert torch.equal(polar(torch.zeros(shape), backend), torch.zeros(shape))


@pytest.mark.parametrize("backend", ["ns", "polar_express", "qdwh", "svd"])
def test_rank_deficient_input(backend):
    """On x's range every backend acts as its map says; off it the factor is not unique.

    The exact factor (svd) is the partial isometry, and the polynomial maps keep
    round-off singular values tiny. QDWH treats every singular value above
    machine eps as signal and lifts round-off ones towards 1, which still
    gives a valid polar factor (U sym(U^T X) = X).
    """
    x = with_singular_values([3.0, 1.0, 0.0, 0.0], 8, 6, seed=6)
    u = polar(x, backend, steps=8 if backend != "qdwh" else 6)
    assert torch.isfinite(u).all()
    U, _, Vh = torch.linalg.svd(x, full_matrices=False)
    on_range = u @ Vh[:2].T  # = U_r phi(S_r)
    if backend in ("qdwh", "svd"):
        torch.testing.assert_close(on_range, U[:, :2], rtol=0, atol=1e-9)
        H = 0.5 * (u.T @ x + x.T @ u)
        torch.testing.assert_close(u @ H, x, rtol=0, atol=1e-9)
    else:
        torch.testing.assert_close(on_range / on_range.norm(dim=0), U[:, :2], rtol=0, atol=1e-6)
    if backend != "qdwh":
        assert torch.linalg.svdvals(u)[2:].max() < 1e-6


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown polar backend 'zolo'"):
        polar(torch.eye(3), "zolo")
