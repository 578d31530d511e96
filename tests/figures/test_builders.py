"""Chart descriptions against hand-computed expectations: colour domains, series colours by key, labels,
titles, ranges and contour levels (the rules the live view, the notebook picture and Bokeh share)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tscope_widgets.figures.charts import (
    AUTO_LOG_DECADES,
    BACKGROUND,
    NAN_COLOR,
    SERIES_PALETTE,
    auto_log,
    color_scale,
    palette_colors,
    resolve_log,
)
from tscope_widgets.figures.landscape import landscape_chart, thin_labels
from tscope_widgets.figures.sensitivity import sensitivity_chart, sensitivity_grid
from tscope_widgets.figures.spectrum import (
    NO_THRESHOLD_LABEL,
    block_norm_chart,
    block_steps_chart,
    density_index,
    series_charts,
    series_options,
    spectrum_charts,
)

TABLEAU = {"blue": "#4e79a7", "orange": "#f28e2c", "red": "#e15759", "teal": "#76b7b2", "green": "#59a14f"}


# ---------------------------------------------------------------------------- colour scales
def test_color_scale_is_the_live_views_full_range_rule():
    s = color_scale(np.array([[0.0, 1e-9], [15.0, np.nan]]), log=True)
    assert (s.lo, s.hi, s.log) == (1e-9, 15.0, True)  # every positive value: no clipping below the maximum
    assert s.low_color == BACKGROUND and s.nan_color == NAN_COLOR == "#c7c7c7"
    s = color_scale(np.array([-2.0, 3.0, np.inf]))
    assert (s.lo, s.hi, s.log) == (-2.0, 3.0, False)
    s = color_scale(np.array([4.0]), log=True)  # a constant map ends at its value
    assert (s.lo, s.hi) == (0.4, 4.0)
    # clipping only on request; values below a clipped scale take the lowest colour
    s = color_scale(np.array([1e-9, 15.0]), log=True, log_range=100)
    assert (s.lo, s.hi, s.low_color) == (0.15, 15.0, None)
    with pytest.raises(ValueError, match="vmin > 0"):
        color_scale(np.array([1.0, 2.0]), log=True, lo=0.0)


def test_auto_log_is_on_where_values_span_two_decades_and_never_for_counts():
    assert AUTO_LOG_DECADES == 2.0
    assert not auto_log(np.array([0.0, np.nan, 1.0, 99.0]))
    assert auto_log(np.array([0.0, np.nan, 1.0, 100.0]))
    assert not auto_log(np.array([-1e6, 0.5, 2.0]))  # only positive values count
    assert not auto_log(np.array([np.nan]))
    assert not auto_log(np.array([1e-6, 1.0]), count=True)
    assert resolve_log("auto", np.array([1e-6, 1.0])) and not resolve_log(False, np.array([1e-6, 1.0]))
    assert not resolve_log(True, np.array([1.0, 2.0]), count=True)
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        resolve_log("yes", np.array([1.0]))


def test_default_sensitivity_maps_are_log_where_they_span_decades():
    # a causal map: a bright diagonal five decades above the rest, zeros above it
    S = 6
    m = np.tril(np.full((S, S), 1e-4)) + np.eye(S) * 10.0
    chart = sensitivity_chart(m)
    assert chart.scale.log and chart.bar_title.endswith("(log)") and chart.scale.lo == pytest.approx(1e-4)
    assert not sensitivity_chart(np.full((S, S), 3.0) + np.eye(S)).scale.log  # within a decade: linear
    ((mean, count),) = sensitivity_grid({0: {"mean": m, "count": m * 1e6}}, statistics=["mean", "count"])
    assert mean.scale.log and not count.scale.log  # never for counts, whatever they span
    ((lin,),) = sensitivity_grid({0: {"mean": m}}, log=False)
    assert not lin.scale.log


def test_colour_ranges_clamp_by_percentiles_and_values():
    rng = np.random.default_rng(0)
    v = np.exp(rng.normal(size=(20, 20)) * 3)  # spans many decades
    v[0, 0] = np.nan
    finite = v[np.isfinite(v)]
    s = color_scale(v, "auto", percentiles=(5, 95))
    assert s.log and (s.lo, s.hi) == pytest.approx(tuple(np.percentile(finite, [5, 95])), rel=1e-12)
    assert s.low_color is None  # clipped: small values are data, drawn in the lowest colour
    s = color_scale(v, False, percentiles=(0, 90))  # no lower clamp at the 0th percentile
    assert (s.lo, s.hi) == pytest.approx((finite.min(), np.percentile(finite, 90)), rel=1e-12)
    assert s.low_color == BACKGROUND
    s = color_scale(v, True, percentiles=(5, 95), hi=2.0)  # values win over percentiles
    assert s.hi == 2.0 and s.lo == pytest.approx(np.percentile(finite, 5))
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        color_scale(v, percentiles=(50, 10))
    with pytest.raises(ValueError, match="low < high"):
        color_scale(v, lo=3.0, hi=1.0)
    # a non-positive low limit on a log map is dropped by the grid (as in the live view)
    ((chart,),) = sensitivity_grid({0: {"mean": v}}, log=True, limits=(0.0, 5.0))
    assert chart.scale.lo == pytest.approx(finite.min()) and chart.scale.hi == 5.0


def test_diverging_map_is_symmetric_about_zero_and_matches_the_live_colours():
    s = color_scale(np.array([-3.0, 1.0, 2.0, np.nan]), "auto", colormap="rdbu")
    assert (s.lo, s.hi, s.log) == (-3.0, 3.0, False)
    s = color_scale(np.array([-3.0, 1.0, 2.0]), colormap="rdbu", percentiles=(0, 50))
    assert (s.lo, s.hi) == (-2.0, 2.0)  # median of |values|
    colors = palette_colors("rdbu")
    # the same colours as js/test/scales.test.js (d3's interpolateRdBu reversed, sampled at k / 255)
    assert [colors[k] for k in (0, 1, 64, 127, 128, 200, 255)] == [
        "#053061", "#063264", "#6cacd1", "#f1efee", "#f2efed", "#da6b57", "#67001f",
    ]  # fmt: skip


def test_colormap_names():
    assert palette_colors("viridis")[0] == "#440154" and palette_colors("viridis") == palette_colors("Viridis256")
    assert palette_colors(("#000000", "#ffffff")) == ["#000000", "#ffffff"]
    with pytest.raises(ValueError, match="unknown colour map"):
        palette_colors("rainbow-ish")


# ---------------------------------------------------------------------------- spectrum
def history(T: int = 4) -> dict:
    steps = np.arange(T) * 10
    return {
        "steps": steps,
        "loss": 2.0 / (1 + steps),
        "train_loss": np.full(T, 1.5),
        "lambda_max": 3.0 + steps,
        "lambda_min": np.full(T, -0.5),
        "threshold": np.full(T, 20.0),
        "trace": np.full(T, 6.0),
        "trace_stderr": np.full(T, 0.5),
        "lr": np.full(T, 0.1),
        "matvecs": np.full(T, 12.0),
        "grad_norms": np.ones((T, 3)),
        "grad_norm_labels": ["block0", "block1", "head"],
        "block_lambda_max": np.arange(T * 2, dtype=float).reshape(T, 2) + 1,
        "block_labels": ["block0", "block1"],
        "density_steps": np.array([0, 20]),
        "density_grid": np.linspace(-1, 1, 5)[None].repeat(2, 0),
        "density": np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.0, 0.3, 0.4, 0.3, 0.0]]),
    }


def test_series_colours_are_fixed_by_key_as_in_the_live_view():
    options = {o["key"]: o["color"] for o in series_options(["block0", "block1", "head"])}
    assert options["loss"] == TABLEAU["blue"] and options["train_loss"] == TABLEAU["orange"]
    assert options["lambda_max"] == TABLEAU["red"] and options["lambda_min"] == TABLEAU["teal"]
    assert options["threshold"] == TABLEAU["green"]
    # Adam's two series were appended after the eight older ones (whose colours stay): indices 8 and 9
    assert options["precond_lambda_max"] == "#9c755f" and options["adam_threshold"] == "#bab0ab"
    # gradient norms follow the ten scalar series: indices 10, 11, 12 (the palette wraps around)
    grad_colors = [options[f"grad_norm:{g}"] for g in ("block0", "block1", "head")]
    assert grad_colors == [TABLEAU[c] for c in ("blue", "orange", "red")]
    # λ_max is red in its chart whatever else is selected (the old picture coloured by position: blue)
    (chart,) = series_charts(history(), ["lambda_max"], log=False)
    ((key, color),) = [(s.key, s.color) for s in chart.series]
    assert (key, color) == ("lambda_max", TABLEAU["red"])
    (chart,) = series_charts(history(), ["lambda_min", "lambda_max"], log=False)
    assert [(s.label, s.color) for s in chart.series] == [("λ_max", TABLEAU["red"]), ("λ_min", TABLEAU["teal"])]


def test_stability_lines_follow_the_optimiser():
    T = 4
    nan = np.full(T, np.nan)
    sgd = history(T)  # an SGD history: 2/η recorded, no Adam series
    curvature = series_charts(sgd, log=False)[1]
    assert [s.key for s in curvature.series] == ["lambda_max", "lambda_min", "threshold"]
    adam = {**history(T), "threshold": nan, "precond_lambda_max": np.full(T, 7.0), "adam_threshold": np.full(T, 38.0)}
    curvature = series_charts(adam, log=False)[1]
    assert [(s.key, s.label) for s in curvature.series] == [
        ("lambda_max", "λ_max"),
        ("lambda_min", "λ_min"),
        ("precond_lambda_max", "λ_max(P⁻¹H) (Adam)"),
        ("adam_threshold", "(2+2β₁)/((1−β₁)η) (Adam edge of stability)"),
    ]
    assert [s.color for s in curvature.series][2:] == ["#9c755f", "#bab0ab"]
    assert curvature.y_range == (-0.5, 38.0)  # the Adam threshold counts in the range
    other = {**history(T), "threshold": nan}  # e.g. RMSprop: neither threshold is known
    curvature = series_charts(other, log=False)[1]
    assert [s.key for s in curvature.series] == ["lambda_max", "lambda_min", "threshold"]
    assert curvature.series[-1].label == NO_THRESHOLD_LABEL and np.isnan(curvature.series[-1].y).all()
    # a threshold not selected is not announced either
    curvature = series_charts(other, ["lambda_max"], log=False)[0]
    assert [s.key for s in curvature.series] == ["lambda_max"]


def test_series_charts_labels_ranges_bands_and_marker():
    h = history()
    charts = series_charts(h, log=False, picked_step=20)  # the default selection
    assert [c.title for c in charts] == [
        "training loss",
        "extreme Hessian eigenvalues",
        "Hessian trace (band: ± 1 std. error)",
        "gradient norm per parameter group",
    ]
    assert all(c.x_label == "training step" and c.x_range == (0.0, 30.0) and c.marker_x == 20.0 for c in charts)
    curvature = charts[1]
    assert curvature.y_label == "eigenvalue of ∇²L" and curvature.y_title == "eigenvalue of ∇²L"
    assert [s.key for s in curvature.series] == ["lambda_max", "lambda_min", "threshold"]
    assert curvature.y_range == (-0.5, 33.0)
    trace = charts[2]
    (line,) = trace.series
    np.testing.assert_array_equal(line.band[0], np.full(4, 5.5))
    assert trace.y_range == (5.5, 6.5)  # the band counts
    loss = series_charts(h, ["loss"], log=True, picked_step=99)[0]
    assert loss.log_y and loss.y_title == "loss (cross-entropy, nats) (log)"
    assert loss.y_range == (2.0 / 31, 2.0) and loss.marker_x is None  # a pick outside the data: no marker
    constant = series_charts(h, ["lr"], log=True)[0]  # one value: a decade around it on a log axis
    assert constant.y_range == pytest.approx((0.1 / math.sqrt(10), 0.1 * math.sqrt(10)))
    empty = series_charts({**h, "lr": np.full(4, -1.0)}, ["lr"], log=True)[0]
    assert empty.y_range is None  # nothing positive to draw on a log axis


def test_density_block_maps_and_the_whole_view():
    assert density_index([0, 20], None) == 1 and density_index([0, 20], 10) == 0  # ties: the earlier
    assert density_index([0, 20], 11) == 1 and density_index([], 5) is None
    norms = {"labels": ["a", "b"], "frobenius": np.array([[1.0, 2.0], [2.0, 4.0]]), "exact": False}
    charts = spectrum_charts(history(), norms=norms, selected=["loss"], log=True, picked_step=0)
    assert [type(c).__name__ for c in charts] == ["LineChart", "LineChart", "MatrixChart", "MatrixChart"]
    density = charts[1]
    assert density.title == "spectral density at step 0 (SLQ)" and density.series[0].color == SERIES_PALETTE[0]
    assert density.x_label == "eigenvalue λ of ∇²L" and density.y_title == "density φ(λ) (log)"
    fro = charts[2]
    assert fro.title == "block norms ‖H_ab‖_F (estimate)" and fro.bar_title == "‖H_ab‖_F (log)"
    assert (fro.scale.lo, fro.scale.hi, fro.scale.log) == (1.0, 4.0, True)
    assert block_norm_chart(["a", "b"], norms["frobenius"], exact=True).title == "block norms ‖H_ab‖_F"
    steps = charts[3]
    assert steps.row_labels == ("block0", "block1") and steps.col_labels == ("0", "10", "20", "30")
    assert steps.values.shape == (2, 4) and steps.values[1, 0] == 2.0 and not steps.square
    assert block_steps_chart(["x"], [5], [[3.0]], log=False).title == "λ_max of each Hessian block H_aa"
    assert spectrum_charts(None) == [] and len(spectrum_charts(None, norms=norms)) == 1


# ---------------------------------------------------------------------------- sensitivity
def test_sensitivity_labels_titles_and_scales():
    values = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(3, 3)
    chart = sensitivity_chart(values, token_labels=["<s>", " the", "a\tb\nc long token"], value_title="mean")
    assert chart.row_labels == ("0:<s>", "1:␣the", "2:a⇥b⏎c␣lon…") and chart.col_labels == chart.row_labels
    assert chart.row_hover[2] == "2:a⇥b⏎c␣long␣token" and (chart.row_name, chart.col_name) == ("output i", "input j")
    assert (chart.x_label, chart.y_label) == ("input position j", "output position i")
    assert (chart.scale.lo, chart.scale.hi, chart.scale.log) == (1.0, 9.0, False)
    assert sensitivity_chart(values).row_labels == ("0", "1", "2")
    with pytest.raises(ValueError, match="token_labels has 2 entries for a map with 3 positions"):
        sensitivity_chart(values, token_labels=["a", "b"])
    stats = {0: {"mean": values, "count": torch.full((3, 3), 4.0)}, "final": {"mean": values, "count": values}}
    rows = sensitivity_grid(stats, None, ["mean", "count"], log=True, note="4 samples")
    assert [[c.title for c in row] for row in rows] == [
        ["layer 0 · mean ‖J_ij‖²_F · 4 samples", "layer 0 · samples per cell · 4 samples"],
        ["final norm · mean ‖J_ij‖²_F · 4 samples", "final norm · samples per cell · 4 samples"],
    ]
    assert rows[0][0].scale.log and not rows[0][1].scale.log  # counts never on a log scale
    assert rows[0][0].bar_title == "mean ‖J_ij‖²_F (log)" and rows[0][0].value_name == "mean"
    with pytest.raises(ValueError, match="unknown statistics"):
        sensitivity_grid(stats, statistics=["median"])


# ---------------------------------------------------------------------------- landscape
def test_landscape_contour_levels_origin_and_trajectory():
    a = np.linspace(-1.0, 1.0, 5)
    bowl = a[:, None] ** 2 + a[None, :] ** 2  # 0 .. 2
    chart = landscape_chart(a, a, bowl, value_title="loss (nats)", x_label="α · d1", y_label="β · d2")
    assert (chart.scale.lo, chart.scale.hi) == (0.0, 2.0)
    assert chart.contour_levels == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8])
    assert [lv for lv, _ in chart.contour_lines] == list(chart.contour_levels)
    assert chart.origin == (0.0, 0.0) and chart.bar_title == "loss (nats)" and chart.value_name == "loss (nats)"
    log = landscape_chart(a, a, bowl, log=True, contours=True)
    assert (log.scale.lo, log.scale.hi) == (0.25, 2.0)  # positive values only; 0 at the origin is below
    # round steps of 0.1 in log10 strictly inside (log10 0.25, log10 2) = (-0.602, 0.301)
    assert log.contour_levels == pytest.approx([10 ** (k / 10) for k in range(-6, 4)])
    assert log.bar_title == "loss (log)"
    off = landscape_chart(a + 3, a, bowl, contours=False, trajectory=[[3.0, 0.0], [np.nan, 1.0], [3.5, 0.5]],
                          trajectory_steps=[0, 5, 10])
    assert off.origin is None and off.contour_levels == () and off.contour_lines == ()
    np.testing.assert_array_equal(off.trajectory, [[3.0, 0.0], [3.5, 0.5]])  # the NaN point dropped ...
    np.testing.assert_array_equal(off.trajectory_steps, [0, 10])  # ... with its step
    few = np.full_like(bowl, np.nan)
    few[0, :3] = 1.0
    assert landscape_chart(a, a, few).contour_levels == ()  # fewer than four values: no contours
    with pytest.raises(ValueError, match="increasing"):
        landscape_chart(a[::-1], a, bowl)
    with pytest.raises(ValueError, match="trajectory_steps has 1 entries for 2 points"):
        landscape_chart(a, a, bowl, trajectory=[[0, 0], [1, 1]], trajectory_steps=[3])


# ---------------------------------------------------------------------------- landscape labels
def test_thin_labels_drops_labels_that_pile_up_and_keeps_the_ends():
    # a trajectory that spirals into a well: the last steps sit within a few pixels of each other
    pts = np.array([[0, 0], [40, 0], [60, 10], [64, 12], [66, 13], [67, 13.5]], dtype=float)
    kept = thin_labels(pts, range(6), min_gap=18)
    assert kept == [0, 1, 5]  # 2 lies 7.3 px from 5 (the last, kept first); 3 and 4 closer still
    gaps = [np.hypot(*(pts[i] - pts[j])) for i in kept for j in kept if i < j]
    assert min(gaps) >= 18
    assert thin_labels(pts, [0, 5], min_gap=100) == [5]  # the last wins when the ends collide
    assert thin_labels(pts, [2], min_gap=18) == [2] and thin_labels(pts, []) == []
