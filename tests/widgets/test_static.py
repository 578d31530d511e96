"""The static picture of the explorer: PNG encoder, colour rules shared with the live view, HTML (an <img> of
an SVG document), the style pairing the picture with the widget output, and the outputs the explorer
displays (widget output, then picture output; the picture updated at the end of the job and by wait()).
Then the same two outputs for every widget (explorer, spectrum, landscape: one shared mechanism)."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from IPython.utils.capture import capture_output
from PIL import Image

from tests.model_zoo import tiny
from tscope_widgets.figures.charts import color_domain, format_value
from tscope_widgets.figures.png import LEVELS, NAN_INDEX, NONPOSITIVE_INDEX, PALETTE, color_indices, encode_png
from tscope_widgets.tracking import SpectrumHistory
from tscope_widgets.widgets._static import heatmap_html, picture_html, stand_in_style, svg_image
from tscope_widgets.widgets.attention import AttentionExplorer
from tscope_widgets.widgets.landscape import LandscapeWidget
from tscope_widgets.widgets.sensitivity import WIDGET_TEXT, SensitivityExplorer
from tscope_widgets.widgets.spectrum import SpectrumWidget

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SVG_IMG = re.compile(r'<img class="tscope-static-picture"[^>]*src="data:image/svg\+xml;base64,([^"]+)"')
HEATMAP_PNG = re.compile(r'class="tscope-static-heatmap" data-rows="(\d+)"[^>]*href="data:image/png;base64,([^"]+)"')


def svg_of(html: str) -> str:
    """The SVG document of the one picture in ``html``, checked to be well-formed XML (a browser shows
    nothing at all for a malformed SVG image)."""
    (b64,) = SVG_IMG.findall(html)
    svg = base64.b64decode(b64).decode("utf-8")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return svg


def heatmap_indices(html: str) -> np.ndarray:
    ((rows, png),) = HEATMAP_PNG.findall(svg_of(html))
    pixels, _ = decode(base64.b64decode(png))
    assert pixels.shape[0] == int(rows)
    return pixels


def decode(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "P"
    palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return np.array(image), palette


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (300, 2), (64, 64)])
def test_png_round_trip(shape):
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 256, size=shape, dtype=np.uint8)
    pixels, palette = decode(encode_png(indices, PALETTE))
    np.testing.assert_array_equal(pixels, indices)
    np.testing.assert_array_equal(palette[:256], PALETTE)


def test_png_small_palette_and_errors():
    pixels, palette = decode(
        encode_png(np.array([[0, 1], [1, 0]], np.uint8), np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    )
    np.testing.assert_array_equal(pixels, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(palette[:2], [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="outside the 2-entry palette"):
        encode_png(np.array([[2]], np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.int64), PALETTE)
    with pytest.raises(ValueError, match="non-empty"):
        encode_png(np.zeros((0, 2), np.uint8), PALETTE)
    with pytest.raises(ValueError, match="palette"):
        encode_png(np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8))


def test_color_domain_follows_the_live_view():
    # Same cases as colorDomain in js/test/scales.test.js.
    assert color_domain(np.array([1.0, np.nan, 3.0, np.inf])) == (1.0, 3.0)
    assert color_domain(np.array([0.0, 0.5, 2.0]), log=True) == (0.5, 2.0)
    assert color_domain(np.array([2.0, 2.0])) == (0.0, 2.0)
    assert color_domain(np.array([-2.0, -2.0])) == (-2.0, 0.0)
    assert color_domain(np.array([0.0, 0.0])) == (0.0, 1.0)
    assert color_domain(np.array([4.0]), log=True) == (0.4, 4.0)
    assert color_domain(np.array([np.nan])) == (0.0, 1.0)
    assert color_domain(np.array([0.0, -1.0]), log=True) == (0.1, 1.0)


def test_color_indices_linear_log_nan():
    v = np.array([0.0, 0.25, 0.5, 0.999, 1.0, np.nan])
    np.testing.assert_array_equal(color_indices(v, (0.0, 1.0)), [0, 63, 127, 253, 253, NAN_INDEX])
    v = np.array([1.0, 10.0, 100.0, 0.0, -1.0, np.nan])
    np.testing.assert_array_equal(
        color_indices(v, (1.0, 100.0), log=True),
        [0, LEVELS // 2, LEVELS - 1, NONPOSITIVE_INDEX, NONPOSITIVE_INDEX, NAN_INDEX],
    )
    np.testing.assert_array_equal(color_indices(np.array([-5.0, 5.0]), (0.0, 1.0)), [0, LEVELS - 1])  # clipped
    with pytest.raises(ValueError, match="bad colour domain"):
        color_indices(v, (0.0, 1.0), log=True)


def test_format_value():
    assert [format_value(v) for v in (0.0, 1.234, 0.05, 1.2e-5, 34000.0, -2.5e6, float("nan"))] == [
        "0",
        "1.23",
        "0.05",
        "1.2e-05",
        "3.4e+04",
        "-2.5e+06",
        "–",
    ]


def test_heatmap_html_escapes_and_labels():
    values = np.array([[1.0, np.nan], [2.0, 3.0]])
    out = heatmap_html(
        values, title="<b>t</b>", status="s & t", token_labels=["<s>", " x"], value_title="mean", attrs={"k": 'a"b'}
    )
    assert "<b>t</b>" not in out and "&lt;b&gt;t&lt;/b&gt;" in out and "s &amp; t" in out
    assert 'data-k="a&quot;b"' in out
    assert "<svg" not in out and "<style" not in out  # sanitizers drop both; the SVG is an <img> source
    assert re.search(r'<img class="tscope-static-picture" alt="&lt;b&gt;t&lt;/b&gt;: heatmap of mean[^"]*" '
                     r'width="\d+" height="\d+"', out)
    svg = svg_of(out)
    assert "0:&lt;s&gt;" in svg and "1:␣x" in svg  # spaces made visible as in the live view
    assert "grey: no data" in svg
    np.testing.assert_array_equal(heatmap_indices(out), [[0, NAN_INDEX], [LEVELS // 2, LEVELS - 1]])
    waiting = heatmap_html(None, title="t", status="pending")
    assert "waiting for the first batch" in waiting and "<img" not in waiting
    with pytest.raises(ValueError, match=r"\[S, S\]"):
        heatmap_html(np.zeros(3), title="t", status="s")


def test_stand_in_style_pairs_the_picture_with_the_output_before_it():
    css = stand_in_style("a1_B-2", ".live")
    output = ":is(.jp-OutputArea-child, .output_area)"
    picture = '.tscope-static[data-picture-id="a1_B-2"]'
    assert css == (
        f"<style>{output}:has(+ {output} {picture}):not(:has(.live)){{display:none}}"
        f"{output}:has(.live) + {output}:has({picture}){{display:none}}</style>"
    )
    for bad in ("", 'x"]{}', "a b", "x" * 129, None):
        with pytest.raises(ValueError, match="picture_id"):
            stand_in_style(bad, ".live")


def test_explorer_displays_its_view_then_its_picture_and_updates_the_picture(kernel_shell):
    ids = torch.randint(0, 11, (8, 5), generator=torch.Generator().manual_seed(1))
    w = SensitivityExplorer(tiny(), ids, batch_size=4, token_labels=["a", "b", "c", "d", "e"], start=False)
    assert w.picture_id == w.model_id
    with capture_output() as captured:
        w._ipython_display_()
        w._ipython_display_()  # the same explorer shown twice: two pairs of outputs
    view, picture, view2, picture2 = captured.outputs
    assert set(view.data) == {WIDGET_VIEW, "text/plain"} and view.data["text/plain"] == WIDGET_TEXT
    assert view.data[WIDGET_VIEW]["model_id"] == w.model_id
    assert not view.transient and view2.data == view.data  # the view is never updated: no display id
    assert set(picture.data) == {"text/html", "text/plain"}
    assert picture.data["text/plain"] == "SensitivityExplorer · layer 1 · mean ‖J_ij‖²_F (exact values · job pending)"
    html = picture.data["text/html"]
    assert html.startswith(stand_in_style(w.model_id, ".tscope-explorer"))
    assert f'class="tscope-static" data-picture-id="{w.model_id}"' in html and 'data-status="pending"' in html
    assert "waiting for the first batch" in html
    ids_shown = [picture.transient["display_id"], picture2.transient["display_id"]]
    assert ids_shown[0] != ids_shown[1] and not picture.update and not picture2.update

    with capture_output() as captured:
        w.start()
        assert w.wait(60)
    updates = [o for o in captured.outputs if o.update]
    assert updates and all(set(o.data) == {"text/html", "text/plain"} for o in updates)
    # the last update of each picture output (from wait(); the job's end may update them first) is final
    last = {o.transient["display_id"]: o for o in updates}
    assert sorted(last) == sorted(ids_shown) and not any(WIDGET_VIEW in o.data for o in captured.outputs)
    for o in last.values():
        assert o.data["text/plain"] == (
            "SensitivityExplorer · layer 1 · mean ‖J_ij‖²_F (exact values · 8 of 8 samples · job done)"
        )
        assert 'data-status="done"' in o.data["text/html"] and 'data-done="8"' in o.data["text/html"]
        assert o.data["text/html"].startswith(stand_in_style(w.model_id, ".tscope-explorer"))

    w.statistic = "count"  # the picture shows the view as selected
    with capture_output() as captured:
        assert w.wait(1)
    html = captured.outputs[-1].data["text/html"]
    assert 'data-statistic="count"' in html and "4:e" in svg_of(html)
    counts = w.stats[w.layer].count.numpy()  # [5, 5]: 8 everywhere (no padding)
    np.testing.assert_array_equal(heatmap_indices(html), color_indices(counts, color_domain(counts)))

    w.close()  # a closed explorer shows the picture only, without the pairing style
    with capture_output() as captured:
        w._ipython_display_()
    (alone,) = captured.outputs
    assert set(alone.data) == {"text/html", "text/plain"} and "<style>" not in alone.data["text/html"]
    assert 'data-status="done"' in alone.data["text/html"]  # it had ended: close() leaves "done"


# ---------------------------------------------------------------------------- the same outputs for every widget
def _ended_explorer():
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(2))
    w = SensitivityExplorer(tiny(), ids, batch_size=4)
    assert w.wait(60)
    return w


def _ended_comparison():
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(3))
    other = SensitivityExplorer(tiny(), ids, batch_size=4)
    assert other.wait(60)
    return _ended_explorer().compare(other)


def _fixed_spectrum():
    history = SpectrumHistory.empty(["block0"], ["block0"])
    for t in range(3):
        history.append(
            dict(steps=t, loss=1.0 / (t + 1), train_loss=1.0, lambda_max=2.0 + t, lambda_min=-0.5, trace=3.0,
                 trace_stderr=0.1, grad_norms=[0.5], block_lambda_max=[1.0 + t], threshold=20.0, lr=0.1,
                 matvecs=10, converged=True)
        )
    return SpectrumWidget(history=history)


def _ended_landscape():
    ids = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(2))
    w = LandscapeWidget(tiny(), ids, resolution=3, span=0.5)
    assert w.wait(60)
    return w


def _attention_explorer():
    ids = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(2))
    return AttentionExplorer(tiny(), ids, num_bootstrap=100)


def _fixed_blocks():
    from tscope_widgets.kernels import iter_block_slq
    from tscope_widgets.widgets import BlockSpectraWidget

    A = torch.diag(torch.linspace(-0.5, 2.0, 10, dtype=torch.float64))
    blocks = {"embed": A, "block0.attn.q": A.exp(), "head": A.square()}
    return BlockSpectraWidget(densities=list(iter_block_slq(blocks, 2, 10, generator=torch.Generator()))[-1])


# builder, live view's root selector, front end (whose root element it must match)
PICTURED_WIDGETS = {
    "blocks": (_fixed_blocks, ".tscope-blocks", "block_spectra_widget.js"),
    "explorer": (_ended_explorer, ".tscope-explorer", "sensitivity_explorer.js"),
    "spectrum": (_fixed_spectrum, ".tscope-spectrum", "spectrum_widget.js"),
    "landscape": (_ended_landscape, ".tscope-landscape", "landscape_widget.js"),
    "attention": (_attention_explorer, ".tscope-attention", "attention_explorer.js"),
    "comparison": (_ended_comparison, ".tscope-comparison", "comparison_explorer.js"),
}


@pytest.mark.parametrize("kind", list(PICTURED_WIDGETS))
def test_every_widget_shows_its_view_then_a_picture_that_stands_in_for_it(kind, kernel_shell):
    build, selector, front_end = PICTURED_WIDGETS[kind]
    w = build()
    assert w.picture_id == w.model_id and w.live_selector == selector
    with capture_output() as captured:
        w._ipython_display_()
    view, picture = captured.outputs
    assert set(view.data) == {WIDGET_VIEW, "text/plain"} and not view.transient  # no picture inside the view
    assert view.data[WIDGET_VIEW]["model_id"] == w.model_id
    display_id = picture.transient["display_id"]
    assert display_id and set(picture.data) == {"text/html", "text/plain"}
    assert picture.data["text/plain"].startswith(type(w).__name__)
    style = stand_in_style(w.model_id, selector)
    html = picture.data["text/html"]
    assert html.startswith(style) and html.count("<style") == 1
    body = html[len(style) :]
    outer = re.match(r'<div class="tscope-static" data-picture-id="([^"]+)"([^>]*)>', body)
    assert outer and outer.group(1) == w.model_id and 'data-status="done"' in outer.group(2)
    assert "<svg" not in body  # sanitizers strip inline SVG: the picture is an <img> of an SVG document
    (b64,) = re.findall(r'<img class="tscope-static-picture"[^>]*src="data:image/svg\+xml;base64,([^"]+)"', body)
    svg = base64.b64decode(b64).decode("utf-8")
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg" and HEATMAP_PNG.search(svg)

    # The live view is the front end's root element, and it hides the pictures of its model.
    js = (Path(__file__).resolve().parents[2] / "js" / "src" / front_end).read_text(encoding="utf-8")
    assert re.search(rf'{{ class: "{selector[1:]}( tscope-root)?" }}', js)  # the root the selector finds
    assert 'pictureHidingCSS(model.get("picture_id"))' in js

    # picture_id is Python's: a write from the browser is refused.
    w._handle_msg({"content": {"data": {"method": "update", "state": {"picture_id": "x"}, "buffer_paths": []}},
                   "buffers": []})
    assert w.picture_id == w.model_id

    # At the end of a cell that changed what it shows, the picture (only) is replaced, for the running cell.
    assert w._after_cell in kernel_shell.events.callbacks["post_run_cell"]
    w._picture_changed()
    with capture_output() as captured:
        w._after_cell()
    (update,) = captured.outputs
    assert update.update and update.transient["display_id"] == display_id and WIDGET_VIEW not in update.data

    w.close()  # closed: no more refreshes; displaying it again shows the picture alone
    assert w._after_cell not in kernel_shell.events.callbacks["post_run_cell"]
    with capture_output() as captured:
        w._ipython_display_()
    (alone,) = captured.outputs
    assert "<style" not in alone.data["text/html"] and alone.data["text/html"].startswith('<div class="tscope-static"')


def test_svg_image_and_picture_html():
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10.6" height="20" viewBox="0 0 10.6 20"></svg>'
    img = svg_image(svg, 'a "b"')
    assert img.startswith('<img class="tscope-static-picture" alt="a &quot;b&quot;" width="11" height="20" ')
    assert base64.b64decode(re.search(r'base64,([^"]+)"', img).group(1)).decode() == svg
    with pytest.raises(ValueError, match="width and height"):
        svg_image("<div/>", "x")
    out = picture_html(svg, title="<t>", status="s", alt="x", attrs={"status": "done"}, noun="thing",
                       extra_html="<table></table>")
    assert out.startswith('<div class="tscope-static" data-status="done" ') and "&lt;t&gt;" in out
    assert "<table></table>" in out and "Static picture of the live thing" in out and "<svg" not in out
    waiting = picture_html(None, title="t", status="s", alt="x", waiting="soon…")
    assert "soon…" in waiting and "<img" not in waiting
