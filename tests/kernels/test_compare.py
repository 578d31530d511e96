"""Per-cell comparisons of two runs against SciPy: Welch and paired t-tests, Benjamini–Hochberg, Hedges' g;
the false discovery rate under the null, power on planted differences, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from tscope_widgets.kernels.compare import (
    Comparison,
    adjust_p_values,
    compare_statistics,
    hedges_correction,
    paired_statistics,
)
from tscope_widgets.kernels.student_t import regularized_incomplete_beta, t_two_sided_p
from tscope_widgets.kernels.welford import WelfordState

F64 = torch.float64


def state_of(x: np.ndarray, mask: np.ndarray | None = None) -> WelfordState:
    st = WelfordState(x.shape[1:])
    st.update(torch.from_numpy(x), None if mask is None else torch.from_numpy(mask))
    return st


def test_student_t_p_values_match_scipy_over_many_decades():
    rng = np.random.default_rng(0)
    t = rng.standard_normal(4000) * np.exp(rng.uniform(-8, 3.5, 4000))
    df = np.exp(rng.uniform(np.log(0.5), np.log(1e5), 4000))
    p = t_two_sided_p(torch.from_numpy(t), torch.from_numpy(df)).numpy()
    ref = 2 * scipy.stats.t.sf(np.abs(t), df)
    keep = ref > 1e-250
    assert keep.sum() > 3500 and ref[keep].min() < 1e-30  # small p-values keep their relative accuracy
    np.testing.assert_allclose(p[keep], ref[keep], rtol=1e-9, atol=0)
    x, a, b = rng.uniform(0, 1, 2000), np.exp(rng.uniform(-2, 6, 2000)), np.exp(rng.uniform(-2, 6, 2000))
    got = regularized_incomplete_beta(torch.from_numpy(x), torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, scipy.special.betainc(a, b, x), rtol=1e-10, atol=1e-300)
    edge = t_two_sided_p(torch.tensor([0.0, np.inf, -np.inf, np.nan, 1.0], dtype=F64),
                         torch.tensor([3.0, 3.0, 3.0, 3.0, 0.0], dtype=F64))
    assert edge[:3].tolist() == [1.0, 0.0, 0.0] and edge[3:].isnan().all()


def test_welch_t_df_and_p_match_scipy_with_masked_cells_of_different_counts():
    rng = np.random.default_rng(1)
    xa = rng.normal(1.0, 2.0, (40, 5, 6))
    xb = rng.normal(1.3, 0.7, (25, 5, 6))
    ma, mb = rng.uniform(size=xa.shape) > 0.3, rng.uniform(size=xb.shape) > 0.2
    ma[:, 0, 0] = False  # no value in a
    ma[1:, 0, 1] = False  # one value in a
    mb[2:, 0, 2] = False  # two values in b: valid
    c = compare_statistics(state_of(xa, ma), state_of(xb, mb), correction=None)
    assert isinstance(c, Comparison) and c.shape == (5, 6) and not c.paired
    for i in range(5):
        for j in range(6):
            va, vb = xa[ma[:, i, j], i, j], xb[mb[:, i, j], i, j]
            if va.size < 2 or vb.size < 2:
                assert not c.valid[i, j] and all(getattr(c, k)[i, j].isnan() for k in ("t", "df", "p", "q"))
                continue
            res = scipy.stats.ttest_ind_from_stats(va.mean(), va.std(ddof=1), va.size, vb.mean(), vb.std(ddof=1),
                                                   vb.size, equal_var=False)
            se2 = va.var(ddof=1) / va.size + vb.var(ddof=1) / vb.size
            df = se2**2 / ((va.var(ddof=1) / va.size) ** 2 / (va.size - 1) + (vb.var(ddof=1) / vb.size) ** 2
                           / (vb.size - 1))
            assert c.t[i, j].item() == pytest.approx(res.statistic, rel=1e-11)
            assert c.df[i, j].item() == pytest.approx(df, rel=1e-11)
            assert c.p[i, j].item() == pytest.approx(res.pvalue, rel=1e-9)
            assert c.difference[i, j].item() == pytest.approx(va.mean() - vb.mean(), rel=1e-12, abs=1e-15)
    assert c.num_tests == 28 and torch.equal(c.q[c.valid], c.p[c.valid])  # no correction: q = p


def test_paired_test_matches_ttest_rel():
    rng = np.random.default_rng(2)
    shared = rng.lognormal(0.0, 1.0, (30, 4, 4))  # what both models see: large between-sample spread
    xa = shared * (1 + 0.01 * rng.standard_normal(shared.shape)) + 0.02
    xb = shared * (1 + 0.01 * rng.standard_normal(shared.shape))
    diff, a, b = state_of(xa - xb), state_of(xa), state_of(xb)
    c = paired_statistics(diff, a=a, b=b, correction=None)
    res = scipy.stats.ttest_rel(xa, xb, axis=0)
    np.testing.assert_allclose(c.t.numpy(), res.statistic, rtol=1e-10)
    np.testing.assert_allclose(c.p.numpy(), res.pvalue, rtol=1e-9)
    assert c.paired and torch.equal(c.df, torch.full((4, 4), 29.0, dtype=F64))
    np.testing.assert_allclose(c.log_ratio.numpy(), np.log(xa.mean(0) / xb.mean(0)), rtol=1e-12)
    d = xa - xb
    g_z = d.mean(0) / d.std(0, ddof=1) * scipy.special.gamma(29 / 2) / (np.sqrt(29 / 2) * scipy.special.gamma(14))
    np.testing.assert_allclose(c.effect_size.numpy(), g_z, rtol=1e-12)
    # Pairing removes the shared spread: Welch's test on the same values finds far less.
    welch = compare_statistics(a, b)
    assert c.num_significant >= 12 and welch.num_significant == 0


def test_benjamini_hochberg_and_bonferroni_match_scipy():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=150), rng.uniform(0, 1e-3, 30), [0.5, 0.5, 1.0]])
    rng.shuffle(p)
    valid = rng.uniform(size=p.size) > 0.1
    pt = torch.from_numpy(np.where(valid, p, np.nan))
    q = adjust_p_values(pt, torch.from_numpy(valid), "fdr_bh").numpy()
    np.testing.assert_allclose(q[valid], scipy.stats.false_discovery_control(p[valid], method="bh"), rtol=1e-14)
    assert np.isnan(q[~valid]).all()
    bonf = adjust_p_values(pt, torch.from_numpy(valid), "bonferroni").numpy()
    np.testing.assert_allclose(bonf[valid], np.minimum(1, p[valid] * valid.sum()), rtol=1e-15)
    assert torch.equal(adjust_p_values(pt, torch.from_numpy(valid), None)[valid], pt[valid])
    empty = adjust_p_values(pt, torch.zeros(p.size, dtype=torch.bool))
    assert empty.isnan().all()
    with pytest.raises(ValueError, match="NaN in a valid cell"):
        adjust_p_values(pt, torch.ones(p.size, dtype=torch.bool))


def test_hedges_g_matches_the_formula_from_raw_samples():
    rng = np.random.default_rng(4)
    xa, xb = rng.normal(0.0, 1.0, (7, 3)), rng.normal(0.8, 1.5, (5, 3))
    c = compare_statistics(state_of(xa), state_of(xb))
    na, nb = 7, 5
    sp = np.sqrt(((na - 1) * xa.var(0, ddof=1) + (nb - 1) * xb.var(0, ddof=1)) / (na + nb - 2))
    nu = na + nb - 2
    J = scipy.special.gamma(nu / 2) / (np.sqrt(nu / 2) * scipy.special.gamma((nu - 1) / 2))
    g = J * (xa.mean(0) - xb.mean(0)) / sp
    np.testing.assert_allclose(c.effect_size.numpy(), g, rtol=1e-12)
    # the correction matters at these sizes (J(10) = 0.922) and is close to Hedges' approximation
    assert abs(J - 1) > 0.05 and hedges_correction(torch.tensor(10.0, dtype=F64)).item() == pytest.approx(J, rel=1e-13)
    assert J == pytest.approx(1 - 3 / (4 * nu - 1), rel=2e-3)


def _row(state: WelfordState, i: int) -> WelfordState:
    sd = state.state_dict()
    return WelfordState.from_state_dict({k: v if k == "rows" else v[i] for k, v in sd.items()})


def test_under_the_null_the_chance_of_any_significant_cell_stays_at_alpha():
    """All cells null: the false discovery rate is the chance of any discovery; BH keeps it <= alpha.
    An uncorrected test over 64 cells would flag some cell in about 1 - 0.95^64 = 96% of the runs."""
    sims, n, cells, alpha = 400, 12, 64, 0.05
    gen = torch.Generator().manual_seed(5)
    a, b = WelfordState((sims, cells)), WelfordState((sims, cells))  # one row per simulation
    a.update(torch.randn(n, sims, cells, generator=gen, dtype=F64) * 2 + 3)  # the same model and data distribution
    b.update(torch.randn(n + 5, sims, cells, generator=gen, dtype=F64) * 2 + 3)
    p = compare_statistics(a, b, correction=None).p
    valid = torch.ones(cells, dtype=torch.bool)
    any_bh = sum(bool((adjust_p_values(row, valid) < alpha).any()) for row in p)  # BH within each simulation
    any_raw = int((p < alpha).any(1).sum())
    first = WelfordState((cells,)).merge(_row(a, 0)), WelfordState((cells,)).merge(_row(b, 0))
    assert torch.equal(compare_statistics(*first, alpha=alpha).q, adjust_p_values(p[0], valid))
    rate = any_bh / sims
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / sims)  # 0.083
    assert rate >= 0.01  # the test is not so conservative that it never fires
    assert any_raw / sims > 0.9


def test_a_planted_difference_is_found_in_its_cells():
    gen = torch.Generator().manual_seed(6)
    shift = torch.zeros(8, 8, dtype=F64)
    planted = [(1, 1), (2, 5), (6, 0), (7, 7)]
    for i, j in planted:
        shift[i, j] = 1.5
    a, b = WelfordState((8, 8)), WelfordState((8, 8))
    a.update(torch.randn(60, 8, 8, generator=gen, dtype=F64) + shift)
    b.update(torch.randn(50, 8, 8, generator=gen, dtype=F64))
    c = compare_statistics(a, b)
    found = {tuple(ij) for ij in c.significant.nonzero().tolist()}
    assert found == set(planted)
    assert (c.effect_size[c.significant] > 1.0).all() and (c.effect_size[~c.significant].abs() < 0.7).all()
    assert c.num_tests == 64 and c.meta()["num_significant"] == 4


def test_zero_variance_cells_and_log_ratios():
    a, b = WelfordState((4,)), WelfordState((4,))
    a.update(torch.tensor([[0.0, 2.0, 1.0, -1.0], [0.0, 2.0, 3.0, -2.0], [0.0, 2.0, 2.0, -3.0]], dtype=F64))
    b.update(torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 2.0]], dtype=F64))
    c = compare_statistics(a, b)
    assert c.t[0].item() == 0 and c.p[0].item() == 1 and c.df[0].isnan() and c.effect_size[0].isnan()
    assert c.t[1].item() == np.inf and c.p[1].item() == 0 and c.significant[1]
    assert c.log_ratio[1].item() == pytest.approx(np.log(2.0)) and c.log_ratio[2].item() == pytest.approx(np.log(4 / 3))
    assert c.log_ratio[0].isnan() and c.log_ratio[3].isnan()  # means <= 0
    assert c.num_tests == 4


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda a, b: compare_statistics(a, WelfordState((3, 4))), ValueError, r"a has \[3, 3\], b has \[3, 4\]"),
        (lambda a, b: compare_statistics(a, b.mean), TypeError, "b must be a WelfordState, got Tensor"),
        (lambda a, b: compare_statistics(a, b, alpha=0), ValueError, r"alpha must be a number in \(0, 1\)"),
        (lambda a, b: compare_statistics(a, b, alpha=True), ValueError, "alpha"),
        (lambda a, b: compare_statistics(a, b, correction="holm"), ValueError, "correction must be one of"),
        (lambda a, b: paired_statistics(a, b=WelfordState((2, 2))), ValueError, r"b has cell shape \[2, 2\]"),
        (lambda a, b: paired_statistics(None), TypeError, "differences must be a WelfordState"),
    ],
)
def test_bad_input_is_refused_with_what_was_wrong(call, error, message):
    a, b = WelfordState((3, 3)), WelfordState((3, 3))
    with pytest.raises(error, match=message):
        call(a, b)


def test_comparison_tensors_and_meta():
    a, b = WelfordState((2, 2)), WelfordState((2, 2))
    a.update(torch.randn(5, 2, 2, dtype=torch.float32))
    b.update(torch.randn(5, 2, 2, dtype=torch.float32))
    c = compare_statistics(a, b, correction="bonferroni", alpha=0.1)
    tensors = c.tensors()
    assert set(tensors) == set(Comparison.TENSORS) and tensors["p"].dtype == F64
    assert tensors["significant"].dtype == torch.bool and tensors["p"].shape == (2, 2)
    assert c.meta() == {"alpha": 0.1, "correction": "bonferroni", "paired": False, "num_tests": 4,
                        "num_significant": c.num_significant, "shape": [2, 2]}
    with pytest.raises(AttributeError):
        c.alpha = 0.5  # frozen
