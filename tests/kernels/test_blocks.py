"""Block norm map ||H_ab||_F and spectral norms of diagonal blocks against dense float64 Hessians."""

import json
import math

import pytest
import torch

from tests import model_zoo
from tscope_widgets.jobs import Checkpoint
from tscope_widgets.kernels.blocks import BlockNorms, block_norms, iter_block_norms
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.models import adapt

# groups bigger than 32 parameters, so that K = 4 and K = 32 probes both estimate (not compute exactly)
PROBED = ["embed", "block0.mlp.in", "block0.mlp.out"]


@pytest.fixture(scope="module")
def problem():
    """A one-layer tiny model (260 parameters), a padded batch, its dense Hessian and group offsets."""
    model = model_zoo.tiny(vocab_size=7, d_model=4, n_head=1, n_layer=1, d_mlp=8, max_seq_len=6)
    adapter = adapt(model)
    batch = model_zoo.random_batch(adapter, 3, 6)
    H = dense_hessian(adapter, batch)
    offsets = HessianOperator(adapter, batch).offsets
    return adapter, batch, H, offsets


def _dense_norms(H, offsets, labels):
    return torch.tensor([[H[offsets[a], offsets[b]].norm() for b in labels] for a in labels], dtype=torch.float64)


def _dense_spectral(H, offsets, labels):
    return torch.tensor([torch.linalg.eigvalsh(H[offsets[a], offsets[a]]).abs().max() for a in labels])


@pytest.fixture(scope="module")
def exact_result(problem):
    adapter, batch, _, _ = problem
    return block_norms(adapter, batch, exact=True)


def test_exact_mode_equals_dense_blocks(problem, exact_result):
    adapter, _, H, offsets = problem
    res = exact_result
    assert res.labels == list(adapter.param_groups())
    assert res.exact and res.num_matvecs == H.shape[0]
    assert res.frobenius.dtype == torch.float64 and res.frobenius.device.type == "cpu"
    torch.testing.assert_close(res.frobenius, _dense_norms(H, offsets, res.labels), rtol=0, atol=1e-10)
    assert torch.all(res.frobenius_stderr == 0)
    assert res.done == res.total == len(res.labels)


def test_exact_map_is_symmetric(exact_result):
    F = exact_result.frobenius
    assert (F - F.T).abs().max() <= 1e-12 * F.max()
    assert F.max() > 0


def test_spectral_norms_of_diagonal_blocks(problem, exact_result):
    _, _, H, offsets = problem
    torch.testing.assert_close(
        exact_result.spectral, _dense_spectral(H, offsets, exact_result.labels), rtol=0, atol=1e-8
    )


def test_probe_mode_spectral_norms_by_lanczos(problem):
    adapter, batch, H, offsets = problem
    groups = ["block0.attn.q", "block0.mlp.in", "head"]  # 20, 40, 28 parameters
    res = block_norms(adapter, batch, groups, exact=False, num_probes=8, generator=torch.Generator().manual_seed(0))
    assert not res.exact and res.total == 2 * len(groups)
    assert res.num_matvecs > 3 * 8  # probes and Lanczos products
    want = _dense_spectral(H, offsets, groups)
    torch.testing.assert_close(res.spectral, want, rtol=1e-8, atol=1e-8)


def test_small_groups_are_exact_in_probe_mode(problem):
    adapter, batch, H, offsets = problem
    groups = ["block0.ln1", "ln_f"]  # 8 parameters each <= 16 probes: unit vectors cost no more
    res = block_norms(adapter, batch, groups, exact=False, num_probes=16)
    assert res.exact and res.num_matvecs == 16
    torch.testing.assert_close(res.frobenius, _dense_norms(H, offsets, groups), rtol=0, atol=1e-10)


def _rademacher_variance(A):
    """Var ||A z||^2 for a Rademacher z: 2 sum_{i != j} M_ij^2 with M = A^T A."""
    M = A.T @ A
    return 2 * (M.square().sum() - M.diagonal().square().sum())


@pytest.fixture(scope="module")
def probe_runs(problem):
    adapter, batch, H, offsets = problem
    runs = {}
    for K in (4, 32):
        runs[K] = [
            block_norms(adapter, batch, PROBED, exact=False, num_probes=K, spectral=False,
                        generator=torch.Generator().manual_seed(seed))
            for seed in range(16)
        ]
    return runs


def test_probe_error_matches_theory_and_shrinks_like_one_over_sqrt_probes(problem, probe_runs):
    _, _, H, offsets = problem
    pos = [offsets[g] for g in PROBED]
    exact_sq = torch.tensor([[H[a, b].square().sum() for b in pos] for a in pos])
    var1 = torch.tensor([[_rademacher_variance(H[a, b]) for b in pos] for a in pos])
    ratios = {}
    for K, runs in probe_runs.items():
        sq = torch.stack([r.frobenius.square() for r in runs])  # [seeds, G, G]
        # off-diagonal entries average the estimates from both column groups
        theory = (var1 + var1.T) / (4 * K)
        theory.diagonal().copy_(var1.diagonal() / K)
        rms = (sq - exact_sq).square().mean(0).sqrt()
        ratios[K] = rms / theory.sqrt()
        assert torch.all(ratios[K] > 0.5) and torch.all(ratios[K] < 2.0), (K, ratios[K])
        # unbiased for the squared norm
        bias = (sq.mean(0) - exact_sq).abs()
        assert torch.all(bias <= 4 * theory.sqrt() / math.sqrt(len(runs))), (K, bias / theory.sqrt())
    err4 = torch.stack([r.frobenius - exact_sq.sqrt() for r in probe_runs[4]]).square().mean().sqrt()
    err32 = torch.stack([r.frobenius - exact_sq.sqrt() for r in probe_runs[32]]).square().mean().sqrt()
    assert 1.5 < err4 / err32 < 5.0  # sqrt(8) = 2.8


def test_probe_stderr_matches_theory_and_z_scores_are_bounded(problem, probe_runs):
    _, _, H, offsets = problem
    pos = [offsets[g] for g in PROBED]
    exact = _dense_norms(H, offsets, PROBED)
    var1 = torch.tensor([[_rademacher_variance(H[a, b]) for b in pos] for a in pos])
    K, runs = 32, probe_runs[32]
    theory = (var1 + var1.T) / (4 * K)
    theory.diagonal().copy_(var1.diagonal() / K)
    theory_se = theory.sqrt() / (2 * exact)  # delta method for the norm
    ratio = torch.stack([r.frobenius_stderr for r in runs]).median(0).values / theory_se
    assert torch.all(ratio > 0.6) and torch.all(ratio < 1.5), ratio
    z = torch.stack([(r.frobenius - exact) / r.frobenius_stderr for r in runs])
    assert torch.isfinite(z).all()
    assert 0.5 < z.square().mean().sqrt() < 2.0
    assert z.abs().max() < 6.0
    assert z.mean().abs() < 0.5


def test_probe_map_is_symmetric_and_not_exact(probe_runs):
    res = probe_runs[4][0]
    assert not res.exact and res.num_matvecs == 3 * 4
    torch.testing.assert_close(res.frobenius, res.frobenius.T, rtol=0, atol=0)
    assert torch.all(res.frobenius_stderr > 0)


def test_gpt2_fused_groups(problem):
    model = model_zoo.gpt2()
    adapter = adapt(model)
    batch = model_zoo.random_batch(adapter, 2, 5)
    groups = ["block1.attn.q", "block1.attn.k", "block1.attn.v", "block1.ln2"]
    H = dense_hessian(adapter, batch, groups=groups)
    offsets = HessianOperator(adapter, batch, groups=groups).offsets
    res = block_norms(adapter, batch, groups)
    assert res.labels == groups and res.exact
    torch.testing.assert_close(res.frobenius, _dense_norms(H, offsets, groups), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.spectral, _dense_spectral(H, offsets, groups), rtol=0, atol=1e-8)
    assert (res.frobenius - res.frobenius.T).abs().max() <= 1e-12 * res.frobenius.max()


def test_ggn_kind(problem):
    adapter, batch, _, _ = problem
    groups = ["block0.attn.v", "head"]
    G = dense_hessian(adapter, batch, groups=groups, kind="ggn")
    offsets = HessianOperator(adapter, batch, groups=groups).offsets
    res = block_norms(adapter, batch, groups, kind="ggn", exact=True)
    assert res.kind == "ggn"
    torch.testing.assert_close(res.frobenius, _dense_norms(G, offsets, groups), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.spectral, _dense_spectral(G, offsets, groups), rtol=0, atol=1e-8)


def test_labels_follow_the_given_order_and_patterns_expand(problem):
    adapter, batch, _, _ = problem
    res = block_norms(adapter, batch, ["head", "block0.attn.*"], spectral=False)
    assert res.labels == ["head", "block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o"]
    assert torch.isnan(res.spectral).all()


def test_iter_streams_units_and_resumes_to_the_same_result(problem):
    adapter, batch, _, _ = problem
    groups = ["block0.attn.q", "block0.mlp.in", "head"]

    def run(resume=None):
        return list(iter_block_norms(adapter, batch, groups, exact=False, num_probes=4, resume=resume,
                                     generator=torch.Generator().manual_seed(3)))

    snaps = run()
    assert [s.done for s in snaps] == list(range(1, 7)) and {s.total for s in snaps} == {6}
    first = snaps[0]  # column group 0 done: its row and column are filled, the rest is NaN
    assert not torch.isnan(first.frobenius[:, 0]).any() and not torch.isnan(first.frobenius[0]).any()
    assert torch.isnan(first.frobenius[1:, 1:]).all()
    assert torch.isnan(snaps[2].spectral).all() and not torch.isnan(snaps[-1].spectral).any()
    for k in (1, 4):  # after two column groups; after one Lanczos run
        snap = snaps[k]
        json.dumps(snap.meta())
        ckpt = Checkpoint(tensors=snap.state_dict(), meta=snap.meta(), done=snap.done, total=snap.total)
        resumed = run(resume=ckpt)
        assert resumed[0].done == k + 2
        final = resumed[-1]
        assert torch.equal(final.frobenius, snaps[-1].frobenius)
        assert torch.equal(final.spectral, snaps[-1].spectral)
        assert final.num_matvecs == snaps[-1].num_matvecs


def test_to_dict_and_snapshot_independence(problem):
    adapter, batch, _, _ = problem
    snaps = list(iter_block_norms(adapter, batch, ["head", "ln_f"], exact=True))
    assert torch.isnan(snaps[0].frobenius[1, 1]) and not torch.isnan(snaps[1].frobenius[1, 1])
    d = snaps[-1].to_dict()
    assert d["labels"] == ["head", "ln_f"] and d["frobenius"].shape == (2, 2) and d["exact"] is True
    assert isinstance(snaps[-1], BlockNorms)


def test_bad_arguments(problem):
    adapter, batch, _, _ = problem
    with pytest.raises(ValueError, match="unknown parameter group 'nope'"):
        block_norms(adapter, batch, ["head", "nope"])
    with pytest.raises(ValueError, match="num_probes"):
        block_norms(adapter, batch, ["head"], num_probes=1)
    with pytest.raises(ValueError, match="kind"):
        block_norms(adapter, batch, ["head"], kind="fisher")
    with pytest.raises(ValueError, match="exact"):
        block_norms(adapter, batch, ["head"], exact="yes")


def test_block_eigen_kernel_streams_the_top_eigenvalues_of_a_diagonal_block(problem):
    from tscope_widgets.kernels.blocks import block_eigen_kernel
    from tscope_widgets.widgets import spectrum

    assert spectrum.block_eigen_kernel is block_eigen_kernel  # still importable from the widget module
    adapter, batch, H, offsets = problem
    group = "block0.mlp.in"
    snapshots = list(block_eigen_kernel(adapter, batch, group, k=3, tol=1e-10, dtype=torch.float64))
    assert len(snapshots) >= 1 and snapshots[-1].converged
    exact = torch.linalg.eigvalsh(H[offsets[group], offsets[group]])[-3:]
    torch.testing.assert_close(snapshots[-1].eigenvalues, exact, rtol=1e-8, atol=1e-10)
