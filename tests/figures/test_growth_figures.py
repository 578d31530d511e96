"""Views of the Ormaniec et al. (2025) reproduction: growth panels, block heatmaps, entry histograms (SVG and Bokeh)."""

from __future__ import annotations

import numpy as np
import pytest

from tscope_widgets.figures.bokeh import line_chart_figure, matrix_chart_figure
from tscope_widgets.figures.growth import GUIDE_COLOR, growth_charts, paper_exponent
from tscope_widgets.figures.heterogeneity import entry_histogram_chart, hessian_heatmap_chart, pool_max
from tscope_widgets.figures.svg import render_svg

SETTINGS = [
    {"label": "L=1", "n_layer": 1, "norm": "none", "attention": "softmax", "residual_scale": 1.0, "loss": "ce"},
    {"label": "L=2", "n_layer": 2, "norm": "none", "attention": "softmax", "residual_scale": 1.0, "loss": "ce"},
    {"label": "linear L=1", "n_layer": 1, "norm": "none", "attention": "linear", "residual_scale": 0.0,
     "loss": "mse"},
]


def arrays():
    s1 = 10 ** np.linspace(-2, 1, 6)
    s2 = 10 ** np.linspace(-1, 0, 4)
    sigmas = np.full((3, 6), np.nan)
    sigmas[0], sigmas[1], sigmas[2, :4] = s1, s1, s2
    mean = np.full((3, 6, 2, 3), np.nan)
    for g in range(3):
        s = sigmas[g]
        mean[g, :, 0] = (s**5)[:, None] * [1, 0.1, 1]
        mean[g, :, 1] = (s**2)[:, None] * [1, 1, 1e-17]
    return sigmas, mean, mean * 0.1


def test_paper_exponents():
    assert paper_exponent("q", "hessian", SETTINGS[0]) == 5 and paper_exponent("q", "ggn", SETTINGS[0]) == 6
    assert paper_exponent("v", "hessian", SETTINGS[0]) == 2 and paper_exponent("v", "functional", SETTINGS[0]) is None
    assert paper_exponent("q", "hessian", SETTINGS[1]) is None
    assert paper_exponent("v", "ggn", {**SETTINGS[2], "n_layer": 3}) == 54


def test_growth_panels_per_grid_block_and_part_with_bands_guides_and_the_sigma_1_marker():
    sigmas, mean, se = arrays()
    charts = growth_charts(sigmas, mean, se, SETTINGS)
    assert len(charts) == 12  # two sigma grids x 2 blocks x 3 parts
    first = charts[0]
    assert first.log_y and first.marker_x == 0.0 and "Hessian block W_Q" in first.title
    np.testing.assert_allclose(first.x, np.linspace(-2, 1, 6))
    keys = [s.key for s in first.series]
    assert keys[:2] == ["setting:L=1", "setting:L=2"] and "guide:L=1:5" in keys and len(keys) == 3
    line = first.series[0]
    np.testing.assert_allclose(line.band[0], 0.9 * line.y)
    guide = first.series[2]
    assert guide.color == GUIDE_COLOR
    ok = np.isfinite(guide.y)
    np.testing.assert_allclose(guide.y[ok], line.y[ok], rtol=1e-12)  # the data follow sigma^5 exactly
    linear = charts[6]
    assert [s.key for s in linear.series] == ["setting:linear L=1", "guide:linear L=1:6"]
    svg = render_svg(charts[:2])
    assert svg.count("tscope-static-series") >= 5
    assert line_chart_figure(first) is not None
    with pytest.raises(ValueError, match="must agree"):
        growth_charts(sigmas, mean, se, SETTINGS[:2])


def test_heatmap_separators_labels_and_pooling_by_the_maximum():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 10))
    chart = hessian_heatmap_chart(values, ["q", "v", "mlp"], [3, 3, 4])
    assert chart.separators == (3, 6) and chart.row_labels[0] == "q" and chart.row_labels[3] == "v"
    assert chart.row_labels[1] == "" and chart.row_hover[4] == "v"
    svg = render_svg([chart])
    assert svg.count("tscope-static-separator") == 2
    fig = matrix_chart_figure(chart)
    assert sum(type(r).__name__ == "Span" for r in fig.center) == 4
    pooled = hessian_heatmap_chart(values, ["q", "v", "mlp"], [3, 4, 3], max_cells=4)  # 3 x 3 windows
    assert pooled.values.shape == (4, 4) and pooled.separators == (1, 2) and "max over 3×3" in pooled.title
    np.testing.assert_array_equal(pooled.values, pool_max(values, 3))
    assert pooled.values[0, 0] == values[:3, :3].max() and pooled.values[3, 3] == values[9, 9]
    assert pooled.row_hover[2] == "v / mlp"
    with pytest.raises(ValueError, match="sizes summing to P"):
        hessian_heatmap_chart(values, ["q"], [3])


def test_entry_histogram_chart():
    edges = np.linspace(-6, 0, 7)
    chart = entry_histogram_chart(edges, {"|H_QQ| softmax": np.full(6, 1 / 6), "|H_VV| softmax": np.eye(6)[5]})
    np.testing.assert_allclose(chart.x, np.linspace(-5.5, -0.5, 6))
    assert [s.label for s in chart.series] == ["|H_QQ| softmax", "|H_VV| softmax"]
    assert "tscope-static-series" in render_svg([chart]) and line_chart_figure(chart) is not None
