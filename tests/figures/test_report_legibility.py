"""What a reader meets in the reports: a log density axis floored at 1e-6 of the peak (not 1e-47), legends
beside the plot area (never over a curve)."""

from __future__ import annotations

import numpy as np
from bokeh.models import Legend

from tscope_widgets.figures.bokeh import line_chart_figure
from tscope_widgets.figures.charts import Series, line_chart
from tscope_widgets.figures.reports import density_chart as report_density_chart
from tscope_widgets.figures.spectrum import DENSITY_LOG_RANGE, density_chart, floored_density


def gaussian_density():
    """An SLQ-like density: two narrow Gaussians, underflowing to ~1e-300 between and beyond them."""
    grid = np.linspace(-5.0, 5.0, 201)
    sigma = 0.05
    density = 0.7 * np.exp(-((grid + 2) ** 2) / (2 * sigma**2)) + 0.3 * np.exp(-((grid - 3) ** 2) / (2 * sigma**2))
    density /= sigma * np.sqrt(2 * np.pi)
    return grid, density


def test_densities_on_a_log_axis_are_floored_at_a_millionth_of_the_peak():
    grid, density = gaussian_density()
    assert density.min() < 1e-40  # what stretched the axis before
    peak = density.max()
    floored = floored_density(density)
    assert floored.min() == peak * DENSITY_LOG_RANGE == peak * 1e-6
    above = density >= peak * 1e-6
    np.testing.assert_array_equal(floored[above], density[above])  # the visible part is untouched
    assert np.isnan(floored_density(np.array([1.0, np.nan, 1e-9]))[1])
    np.testing.assert_array_equal(floored_density(np.array([2.0, 1e-9])), [2.0, 2e-6])

    chart = density_chart(grid, density, 3, log=True)
    assert chart.log_y and min(chart.series[0].y) == peak * 1e-6
    linear = density_chart(grid, density, 3, log=False)
    np.testing.assert_array_equal(linear.series[0].y, density)  # a linear axis shows the values as they are
    report = report_density_chart(grid, density, 0.05, "Hessian")
    assert min(report.series[0].y) == peak * 1e-6

    fig = line_chart_figure(chart)
    ys = fig.renderers[0].data_source.data["y"]
    assert np.nanmin(ys) >= peak * 1e-6  # the Bokeh log axis spans 6 decades, not 40+


def test_bokeh_legends_sit_beside_the_plot_area():
    steps = np.arange(10.0)
    series = [
        Series("a", "λ_max", steps + 1.0, "#e15759"),
        Series("b", "2/η (edge of stability)", steps * 0 + 20.0, "#59a14f"),
    ]
    fig = line_chart_figure(line_chart(steps, series, "curvature", "training step", "eigenvalue", False))
    (legend,) = fig.select(type=Legend)
    assert legend in fig.right and legend not in fig.center
    assert legend.click_policy == "hide"
    assert [item.label.value for item in legend.items] == ["λ_max", "2/η (edge of stability)"]
