"""SweepWidget: fixed rows and a table file, a live growth-rate source in a job (rows arrive, fits follow),
untrusted browser values put back, exports. No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from bokeh.plotting import figure as bokeh_figure

from tests.widgets.comm import browser_command, browser_update
from tscope_widgets import SweepWidget
from tscope_widgets.figures.sweep import SweepTable
from tscope_widgets.kernels.power_law import fit_power_law
from tscope_widgets.kernels.theory.growth import GrowthSetting, iter_growth_rates

WAIT = 120.0
LOGGER = "tscope_widgets.widgets.sweep"


def rows(seeds: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"d": d, "L": L, "seed": s, "lam": d ** (-1.0 * L) * math.exp(0.05 * rng.normal()), "acc": 0.5}
            for L in (1, 2) for d in (8, 16, 32) for s in range(seeds)]


def test_fixed_rows_show_their_fits_and_refuse_bad_browser_values(caplog):
    w = SweepWidget(rows=rows(), axes=["d", "L", "seed"], seed_axes=["seed"], guides=[-1, -2], num_bootstrap=200)
    assert w.wait(WAIT) and w.status == "done"
    assert (w.x_axis, w.summary, w.x_options, w.summary_options) == ("d", "lam", ["d", "L"], ["lam", "acc"])
    assert w.runs == 18 and [g["key"] for g in w.chart["groups"]] == ["L=1", "L=2"]
    for key, L in (("L=1", 1), ("L=2", 2)):
        runs = [r for r in rows() if r["L"] == L]
        ref = fit_power_law([r["d"] for r in runs], [r["lam"] for r in runs], [str(r["seed"]) for r in runs],
                            num_bootstrap=200)
        assert w.fits[key].exponent == pytest.approx(ref.exponent, rel=1e-12)
        assert (w.fits[key].ci_low, w.fits[key].ci_high) == pytest.approx((ref.ci_low, ref.ci_high), rel=1e-12)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, x_axis="seed", summary="nope", fit_range=[4, 2])
        browser_update(w, chart=None, runs=0)
    assert (w.x_axis, w.summary, w.fit_range) == ("d", "lam", None)
    assert w.runs == 18 and w.chart is not None
    assert "ignored front-end writes to read-only traits ['chart', 'runs']" in caplog.text
    assert "ignored fit_range=[4, 2] from the front end" in caplog.text
    browser_update(w, x_axis="L", fit_range=[8, 16])
    assert w.x_axis == "L" and w.fit_range == (8.0, 16.0)
    browser_update(w, x_axis="d")
    assert w.chart_description.groups[0].fit.num_points == 6  # d = 8, 16 of 3 seeds
    browser_command(w, {"type": "command", "command": "rm -rf"})  # logged and ignored
    assert w.status == "done"


def test_live_growth_rates_fill_in_and_the_fits_follow(tmp_path):
    setting = GrowthSetting("L=1", sigmas=(0.03, 0.1, 0.3))
    w = SweepWidget(lambda: iter_growth_rates(setting, seeds=2, d_model=8, d_mlp=16, batch_size=4, num_samples=4),
                    summary="v_hessian", x_axis="sigma", guides=(2,), marker_x=1.0, num_bootstrap=100,
                    throttle=0.05, num_threads=1)
    assert w.wait(WAIT) and w.status == "done" and w.live
    assert w.runs == 6 and w.done == 6 and w.total == 6
    snap = w.job.snapshot
    xs = np.repeat(snap.sigmas[0].numpy(), 2)
    ys = snap.norms[0, :, :, 1, 0].numpy().reshape(-1)
    ref = fit_power_law(xs, ys, [str(s) for s in [0, 1] * 3], num_bootstrap=100)
    fit = w.fits["setting=L=1"]
    assert fit.exponent == pytest.approx(ref.exponent, rel=1e-12)
    assert abs(fit.exponent - 2.0) < 0.3  # V grows as σ² at small σ (Ormaniec et al. 2025)
    assert w.chart["guides"][0]["exponent"] == 2.0 and w.chart["marker_x"] == 1.0
    w.start()  # a fresh run from the source function
    assert w.wait(WAIT) and w.runs == 6
    path = w.save_html(tmp_path / "sweep.html")
    text = path.read_text()
    assert "v_hessian against sigma" in text and "Bokeh" in text
    layout = w.to_bokeh()  # the chart beside the fits' residuals
    assert [type(c) for c in layout.children] == [type(bokeh_figure())] * 2
    assert layout.children[1].title.text.startswith("residuals of the fits: log v_hessian")
    svg = w._picture_svg()
    assert 'data-groups="1"' in svg and "tscope-static-guide" in svg
    assert "tscope-static-marker" not in svg  # σ = 1 lies outside this grid


def test_a_used_up_generator_cannot_restart_and_bad_arguments_are_named():
    table = SweepTable(({"x": 1, "y": 2.0}, {"x": 2, "y": 4.0}), ("x",), (), 2, 2)
    w = SweepWidget(iter([table]))
    assert w.wait(WAIT) and w.fits["all"].exponent == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(RuntimeError, match="used up"):
        w.start()
    with pytest.raises(ValueError, match="exactly one of them"):
        SweepWidget()
    with pytest.raises(ValueError, match="needs axes="):
        SweepWidget(rows=[])
    with pytest.raises(TypeError, match="source must be a generator"):
        SweepWidget([table])
    with pytest.raises(ValueError, match="fit_range="):
        SweepWidget(rows=rows(), axes=["d", "L", "seed"], fit_range=(0, 0.26))
    with pytest.raises(ValueError, match="x_axis='seed' is not a numeric, non-seed axis"):
        SweepWidget(rows=rows(), axes=["d", "L", "seed"], seed_axes=["seed"], x_axis="seed")
    with pytest.raises(ValueError, match="marker_x"):
        SweepWidget(rows=rows(), axes=["d", "L", "seed"], marker_x=-1)
    with pytest.raises(RuntimeError, match="nothing to export"):
        SweepWidget(rows=[], axes=["d"]).to_bokeh()


def test_from_table_reads_what_tscope_sweep_writes(tmp_path):
    doc = {"axes": ["d", "seed"], "seed_axes": ["seed"], "columns": ["point", "d", "seed", "lam"],
           "rows": [{"point": f"p{d}{s}", "d": d, "seed": s, "lam": None if d == 4 else 3.0 / d}
                    for d in (4, 8, 16) for s in (0, 1)]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(doc))
    w = SweepWidget.from_table(path, summary="lam")
    assert w.chart_description.dropped == 2
    assert w.fits["all"].exponent == pytest.approx(-1.0, rel=1e-12)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 3}))
    with pytest.raises(ValueError, match="not a sweep table"):
        SweepWidget.from_table(bad)


def test_the_view_is_followed_by_a_picture_of_the_chart(kernel_shell):
    import base64
    import re
    import xml.etree.ElementTree as ET
    from pathlib import Path

    from IPython.utils.capture import capture_output

    from tscope_widgets.widgets._static import stand_in_style

    w = SweepWidget(rows=rows(), axes=["d", "L", "seed"], seed_axes=["seed"], guides=[-1], num_bootstrap=50)
    assert w.wait(WAIT)
    with capture_output() as captured:
        w._ipython_display_()
    view, picture = captured.outputs
    assert view.data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    html = picture.data["text/html"]
    assert html.startswith(stand_in_style(w.model_id, ".tscope-sweep")) and 'data-status="done"' in html
    assert 'data-runs="18"' in html and "<svg" not in html
    (b64,) = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    svg = ET.fromstring(base64.b64decode(b64).decode())
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.get("class") == "tscope-static-sweep" and svg.get("data-groups") == "2"
    fits = [p for p in svg.iter(f"{ns}path") if p.get("class") == "tscope-static-fit"]
    assert sorted(float(p.get("data-exponent")) for p in fits) == sorted(f.exponent for f in w.fits.values())
    js = (Path(__file__).resolve().parents[2] / "js" / "src" / "sweep_widget.js").read_text(encoding="utf-8")
    assert '{ class: "tscope-sweep tscope-root" }' in js and 'pictureHidingCSS(model.get("picture_id"))' in js
    w.close()
