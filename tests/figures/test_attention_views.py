"""The attention explorer's views, described once: the attention pane (a map beside the sensitivity) and the
layer × head grid of effective ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tscope_widgets.figures.attention import MEASURE_TITLES, attention_pane_charts, map_title, rank_grid_chart
from tscope_widgets.figures.svg import render_svg


def test_map_titles():
    assert map_title("head3") == "head 3" and map_title("head mean") == "head mean"
    assert map_title("rollout") == "rollout"


def test_pane_is_the_attention_map_from_zero_beside_the_sensitivity():
    g = np.random.default_rng(0)
    att = np.tril(g.random((4, 4)))
    att[0, 1] = math.nan
    sens = np.tril(10.0 ** g.uniform(-3, 1, (4, 4)))
    a, s = attention_pane_charts(att, sens, layer=1, label="head0", rho=0.5, low=0.25, high=0.75, samples=7,
                                 token_labels=list("abcd"), log=True)
    np.testing.assert_array_equal(a.values, att)
    np.testing.assert_array_equal(s.values, sens)
    assert a.scale.lo == 0 and not a.scale.log and s.scale.log
    assert a.title == "layer 1 · head 0 · mean attention (7 samples) · ρ = 0.50 [0.25, 0.75]"
    assert a.row_labels == ("0:a", "1:b", "2:c", "3:d") and "sensitivity" in s.title
    r, _ = attention_pane_charts(att, sens, layer=0, label="rollout", rho=0.1, low=0, high=0.2, samples=2)
    assert "rollout" in r.title and r.value_title == "rollout"
    assert render_svg([a, s]).startswith("<svg")


@pytest.mark.parametrize("measure", list(MEASURE_TITLES))
def test_rank_grid_rows_are_layers_and_columns_heads(measure):
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 600.0]])
    chart = rank_grid_chart(values, [0, 3], measure, "qk", step=40)
    np.testing.assert_array_equal(chart.values, values)
    assert chart.row_labels == ("layer 0", "layer 3") and chart.col_labels == ("h0", "h1", "h2")
    assert chart.title.endswith("of W_QK per head · step 40") and chart.title.startswith(MEASURE_TITLES[measure])
    assert chart.scale.log == (measure == "condition_number")


def test_rank_grid_of_zero_matrices_draws_grey():
    chart = rank_grid_chart(np.full((2, 2), math.nan), [0, 1], "stable_rank", "ov")
    assert np.isnan(chart.values).all() and "zero" in chart.nan_note
    assert render_svg([chart]).startswith("<svg")
