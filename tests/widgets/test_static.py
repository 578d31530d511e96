"""The static picture of the explorer: PNG encoder, colour rules shared with the live view, HTML, and the
mime bundle the explorer displays."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.model_zoo import tiny
from tscope_widgets.widgets import SensitivityExplorer
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
)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


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
    assert "0:&lt;s&gt;" in out and "1:␣x" in out  # spaces made visible as in the live view
    assert "grey: no data" in out
    (png,) = re.findall(r'class="tscope-static-heatmap" data-rows="2"[^>]*href="data:image/png;base64,([^"]+)"', out)
    pixels, _ = decode(base64.b64decode(png))
    np.testing.assert_array_equal(pixels, [[0, NAN_INDEX], [LEVELS // 2, LEVELS - 1]])
    waiting = heatmap_html(None, title="t", status="pending")
    assert "waiting for the first batch" in waiting and "<svg" not in waiting
    with pytest.raises(ValueError, match=r"\[S, S\]"):
        heatmap_html(np.zeros(3), title="t", status="s")


def test_explorer_bundle_carries_the_picture_of_its_state():
    ids = torch.randint(0, 11, (8, 5), generator=torch.Generator().manual_seed(1))
    w = SensitivityExplorer(tiny(), ids, batch_size=4, token_labels=["a", "b", "c", "d", "e"], start=False)
    data, metadata = w._repr_mimebundle_()
    assert data[WIDGET_VIEW]["model_id"] == w.model_id and isinstance(metadata, dict)
    assert 'data-status="pending"' in data["text/html"] and "waiting for the first batch" in data["text/html"]
    w.start()
    assert w.wait(60)
    w.statistic = "count"
    html = w._repr_mimebundle_()[0]["text/html"]
    assert 'data-status="done"' in html and 'data-statistic="count"' in html and 'data-done="8"' in html
    assert "samples per cell" in html and "4:e" in html
    (png,) = re.findall(r'href="data:image/png;base64,([^"]+)"', html)[:1]
    pixels, _ = decode(base64.b64decode(png))
    counts = w.stats[w.layer].count.numpy()  # [5, 5]: 8 everywhere (no padding)
    np.testing.assert_array_equal(pixels, color_indices(counts, color_domain(counts)))
    w.close()
