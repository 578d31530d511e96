"""Scaling charts: rows split by the other axes, one fit per group, residuals, and the Bokeh rendering."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.models import GlyphRenderer

from tscope_widgets.figures.bokeh import chart_figure, scaling_chart_figure
from tscope_widgets.figures.scaling import scaling_charts, scaling_fits


def rows_with_two_depths():
    rng = np.random.default_rng(0)
    rows = []
    for n_layer, exponent in ((1, 1.0), (2, 2.0)):
        for seed in range(3):
            wobble = np.exp(rng.normal(0, 0.05))
            for d in (16, 32, 64, 128):
                rows.append({"d_model": d, "n_layer": n_layer, "seed": seed, "lam": 0.1 * d**exponent * wobble})
    rows.append({"d_model": 16, "n_layer": 1, "seed": 9, "lam": 0.0})  # cannot sit on a log axis
    rows.append({"d_model": 16, "n_layer": 1, "seed": 8, "lam": None})
    return rows


def test_groups_by_the_other_axes_and_fits_each():
    fitted, dropped = scaling_fits(rows_with_two_depths(), "lam", "d_model", ["d_model", "n_layer", "seed"], ["seed"])
    assert dropped == 2 and list(fitted) == ["n_layer=1", "n_layer=2"]
    for (xs, ys, seeds, fit), planted in zip(fitted.values(), (1.0, 2.0), strict=True):
        assert xs.size == ys.size == 12 and set(seeds) == {"0", "1", "2"} and fit.num_seeds == 3
        # Seed effects are constant factors: the slope is exact and the interval collapses onto it.
        assert fit.exponent == pytest.approx(planted, abs=1e-12)
        assert fit.ci_low == pytest.approx(planted, abs=1e-9) and fit.ci_high == pytest.approx(planted, abs=1e-9)


def test_charts_describe_points_fits_and_residuals_and_render():
    main, residual = scaling_charts(rows_with_two_depths(), "lam", "d_model", ["d_model", "n_layer", "seed"],
                                    ["seed"], num_bootstrap=200)
    assert main.log_y and not residual.log_y and residual.residuals and main.dropped == 2
    assert [s.key for s in main.series] == ["n_layer=1", "n_layer=2"]
    first = main.series[0]
    assert "a = 1 [1, 1]" in first.label
    np.testing.assert_allclose(first.fit_y, first.fit.predict(first.fit_x), rtol=1e-15)
    assert first.fit_x.min() == 16 and first.fit_x.max() == pytest.approx(128)
    np.testing.assert_allclose(residual.series[0].y, first.fit.residuals)
    fig = scaling_chart_figure(main)
    glyphs = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
    assert len(glyphs) == 4  # dots and a fitted line per group
    assert fig.x_scale.__class__.__name__ == "LogScale" and fig.y_scale.__class__.__name__ == "LogScale"
    assert chart_figure(residual).y_scale.__class__.__name__ == "LinearScale"


def test_a_group_with_one_x_value_is_shown_without_a_fit():
    rows = [{"d_model": 8, "n_layer": n, "seed": 0, "lam": 1.0 + n} for n in (1, 2)]
    rows += [{"d_model": 16, "n_layer": 1, "seed": 0, "lam": 3.0}]
    main, residual = scaling_charts(rows, "lam", "d_model", ["d_model", "n_layer", "seed"], ["seed"])
    assert [s.fit is None for s in main.series] == [False, True]
    assert "no fit" in main.series[1].label and len(residual.series) == 1
