"""Figure files for papers: a chart's SVG document at print size, and its PNG rendering.

The documents come from :mod:`.svg` (the notebook pictures: the chart alone, no toolbar, status line or
caption). :func:`print_svg` scales one as vector graphics (``width``/``height`` times ``scale``, the
``viewBox`` kept) on an opaque background; :func:`svg_to_png` rasterises that with CairoSVG (an optional
dependency: ``pip install 'tscope_widgets[png]'``), heatmap cells kept sharp (nearest-neighbour scaling of
their one-pixel-per-cell images).
"""

from __future__ import annotations

import math
import re
from numbers import Real

from .svg import svg_size

__all__ = ["MAX_SCALE", "print_svg", "svg_to_png"]

MAX_SCALE = 16.0  # a 420 px chart at 16x is 6720 px wide, 22 inches at 300 dpi: enough for any page
_ROOT = re.compile(r"<svg\b[^>]*>")
_PIXELATED = 'style="image-rendering:pixelated"'


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"scale must be a number, got {type(scale).__name__}")
    value = float(scale)
    if not (math.isfinite(value) and 0 < value <= MAX_SCALE):
        raise ValueError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r} (1 is the size shown in the notebook)")
    return value


def print_svg(svg: str, *, scale: float = 1.0, background: str | None = "#ffffff") -> str:
    """``svg`` resized by ``scale`` as vector graphics, on an opaque background.

    Args:
        svg: An SVG document starting with ``<svg ... width="W" height="H" ...>`` (pixels), as
            :func:`~.svg.render_svg` writes.
        scale: Factor on the width and height (``0 < scale <= MAX_SCALE``); the ``viewBox`` stays
            ``0 0 W H``, so lines, text and cells grow together.
        background: Fill of a rectangle under everything (``None``: transparent, as in the notebook).

    Returns:
        The document as text: ``width="scale*W" height="scale*H" viewBox="0 0 W H"``.

    Raises:
        ValueError: For a document without a size, or a scale out of range.
    """
    scale = _check_scale(scale)
    width, height = svg_size(svg)
    root = _ROOT.match(svg)
    if root is None:  # svg_size matched, so this cannot happen for a well-formed document
        raise ValueError("svg must start with an <svg ...> element")
    tag = root.group(0)
    tag = re.sub(r'\swidth="[0-9.]+"', f' width="{width * scale:.10g}"', tag, count=1)
    tag = re.sub(r'\sheight="[0-9.]+"', f' height="{height * scale:.10g}"', tag, count=1)
    if "viewBox=" not in tag:
        tag = tag[:-1].rstrip("/") + f' viewBox="0 0 {width:g} {height:g}">'
    under = "" if background is None else f'<rect width="{width:g}" height="{height:g}" fill="{background}"/>'
    return tag + under + svg[root.end() :]


def svg_to_png(svg: str, *, scale: float = 3.0, background: str = "#ffffff") -> bytes:
    """Rasterise an SVG document (see :func:`print_svg`) to PNG with CairoSVG.

    The picture is ``round(scale * W) x round(scale * H)`` pixels (``scale=3``: a 420 px chart is 1260 px,
    4.2 inches at 300 dpi). Heatmap cells (``image-rendering:pixelated`` images) are scaled without
    smoothing.

    Args:
        svg: The document.
        scale: Pixels per SVG pixel (``0 < scale <= MAX_SCALE``).
        background: Opaque fill under the chart.

    Returns:
        The PNG file's bytes.

    Raises:
        ImportError: Without CairoSVG (the message says what to install).
        ValueError: For a document without a size, or a scale out of range.
    """
    document = print_svg(svg, scale=scale, background=background)
    try:
        import cairosvg
    except ImportError as err:
        raise ImportError(
            "save_png needs CairoSVG to turn the picture into pixels: pip install 'tscope_widgets[png]' "
            "(or pip install cairosvg; it uses the system's Cairo library), or save the vector picture "
            "with save_svg"
        ) from err
    except OSError as err:  # cairocffi, imported by cairosvg, could not load libcairo
        raise ImportError(
            f"CairoSVG is installed but cannot load the Cairo library ({err}); install it (Debian/Ubuntu: "
            "apt-get install libcairo2, macOS: brew install cairo) or save the vector picture with save_svg"
        ) from err
    # Cairo reads the presentation attribute, not the CSS property: nearest-neighbour cells.
    document = document.replace(_PIXELATED, 'image-rendering="optimizeSpeed"')
    return cairosvg.svg2png(bytestring=document.encode("utf-8"))
