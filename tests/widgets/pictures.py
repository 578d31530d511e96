"""Helpers for tests of the widgets' static pictures: read the SVG documents and PNG heatmaps back out of a
picture's HTML (the ``kernel_shell`` fixture, in ``conftest.py``, displays widgets as a Jupyter kernel would)."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PICTURE_IMG = re.compile(r"<img [^>]*>")
SVG_SRC = re.compile(r'src="data:image/svg\+xml;base64,([^"]+)"')
HEATMAPS = re.compile(
    r'<image class="tscope-static-heatmap" data-rows="(\d+)"(?: data-cols="(\d+)")?[^>]*'
    r'href="data:image/png;base64,([^"]+)"'
)


def picture_svgs(html: str) -> list[str]:
    """The SVG documents shown by the ``<img>`` elements of ``html``, each checked to be well-formed XML with
    an ``<svg>`` root (a browser shows nothing at all for a malformed SVG image). Fails if the HTML holds
    inline ``<svg>``: notebook sanitizers strip it."""
    assert "<svg" not in html, "inline <svg> in a picture: sanitizers strip it; use an <img> of the document"
    out = []
    for img in PICTURE_IMG.findall(html):
        assert 'class="tscope-static-picture"' in img
        (b64,) = SVG_SRC.findall(img)
        svg = base64.b64decode(b64).decode("utf-8")
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
        out.append(svg)
    return out


def heatmaps(svg: str) -> list[tuple[int, int | None, np.ndarray]]:
    """``(data-rows, data-cols or None, palette indices [H, W])`` of each embedded heatmap PNG, in order."""
    out = []
    for rows, cols, png in HEATMAPS.findall(svg):
        image = Image.open(io.BytesIO(base64.b64decode(png)))
        assert image.format == "PNG" and image.mode == "P"
        pixels = np.array(image)
        assert pixels.shape[0] == int(rows) and (not cols or pixels.shape[1] == int(cols))
        out.append((int(rows), int(cols) if cols else None, pixels))
    return out
