"""Figure files for papers (figures/raster.py): the SVG picture resized as vectors, and its PNG rendering
with heatmap cells kept sharp and the colours of the embedded cell image."""

from __future__ import annotations

import base64
import io
import re
import sys

import numpy as np
import pytest
from PIL import Image

from tscope_widgets.figures.raster import MAX_SCALE, print_svg, svg_to_png
from tscope_widgets.figures.svg import heatmap_svg, svg_size

IMAGE = re.compile(
    r'<image class="tscope-static-heatmap"[^>]* x="([0-9.]+)" y="([0-9.]+)" width="([0-9.]+)" '
    r'height="([0-9.]+)"[^>]*href="data:image/png;base64,([^"]+)"'
)


def heatmap():
    """A 3 x 3 map spanning decades (log colours) and its SVG picture."""
    values = np.array([[1.0, 0.0, 0.0], [10.0, 100.0, 0.0], [1e3, 1e4, 1e5]])
    return values, heatmap_svg(values, token_labels=["a", "b", "c"], log=True, value_title="mean")


def test_print_svg_scales_the_size_keeps_the_drawing_and_adds_a_background():
    _, svg = heatmap()
    w, h = svg_size(svg)
    out = print_svg(svg, scale=2.5)
    assert svg_size(out) == pytest.approx((2.5 * w, 2.5 * h), rel=1e-9)
    assert f'viewBox="0 0 {w:g} {h:g}"' in out.split(">", 1)[0]  # drawing coordinates unchanged
    assert out.split(">", 1)[1].startswith(f'<rect width="{w:g}" height="{h:g}" fill="#ffffff"/>')
    assert out.endswith(svg.split(">", 1)[1])  # everything after the root tag is the picture, untouched
    assert print_svg(svg, background=None).split(">", 1)[1] == svg.split(">", 1)[1]  # transparent: nothing added
    for bad in (0, -1, float("nan"), MAX_SCALE * 2):
        with pytest.raises(ValueError, match="scale must be in"):
            print_svg(svg, scale=bad)
    with pytest.raises(TypeError, match="scale must be a number"):
        print_svg(svg, scale="2")
    with pytest.raises(ValueError, match="width and height"):
        print_svg("<svg><g/></svg>")


def test_png_has_the_size_the_background_and_sharp_cells_of_the_picture():
    values, svg = heatmap()
    scale = 2.0
    png = svg_to_png(svg, scale=scale)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    w, h = svg_size(svg)
    assert abs(image.size[0] - scale * w) <= 1 and abs(image.size[1] - scale * h) <= 1
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert (pixels[0, 0] == 255).all()  # the corner is background, white

    x, y, cw, ch, b64 = IMAGE.search(svg).groups()
    x, y, cw, ch = (float(v) * scale for v in (x, y, cw, ch))
    cells = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)
    rows, cols = values.shape
    assert cells.shape[:2] == (rows, cols)
    cell_w, cell_h = cw / cols, ch / rows
    # At a quarter and three quarters of each cell the colour is the cell's own: smoothing would blend
    # neighbours there (the one-pixel cells are scaled by about a hundred).
    for i in range(rows):
        for j in range(cols):
            for fx, fy in ((0.25, 0.25), (0.75, 0.75), (0.5, 0.5)):
                px = pixels[int(y + (i + fy) * cell_h), int(x + (j + fx) * cell_w)]
                assert np.abs(px - cells[i, j]).max() <= 2, (i, j, fx, fy, px, cells[i, j])
    assert len({tuple(c) for c in cells.reshape(-1, 3)}) >= 5  # the cells really differ


def test_png_refuses_a_bad_scale_before_rendering():
    _, svg = heatmap()
    with pytest.raises(ValueError, match="scale must be in"):
        svg_to_png(svg, scale=0)


def test_without_cairosvg_the_error_says_what_to_install(monkeypatch):
    _, svg = heatmap()
    monkeypatch.setitem(sys.modules, "cairosvg", None)  # import cairosvg now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'tscope_widgets\[png\]'.*save_svg"):
        svg_to_png(svg)
