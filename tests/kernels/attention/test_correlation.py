"""attention_sensitivity_correlation: Spearman against scipy on the mean maps (ties included), the
bias-corrected bootstrap interval's coverage on a synthetic population, discordant cells, the per-sample
maps of a real model, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.testing import assert_close

from tests.model_zoo import random_batch, tiny
from tscope_widgets import attention_sensitivity_correlation, attention_sensitivity_samples
from tscope_widgets.kernels.attention.correlation import average_ranks, spearman
from tscope_widgets.models import adapt


def test_average_ranks_and_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (4, 30), generator=g).double()  # many ties
    y = torch.randn(4, 30, generator=g, dtype=torch.float64)
    for row in range(4):
        assert_close(average_ranks(x[row]), torch.from_numpy(stats.rankdata(x[row].numpy())), rtol=0, atol=0)
        assert spearman(x[row], y[row]).item() == pytest.approx(stats.spearmanr(x[row], y[row])[0], abs=1e-13)
    assert torch.isnan(spearman(torch.ones(5, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64)))


def _population(N, S, g, noise=0.3):
    """Per-sample maps around fixed means: attention ~ mu_a + noise, sensitivity ~ f(mu_a) + z + noise."""
    mu_a = torch.rand(2, S, S, generator=g, dtype=torch.float64)
    mu_s = mu_a[0] ** 2 + 0.5 * torch.rand(S, S, generator=g, dtype=torch.float64)
    A = mu_a + noise * torch.randn(N, 2, S, S, generator=g, dtype=torch.float64)
    s = mu_s + noise * torch.randn(N, S, S, generator=g, dtype=torch.float64)
    return mu_a, mu_s, A, s


def test_rho_is_scipy_spearman_of_the_mean_maps_over_valid_cells():
    g = torch.Generator().manual_seed(1)
    N, S = 9, 7
    _, _, A, s = _population(N, S, g)
    mask = torch.ones(N, S, dtype=torch.long)
    mask[:3, -2:] = 0  # padding: the last two positions are dropped from the cells
    s_nan = s.clone()
    s_nan[:3, -2:, :] = float("nan")
    s_nan[:3, :, -2:] = float("nan")
    res = attention_sensitivity_correlation(A, s_nan, mask, labels=["head0", "head1"], num_bootstrap=200)
    keep = [(i, j) for i in range(S - 2) for j in range(i)]  # below the diagonal, tokens in every sample
    assert res.cells.tolist() == [list(c) for c in keep]
    ii, jj = torch.tensor(keep).T
    for m in range(2):
        ref = stats.spearmanr(A[:, m].mean(0)[ii, jj].numpy(), s.mean(0)[ii, jj].numpy())[0]
        assert res.rho[m].item() == pytest.approx(ref, abs=1e-12)
        assert res.low[m] <= res.rho[m] <= res.high[m]
    # non-causal: both triangles
    res2 = attention_sensitivity_correlation(A, s, causal=False, num_bootstrap=200)
    both = [(i, j) for i in range(S) for j in range(S) if i != j]
    ii, jj = torch.tensor(both).T
    ref = stats.spearmanr(A[:, 1].mean(0)[ii, jj].numpy(), s.mean(0)[ii, jj].numpy())[0]
    assert res2.rho[1].item() == pytest.approx(ref, abs=1e-12)
    # the mean maps are plain means over the samples counting a cell
    assert_close(res2.mean_sensitivity, s.mean(0))
    # with padding: a cell's mean is over the samples where both positions are tokens
    want = torch.where(mask.bool()[:, :, None] & mask.bool()[:, None, :], s, 0.0).sum(0)
    want = want / (mask[:, :, None] * mask[:, None, :]).sum(0)
    assert_close(res.mean_sensitivity, want)
    assert_close(res.mean_attention[1], torch.where(mask.bool()[:, :, None] & mask.bool()[:, None, :], A[:, 1],
                                                    0.0).sum(0) / (mask[:, :, None] * mask[:, None, :]).sum(0))


def test_discordant_cells_are_those_with_the_largest_rank_gap():
    S = 6
    a = torch.zeros(S, S, dtype=torch.float64)
    s = torch.zeros(S, S, dtype=torch.float64)
    cells = [(i, j) for i in range(S) for j in range(i)]
    for r, (i, j) in enumerate(cells):
        a[i, j], s[i, j] = r, r  # concordant ...
    a[5, 0], s[5, 0] = 100.0, -1.0  # ... except: attention top, sensitivity bottom
    a[4, 3], s[4, 3] = -1.0, 100.0  # and the opposite
    N = 4
    A = a.expand(N, S, S) + 1e-3 * torch.randn(N, S, S, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = attention_sensitivity_correlation(A, s.expand(N, S, S).clone(), num_bootstrap=100, top=2)
    assert res.attention_high[0, 0].tolist() == [5, 0]
    assert res.sensitivity_high[0, 0].tolist() == [4, 3]
    assert res.rows()[0]["map"] == "map0" and res.rows()[0]["cells"] == len(cells)


def test_bootstrap_interval_covers_the_population_rho():
    """95% percentile intervals from N=100 noisy samples (per-cell standard error 0.01, gaps between the 28
    cell means about 0.04: the regime the docstring names) contain the rho of the true mean maps about 95% of
    the time, for a strongly correlated map (head 0: sensitivity ~ attention^2 + noise) and a weakly
    correlated one (head 1); 200 experiments each, so a coverage outside [0.90, 0.995] is a wrong interval."""
    g = torch.Generator().manual_seed(2)
    S, N, reps, noise = 8, 100, 200, 0.1
    mu_a, mu_s, _, _ = _population(2, S, g)
    cells = torch.tril(torch.ones(S, S, dtype=torch.bool), -1)
    truth = [stats.spearmanr(mu_a[m][cells].numpy(), mu_s[cells].numpy())[0] for m in range(2)]
    assert truth[0] > 0.6 and abs(truth[1]) < 0.4
    hits = np.zeros(2)
    widths = []
    for r in range(reps):
        A = mu_a + noise * torch.randn(N, 2, S, S, generator=g, dtype=torch.float64)
        s = mu_s + noise * torch.randn(N, S, S, generator=g, dtype=torch.float64)
        res = attention_sensitivity_correlation(A, s, num_bootstrap=400, seed=r)
        hits += [bool(res.low[m] <= truth[m] <= res.high[m]) for m in range(2)]
        widths.append((res.high - res.low).numpy())
    coverage = hits / reps
    assert ((coverage >= 0.90) & (coverage <= 0.995)).all(), coverage
    assert (0.01 < np.median(widths, 0)).all() and (np.median(widths, 0) < 0.2).all()  # an interval, not a point


def test_per_sample_maps_of_a_model_feed_the_correlation():
    model = tiny(n_layer=2, n_head=2)
    adapter = adapt(model)
    batch = random_batch(adapter, 6, 7, pad=False, seed=3)
    att, roll, sens = attention_sensitivity_samples(model, batch["input_ids"], layers="all")
    assert att[1].shape == (6, 2, 7, 7) and roll[1].shape == (6, 7, 7) and sens[1].shape == (6, 7, 7)
    assert_close(att[0].sum(-1), torch.ones(6, 2, 7, dtype=torch.float64))
    maps = {b: torch.cat([att[b], att[b].mean(1, keepdim=True), roll[b][:, None]], 1) for b in att}
    res = attention_sensitivity_correlation(maps, sens, num_bootstrap=100,
                                            labels=["head0", "head1", "mean", "rollout"])
    assert set(res) == {0, 1} and res[1].labels[-1] == "rollout" and res[1].rho.shape == (4,)
    ii, jj = res[1].cells.T
    ref = stats.spearmanr(roll[1].mean(0)[ii, jj].numpy(), sens[1].mean(0)[ii, jj].numpy())[0]
    assert res[1].rho[3].item() == pytest.approx(ref, abs=1e-12)


def test_bad_input_is_named():
    A = torch.rand(5, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="sensitivity must be"):
        attention_sensitivity_correlation(A, torch.rand(4, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 samples"):
        attention_sensitivity_correlation(A[:1], A[:1])
    with pytest.raises(ValueError, match="num_bootstrap"):
        attention_sensitivity_correlation(A, A, num_bootstrap=10)
    with pytest.raises(ValueError, match="confidence"):
        attention_sensitivity_correlation(A, A, confidence=95)
    with pytest.raises(TypeError, match="both"):
        attention_sensitivity_correlation({0: A}, A)
    bad = A.clone()
    bad[0, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        attention_sensitivity_correlation(bad, A)
    with pytest.raises(ValueError, match="at least 3"):
        attention_sensitivity_correlation(A[:, :2, :2], A[:, :2, :2])
