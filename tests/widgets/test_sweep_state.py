"""The sweep view's description (``figures.sweep``) and the widget's checked conversions (``_sweep_state``):
fits equal ``fit_power_law`` on the same runs, means and error bars equal a float64 reference, guides have
their slope, bad tables and bad browser values are refused with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tscope_widgets.figures.svg import render_svg
from tscope_widgets.figures.svg_sweep import decade_ticks
from tscope_widgets.figures.sweep import SweepTable, growth_table, residual_chart, sweep_chart, table_from_rows
from tscope_widgets.kernels.power_law import fit_power_law
from tscope_widgets.kernels.theory.growth import GrowthRates, GrowthSetting
from tscope_widgets.widgets._sweep_state import (
    as_table,
    axis_options,
    chart_wire,
    check_fit_range,
    check_guides,
    check_view_state,
    summary_options,
)

WIDTHS = (16, 32, 64, 128)
EXPONENTS = {1: -1.5, 2: 0.75}  # planted per depth


def planted_rows(noise: float = 0.05, seeds: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"d": d, "L": L, "seed": s, "lam": 2.0 * d ** EXPONENTS[L] * math.exp(noise * rng.normal()),
             "loss": 1.0 + d}
            for L in EXPONENTS for d in WIDTHS for s in range(seeds)]


def planted_table(**kw) -> SweepTable:
    return table_from_rows(planted_rows(**kw), ("d", "L", "seed"), ("seed",))


def test_fits_equal_fit_power_law_on_the_group_runs_with_seeds_resampled():
    table = planted_table()
    chart = sweep_chart(table, "lam", "d", num_bootstrap=400, seed=3)
    assert [g.key for g in chart.groups] == ["L=1", "L=2"]
    for g, L in zip(chart.groups, EXPONENTS, strict=True):
        runs = [r for r in table.rows if r["L"] == L]
        ref = fit_power_law([r["d"] for r in runs], [r["lam"] for r in runs], [str(r["seed"]) for r in runs],
                            num_bootstrap=400, seed=3)
        assert g.fit.exponent == pytest.approx(ref.exponent, rel=1e-12)
        assert (g.fit.ci_low, g.fit.ci_high) == pytest.approx((ref.ci_low, ref.ci_high), rel=1e-12)
        assert g.fit.num_seeds == 3
        assert abs(g.fit.exponent - EXPONENTS[L]) < 0.05  # the planted slope comes back
        assert g.fit.ci_low < g.fit.exponent < g.fit.ci_high
        assert f"a = {g.fit.exponent:.3g}" in g.label
        np.testing.assert_allclose(g.fit_y, ref.predict(g.fit_x), rtol=1e-12)


def test_fit_range_fits_only_the_runs_inside_it():
    table = planted_table()
    chart = sweep_chart(table, "lam", "d", fit_range=(20, 130), num_bootstrap=50)
    g = chart.groups[0]
    runs = [r for r in table.rows if r["L"] == 1 and 20 <= r["d"] <= 130]
    ref = fit_power_law([r["d"] for r in runs], [r["lam"] for r in runs], [str(r["seed"]) for r in runs],
                        num_bootstrap=50)
    assert g.fit.num_points == len(runs) == 9
    assert g.fit.exponent == pytest.approx(ref.exponent, rel=1e-12)
    assert g.fit_x.min() == 32 and g.fit_x.max() == 128
    assert g.points_x.size == 12  # every run is still drawn


def test_means_and_error_bars_against_a_float64_reference():
    table = planted_table(noise=0.3)
    g = sweep_chart(table, "lam", "d", num_bootstrap=10).groups[1]
    for k, d in enumerate(WIDTHS):
        ys = np.array([r["lam"] for r in table.rows if r["L"] == 2 and r["d"] == d], np.float64)
        se = ys.std(ddof=1) / math.sqrt(3)
        assert g.mean[k] == pytest.approx(ys.mean(), rel=1e-14)
        assert g.stderr[k] == pytest.approx(se, rel=1e-12)
        assert g.err_hi[k] == pytest.approx(ys.mean() + se, rel=1e-12)
        assert g.count[k] == 3


def test_one_seed_no_bar_and_one_group_without_seeds_fits_exactly():
    rows = [{"x": 1, "s": 0, "y": 1.0}, {"x": 2, "s": 0, "y": 4.0}, {"x": 4, "s": 0, "y": 16.0},
            {"x": 4, "s": 1, "y": 0.01}]
    chart = sweep_chart(table_from_rows(rows, ("x", "s"), ("s",)), "y", "x", num_bootstrap=20)
    g = chart.groups[0]
    assert np.isnan(g.stderr[:2]).all() and np.isnan(g.err_hi[:2]).all()
    assert g.err_lo[2] == pytest.approx(g.mean[2] - g.stderr[2], rel=1e-12) and g.err_lo[2] > 0
    single = sweep_chart(table_from_rows(rows[:3], ("x",)), "y", "x", num_bootstrap=20).groups[0]
    assert single.fit.exponent == pytest.approx(2.0, abs=1e-12)


def test_guides_have_their_slope_start_at_the_first_mean_and_stay_in_the_box():
    chart = sweep_chart(planted_table(), "lam", "d", guides=(-1.5, 2.0, 40.0), num_bootstrap=10)
    g0 = chart.groups[0]
    for guide in chart.guides:
        slope = math.log10(guide.y[1] / guide.y[0]) / math.log10(guide.x[1] / guide.x[0])
        assert slope == pytest.approx(guide.exponent, rel=1e-9)
        through = g0.mean[0] * (guide.x[0] / g0.x[0]) ** guide.exponent
        assert guide.y[0] == pytest.approx(through, rel=1e-9)
        for x, y in zip(guide.x, guide.y, strict=True):
            assert chart.x_range[0] * (1 - 1e-12) <= x <= chart.x_range[1] * (1 + 1e-12)
            assert chart.y_range[0] * (1 - 1e-12) <= y <= chart.y_range[1] * (1 + 1e-12)
    assert [g.exponent for g in chart.guides] == [-1.5, 2.0, 40.0]  # the steep one is clipped, not dropped


def test_runs_that_cannot_sit_on_a_log_axis_are_counted_not_drawn():
    rows = planted_rows() + [{"d": 8, "L": 1, "seed": 0, "lam": 0.0}, {"d": -8, "L": 1, "seed": 0, "lam": 1.0},
                             {"d": 8, "L": 1, "seed": 0, "lam": float("nan")}]
    chart = sweep_chart(table_from_rows(rows, ("d", "L", "seed"), ("seed",)), "lam", "d", num_bootstrap=10)
    assert chart.dropped == 3
    assert sum(g.points_x.size for g in chart.groups) == 24


def test_growth_snapshot_rows_are_the_finished_points():
    settings = [GrowthSetting("L=1", sigmas=(0.1, 1.0))]
    norms = torch.full((1, 2, 2, 2, 3), math.nan, dtype=torch.float64)
    done = torch.zeros(1, 2, 2, dtype=torch.bool)
    norms[0, 1, 0] = torch.arange(6, dtype=torch.float64).reshape(2, 3) + 1
    done[0, 1, 0] = True
    snap = GrowthRates(settings, [7, 8], torch.tensor([[0.1, 1.0]], dtype=torch.float64), norms,
                       torch.zeros_like(norms), done, 1, 4, 0, {})
    table = growth_table(snap)
    assert table.rows == ({"setting": "L=1", "sigma": 1.0, "seed": 7, "q_hessian": 1.0, "q_ggn": 2.0,
                           "q_functional": 3.0, "v_hessian": 4.0, "v_ggn": 5.0, "v_functional": 6.0},)
    assert (table.axes, table.seed_axes, table.done, table.total) == (("setting", "sigma", "seed"), ("seed",), 1, 4)
    assert as_table(snap) == table
    assert axis_options(table) == ["sigma"]
    assert summary_options(table)[:2] == ["q_hessian", "q_ggn"]


def test_bad_tables_are_refused_naming_what_is_wrong():
    with pytest.raises(TypeError, match="SweepTable, a GrowthRates"):
        as_table([1, 2])
    with pytest.raises(ValueError, match=r"rows\[1\] has no value for the axes \['L'\]"):
        as_table({"rows": [{"d": 1, "L": 1}, {"d": 2}], "axes": ["d", "L"]})
    with pytest.raises(ValueError, match="seed_axes \\['s'\\] are not among the axes"):
        as_table({"rows": [], "axes": ["d"], "seed_axes": ["s"]})
    with pytest.raises(TypeError, match=r"rows\[0\] must be a dict"):
        as_table({"rows": [3], "axes": ["d"]})
    with pytest.raises(TypeError, match="list of column names"):
        as_table({"rows": [], "axes": "d"})


def test_guides_and_fit_range_arguments_are_checked():
    assert check_guides([5, 2.0]) == (5.0, 2.0)
    for bad in ([math.inf], [True], ["5"]):
        with pytest.raises(ValueError, match="finite numbers"):
            check_guides(bad)
    with pytest.raises(TypeError, match="list of exponents"):
        check_guides(5)
    assert check_fit_range([0.01, 0.26]) == (0.01, 0.26)
    for bad in ((0, 0.26), (0.3, 0.2), (0.1,), "ab", (math.nan, 1)):
        with pytest.raises(ValueError, match="fit_range="):
            check_fit_range(bad)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("x_axis", "seed", "choose one of"),
        ("x_axis", ["d"], "choose one of"),
        ("x_axis", None, "choose one of"),
        ("summary", "nope", "choose one of"),
        ("summary", 3, "choose one of"),
        ("fit_range", [1, "2"], "0 < lo < hi"),
        ("fit_range", [2, 1], "0 < lo < hi"),
        ("fit_range", [-1, 1], "0 < lo < hi"),
        ("fit_range", {"lo": 1}, "pair"),
        ("fit_range", [1, 2, 3], "pair"),
        ("fit_range", [1, 1e400], "0 < lo < hi"),
    ],
)
def test_bad_browser_values_are_refused_with_a_reason(name, value, reason):
    ok, canonical, why = check_view_state(name, value, axes=["d"], summaries=["lam"])
    assert not ok and canonical is None and reason in why


def test_good_browser_values_come_back_canonical():
    assert check_view_state("x_axis", "d", axes=["d"], summaries=[]) == (True, "d", "")
    assert check_view_state("x_axis", None, axes=[], summaries=[]) == (True, None, "")
    assert check_view_state("fit_range", [1, 2], axes=[], summaries=[]) == (True, (1.0, 2.0), "")
    with pytest.raises(KeyError, match="not a view-state trait"):
        check_view_state("chart", 1, axes=[], summaries=[])


def test_wire_and_picture_carry_the_description():
    chart = sweep_chart(planted_table(), "lam", "d", guides=(-1.5,), marker_x=50, num_bootstrap=20)
    wire = chart_wire(chart)
    assert [g["fit"]["exponent"] for g in wire["groups"]] == [g.fit.exponent for g in chart.groups]
    assert wire["groups"][0]["x"] == list(WIDTHS) and len(wire["guides"]) == 1
    assert wire["x_range"] == list(chart.x_range) and wire["marker_x"] == 50.0
    svg = render_svg([chart])
    assert svg.count('class="tscope-static-fit"') == 2 and svg.count('class="tscope-static-guide"') == 1
    assert svg.count('<g class="tscope-static-means"') == 2 and 'data-points="4"' in svg
    empty = sweep_chart(table_from_rows([], ("d",)), "lam", "d")
    assert empty.x_range is None and "no data" in render_svg([empty])


def test_residuals_are_those_of_the_fits_at_the_fitted_runs():
    chart = sweep_chart(planted_table(), "lam", "d", fit_range=(20, 130), num_bootstrap=10)
    residuals = residual_chart(chart)
    assert residuals.residuals and [s.key for s in residuals.series] == ["L=1", "L=2"]
    for s, g in zip(residuals.series, chart.groups, strict=True):
        assert s.x.tolist() == [32, 32, 32, 64, 64, 64, 128, 128, 128]
        np.testing.assert_allclose(s.y, np.log(g.points_y[g.points_x >= 20]) - np.log(g.fit.predict(s.x)),
                                   rtol=1e-10, atol=1e-13)
        assert abs(s.y.sum()) < 1e-12  # least squares with an intercept: residuals sum to zero


def test_decade_ticks_as_the_live_view_draws_them():
    assert decade_ticks(0.05, 200) == [0.1, 1.0, 10.0, 100.0]
    assert decade_ticks(0.0267, 0.337) == [0.0267, 0.1, 0.337]
    assert decade_ticks(2, 5) == [2, 5]
