"""Hutchinson, Hutch++ and diagonal estimators against exact traces/diagonals of dense float64 matrices.

Statistical checks use many seeds and tolerances stated in units of the standard error, so a wrong formula
(bias, a wrong variance, a miscounted budget) fails while a correct one passes with overwhelming probability.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.kernels.spectra import F64, Recording, gen, symmetric
from tscope_widgets.kernels.operator import LinearOperator
from tscope_widgets.kernels.trace import diagonal, hutchinson_trace, hutchpp_trace, random_probes


def _indefinite(N: int = 60, seed: int = 0) -> torch.Tensor:
    lam = torch.cat([torch.tensor([8.0, 5.0], dtype=F64), torch.randn(N - 2, generator=gen(seed + 100), dtype=F64)])
    return symmetric(lam, seed)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_predicted_standard_error(distribution):
    A = _indefinite()
    exact = torch.trace(A).item()
    n, seeds = 10, 300
    estimates = [hutchinson_trace(A, n, distribution=distribution, generator=gen(s)) for s in range(seeds)]
    values = torch.tensor([e.value for e in estimates], dtype=F64)
    stderrs = torch.tensor([e.stderr for e in estimates], dtype=F64)
    offdiag_sq = (A.square().sum() - torch.diagonal(A).square().sum()).item()
    # variance of one sample z^T A z: 2 sum_{i != j} A_ij^2 (Rademacher), 2 ||A||_F^2 (Gaussian)
    sample_var = 2 * (offdiag_sq if distribution == "rademacher" else A.square().sum().item())
    predicted_stderr = math.sqrt(sample_var / n)
    # the mean of 300 estimates is within 4 of its standard errors of the trace
    assert abs(values.mean().item() - exact) <= 4 * predicted_stderr / math.sqrt(seeds)
    # the spread of the estimates matches theory, and so does the reported stderr (RMS over seeds), within 15%
    assert values.std().item() == pytest.approx(predicted_stderr, rel=0.15)
    assert stderrs.square().mean().sqrt().item() == pytest.approx(predicted_stderr, rel=0.15)
    assert all(e.num_matvecs == n and e.method == "hutchinson" for e in estimates)


def test_hutchinson_z_scores_are_bounded():
    A = _indefinite(seed=1)
    exact = torch.trace(A).item()
    z = torch.tensor([(e.value - exact) / e.stderr for e in
                      (hutchinson_trace(A, 40, generator=gen(s)) for s in range(200))])
    assert z.abs().max().item() < 5.0
    assert (z.abs() > 2.5).double().mean().item() < 0.06  # about 2% for a t-distribution with 39 dof
    assert abs(z.mean().item()) < 4 / math.sqrt(200)


def test_hutchinson_counts_and_chunks_products():
    A = _indefinite()
    op = Recording(A)
    estimate = hutchinson_trace(op, 25, chunk_size=10, generator=gen(0))
    assert op.columns == [10, 10, 5] and op.num_matvecs == 25 == estimate.num_matvecs
    assert math.isnan(hutchinson_trace(A, 1, generator=gen(0)).stderr)


def test_hutchpp_is_exact_for_low_rank():
    N, rank = 80, 6
    lam = torch.zeros(N, dtype=F64)
    lam[:rank] = torch.tensor([5.0, -3.0, 2.0, 1.0, -0.5, 0.25], dtype=F64)
    A = symmetric(lam, 3)
    for budget in (18, 19, 20, 30):  # sketch size budget // 3 >= rank
        op = Recording(A)
        estimate = hutchpp_trace(op, budget, generator=gen(budget))
        assert estimate.value == pytest.approx(torch.trace(A).item(), abs=1e-12)
        assert estimate.stderr <= 1e-12
        assert estimate.num_matvecs == budget == op.num_matvecs, (estimate.num_matvecs, op.num_matvecs)
        assert estimate.method == "hutch++"


def test_hutchpp_spends_the_budget_it_saves_on_a_rank_deficient_sketch():
    A = symmetric(torch.cat([torch.ones(3, dtype=F64), torch.zeros(57, dtype=F64)]), 4)
    op = Recording(A)
    hutchpp_trace(op, 30, generator=gen(0))
    # 10 sketch products, 3 for A Q (the rank), the remaining 17 for Hutchinson on the deflated rest
    assert op.columns == [10, 3, 17]


def test_hutchpp_is_unbiased_and_its_stderr_is_honest():
    A = _indefinite(seed=2)
    exact = torch.trace(A).item()
    estimates = [hutchpp_trace(A, 30, generator=gen(s)) for s in range(300)]
    values = torch.tensor([e.value for e in estimates], dtype=F64)
    spread = values.std().item()
    assert abs(values.mean().item() - exact) <= 4 * spread / math.sqrt(len(values))
    rms_stderr = math.sqrt(sum(e.stderr**2 for e in estimates) / len(estimates))
    assert rms_stderr == pytest.approx(spread, rel=0.2)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    N = 200
    lam = 10.0 * torch.arange(1, N + 1, dtype=F64) ** -2.0
    A = symmetric(lam, 5)
    exact = torch.trace(A).item()
    budget, seeds = 90, 40
    err_plain = sum(abs(hutchinson_trace(A, budget, generator=gen(s)).value - exact) for s in range(seeds))
    err_pp = sum(abs(hutchpp_trace(A, budget, generator=gen(s)).value - exact) for s in range(seeds))
    assert err_pp < 0.2 * err_plain, (err_pp / seeds, err_plain / seeds)


def test_diagonal_exact_with_unit_vectors():
    A = _indefinite(N=30)
    op = Recording(A)
    estimate = diagonal(op, 30, chunk_size=7)
    assert estimate.exact and estimate.num_matvecs == 30 == op.num_matvecs
    assert op.columns == [7, 7, 7, 7, 2]
    torch.testing.assert_close(estimate.values, torch.diagonal(A), rtol=0, atol=1e-14)
    assert torch.all(estimate.stderr == 0)
    assert diagonal(A, 100).exact


def test_diagonal_estimate_is_unbiased_with_the_predicted_stderr():
    A = _indefinite(N=40, seed=6)
    exact = torch.diagonal(A)
    n, seeds = 20, 200
    estimates = [diagonal(A, n, generator=gen(s)) for s in range(seeds)]
    values = torch.stack([e.values for e in estimates])  # [seeds, N]
    # per-entry variance of one sample z ⊙ A z: sum_{j != i} A_ij^2
    predicted = ((A.square().sum(1) - exact.square()) / n).sqrt()
    z = (values.mean(0) - exact) / (predicted / math.sqrt(seeds))
    assert z.abs().max().item() < 4.5  # 40 entries of a standard normal
    assert values.std(0).div(predicted).mean().item() == pytest.approx(1.0, rel=0.05)
    reported = torch.stack([e.stderr for e in estimates]).square().mean(0).sqrt()
    assert reported.div(predicted).mean().item() == pytest.approx(1.0, rel=0.05)
    assert not estimates[0].exact and estimates[0].num_matvecs == n


def test_float32_operator():
    A = _indefinite(seed=7)
    estimate = hutchpp_trace(A.float(), 60, generator=gen(0))
    assert abs(estimate.value - torch.trace(A).item()) <= 5 * estimate.stderr + 1e-4
    assert diagonal(A.float(), 60).values.dtype == torch.float32


def test_random_probes():
    Z = random_probes(1000, 4, generator=gen(0))
    assert set(Z.unique().tolist()) == {-1.0, 1.0} and Z.dtype == F64
    G = random_probes(1000, 4, distribution="gaussian", dtype=torch.float32, generator=gen(0))
    assert G.dtype == torch.float32 and abs(G.std().item() - 1) < 0.05
    torch.testing.assert_close(random_probes(50, 2, generator=gen(3)), random_probes(50, 2, generator=gen(3)))


def test_bad_inputs():
    A = torch.eye(5, dtype=F64)
    with pytest.raises(ValueError, match="num_matvecs >= 3"):
        hutchpp_trace(A, 2)
    with pytest.raises(ValueError, match="positive int"):
        hutchinson_trace(A, 0)
    with pytest.raises(ValueError, match="square"):
        hutchinson_trace(torch.ones(3, 4, dtype=F64), 3)
    with pytest.raises(ValueError, match="distribution"):
        hutchinson_trace(A, 3, distribution="uniform")
    with pytest.raises(ValueError, match="num_probes"):
        diagonal(A, -1)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_hutchpp_sketch_of_a_large_operator_holds_one_matrix_and_agrees(monkeypatch, chunk_size):
    """Above SKETCH_IN_ONE_PIECE_BYTES the sketch is multiplied in chunks and orthonormalised in place;
    it spends the budget the same way and estimates the same trace (exact for low rank)."""
    from tscope_widgets.kernels import trace as trace_module

    lam = torch.zeros(80, dtype=F64)
    lam[:6] = torch.tensor([5.0, -3.0, 2.0, 1.0, -0.5, 0.25], dtype=F64)
    low_rank = symmetric(lam, 3)
    A = _indefinite(seed=2)
    small = [hutchpp_trace(A, 30, generator=gen(s)).value for s in range(100)]
    monkeypatch.setattr(trace_module, "SKETCH_IN_ONE_PIECE_BYTES", 0)
    monkeypatch.setattr(trace_module, "SKETCH_ROW_BLOCK_BYTES", 7 * 8 * 10)  # blocks of 7 rows
    op = Recording(low_rank)
    estimate = hutchpp_trace(op, 30, generator=gen(1), chunk_size=chunk_size)
    assert estimate.value == pytest.approx(torch.trace(low_rank).item(), abs=1e-10) and estimate.stderr <= 1e-10
    # 10 sketch columns in chunks, A Q one column at a time (rank 6), the remaining 14 for Hutchinson
    expected = [10, *[1] * 6, 14] if chunk_size is None else [4, 4, 2, *[1] * 6, 4, 4, 4, 2]
    assert op.columns == expected and op.num_matvecs == 30
    large = torch.tensor([hutchpp_trace(A, 30, generator=gen(s), chunk_size=chunk_size).value for s in range(100)])
    exact = torch.trace(A).item()
    small = torch.tensor(small)
    assert abs(large.mean().item() - exact) <= 4 * large.std().item() / 10  # unbiased
    assert large.std().item() == pytest.approx(small.std().item(), rel=0.3)  # as good as the one-piece sketch


class _Diagonal(LinearOperator):
    """A float32 diagonal operator that records the columns of every product."""

    def __init__(self, d: torch.Tensor):
        super().__init__((d.numel(), d.numel()), d.dtype, d.device)
        self.d, self.columns = d, []

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.columns.append(V.shape[1])
        return self.d[:, None] * V


@pytest.mark.parametrize("one_piece", [True, False])
def test_hutchpp_keeps_the_sketch_of_a_float32_operator_longer_than_one_over_eps(monkeypatch, one_piece):
    """N = 9M > 1/eps(float32): a rank tolerance of max(N, s)·eps·σ_max would exceed σ_max and drop the whole
    sketch (silently on the one-piece path; an empty Gram matrix on the large path, as at GPT-2-small size)."""
    from tscope_widgets.kernels import trace as trace_module

    N = 9_000_000
    d = torch.rand(N, generator=gen(0))
    d[:3] = torch.tensor([1e6, 2e6, 3e6])  # without them in the sketch, 6 probes would be ~20% off
    if not one_piece:
        monkeypatch.setattr(trace_module, "SKETCH_IN_ONE_PIECE_BYTES", 0)
    op = _Diagonal(d)
    estimate = hutchpp_trace(op, 9, generator=gen(1))
    assert sum(op.columns) == 9
    if one_piece:
        assert op.columns[:2] == [3, 3]  # the sketch, then A Q of rank 3 (not 0)
    exact = d.double().sum().item()
    assert estimate.value == pytest.approx(exact, rel=1e-3)
