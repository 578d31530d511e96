"""What the comparison explorer shows, as pure functions: Welch figures per cell against SciPy on raw samples,
the reservoir values of a clicked cell, runs that cannot be compared, and the checks of browser values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from tscope_widgets.kernels.welford import WelfordState
from tscope_widgets.widgets._comparison_state import (
    RunSide,
    cell_distributions,
    check_comparable,
    check_view_state,
    layer_view,
)

S = 4


def _side(values: np.ndarray, layers=(0,)) -> RunSide:
    """A run whose every layer saw ``values`` ``[n, S, S]`` (NaN: the cell not observed in that sample)."""
    stats, maps = {}, {}
    for layer in layers:
        state = WelfordState((S, S))
        x = torch.from_numpy(values)
        state.update(torch.nan_to_num(x), mask=torch.isfinite(x))
        stats[layer] = state
        maps[layer] = x.to(torch.float32)
    return RunSide(stats=stats, maps=maps, status="done", done=values.shape[0])


@pytest.fixture(scope="module")
def samples():
    """Run a: 12 samples, run b: 9, a planted difference in the first row; a few cells observed rarely."""
    rng = np.random.default_rng(3)
    a = rng.lognormal(0.0, 0.5, (12, S, S))
    b = rng.lognormal(0.0, 0.7, (9, S, S))
    a[:, 0, :] += 1.5  # planted: a > b in row 0
    a[1:, 3, 3] = np.nan  # one value in a: untested
    b[:6, 2, 1] = np.nan  # 3 values in b: tested with fewer
    return a, b


def test_welch_figures_agree_with_scipy_ttest_ind_per_cell(samples):
    a, b = samples
    for correction in ("fdr_bh", "bonferroni", None):
        c, arrays = layer_view(_side(a), _side(b), 0, alpha=0.05, correction=correction)
        ps, valid = np.full((S, S), np.nan), np.zeros((S, S), bool)
        for i in range(S):
            for j in range(S):
                xa, xb = a[:, i, j], b[:, i, j]
                xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
                if xa.size < 2 or xb.size < 2:
                    assert math.isnan(arrays["values"][i, j]) and math.isnan(arrays["q"][i, j])
                    continue
                res = scipy.stats.ttest_ind(xa, xb, equal_var=False)
                np.testing.assert_allclose(float(c.t[i, j]), res.statistic, rtol=1e-10)
                np.testing.assert_allclose(float(c.df[i, j]), res.df, rtol=1e-10)
                np.testing.assert_allclose(float(c.p[i, j]), res.pvalue, rtol=1e-9)
                np.testing.assert_allclose(arrays["values"][i, j], xa.mean() - xb.mean(), rtol=1e-12)
                ps[i, j], valid[i, j] = res.pvalue, True
        assert valid.sum() == S * S - 1 == c.num_tests
        expected_q = ps[valid]
        if correction == "fdr_bh":
            expected_q = scipy.stats.false_discovery_control(ps[valid], method="bh")
        elif correction == "bonferroni":
            expected_q = np.minimum(1.0, ps[valid] * valid.sum())
        np.testing.assert_allclose(arrays["q"][valid], expected_q, rtol=1e-9)
        np.testing.assert_array_equal(arrays["significant"], valid & (np.nan_to_num(arrays["q"], nan=1) < 0.05))
    # the planted row is found, with Benjamini–Hochberg
    c, arrays = layer_view(_side(a), _side(b), 0, alpha=0.05, correction="fdr_bh")
    assert arrays["significant"][0].all()


def test_shown_field_and_counts(samples):
    a, b = samples
    c, arrays = layer_view(_side(a), _side(b), 0, alpha=0.1, correction=None, shown="log_ratio")
    ma, mb = np.nanmean(a, 0), np.nanmean(b, 0)
    np.testing.assert_allclose(arrays["values"], np.log(ma / mb), rtol=1e-12)
    np.testing.assert_array_equal(arrays["count_a"], np.isfinite(a).sum(0))
    np.testing.assert_array_equal(arrays["count_b"], np.isfinite(b).sum(0))
    _, g = layer_view(_side(a), _side(b), 0, alpha=0.1, correction=None, shown="effect_size")
    np.testing.assert_array_equal(g["values"], c.effect_size.numpy())


def test_a_clicked_cell_gives_both_reservoirs_values_and_its_test(samples):
    a, b = samples
    side_a, side_b = _side(a), _side(b)
    c, _ = layer_view(side_a, side_b, 0, alpha=0.05, correction="fdr_bh")
    d = cell_distributions(side_a, side_b, c, 0, [2, 1])
    np.testing.assert_array_equal(d["samples_a"], a[:, 2, 1].astype(np.float32))
    np.testing.assert_array_equal(d["samples_b"], b[6:, 2, 1].astype(np.float32))  # NaN (unobserved) left out
    assert d["samples_a"].dtype == np.float32 and d["count_b"] == 3 and d["cell"] == [2, 1]
    res = scipy.stats.ttest_ind(a[:, 2, 1], b[6:, 2, 1], equal_var=False)
    assert d["t"] == pytest.approx(res.statistic, rel=1e-10) and d["p"] == pytest.approx(res.pvalue, rel=1e-9)
    untested = cell_distributions(side_a, side_b, c, 0, [3, 3])
    assert untested["t"] is None and untested["q"] is None and untested["significant"] is False  # JSON: no NaN
    assert cell_distributions(side_a, side_b, c, 0, None) is None
    assert cell_distributions(side_a, side_b, c, 0, [S, 0]) is None


def test_runs_that_cannot_be_compared_are_refused_naming_what_differs(samples):
    a, b = samples
    with pytest.raises(ValueError, match=r"different layers: base has \[0, 1\], tuned has \[0\]"):
        check_comparable(_side(a, layers=(0, 1)), _side(b), ("base", "tuned"))
    short = RunSide(stats={0: WelfordState((S - 1, S - 1))})
    with pytest.raises(ValueError, match=r"layer 0 has cells \[4, 4\] in a but \[3, 3\] in b.*max_seq_len"):
        check_comparable(_side(a), short)
    check_comparable(_side(a), _side(b))  # the same layers and cells: fine


GOOD = [
    ("layer", 1, 1),
    ("layer", "final", "final"),
    ("shown", "log_ratio", "log_ratio"),
    ("mask", False, False),
    ("alpha", 0.01, 0.01),
    ("alpha", 0.2, 0.2),
    ("correction", None, None),
    ("correction", "bonferroni", "bonferroni"),
    ("selected_cell", (0, 3), [0, 3]),
    ("selected_cell", None, None),
]
BAD = [
    ("layer", 7),
    ("layer", "1"),
    ("shown", "ratio"),
    ("mask", 1),
    ("mask", "yes"),
    ("alpha", 0),
    ("alpha", 1),
    ("alpha", 1.5),
    ("alpha", "0.05"),
    ("alpha", True),
    ("alpha", float("nan")),
    ("correction", "holm"),
    ("correction", 0),
    ("selected_cell", [0, S]),
    ("selected_cell", [0]),
    ("selected_cell", [0.5, 1]),
    ("selected_cell", [True, 1]),
]


@pytest.mark.parametrize(("name", "value", "canonical"), GOOD)
def test_view_state_accepts_good_values_in_canonical_form(name, value, canonical):
    assert check_view_state(name, value, layers=[0, 1, "final"], seq_len=S) == (True, canonical, "")


@pytest.mark.parametrize(("name", "value"), BAD)
def test_view_state_refuses_bad_values_saying_what_is_allowed(name, value):
    ok, canonical, why = check_view_state(name, value, layers=[0, 1, "final"], seq_len=S)
    assert not ok and canonical is None and why
    with pytest.raises(KeyError, match="not a view-state trait"):
        check_view_state("heat", 1, layers=[0], seq_len=S)
