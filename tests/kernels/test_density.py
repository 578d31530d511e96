"""Stochastic Lanczos quadrature against known spectra of dense float64 matrices Q diag(λ) Q^T."""

from __future__ import annotations

import math

import pytest
import torch

from tests.kernels.spectra import F64, Recording, gen, symmetric
from tscope_widgets.kernels.density import iter_slq, slq_density


def test_gauss_quadrature_is_exact_up_to_degree_2m_minus_1():
    lam = torch.linspace(-1.5, 2.0, 40, dtype=F64)
    A = torch.diag(lam)
    probes = torch.randn(40, 3, generator=gen(0), dtype=F64)
    m = 6
    density = slq_density(A, num_probes=3, num_steps=m, probes=probes)
    v = probes / probes.norm(dim=0)
    assert density.nodes.shape == density.weights.shape == (3, m)
    for p in range(2 * m + 1):
        exact = (v.square() * lam[:, None] ** p).sum(0)  # v^T A^p v per probe
        quadrature = (density.weights * density.nodes**p).sum(1)
        if p <= 2 * m - 1:
            torch.testing.assert_close(quadrature, exact, rtol=1e-10, atol=1e-12)
        else:  # degree 2m is not integrated exactly: the test can tell
            assert (quadrature - exact).abs().min().item() > 1e-4
    torch.testing.assert_close(density.weights.sum(1), torch.ones(3, dtype=F64))


def test_full_length_recovers_the_eigenvalues_and_the_probe_weights():
    lam = torch.cat([torch.tensor([-3.0, 6.0], dtype=F64), torch.rand(23, generator=gen(1), dtype=F64)])
    A = symmetric(lam, 2)
    evals, evecs = torch.linalg.eigh(A)
    density = slq_density(A, num_probes=4, num_steps=100, distribution="gaussian", generator=gen(3))
    assert density.nodes.shape == (4, 25)  # num_steps capped at N
    torch.testing.assert_close(density.nodes, evals.expand(4, -1), rtol=0, atol=1e-10)
    assert density.num_matvecs == 4 * 25


def test_negative_mass_matches_the_fraction_of_negative_eigenvalues():
    # 30% negative; the error is the probe noise (std ~0.01 for 10 probes) plus the quadrature's
    # resolution near 0 (about the weight of one node); 0.05 is 5 standard deviations
    g = gen(4)
    lam = torch.cat([-torch.rand(120, generator=g, dtype=F64), 2 * torch.rand(280, generator=g, dtype=F64)])
    A = symmetric(lam, 5)
    for seed in range(3):
        density = slq_density(A, num_probes=10, num_steps=40, generator=gen(seed))
        assert density.mass_below(0.0) == pytest.approx(0.3, abs=0.05)
        assert density.mass_below(0.0, smoothed=True) == pytest.approx(0.3, abs=0.05)
        assert density.mass_below(-10.0) == 0.0 and density.mass_below(10.0) == pytest.approx(1.0)


def test_density_integrates_to_one_and_its_mean_is_the_normalized_trace():
    bulk = -0.3 + 1.3 * torch.rand(197, generator=gen(6), dtype=F64)
    lam = torch.cat([torch.tensor([12.0, 25.0, 40.0], dtype=F64), bulk])
    A = symmetric(lam, 7)
    N = lam.numel()
    # variance of one normalized Rademacher sample z^T A z / N: 2 sum_{i != j} A_ij^2 / N^2
    num_probes = 32
    offdiag_sq = (A.square().sum() - torch.diagonal(A).square().sum()).item()
    stderr = math.sqrt(2 * offdiag_sq / N**2 / num_probes)
    assert stderr < 0.1 * torch.trace(A).item() / N  # the check below is not vacuous
    for seed in range(3):
        density = slq_density(A, num_probes=num_probes, num_steps=30, generator=gen(seed))
        assert torch.trapezoid(density.density, density.grid).item() == pytest.approx(1.0, abs=1e-6)
        grid_mean = torch.trapezoid(density.grid * density.density, density.grid).item()
        assert grid_mean == pytest.approx(density.moment(1), abs=1e-6)
        assert abs(density.moment(1) - torch.trace(A).item() / N) <= 4 * stderr


def test_running_densities_stream_one_product_of_all_probes_per_step():
    A = symmetric(torch.linspace(-1, 3, 60, dtype=F64), 8)
    op = Recording(A)
    snapshots = list(iter_slq(op, num_probes=5, num_steps=12, num_points=64, generator=gen(0)))
    assert op.columns == [5] * 12  # batched: one [N, 5] product per Lanczos step
    assert [s.done for s in snapshots] == [5 * j for j in range(1, 13)]
    assert all(s.total == 60 and s.num_matvecs == s.done for s in snapshots)
    assert [s.nodes.shape[1] for s in snapshots] == list(range(1, 13))
    assert snapshots[-1].grid.shape == snapshots[-1].density.shape == (64,)
    final = slq_density(A, num_probes=5, num_steps=12, num_points=64, generator=gen(0))
    torch.testing.assert_close(final.density, snapshots[-1].density, rtol=0, atol=0)


def test_breakdown_on_few_distinct_eigenvalues_keeps_an_exact_quadrature():
    # Rademacher probes on a diagonal matrix: the Krylov space is invariant after 3 steps; the restarted
    # part of T is decoupled, so its nodes carry zero weight and each eigenvalue keeps its exact mass.
    lam = torch.tensor([-1.0] * 6 + [0.5] * 9 + [2.0] * 15, dtype=F64)
    density = slq_density(torch.diag(lam), num_probes=4, num_steps=10, generator=gen(0))
    assert density.nodes.shape == (4, 10)
    for value, fraction in ((-1.0, 0.2), (0.5, 0.3), (2.0, 0.5)):
        at_value = ((density.nodes - value).abs() < 1e-8) * density.weights
        torch.testing.assert_close(at_value.sum(1), torch.full((4,), fraction, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(density.weights.sum(1), torch.ones(4, dtype=F64))


def test_user_grid_and_sigma():
    A = torch.diag(torch.linspace(0, 1, 50, dtype=F64))
    grid = torch.linspace(-0.5, 1.5, 401, dtype=F64)
    density = slq_density(A, num_probes=2, num_steps=50, sigma=0.05, grid=grid, generator=gen(0))
    assert density.sigma == 0.05 and torch.equal(density.grid, grid)
    # nodes are the eigenvalues, so the density is the mean of Gaussians at them (Rademacher weights 1/N)
    expected = torch.exp(-0.5 * ((grid[:, None] - torch.linspace(0, 1, 50, dtype=F64)) / 0.05) ** 2).sum(1)
    expected = expected / (50 * 0.05 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(density.density, expected, rtol=1e-8, atol=1e-10)


def test_float32_operator():
    A = symmetric(torch.linspace(-1, 2, 80, dtype=F64), 9)
    density = slq_density(A.float(), num_probes=4, num_steps=20, generator=gen(0))
    assert density.mass_below(0.0) == pytest.approx(1 / 3, abs=0.08)


def test_bad_inputs():
    A = torch.eye(5, dtype=F64)
    with pytest.raises(ValueError, match="num_probes"):
        slq_density(A, num_probes=0)
    with pytest.raises(ValueError, match="sigma"):
        slq_density(A, sigma=-1.0)
    with pytest.raises(ValueError, match="grid"):
        slq_density(A, grid=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="probes must have shape"):
        slq_density(A, num_probes=2, probes=torch.ones(5, 3, dtype=F64))
    with pytest.raises(ValueError, match="square"):
        slq_density(torch.ones(3, 4, dtype=F64))
