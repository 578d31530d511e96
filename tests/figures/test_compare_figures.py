"""The comparison view: a diverging difference map symmetric about zero with non-significant cells faded,
both mean maps on one colour scale."""

from __future__ import annotations

import numpy as np
import pytest

from tscope_widgets.figures.bokeh import matrix_chart_figure
from tscope_widgets.figures.charts import FADED_ALPHA
from tscope_widgets.figures.compare import comparison_rows, difference_chart


def test_difference_chart_is_symmetric_and_fades_what_is_not_significant():
    diff = np.array([[1.0, -3.0], [np.nan, 0.5]])
    sig = np.array([[True, False], [False, True]])
    chart = difference_chart(diff, sig, title="d")
    assert (chart.scale.lo, chart.scale.hi) == (-3.0, 3.0) and chart.scale.colormap == "rdbu"
    assert chart.faded.tolist() == [[False, True], [False, False]]  # NaN cells are grey, not faded
    fig = matrix_chart_figure(chart)
    alpha = fig.renderers[0].data_source.data["alpha"]
    assert list(alpha) == [1.0, FADED_ALPHA, 1.0, 1.0]
    with pytest.raises(ValueError, match="significant has shape"):
        difference_chart(diff, sig[:1], title="d")


def test_mean_maps_share_one_scale():
    fields = {"difference": np.zeros((1, 2, 2)), "significant": np.zeros((1, 2, 2), bool),
              "mean_a": np.array([[[1.0, 2.0], [3.0, 4.0]]]), "mean_b": np.array([[[10.0, 20.0], [30.0, 40.0]]])}
    (row,) = comparison_rows(fields, ["final"], names=("a", "b"))
    assert len(row) == 3 and row[1].scale == row[2].scale and row[1].scale.log
    assert (row[1].scale.lo, row[1].scale.hi) == (1.0, 40.0)
