"""Static pictures of a widget's state, for outputs where the live view cannot run.

A notebook converted to HTML with nbconvert, reopened without its kernel or widget state, or shown by
a viewer without a kernel cannot run a widget's live view. :func:`picture_html` makes a ``text/html``
picture for such places: title and status lines and an ``<img>`` whose source is an SVG document (a
``data:`` URI). :func:`heatmap_svg` draws the explorer's heatmap as such a document, with the cells as an
embedded PNG (one pixel per cell, palette-indexed, scaled up without smoothing),
token labels on both axes and a colour bar. An ``<img>`` with a ``data:`` source survives HTML
sanitizers that drop inline ``<svg>`` and ``<style>`` (JupyterLab's, for notebooks it does not
trust). Colours follow the live view (``js/src/lib/scales.js``): viridis over the finite values (the
positive ones on a log scale), grey for NaN, the background for values <= 0 on a log scale. The PNG
is written here with ``zlib`` (no imaging library needed).

:func:`stand_in_style` pairs a picture output with the widget output displayed just before it, so
that exactly one of the two shows (see its docstring).
"""

from __future__ import annotations

import base64
import html
import math
import re
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from bokeh.palettes import Viridis256

__all__ = [
    "LEVELS",
    "NAN_INDEX",
    "NONPOSITIVE_INDEX",
    "PALETTE",
    "color_domain",
    "color_indices",
    "encode_png",
    "heatmap_alt",
    "heatmap_html",
    "heatmap_svg",
    "picture_html",
    "stand_in_style",
    "svg_image",
    "svg_size",
]

LEVELS = 254  # colour-map entries; the palette's last two entries mark NaN and "<= 0 on a log scale"
NAN_INDEX = LEVELS
NONPOSITIVE_INDEX = LEVELS + 1
NAN_RGB = (0xC7, 0xC7, 0xC7)  # the live view's fallback for --jp-layout-color3
BACKGROUND_RGB = (0xFF, 0xFF, 0xFF)
_VIRIDIS = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in Viridis256], dtype=np.uint8)
PALETTE = np.concatenate(
    [_VIRIDIS[np.round(np.linspace(0, 255, LEVELS)).astype(int)], [NAN_RGB, BACKGROUND_RGB]]
).astype(np.uint8)  # [256, 3] RGB

_MAX_CELLS_PX = 420  # heatmap side, as in the live view (js/src/lib/heatmap.js)
_MAX_CELL_PX = 40
_MARGIN = {"left": 112, "top": 8, "right": 96, "bottom": 104}
_FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
# One output of a cell: JupyterLab, Notebook 7 and nbconvert's lab template; classic Notebook/nbconvert.
_OUTPUT = ":is(.jp-OutputArea-child, .output_area)"
_PICTURE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SVG_SIZE = re.compile(r'<svg [^>]*?\bwidth="(?P<width>[0-9.]+)" height="(?P<height>[0-9.]+)"')


def encode_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """Encode a palette image as PNG (colour type 3, 8 bits per pixel, no interlace).

    Args:
        indices: ``[H, W]`` uint8 palette indices (``H, W >= 1``), row 0 at the top.
        palette: ``[N, 3]`` uint8 RGB entries, ``1 <= N <= 256``; every index must be ``< N``.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: For wrong shapes or dtypes, an empty image or an index outside the palette.
    """
    if indices.ndim != 2 or indices.dtype != np.uint8 or 0 in indices.shape:
        raise ValueError(f"indices must be a non-empty [H, W] uint8 array, got {indices.dtype} {indices.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8 or not 1 <= len(palette) <= 256:
        raise ValueError(f"palette must be [N, 3] uint8 with 1 <= N <= 256, got {palette.dtype} {palette.shape}")
    if int(indices.max()) >= len(palette):
        raise ValueError(f"index {int(indices.max())} is outside the {len(palette)}-entry palette")

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    height, width = indices.shape
    scanlines = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 ("None") per row
    scanlines[:, 1:] = indices
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
            chunk(b"PLTE", np.ascontiguousarray(palette).tobytes()),
            chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)),
            chunk(b"IEND", b""),
        ]
    )


def color_domain(values: np.ndarray, log: bool = False) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo < hi`` over the finite values (positive ones for ``log``).

    Same rule as ``colorDomain`` in ``js/src/lib/scales.js``: a constant map gets a domain ending at its
    value, a map without usable values a default one.
    """
    v = values[np.isfinite(values)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return (0.1, 1.0) if log else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if lo < hi:
        return lo, hi
    if log:
        return lo / 10, hi
    return (0.0, 1.0) if lo == 0 else (min(0.0, lo), max(0.0, hi))


def color_indices(values: np.ndarray, domain: tuple[float, float], log: bool = False) -> np.ndarray:
    """Palette indices of ``values``: ``floor((v - lo) / (hi - lo) * LEVELS)`` clipped to the colour
    map (in ``log v`` for ``log``), :data:`NAN_INDEX` for NaN, :data:`NONPOSITIVE_INDEX` for ``v <= 0``
    on a log scale.

    Args:
        values: Float array of any shape.
        domain: ``(lo, hi)`` with ``lo < hi`` (both > 0 for ``log``).
        log: Logarithmic scale.

    Returns:
        uint8 array of the same shape.
    """
    lo, hi = domain
    if not hi > lo or (log and not lo > 0):
        raise ValueError(f"bad colour domain {domain}")
    x = np.asarray(values, dtype=np.float64)
    nan = np.isnan(x)
    nonpositive = log & ~nan & (x <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (x - lo) / (hi - lo)
    k = np.clip(np.floor(np.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0) * LEVELS), 0, LEVELS - 1)
    out = k.astype(np.uint8)
    out[nan] = NAN_INDEX
    out[nonpositive] = NONPOSITIVE_INDEX
    return out


def format_value(v: float) -> str:
    """Short text for a value, as ``formatValue`` in the live view: ``1.23``, ``0.05``, ``1.2e-05``."""
    if v is None or math.isnan(v):
        return "–"
    if v == 0:
        return "0"
    text = f"{v:.2e}" if abs(v) >= 1e4 or abs(v) < 1e-3 else f"{v:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = mantissa.rstrip("0").rstrip(".") + "e" + exponent
    return text


def _visible(token: str, max_chars: int) -> str:
    shown = "".join({" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, "�" if ord(c) < 32 else c) for c in token)
    return shown if len(shown) <= max_chars else shown[: max_chars - 1] + "…"


def _position_label(i: int, tokens: Sequence[str], max_chars: int = 10) -> str:
    token = tokens[i] if i < len(tokens) else ""
    return f"{i}:{_visible(token, max_chars)}" if token else str(i)


def _png_uri(indices: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(indices, PALETTE)).decode("ascii")


def svg_size(svg: str) -> tuple[float, float]:
    """``(width, height)`` in pixels of the SVG document ``svg`` (its root element's attributes).

    Raises:
        ValueError: If ``svg`` does not start with an ``<svg ...>`` element with ``width`` and ``height``.
    """
    size = _SVG_SIZE.match(svg)
    if size is None:
        raise ValueError("svg must start with an <svg ...> element that has width and height in pixels")
    return float(size["width"]), float(size["height"])


def svg_image(svg: str, alt: str) -> str:
    """An ``<img class="tscope-static-picture">`` showing the SVG document ``svg`` (a ``data:`` URI).

    Args:
        svg: An SVG document whose root element carries ``width`` and ``height`` in pixels.
        alt: What the image shows, in words (escaped here).

    Raises:
        ValueError: If the root element has no ``width``/``height``.
    """
    width, height = svg_size(svg)
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (
        f'<img class="tscope-static-picture" alt="{html.escape(alt)}" width="{round(width)}" '
        f'height="{round(height)}" style="max-width:100%;height:auto" src="{uri}"/>'
    )


def picture_html(
    svg: str | None,
    *,
    title: str,
    status: str,
    alt: str,
    attrs: dict[str, str] | None = None,
    waiting: str = "waiting for data…",
    noun: str = "widget",
    extra_html: str = "",
) -> str:
    """A self-contained HTML fragment showing a widget's state: title and status lines, then the SVG
    document ``svg`` as an ``<img>`` (:func:`svg_image`), then ``extra_html`` and a note.

    Only ``<div>``, ``<p>``, ``<img>`` and what ``extra_html`` holds: nothing a notebook sanitizer strips
    (inline ``<svg>`` and ``<style>`` would be, in notebooks JupyterLab does not trust).

    Args:
        svg: An SVG document, or None before there is anything to draw (``waiting`` is shown instead).
        title: First line.
        status: Second line.
        alt: What the image shows, in words.
        attrs: ``data-*`` attributes of the outer ``<div class="tscope-static">`` (names without the prefix).
        waiting: The note shown without ``svg``.
        noun: What the picture stands in for, in the note under it ("explorer", "widget", ...).
        extra_html: Trusted HTML shown under the image (callers escape what they put in).

    Returns:
        HTML text; every string but ``extra_html`` is escaped here.
    """
    esc = html.escape
    data_attrs = "".join(f' data-{esc(k)}="{esc(str(v))}"' for k, v in (attrs or {}).items())
    head = (
        f'<div class="tscope-static"{data_attrs} style="font-family:{_FONT};font-size:12px;color:#1f1f1f">'
        f'<div style="font-weight:600">{esc(title)}</div><div style="color:#616161">{esc(status)}</div>'
    )
    body = svg_image(svg, alt) if svg is not None else f'<p style="color:#616161">{esc(waiting)}</p>'
    note = (
        f'<div style="color:#616161;font-size:11px">Static picture of the live {esc(noun)}, saved with the '
        "notebook; run the notebook to explore it.</div></div>"
    )
    return head + body + extra_html + note


def heatmap_svg(
    values: np.ndarray,
    *,
    token_labels: Sequence[str] = (),
    log: bool = False,
    value_title: str = "",
) -> str:
    """An SVG document of a heatmap ``[S, S]``: the cells (``<image class="tscope-static-heatmap"
    data-rows="S">``, a palette PNG), position labels on both axes and a colour bar.

    Row ``i`` (output position) runs down, column ``j`` (input position) across, as in the live view.

    Args:
        values: ``[S, S]`` floats.
        token_labels: Names of the positions (``i:token`` on the axes); may be empty.
        log: Logarithmic colour scale.
        value_title: Colour-bar title.

    Returns:
        SVG text; every string from the caller is escaped.

    Raises:
        ValueError: For an empty or non-2-D array.
    """
    esc = html.escape
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty [S, S] array, got shape {values.shape}")
    rows, cols = values.shape
    n = max(rows, cols)
    cell = min(_MAX_CELL_PX, _MAX_CELLS_PX // n) or _MAX_CELLS_PX / n
    w, h = cell * cols, cell * rows
    m = _MARGIN
    x0, y0 = m["left"], m["top"]
    total_w, total_h = x0 + w + m["right"], y0 + h + m["bottom"]
    domain = color_domain(values, log)
    heat_uri = _png_uri(color_indices(values, domain, log))
    bar_uri = _png_uri(np.arange(LEVELS - 1, -1, -1, dtype=np.uint8)[:, None])  # high at the top
    step = max(1, math.ceil(12 / cell))  # at most one label per 12 px
    tokens = list(token_labels)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:g}" height="{total_h:g}" '
        f'viewBox="0 0 {total_w:g} {total_h:g}" font-family="{_FONT}" font-size="10" fill="#1f1f1f">',
        f'<image class="tscope-static-heatmap" data-rows="{rows}" x="{x0}" y="{y0}" width="{w:g}" '
        f'height="{h:g}" preserveAspectRatio="none" style="image-rendering:pixelated" href="{heat_uri}"/>',
        f'<rect x="{x0}" y="{y0}" width="{w:g}" height="{h:g}" fill="none" stroke="#9e9e9e"/>',
    ]
    for i in range(0, rows, step):
        y = y0 + (i + 0.5) * cell
        parts.append(
            f'<text x="{x0 - 4}" y="{y:g}" text-anchor="end" dominant-baseline="middle">'
            f"{esc(_position_label(i, tokens))}</text>"
        )
    for j in range(0, cols, step):
        x = x0 + (j + 0.5) * cell
        parts.append(
            f'<text transform="translate({x:g},{y0 + h + 4:g}) rotate(-90)" text-anchor="end" '
            f'dominant-baseline="middle">{esc(_position_label(j, tokens))}</text>'
        )
    parts.append(
        f'<text x="{x0 + w / 2:g}" y="{total_h - 4:g}" text-anchor="middle" font-size="11">input position j</text>'
        f'<text transform="translate(12,{y0 + h / 2:g}) rotate(-90)" text-anchor="middle" font-size="11">'
        "output position i</text>"
    )
    bx = x0 + w + 12
    parts.append(
        f'<image x="{bx:g}" y="{y0}" width="12" height="{h:g}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="{bar_uri}"/>'
        f'<text x="{bx + 16:g}" y="{y0 + 4}" dominant-baseline="middle">{esc(format_value(domain[1]))}</text>'
        f'<text x="{bx + 16:g}" y="{y0 + h - 4:g}" dominant-baseline="middle">{esc(format_value(domain[0]))}</text>'
        f'<text transform="translate({bx + 80:g},{y0 + h / 2:g}) rotate(-90)" text-anchor="middle">'
        f"{esc(value_title + (' (log)' if log else ''))}</text>"
    )
    if np.isnan(values).any():
        parts.append(f'<text x="{bx:g}" y="{y0 + h + 16:g}" fill="#616161">grey: no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def heatmap_alt(title: str, value_title: str) -> str:
    """The ``alt`` text of a sensitivity heatmap picture."""
    return f"{title}: heatmap of {value_title or 'the values'}, output position i (rows) by input position j"


def heatmap_html(
    values: np.ndarray | None,
    *,
    title: str,
    status: str,
    token_labels: Sequence[str] = (),
    log: bool = False,
    value_title: str = "",
    attrs: dict[str, str] | None = None,
) -> str:
    """A self-contained HTML fragment showing a heatmap ``[S, S]`` (:func:`picture_html` of
    :func:`heatmap_svg`): title and status lines, then an ``<img class="tscope-static-picture">`` whose
    source is the SVG document.

    Args:
        values: ``[S, S]`` floats, or ``None`` before there is data (a note is shown instead).
        title: First line (e.g. layer and statistic).
        status: Second line (e.g. samples done and job status).
        token_labels: Names of the positions (``i:token`` on the axes); may be empty.
        log: Logarithmic colour scale.
        value_title: Colour-bar title.
        attrs: Extra ``data-*`` attributes for the outer element (names without the prefix).

    Returns:
        HTML text; every string from the caller is escaped.
    """
    svg = None if values is None else heatmap_svg(values, token_labels=token_labels, log=log, value_title=value_title)
    return picture_html(
        svg,
        title=title,
        status=status,
        alt=heatmap_alt(title, value_title),
        attrs=attrs,
        waiting="waiting for the first batch…",
        noun="explorer",
    )


def stand_in_style(picture_id: str, live_selector: str) -> str:
    """A ``<style>`` element that lets a picture output stand in for the widget output just before it.

    A widget is displayed as two outputs of a cell: the widget view, then the picture (``text/html``
    from :func:`picture_html` with ``attrs={"picture-id": picture_id}``, preceded by this style). The
    rules, for JupyterLab, Notebook 7 and nbconvert's HTML (``.jp-OutputArea-child``) and classic
    Notebook (``.output_area``):

    - the output just before the picture is hidden unless it holds a live view (an element matching
      ``live_selector``): this hides jupyter-widgets' "Loading widget..." and "Error displaying widget:
      model not found" in a notebook reopened without widget state, the empty box nbconvert leaves
      for a widget view it cannot render offline, and the text of a view nbconvert skips;
    - the picture is hidden when the output just before it holds a live view (no picture twice).

    The rules need ``:has()`` (Chromium 105, Safari 15.4, Firefox 121). Sanitizers that drop
    ``<style>`` (JupyterLab's, for notebooks it does not trust) leave both outputs visible; such
    front ends never render a widget view anyway.

    Args:
        picture_id: The picture's ``data-picture-id`` (letters, digits, ``_`` and ``-``).
        live_selector: A CSS selector (trusted, from code) matching the root element of a live view.

    Raises:
        ValueError: For a picture id with other characters.
    """
    if not isinstance(picture_id, str) or not _PICTURE_ID.fullmatch(picture_id):
        raise ValueError(f"picture_id must be 1-128 letters, digits, '_' or '-', got {picture_id!r}")
    picture = f'.tscope-static[data-picture-id="{picture_id}"]'
    return (
        "<style>"
        f"{_OUTPUT}:has(+ {_OUTPUT} {picture}):not(:has({live_selector})){{display:none}}"
        f"{_OUTPUT}:has({live_selector}) + {_OUTPUT}:has({picture}){{display:none}}"
        "</style>"
    )
