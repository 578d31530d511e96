"""Several runs in one view: spectrum series overlaid on the union of steps, block-norm maps on one colour scale,
two landscape slices and their difference; mismatched inputs refused."""

from __future__ import annotations

import numpy as np
import pytest

from tests.widgets.test_spectrum_widget import GRAD_LABELS, make_history
from tscope_widgets.figures.overlays import (
    block_norm_overlay,
    landscape_difference_charts,
    overlay_figures,
    overlay_series_chart,
)
from tscope_widgets.figures.svg import render_svg


def test_series_of_several_runs_share_the_union_of_their_steps():
    a, b = make_history(4), make_history(2)  # steps 0..30 and 0..10
    b.steps = b.steps + 5  # recorded at 5 and 15
    chart = overlay_series_chart({"base": a, "tuned": b}, "lambda_max", log=False)
    np.testing.assert_array_equal(chart.x, [0, 5, 10, 15, 20, 30])
    base, tuned = chart.series
    assert (base.label, tuned.label) == ("base", "tuned") and base.color != tuned.color
    np.testing.assert_array_equal(base.y, [1, np.nan, 2, np.nan, 3, 4])
    np.testing.assert_array_equal(tuned.y, [np.nan, 1, np.nan, 2, np.nan, np.nan])
    assert chart.y_range[0] <= 1 and chart.y_range[1] >= 4 and "λ_max" in chart.title
    grad = overlay_series_chart({"base": a}, f"grad_norm:{GRAD_LABELS[1]}")
    np.testing.assert_array_equal(grad.series[0].y, 2.0 * np.arange(1, 5))
    assert render_svg([chart]).startswith("<svg") and overlay_figures([chart]) is not None


def test_series_overlay_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="at least one history"):
        overlay_series_chart({})
    with pytest.raises(KeyError, match="unknown series 'sharpness'"):
        overlay_series_chart({"a": make_history(2)}, "sharpness")
    with pytest.raises(KeyError, match="run 'a' records no series 'grad_norm:nowhere'"):
        overlay_series_chart({"a": make_history(2)}, "grad_norm:nowhere")


def test_block_norm_maps_of_checkpoints_share_one_colour_scale():
    labels = ["block0", "block1"]
    early, late = np.array([[1.0, 0.1], [0.1, 2.0]]), np.array([[10.0, 1.0], [1.0, 40.0]])
    charts = block_norm_overlay({"step 0": (labels, early), "step 900": (labels, late)})
    assert [c.title.split(":")[0] for c in charts] == ["step 0", "step 900"]
    assert charts[0].scale is charts[1].scale and charts[0].scale.log
    assert charts[0].scale.lo <= 0.1 and charts[0].scale.hi >= 40.0  # the joint range of both
    np.testing.assert_array_equal(charts[1].values, late)
    with pytest.raises(ValueError, match=r"'step 0' and 'other' have different blocks"):
        block_norm_overlay({"step 0": (labels, early), "other": (["x", "y"], late)})
    with pytest.raises(ValueError, match="at least one map"):
        block_norm_overlay({})


def test_two_landscape_slices_and_their_difference():
    a = np.arange(9.0).reshape(3, 3)
    b = a[::-1].copy()
    sa, sb, diff = landscape_difference_charts(a, b, names=("step 100", "step 900"))
    assert sa.scale is sb.scale and (sa.scale.lo, sa.scale.hi) == (0.0, 8.0)
    np.testing.assert_array_equal(diff.values, a - b)
    assert (diff.scale.lo, diff.scale.hi) == (-6.0, 6.0) and diff.title == "step 100 − step 900"
    assert render_svg([sa, sb, diff]).startswith("<svg")
    with pytest.raises(ValueError, match="different grids"):
        landscape_difference_charts(a, np.zeros((2, 2)))
