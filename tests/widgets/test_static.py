"""The static picture of the explorer: PNG encoder, colour rules shared with the live view, HTML (an <img> of
an SVG document), the style pairing the picture with the widget output, and the outputs the explorer
displays (widget output, then picture output; the picture updated at the end of the job and by wait())."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image

from tests.model_zoo import tiny
from tscope_widgets.widgets._static import (
    LEVELS,
    NAN_INDEX,
    NONPOSITIVE_INDEX,
    PALETTE,
    color_domain,
    color_indices,
    encode_png,
    format_value,
    heatmap_html,
    stand_in_style,
)
from tscope_widgets.widgets.sensitivity import WIDGET_TEXT, SensitivityExplorer

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


@pytest.fixture
def kernel_shell(monkeypatch):
    """An IPython shell that looks like a Jupyter kernel's (the explorer then keeps its display ids)."""
    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    return shell


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
    assert picture.data["text/plain"] == "SensitivityExplorer · layer 1 · mean ‖J_ij‖²_F (job pending)"
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
        assert o.data["text/plain"] == "SensitivityExplorer · layer 1 · mean ‖J_ij‖²_F (8 of 8 samples · job done)"
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
