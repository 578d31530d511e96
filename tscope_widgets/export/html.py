"""Standalone HTML reports: Bokeh figures with the BokehJS library inlined, so the file opens offline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.model import Model
from bokeh.models import Div
from bokeh.resources import INLINE

from .._atomic import write_text


def _notes_html(notes: str | Sequence[str]) -> str:
    """Paragraphs of escaped text: one per list item, or per blank-line-separated block of a string."""
    paragraphs = notes.split("\n\n") if isinstance(notes, str) else list(notes)
    for p in paragraphs:
        if not isinstance(p, str):
            raise TypeError(f"notes must be strings, got {type(p).__name__}")
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in paragraphs if p.strip())


def save_report(
    path: str | Path,
    figures_or_layout: Model | Sequence[Model],
    title: str,
    notes: str | Sequence[str] | None = None,
) -> Path:
    """Write a self-contained HTML file: title, optional notes, then the figures.

    BokehJS is embedded inline (``bokeh.resources.INLINE``), so the report needs no network: it opens
    from a laptop offline, in a CI artifact or an e-mail attachment.

    Args:
        path: Output ``.html`` file (parent folders are created).
        figures_or_layout: One Bokeh model (figure or layout) or a sequence of them (stacked vertically).
        title: Page title and heading.
        notes: Plain text shown under the heading (escaped; blank lines or list items separate
            paragraphs).

    Returns:
        ``path``.

    Raises:
        TypeError: when ``figures_or_layout`` holds something that is not a Bokeh model.
        ValueError: for an empty sequence of figures or a path that does not end in ``.html``.
    """
    path = Path(path)
    if path.suffix not in (".html", ".htm"):
        raise ValueError(f"{path}: a report file name must end in .html")
    items = [figures_or_layout] if isinstance(figures_or_layout, Model) else list(figures_or_layout)
    if not items:
        raise ValueError("no figures to put in the report")
    for item in items:
        if not isinstance(item, Model):
            raise TypeError(f"expected Bokeh figures or layouts, got {type(item).__name__}")
    header = f"<h1>{html.escape(title)}</h1>" + (_notes_html(notes) if notes else "")
    layout = column(Div(text=header, width=900), *items)
    document = file_html(layout, resources=INLINE, title=title)
    return write_text(path, document)  # atomic: a reader sees the old report or the new one
