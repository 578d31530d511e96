"""Block-type sharpness figures: order, colours, the kind × layer map and the table."""

import numpy as np
import pytest

from tscope_widgets.figures.block_types import (
    block_kind_chart,
    type_sharpness_chart,
    type_steps_chart,
    type_table_html,
)
from tscope_widgets.figures.bokeh import chart_figure
from tscope_widgets.figures.charts import series_color
from tscope_widgets.figures.svg import render_svg


def test_type_charts_follow_the_sharpness_disparity_order():
    types = ["embed", "qk", "vo", "mlp", "norm", "head"]  # BLOCK_TYPES order
    values = np.array([0.1, 1.0, 8.0, 3.0, 50.0, 2.0])
    strip = type_sharpness_chart(types, values, log=True)
    assert strip.col_labels == ("Emb", "QK", "FFN", "VO", "Norm", "head")
    np.testing.assert_array_equal(strip.values, [[0.1, 1.0, 3.0, 8.0, 50.0, 2.0]])
    assert strip.scale.log and (strip.scale.lo, strip.scale.hi) == (0.1, 50.0)
    steps = type_steps_chart([0, 10, 20], ["vo", "qk"], np.array([[2.0, 1.0], [3.0, 1.5], [4.0, 2.0]]), log=False)
    assert [(s.label, s.color) for s in steps.series] == [("S(QK)", series_color(1)), ("S(VO)", series_color(3))]
    np.testing.assert_array_equal(steps.series[1].y, [2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="unknown block types"):
        type_sharpness_chart(["attn"], [1.0])
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        type_sharpness_chart(["qk", "vo"], [1.0, 2.0, 3.0])
    for chart in (strip, steps):  # both renderers take them
        assert "<svg" in render_svg([chart]) and chart_figure(chart) is not None


def test_block_kind_map_and_table():
    labels = ["embed", "block0.attn.q", "block1.attn.q", "block0.mlp.in", "block10.attn.q", "head"]
    chart = block_kind_chart(labels, [5.0, 1.0, 2.0, 3.0, 4.0, 6.0], log=False)
    assert chart.row_labels == ("embed", "attn.q", "mlp.in", "head")
    assert chart.col_labels == ("0", "1", "10", "—")
    v = chart.values
    assert v[1, :3].tolist() == [1.0, 2.0, 4.0] and np.isnan(v[1, 3])
    assert v[0, 3] == 5.0 and v[3, 3] == 6.0 and v[2, 0] == 3.0 and np.isnan(v[2, 1])
    with pytest.raises(ValueError, match="2 labels for 3 values"):
        block_kind_chart(["embed", "head"], [1.0, 2.0, 3.0])
    html = type_table_html(["qk", "embed"], [2.0, 0.5], [4, 1], {"qk/embed": 4.0}, True)
    assert html.index("Emb") < html.index("QK") and "×4" in html and ": holds" in html
    assert "<td>4</td>" in html and "<td>1</td>" in html
    assert "does not hold" in type_table_html(["qk"], [1.0], [2], {}, False)
