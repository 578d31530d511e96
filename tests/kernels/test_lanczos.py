"""Lanczos extreme eigenpairs against torch.linalg.eigvalsh / eigh of dense float64 matrices Q diag(λ) Q^T."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.sparse.linalg import eigsh

from tests.kernels.spectra import F64, Recording, gen, symmetric
from tscope_widgets.kernels.density import slq_density
from tscope_widgets.kernels.lanczos import curvature_summary, iter_lanczos, lanczos


def _hessian_like(N: int = 300, seed: int = 1) -> torch.Tensor:
    """Spectrum of a trained network's Hessian in miniature: 5 outliers 10..50 and a bulk in [-0.5, 1]."""
    bulk = -0.5 + 1.5 * torch.rand(N - 5, generator=gen(seed), dtype=F64)
    return torch.cat([torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0], dtype=F64), bulk])


def test_top5_of_hessian_like_spectrum_within_40_matvecs():
    lam = _hessian_like()
    A = symmetric(lam, 0)
    exact = torch.linalg.eigvalsh(A)[-5:]
    for seed in range(3):
        op = Recording(A)
        result = lanczos(op, k=5, tol=1e-8, generator=gen(seed))
        assert result.converged
        assert result.num_matvecs <= 40, result.num_matvecs
        assert result.num_matvecs == op.num_matvecs == result.num_iterations == len(op.columns)
        rel = ((result.eigenvalues - exact).abs() / exact.abs()).max().item()
        assert rel <= 1e-8, rel


@pytest.mark.parametrize("which", ["smallest", "both", "largest"])
def test_ends_of_an_indefinite_spectrum(which):
    lam = torch.linspace(-3.0, 2.0, 120, dtype=F64) ** 3  # ends spread out, dense middle
    A = symmetric(lam, 2)
    exact = torch.linalg.eigvalsh(A)
    k = 4
    result = lanczos(A, k=k, which=which, tol=1e-10, generator=gen(0))
    expected = {"smallest": exact[:k], "largest": exact[-k:], "both": torch.cat([exact[:k], exact[-k:]])}[which]
    assert result.converged and result.which == which and result.k == k
    assert torch.all(result.eigenvalues[1:] >= result.eigenvalues[:-1])
    torch.testing.assert_close(result.eigenvalues, expected, rtol=0, atol=1e-9 * exact.abs().max().item())
    assert result.eigenvectors.shape == (120, expected.numel())


def test_residual_norms_equal_explicit_residuals_and_vectors_are_orthonormal():
    A = symmetric(_hessian_like(200, seed=3), 4)
    scale = torch.linalg.matrix_norm(A, 2).item()
    tol = 1e-7
    for result in iter_lanczos(A, k=3, which="both", tol=tol, generator=gen(5), reorthogonalize="full"):
        Y, theta = result.eigenvectors, result.eigenvalues
        explicit = (A @ Y - Y * theta).norm(dim=0)
        torch.testing.assert_close(result.residual_norms, explicit, rtol=1e-6, atol=1e-12 * scale)
        torch.testing.assert_close(Y.T @ Y, torch.eye(Y.shape[1], dtype=F64), rtol=0, atol=1e-12)
    assert result.converged
    assert torch.all(result.residual_norms <= tol * scale)
    # a converged eigenvector is an eigenvector of A: aligned with eigh's, up to sign
    evals, evecs = torch.linalg.eigh(A)
    overlap = (evecs[:, -1] @ result.eigenvectors[:, -1]).abs().item()
    assert overlap > 1 - 1e-8


def test_iter_lanczos_streams_progress_and_snapshots_stay_valid():
    A = symmetric(_hessian_like(150), 6)
    snapshots = list(iter_lanczos(A, k=2, tol=1e-9, max_iter=60, generator=gen(0)))
    assert [s.done for s in snapshots] == list(range(1, len(snapshots) + 1))
    assert all(s.total == 60 and s.num_matvecs == s.done for s in snapshots)
    assert [s.converged for s in snapshots] == [False] * (len(snapshots) - 1) + [True]
    assert snapshots[0].eigenvalues.numel() == 1  # fewer pairs than k before k steps
    # an early snapshot still describes its own Ritz pairs after the run went on
    early = snapshots[3]
    Y = early.eigenvectors
    explicit = (A @ Y - Y * early.eigenvalues).norm(dim=0)
    torch.testing.assert_close(early.residual_norms, explicit, rtol=1e-6, atol=1e-12)
    final = lanczos(A, k=2, tol=1e-9, max_iter=60, generator=gen(0))
    torch.testing.assert_close(final.eigenvalues, snapshots[-1].eigenvalues, rtol=0, atol=0)


def test_small_operator_exhausts_the_space_and_both_returns_everything():
    lam = torch.tensor([-2.0, -1.0, 0.5, 1.5, 3.0, 7.0], dtype=F64)
    A = symmetric(lam, 7)
    both = lanczos(A, k=4, which="both", tol=1e-14, generator=gen(0))
    assert both.num_iterations == 6 and both.converged
    torch.testing.assert_close(both.eigenvalues, lam, rtol=0, atol=1e-12)
    top = lanczos(A, k=6, tol=1e-14, generator=gen(0))
    torch.testing.assert_close(top.eigenvalues, lam, rtol=0, atol=1e-12)


def test_breakdown_restarts_with_an_orthogonal_vector():
    lam = torch.arange(1.0, 21.0, dtype=F64)
    A = torch.diag(lam)
    v0 = torch.zeros(20, dtype=F64)
    v0[19] = 1.0  # an eigenvector: the Krylov space is invariant after one step
    result = lanczos(A, k=3, tol=1e-10, v0=v0, generator=gen(0))
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, lam[-3:], rtol=0, atol=1e-9)
    # a multiple of the identity breaks down at every step; all Ritz pairs are exact
    identity = lanczos(2.0 * torch.eye(30, dtype=F64), k=3, generator=gen(0))
    assert identity.converged and identity.num_matvecs == 3
    torch.testing.assert_close(identity.eigenvalues, torch.full((3,), 2.0, dtype=F64))
    Y = identity.eigenvectors
    torch.testing.assert_close(Y.T @ Y, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)


def test_float32_operator():
    A = symmetric(_hessian_like(200), 8)
    exact = torch.linalg.eigvalsh(A)
    result = lanczos(A.float(), k=3, which="both", tol=1e-9, generator=gen(0))  # tol is clamped to ~1e-6
    assert result.converged
    assert result.eigenvectors.dtype == torch.float32
    expected = torch.cat([exact[:3], exact[-3:]])
    torch.testing.assert_close(result.eigenvalues, expected, rtol=0, atol=1e-5 * 50)


def test_warm_start_converges_in_fewer_matvecs():
    lam = torch.cat([torch.tensor([3.0, 3.5, 4.0, 5.0, 6.0], dtype=F64),
                     -0.5 + 3 * torch.rand(295, generator=gen(1), dtype=F64)])
    A = symmetric(lam, 0)
    E = torch.randn(300, 300, generator=gen(9), dtype=F64)
    E = (E + E.T) / torch.linalg.matrix_norm(E + E.T, 2)
    A_next = A + 1e-3 * E  # one training step later
    previous = lanczos(A, k=5, tol=1e-8, generator=gen(0))
    exact = torch.linalg.eigvalsh(A_next)[-5:]
    for seed in range(3):
        cold = lanczos(A_next, k=5, tol=1e-8, generator=gen(seed))
        warm = lanczos(A_next, k=5, tol=1e-8, v0=previous.eigenvectors, generator=gen(seed))
        assert cold.converged and warm.converged
        assert warm.num_matvecs <= 0.8 * cold.num_matvecs, (warm.num_matvecs, cold.num_matvecs)
        torch.testing.assert_close(warm.eigenvalues, exact, rtol=0, atol=1e-10)


def test_agrees_with_scipy_eigsh_through_to_scipy():
    A = symmetric(_hessian_like(120), 10)
    op = Recording(A)
    reference = sorted(eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False))
    result = lanczos(op, k=2, tol=1e-10, generator=gen(0))
    assert result.eigenvalues.tolist() == pytest.approx(reference, rel=1e-10)


def test_curvature_summary():
    lam = torch.cat([torch.tensor([-0.4, 25.0], dtype=F64), torch.linspace(-0.2, 1.0, 98, dtype=F64)])
    A = symmetric(lam, 11)
    result = lanczos(A, k=2, which="both", tol=1e-10, generator=gen(0))
    summary = curvature_summary(result)
    assert summary.sharpness == pytest.approx(25.0, rel=1e-10)
    assert summary.lambda_min == pytest.approx(-0.4, rel=1e-9)
    assert summary.condition_number == pytest.approx(62.5, rel=1e-8)
    assert summary.negative_fraction is None
    density = slq_density(A, num_probes=10, num_steps=40, generator=gen(1))
    negative = (lam < 0).double().mean().item()  # 0.17
    assert curvature_summary(result, density).negative_fraction == pytest.approx(negative, abs=0.05)

    with pytest.raises(ValueError, match="which='both'"):
        curvature_summary(lanczos(A, k=2, generator=gen(0)))


def test_curvature_summary_warns_when_lambda_min_vanishes():
    lam = torch.cat([torch.zeros(1, dtype=F64), torch.linspace(0.5, 10.0, 40, dtype=F64)])
    result = lanczos(torch.diag(lam), k=1, which="both", tol=1e-12, generator=gen(0))
    with pytest.warns(UserWarning, match="ill-defined"):
        summary = curvature_summary(result)
    assert abs(summary.lambda_min) < 1e-12
    assert summary.condition_number > 1e11 or math.isinf(summary.condition_number)


def test_eigenvalue_criterion_stops_earlier_with_the_eigenvalue_as_accurate():
    """Kato–Temple: a Ritz value's error is about r²/gap, so λ_max to 1e-6 needs a residual of only ~1e-3·λ."""
    lam = _hessian_like()
    A = symmetric(lam, 3)
    top = torch.linalg.eigvalsh(A)[-1].item()
    tol = 1e-6
    for seed in range(3):
        by_residual = lanczos(A, k=1, tol=tol, generator=gen(seed))
        by_eigenvalue = lanczos(A, k=1, tol=tol, criterion="eigenvalue", generator=gen(seed))
        assert by_residual.converged and by_eigenvalue.converged
        assert by_eigenvalue.num_matvecs < by_residual.num_matvecs
        assert by_eigenvalue.residual_norms.item() > tol * top  # it did stop before the residual test holds
        error = top - by_eigenvalue.eigenvalues.item()
        assert 0 <= error <= tol * top, error  # interlacing: a Ritz value never exceeds λ_max
        # the estimate is of the right size: neither far below the true error nor above the residual
        assert error <= 10 * by_eigenvalue.error_estimates.item() <= 10 * by_eigenvalue.residual_norms.item()
    steps = list(iter_lanczos(A, k=1, tol=tol, criterion="eigenvalue", generator=gen(0)))
    estimates = torch.tensor([s.error_estimates.item() for s in steps])
    errors = torch.tensor([top - s.eigenvalues[-1].item() for s in steps])
    assert torch.all(errors[5:] <= 10 * estimates[5:])


def test_bad_inputs():
    A = torch.eye(5, dtype=F64)
    with pytest.raises(ValueError, match="k must be"):
        lanczos(A, k=6)
    with pytest.raises(ValueError, match="k must be"):
        lanczos(A, k=0)
    with pytest.raises(ValueError, match="which must be"):
        lanczos(A, which="top")
    with pytest.raises(ValueError, match="criterion must be"):
        lanczos(A, criterion="value")
    with pytest.raises(ValueError, match="square"):
        lanczos(torch.ones(4, 5, dtype=F64))
    with pytest.raises(ValueError, match="max_iter"):
        lanczos(A, k=3, max_iter=2)
    with pytest.raises(ValueError, match="v0 must be"):
        lanczos(A, v0=torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="nonzero"):
        lanczos(A, v0=torch.zeros(5, dtype=F64))
    with pytest.raises(TypeError, match="LinearOperator"):
        lanczos([[1.0]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_schmidt_swept_slice_by_slice_gives_the_same_pairs(monkeypatch, dtype):
    """One-row blocks (vectors of GPT-2-small size) are orthogonalised slice by slice, w read once per pass."""
    from tscope_widgets.kernels import krylov
    from tscope_widgets.kernels import operator as operator_module
    N = 5000  # a dense operator with a Hessian-like spectrum, N not a multiple of any slice
    A = symmetric(_hessian_like(N=N), seed=4).to(dtype)
    want = lanczos(A, k=2, which="both", tol=1e-5, generator=gen(0), reorthogonalize="full")
    swept = []
    monkeypatch.setattr(krylov, "BASIS_BLOCK_BYTES", 1)  # one row per block
    monkeypatch.setattr(krylov, "SWEEP", 1024)
    monkeypatch.setattr(krylov, "INNER_SLICE", 256)
    original = krylov._swept_projection
    monkeypatch.setattr(krylov, "_swept_projection", lambda *a: swept.append(1) or original(*a))
    got = lanczos(A, k=2, which="both", tol=1e-5, generator=gen(0), reorthogonalize="full")
    assert swept and got.num_iterations == want.num_iterations
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.eigenvalues, want.eigenvalues, rtol=rtol, atol=0)
    Q = torch.cat(got._basis.blocks)[: got.num_iterations].double()  # [n, N]
    gram = Q @ Q.T
    assert (gram - torch.eye(Q.shape[0], dtype=torch.float64)).abs().max() < (1e-13 if dtype == torch.float64 else 1e-5)
    assert operator_module.INNER_SLICE == 16384  # the module's own slice is untouched by the patch


def test_basis_in_small_blocks_gives_the_same_pairs_and_refuses_a_block_that_does_not_fit(monkeypatch):
    """Large vectors are kept in blocks of a few rows (never one array grown by copying)."""
    from tscope_widgets.kernels import cost, krylov

    A = symmetric(_hessian_like(N=120), seed=2)
    want = lanczos(A, k=3, which="both", tol=1e-10, generator=gen(0))
    N = A.shape[0]
    monkeypatch.setattr(krylov, "BASIS_BLOCK_BYTES", 3 * N * 8)  # blocks of 3 rows
    got = lanczos(A, k=3, which="both", tol=1e-10, generator=gen(0))
    assert got.num_iterations == want.num_iterations > 6 and len(got._basis.blocks) > 2
    torch.testing.assert_close(got.eigenvalues, want.eigenvalues, rtol=1e-12, atol=0)
    overlap = (got.eigenvectors * want.eigenvectors).sum(0).abs()
    torch.testing.assert_close(overlap, torch.ones_like(overlap), rtol=0, atol=1e-10)

    free = iter([10**9, 10**9, N * 8])  # memory runs out when the third block of rows is due
    monkeypatch.setattr(cost, "available_memory", lambda device: next(free))
    steps = []
    with pytest.raises(MemoryError, match=r"Lanczos vectors 7 to 9 .* after 6 steps.*take the result of the steps"):
        for result in iter_lanczos(A, k=3, which="both", tol=1e-10, generator=gen(0)):
            steps.append(result.eigenvalues)
    assert len(steps) == 6  # the partial results were yielded before the refusal


def _run_recurrence(A, steps, mode, seed=1):
    from tscope_widgets.kernels.krylov import LanczosRecurrence
    from tscope_widgets.kernels.operator import as_operator
    g = gen(seed)
    rec = LanczosRecurrence(as_operator(A), torch.randn(A.shape[0], 1, dtype=A.dtype, generator=g), steps, g, mode)
    for _ in range(steps):
        rec.step()
    Q = torch.cat([blk[0] for blk in rec._blocks])[:steps].double()
    loss = (Q @ Q.T - torch.eye(steps, dtype=torch.float64)).abs().max().item()
    return rec, loss


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partial_reorthogonalization_keeps_the_basis_semi_orthogonal_without_ghosts(monkeypatch, dtype):
    """Simon (1984): semi-orthogonality (|q_i·q_k| <= sqrt(eps)) keeps T's Ritz values exact and free of copies,
    with full passes at only some steps; without them the same run loses orthogonality and shows ghosts."""
    from tscope_widgets.kernels import krylov
    lam = torch.cat([torch.linspace(0.0, 1.0, 395, dtype=F64), torch.tensor([3.0, 5.0, 8.0, 13.0, 21.0], dtype=F64)])
    A = symmetric(lam, 7).to(dtype)
    eps = torch.finfo(dtype).eps
    steps = 250
    rec, loss = _run_recurrence(A, steps, "partial")
    assert loss <= eps**0.5
    assert 0 < rec.reorthogonalized_steps < steps
    theta = rec.ritz()[0][0]
    torch.testing.assert_close(theta[-5:], lam[-5:], rtol=0, atol=50 * eps * 21)
    assert int(((theta - 21).abs() < 1e-3).sum()) == 1  # one copy of the largest eigenvalue
    # the same run with the full passes switched off: orthogonality lost, a ghost copy of 21 appears
    monkeypatch.setattr(krylov.LanczosRecurrence, "_needs_full_pass", lambda self, beta: False)
    _, plain_loss = _run_recurrence(A, steps, "partial")
    rec_plain, _ = _run_recurrence(A, steps, "partial")
    assert plain_loss > 0.1
    assert int(((rec_plain.ritz()[0][0] - 21).abs() < 1e-3).sum()) > 1


@pytest.mark.parametrize("which", ["largest", "both"])
def test_partial_and_full_reorthogonalization_give_the_same_eigenpairs(which):
    A = symmetric(_hessian_like(300, seed=5), 6)
    exact = torch.linalg.eigvalsh(A)
    scale = exact.abs().max().item()
    results = {mode: lanczos(A, k=3, which=which, tol=1e-10, generator=gen(2), reorthogonalize=mode)
               for mode in ("partial", "full")}
    expected = exact[-3:] if which == "largest" else torch.cat([exact[:3], exact[-3:]])
    for mode, result in results.items():
        assert result.converged
        torch.testing.assert_close(result.eigenvalues, expected, rtol=0, atol=1e-9 * scale)
        Y = result.eigenvectors
        explicit = (A @ Y - Y * result.eigenvalues).norm(dim=0)
        # partial: the components dropped below sqrt(eps) enter the Lanczos relation (see LanczosResult)
        slack = 0 if mode == "full" else torch.finfo(F64).eps ** 0.5 * scale
        assert torch.all(explicit <= 2e-10 * scale + slack)
    assert results["partial"].num_matvecs <= results["full"].num_matvecs + 2
    with pytest.raises(ValueError, match="reorthogonalize must be one of"):
        lanczos(A, reorthogonalize="none")


@pytest.mark.parametrize("mode", ["partial", "full"])
def test_swept_three_term_update_gives_the_same_pairs(monkeypatch, mode):
    """Long vectors get the three-term update and the new norm in one sweep; the same pairs as the plain ops."""
    from tscope_widgets.kernels import krylov
    A = symmetric(_hessian_like(N=3000), seed=8)
    want = lanczos(A, k=2, which="both", tol=1e-8, generator=gen(3), reorthogonalize=mode)
    calls = []
    original = krylov._subtract
    monkeypatch.setattr(krylov, "SWEEP", 512)
    monkeypatch.setattr(krylov, "INNER_SLICE", 128)
    monkeypatch.setattr(krylov, "_subtract", lambda w, terms, norm=False: calls.append(w.shape[1] >= 1024)
                        or original(w, terms, norm))
    got = lanczos(A, k=2, which="both", tol=1e-8, generator=gen(3), reorthogonalize=mode)
    assert calls and all(calls)
    assert got.num_iterations == want.num_iterations
    torch.testing.assert_close(got.eigenvalues, want.eigenvalues, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.residual_norms, want.residual_norms, rtol=1e-6, atol=1e-12)
