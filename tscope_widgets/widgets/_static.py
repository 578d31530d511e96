"""Static pictures of a widget's state, for outputs where the live view cannot run: the HTML around them.

A notebook converted to HTML with nbconvert, reopened without its kernel or widget state, or shown by
a viewer without a kernel cannot run a widget's live view. :func:`picture_html` makes a ``text/html``
picture for such places: title and status lines and an ``<img>`` whose source is an SVG document (a
``data:`` URI) drawn by :mod:`tscope_widgets.figures.svg` from the view's chart descriptions. An ``<img>``
with a ``data:`` source survives HTML sanitizers that drop inline ``<svg>`` and ``<style>`` (JupyterLab's,
for notebooks it does not trust).

:func:`stand_in_style` pairs a picture output with the widget output displayed just before it, so
that exactly one of the two shows (see its docstring).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

import numpy as np

from ..figures.svg import heatmap_svg, svg_size

__all__ = [
    "heatmap_alt",
    "heatmap_html",
    "picture_html",
    "stand_in_style",
    "svg_image",
]

_FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
# One output of a cell: JupyterLab, Notebook 7 and nbconvert's lab template; classic Notebook/nbconvert.
_OUTPUT = ":is(.jp-OutputArea-child, .output_area)"
_PICTURE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


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
