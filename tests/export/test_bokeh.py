"""Bokeh heatmaps and the standalone HTML report."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from bokeh.models import ColorBar, GlyphRenderer, HoverTool, Image, LinearColorMapper, LogColorMapper, Rect

from tscope_widgets.export import save_report, sensitivity_figures, sensitivity_heatmap
from tscope_widgets.export.bokeh import NAN_COLOR
from tscope_widgets.figures.charts import BACKGROUND
from tscope_widgets.kernels.welford import WelfordState

TOKENS = ["BOS", "A7", "A3", "copy A7"]


def causal_map(S: int = 4) -> torch.Tensor:
    values = torch.arange(1.0, S * S + 1, dtype=torch.float64).reshape(S, S).tril()
    values[S - 1, S - 1] = float("nan")  # the largest entry: limits must ignore it
    return values


def glyph_renderer(fig) -> GlyphRenderer:
    (renderer,) = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
    return renderer


def test_heatmap_cells_ticks_hover_and_colour_bar():
    values = causal_map()
    fig = sensitivity_heatmap(values, title="layer 1", token_labels=TOKENS, value_name="mean")
    renderer = glyph_renderer(fig)
    assert isinstance(renderer.glyph, Rect)
    data = renderer.data_source.data
    i, j, y, v = (np.asarray(data[k]) for k in ("i", "j", "y", "value"))
    np.testing.assert_array_equal(v, values.numpy()[i, j])  # NaN cell stays NaN
    np.testing.assert_array_equal(y, 3 - i)  # row 0 drawn at the top
    k = int(np.flatnonzero((i == 3) & (j == 2))[0])
    # Labels follow the live view and the notebook picture: whitespace made visible ("copy A7" -> "copy␣A7").
    assert data["row"][k] == "3:copy␣A7" and data["col"][k] == "2:A3"
    # Tick labels on both axes: "index:token"; the y axis counts down from the top.
    assert fig.xaxis[0].major_label_overrides == {0: "0:BOS", 1: "1:A7", 2: "2:A3", 3: "3:copy␣A7"}
    assert fig.yaxis[0].major_label_overrides == {3: "0:BOS", 2: "1:A7", 1: "2:A3", 0: "3:copy␣A7"}
    (hover,) = [t for t in fig.tools if isinstance(t, HoverTool)]
    assert ("output i", "@row") in hover.tooltips and ("input j", "@col") in hover.tooltips
    (bar,) = [b for b in fig.right if isinstance(b, ColorBar)]
    mapper = bar.color_mapper
    assert isinstance(mapper, LinearColorMapper) and mapper.nan_color == NAN_COLOR
    assert (mapper.low, mapper.high) == (0.0, 15.0)  # finite extremes; NaN ignored
    assert fig.title.text == "layer 1"


def test_log_scale_limits():
    values = causal_map()
    fig = sensitivity_heatmap(values, log=True)
    mapper = glyph_renderer(fig).glyph.fill_color["transform"]
    assert isinstance(mapper, LogColorMapper)
    assert (mapper.low, mapper.high) == (1.0, 15.0)  # positive extremes; zeros fall below `low`
    # ... and take the background colour, as in the live view and the notebook picture (the shared rule)
    assert mapper.low_color == BACKGROUND
    values[1, 0] = 1e-9  # by default a tiny cell stretches the scale (the shared, full-range rule) ...
    mapper = glyph_renderer(sensitivity_heatmap(values, log=True)).glyph.fill_color["transform"]
    assert (mapper.low, mapper.high) == (1e-9, 15.0)
    # ... unless log_range clips it; values below the clipped scale then take the lowest colour
    mapper = glyph_renderer(sensitivity_heatmap(values, log=True, log_range=100)).glyph.fill_color[
        "transform"
    ]
    assert (mapper.low, mapper.high) == (0.15, 15.0)
    assert mapper.low_color == mapper.palette[0]
    with pytest.raises(ValueError, match="vmin > 0"):
        sensitivity_heatmap(causal_map(), log=True, vmin=0.0)


def test_large_maps_use_an_image_flipped_to_matrix_order():
    S = 300
    values = np.random.default_rng(0).random((S, S))
    fig = sensitivity_heatmap(values)
    renderer = glyph_renderer(fig)
    assert isinstance(renderer.glyph, Image)
    image = np.asarray(renderer.data_source.data["image"][0])
    np.testing.assert_array_equal(image[-1], values[0])  # row i = 0 sits at the top (largest y)
    ticks = fig.xaxis[0].ticker.ticks
    assert len(ticks) <= 40 and ticks[:2] == [0, 8]


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match=r"square matrix \[S, S\]"):
        sensitivity_heatmap(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="token_labels has 2 entries for a map with 4 positions"):
        sensitivity_heatmap(causal_map(), token_labels=["a", "b"])


def stats_for(layers=(0, "final"), S=4) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in layers:
        state = WelfordState((S, S))
        state.update(torch.rand(6, S, S, generator=g, dtype=torch.float64))
        out[layer] = state
    return out


def test_figure_grid_rows_are_layers_and_columns_statistics():
    stats = stats_for()
    grid = sensitivity_figures(stats, TOKENS, statistics=("mean", "std", "count"))
    figs = {(row, col): fig for fig, row, col in grid.children}
    assert len(figs) == 6
    assert figs[(0, 0)].title.text.startswith("layer 0 · mean")
    assert figs[(1, 1)].title.text.startswith("final norm · std")
    np.testing.assert_allclose(
        glyph_renderer(figs[(1, 1)]).data_source.data["value"], stats["final"].std.numpy().ravel()
    )
    assert len({id(f.x_range) for f in figs.values()}) == 1  # shared pan/zoom
    with pytest.raises(ValueError, match="unknown statistics"):
        sensitivity_figures(stats, statistics=("median",))
    with pytest.raises(ValueError, match="same map size"):
        sensitivity_figures({**stats, 1: WelfordState((3, 3))})


def test_report_is_self_contained(tmp_path):
    grid = sensitivity_figures(stats_for(), TOKENS)
    path = save_report(
        tmp_path / "out" / "report.html",
        grid,
        title="Sensitivity <demo>",
        notes="First paragraph & more.\n\nSecond paragraph.",
    )
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text)  # every script inline
    assert not re.search(r"<link[^>]+href=", text)  # no external style sheets
    assert "cdn.bokeh.org" not in text  # (the bundle mentions a MathJax CDN, loaded only for TeX labels)
    assert "Bokeh.embed" in text and len(text) > 500_000  # BokehJS itself is in the file
    assert "Sensitivity &lt;demo&gt;" in text and "First paragraph &amp;amp; more." in text
    assert "final norm \\u00b7 mean" in text  # figure titles travel as JSON in the document
    with pytest.raises(ValueError, match="must end in .html"):
        save_report(tmp_path / "report.txt", grid, title="x")
    with pytest.raises(TypeError, match="expected Bokeh figures"):
        save_report(tmp_path / "r.html", [grid, "text"], title="x")
