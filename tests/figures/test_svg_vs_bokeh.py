"""The notebook picture (SVG) and the Bokeh export of the same widget state show the same thing: titles, axis
labels, colour scales (low, high, log, colour map ends, NaN colour), series labels and colours, legend entries,
y ranges, matrix row and column labels."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from bokeh.models import ColorBar, GlyphRenderer, Line, LogColorMapper
from bokeh.models import Row as RowLayout
from PIL import Image

from tests.model_zoo import tiny
from tscope_widgets.figures.spectrum import NO_THRESHOLD_LABEL
from tscope_widgets.tracking import SpectrumHistory
from tscope_widgets.widgets.landscape import LandscapeWidget
from tscope_widgets.widgets.sensitivity import SensitivityExplorer
from tscope_widgets.widgets.spectrum import SpectrumWidget

NS = "{http://www.w3.org/2000/svg}"
CHART_CLASSES = ("tscope-static-lines", "tscope-static-matrix", "tscope-static-landscape")


def _text(el) -> str:
    return "".join(el.itertext())


def _one(chart, cls: str):
    found = [el for el in chart.iter() if el.get("class") == cls]
    assert len(found) <= 1, f"{len(found)} elements of class {cls}"
    return found[0] if found else None


def _png_palette(href: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(href.split("base64,", 1)[1])))
    return np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def svg_facts(svg: str) -> list[dict]:
    """What each chart of an SVG picture shows, read back from its elements."""
    root = ET.fromstring(svg)
    charts = [el for el in root.iter(f"{NS}svg") if el.get("class") in CHART_CLASSES]
    out = []
    for chart in charts:
        facts = {"kind": chart.get("class").rsplit("-", 1)[1]}
        title = _one(chart, "tscope-static-title")
        facts["title"] = _text(title) if title is not None else ""
        facts["x_label"] = _text(_one(chart, "tscope-static-x-label"))
        facts["y_label"] = _text(_one(chart, "tscope-static-y-label"))
        bar = _one(chart, "tscope-static-colorbar")
        if bar is not None:
            palette = _png_palette(bar.get("href"))
            facts["scale"] = (float(bar.get("data-lo")), float(bar.get("data-hi")), bar.get("data-log") == "true")
            # the bar's PNG: level 0 (lowest colour) .. 253 (highest), then the NaN colour
            facts["colors"] = (_hex(palette[0]), _hex(palette[253]), _hex(palette[254]))
            facts["bar_title"] = _text(_one(chart, "tscope-static-bar-title"))
        if facts["kind"] == "matrix":
            facts["rows"] = {int(el.get("data-index")): _text(el) for el in chart.iter()
                             if el.get("class") == "tscope-static-row-label"}
            facts["cols"] = {int(el.get("data-index")): _text(el) for el in chart.iter()
                             if el.get("class") == "tscope-static-col-label"}
        if facts["kind"] == "lines":
            paths = {el.get("data-key"): el.get("stroke") for el in chart.iter()
                     if el.get("class") == "tscope-static-series"}
            legend = [
                (el.get("data-key"), _text(el)) for el in chart.iter() if el.get("class") == "tscope-static-legend"
            ]
            facts["legend"] = [(label, paths[key]) for key, label in legend]
            facts["log_y"] = chart.get("data-log-y") == "true"
            facts["y_range"] = (float(chart.get("data-y-lo")), float(chart.get("data-y-hi")))
        out.append(facts)
    return out


def _label(item) -> str:
    label = item.label
    return label["value"] if isinstance(label, dict) else label.value


def bokeh_facts(fig, kind: str) -> dict:
    """The same facts read from a Bokeh figure's models."""
    facts = {
        "kind": kind,
        "title": fig.title.text,
        "x_label": fig.xaxis[0].axis_label,
        "y_label": fig.yaxis[0].axis_label,
    }
    bars = [b for b in fig.right if isinstance(b, ColorBar)]
    if bars:
        (bar,) = bars
        mapper = bar.color_mapper
        facts["scale"] = (mapper.low, mapper.high, isinstance(mapper, LogColorMapper))
        facts["colors"] = (mapper.palette[0].lower(), mapper.palette[-1].lower(), mapper.nan_color.lower())
        facts["bar_title"] = bar.title
        if kind == "matrix":
            R = round(fig.y_range.end + 0.5)
            facts["rows"] = {R - 1 - t: label for t, label in fig.yaxis[0].major_label_overrides.items()}
            facts["cols"] = dict(fig.xaxis[0].major_label_overrides)
    if kind == "lines":
        legend = []
        for item in fig.legend[0].items:
            (line,) = [r for r in item.renderers if isinstance(r, GlyphRenderer) and isinstance(r.glyph, Line)]
            legend.append((_label(item), line.glyph.line_color))
        facts["legend"] = legend
        facts["log_y"] = fig.y_scale.__class__.__name__ == "LogScale"
        facts["y_range"] = (fig.y_range.start, fig.y_range.end)
    return facts


def assert_same(svg_side: dict, bokeh_side: dict):
    assert svg_side.keys() == bokeh_side.keys()
    for key in svg_side:
        assert svg_side[key] == bokeh_side[key], f"{svg_side['title']!r}: {key} differs"


# ---------------------------------------------------------------------------- the three widgets
@pytest.fixture(scope="module")
def explorer():
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(2))
    w = SensitivityExplorer(tiny(), ids, batch_size=4, token_labels=["<s>", " a", "b c", "d", "end\n"])
    assert w.wait(60)
    yield w
    w.close()


@pytest.fixture(scope="module")
def landscape():
    ids = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(2))
    w = LandscapeWidget(tiny(), ids, resolution=4, span=0.5)
    assert w.wait(60)
    yield w
    w.close()


def spectrum(optimizer: str = "sgd") -> SpectrumWidget:
    history = SpectrumHistory.empty(["block0", "head"], ["block0", "block1"])
    adam = optimizer == "adam"
    for t in range(4):
        history.append(
            dict(steps=10 * t, loss=1.0 / (t + 1), train_loss=1.2, lambda_max=2.0 + t, lambda_min=-0.5, trace=3.0,
                 trace_stderr=0.2, grad_norms=[0.5, 0.1 * (t + 1)], block_lambda_max=[1.0 + t, 0.5],
                 threshold=20.0 if optimizer == "sgd" else np.nan, lr=0.1, matvecs=10, converged=True,
                 precond_lambda_max=1.5 + t if adam else np.nan, adam_threshold=38.0 if adam else np.nan,
                 density_grid=np.linspace(-1.0, 4.0, 6), density=np.array([0.0, 0.1, 0.3, 0.4, 0.1, 0.1 * t]))
        )
    norms = type("Norms", (), {"labels": ["block0", "block1"], "frobenius": np.array([[2.0, 0.5], [0.5, 1.0]]),
                               "exact": False})()
    return SpectrumWidget(history=history, block_norms=norms, log_y=False)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("statistic", ["mean", "count"])
def test_explorer_picture_and_bokeh_agree(explorer, log, statistic):
    explorer.log_scale, explorer.statistic = log, statistic
    (picture,) = svg_facts(explorer._picture_svg())
    exported = bokeh_facts(explorer.to_bokeh(), "matrix")
    assert_same(picture, exported)
    assert picture["rows"] == {0: "0:<s>", 1: "1:␣a", 2: "2:b␣c", 3: "3:d", 4: "4:end⏎"}
    assert picture["cols"] == picture["rows"]
    assert picture["title"] == f"layer 1 · {'mean ‖J_ij‖²_F' if statistic == 'mean' else 'samples per cell'} · " \
        "4 of 4 samples"
    assert picture["scale"][2] == (log and statistic == "mean")  # counts never on a log scale
    values = getattr(explorer.stats[1], statistic).numpy()
    positive = values[values > 0] if log and statistic == "mean" else values
    if statistic == "mean":
        assert picture["scale"][:2] == (positive.min(), positive.max())  # the full range: no clipping


def test_explorer_grid_export_uses_the_same_charts(explorer):
    explorer.log_scale = True
    grid = explorer.to_bokeh(layers="all", statistics=["mean", "std"])
    figs = {(r, c): f for f, r, c in grid.children}
    assert sorted(figs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for (r, c), fig in figs.items():
        stat = ("mean", "std")[c]
        values = getattr(explorer.stats[explorer.layer_options[r]], stat).numpy()
        facts = bokeh_facts(fig, "matrix")
        assert facts["scale"] == (values[values > 0].min(), values.max(), True)
        assert facts["bar_title"] == f"{stat} ‖J_ij‖²_F (log)"


@pytest.mark.parametrize("log", [False, True])
def test_spectrum_picture_and_bokeh_agree(log):
    w = spectrum()
    w.log_y = log
    w.pick_step(20)
    pictures = svg_facts(w._picture_svg())
    layout = w.to_bokeh()
    figures = [f for row in layout.children if isinstance(row, RowLayout) for f in row.children]
    kinds = [p["kind"] for p in pictures]
    assert kinds == ["lines"] * 5 + ["matrix"] * 2  # loss, curvature, trace, gradient norms, density; 2 maps
    assert len(figures) == len(pictures)
    for picture, fig in zip(pictures, figures, strict=True):
        assert_same(picture, bokeh_facts(fig, picture["kind"]))
    curvature = pictures[1]
    assert curvature["legend"] == [("λ_max", "#e15759"), ("λ_min", "#76b7b2"), ("2/η (edge of stability)", "#59a14f")]
    # gradient norms after the ten scalar series (Adam's two appended): palette indices 10 and 11
    assert pictures[3]["legend"] == [("‖∇L‖ block0", "#4e79a7"), ("‖∇L‖ head", "#f28e2c")]
    assert pictures[5]["title"] == "block norms ‖H_ab‖_F (estimate)"
    assert pictures[6]["rows"] == {0: "block0", 1: "block1"} and pictures[6]["cols"] == {0: "0", 1: "10", 2: "20",
                                                                                            3: "30"}
    # the series options sent to the browser carry the same colours
    colors = {o["key"]: o["color"] for o in w.series_options}
    assert colors["lambda_max"] == "#e15759" and colors["grad_norm:head"] == "#f28e2c"
    w.close()


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_spectrum_stability_lines_per_optimiser_in_picture_and_bokeh(optimizer):
    w = spectrum(optimizer)
    pictures = svg_facts(w._picture_svg())
    layout = w.to_bokeh()
    figures = [f for row in layout.children if isinstance(row, RowLayout) for f in row.children]
    for picture, fig in zip(pictures, figures, strict=True):
        assert_same(picture, bokeh_facts(fig, picture["kind"]))
    legend = pictures[1]["legend"]
    assert legend[:2] == [("λ_max", "#e15759"), ("λ_min", "#76b7b2")]
    if optimizer == "adam":  # no SGD line; the preconditioned sharpness and its threshold
        assert legend[2:] == [("λ_max(P⁻¹H) (Adam)", "#9c755f"),
                              ("(2+2β₁)/((1−β₁)η) (Adam edge of stability)", "#bab0ab")]
    else:  # no known threshold: said in the legend, in the SGD line's colour
        assert legend[2:] == [(NO_THRESHOLD_LABEL, "#59a14f")]
    w.close()


@pytest.mark.parametrize("log", [False, True])
def test_landscape_picture_and_bokeh_agree(landscape, log):
    landscape.log_scale = log
    (picture,) = svg_facts(landscape._picture_svg())
    fig = landscape.to_bokeh()
    assert_same(picture, bokeh_facts(fig, "landscape"))
    assert picture["title"].startswith("loss (token cross-entropy, nats) · ")
    assert picture["bar_title"] == "loss (token cross-entropy, nats)" + (" (log)" if log else "")
    assert picture["x_label"].startswith("α · random direction 1")
    loss = landscape.loss
    assert picture["scale"][:2] == (loss.min(), loss.max())
    # the same contour levels in both
    root = ET.fromstring(landscape._picture_svg())
    svg_levels = {float(el.get("data-level")) for el in root.iter() if el.get("class") == "tscope-static-contour"}
    (lines,) = [r for r in fig.renderers if isinstance(r, GlyphRenderer) and r.glyph.__class__.__name__ == "MultiLine"]
    assert svg_levels == set(lines.data_source.data["level"]) and svg_levels


def test_block_spectra_picture_and_bokeh_agree():
    from tscope_widgets.figures import block_density_chart, heterogeneity_chart
    from tscope_widgets.figures.bokeh import chart_figure
    from tscope_widgets.figures.svg import render_svg
    from tscope_widgets.kernels import iter_block_slq, spectral_heterogeneity

    gen = torch.Generator().manual_seed(0)
    blocks = {"a": torch.diag(torch.linspace(-1, 4, 30, dtype=torch.float64)),
              "b": torch.diag(torch.linspace(0.1, 2, 20, dtype=torch.float64).exp())}
    het = spectral_heterogeneity(list(iter_block_slq(blocks, 2, 10, generator=gen))[-1])
    charts = [block_density_chart(het.labels, het.grid, het.densities, floor=het.floor),
              heterogeneity_chart(het.labels, het.distances, het.mean)]
    pictures = svg_facts(render_svg(charts))
    assert [p["kind"] for p in pictures] == ["lines", "matrix"]
    for picture, chart in zip(pictures, charts, strict=True):
        assert_same(picture, bokeh_facts(chart_figure(chart), picture["kind"]))
    assert pictures[0]["legend"] == [("a", "#4e79a7"), ("b", "#f28e2c")]
    assert pictures[1]["rows"] == {0: "a", 1: "b"} and "JS⁰" in pictures[1]["title"]


def test_sweep_picture_and_bokeh_agree():
    from bokeh.models import Scatter, Segment

    from tscope_widgets.figures.bokeh import sweep_chart_figure
    from tscope_widgets.figures.svg_sweep import sweep_chart_svg
    from tscope_widgets.figures.sweep import sweep_chart, table_from_rows

    rng = np.random.default_rng(0)
    rows = [{"d": d, "L": L, "seed": s, "lam": d ** (-L) * np.exp(0.1 * rng.normal())}
            for L in (1, 2) for d in (8, 16, 32, 64) for s in range(3)]
    chart = sweep_chart(table_from_rows(rows, ("d", "L", "seed"), ("seed",)), "lam", "d", guides=(-1.0,),
                        marker_x=30, num_bootstrap=50)
    svg = ET.fromstring(sweep_chart_svg(chart))
    fig = sweep_chart_figure(chart)
    assert fig.title.text == chart.title == _text(_one(svg, "tscope-static-title"))
    assert fig.xaxis[0].axis_label == _text(_one(svg, "tscope-static-x-label")) == "d (log)"
    assert fig.yaxis[0].axis_label == _text(_one(svg, "tscope-static-y-label")) == "lam (log)"
    legend = [_text(el) for el in svg.iter() if el.get("class") == "tscope-static-legend"]
    assert [item.label.value for item in fig.legend[0].items] == legend == [g.label for g in chart.groups] + ["∝ d^-1"]
    assert (fig.x_range.start, fig.x_range.end) == chart.x_range
    assert (fig.y_range.start, fig.y_range.end) == chart.y_range
    glyphs = [r.glyph for r in fig.renderers if isinstance(r, GlyphRenderer)]
    fits = [p for p in svg.iter(f"{NS}path") if p.get("class") == "tscope-static-fit"]
    lines = [g for g in glyphs if isinstance(g, Line) and g.line_dash == []]
    assert [p.get("stroke") for p in fits] == [g.line_color for g in lines] == [g.color for g in chart.groups]
    means = [g for g in glyphs if isinstance(g, Scatter) and g.size == 7]
    assert len(means) == sum(1 for el in svg.iter() if el.get("class") == "tscope-static-means") == 2
    bars = [p for p in svg.iter(f"{NS}path") if p.get("class") == "tscope-static-errorbars"]
    assert [p.get("d").count("M") for p in bars] == [4, 4] and sum(isinstance(g, Segment) for g in glyphs) == 2
