"""How the package's widgets show up in a notebook: the live view, then a static picture standing in for it.

Displaying a :class:`PicturedWidget` makes two outputs in the cell. The first is the widget view
(``application/vnd.jupyter.widget-view+json`` and a short ``text/plain``); the second, with a display
id, is a picture of the widget's current state (``text/html``: an ``<img>`` of an SVG document, see
``_static.picture_html``, plus a one-line ``text/plain``). A picture of its own survives where the view
cannot run: JupyterLab and Notebook 7 reopening a notebook saved without widget state (jupyter-widgets
then shows "Error displaying widget: model not found" in place of the view, and never falls back to
another mime type of the same output), nbconvert's HTML export with widget state (it picks the widget
view, which needs the internet and a CDN, over any other mime type of the output) or without it,
nbviewer, and notebooks JupyterLab does not trust (it renders no widget views there, and strips inline
``<svg>`` and ``<style>``, hence the ``<img>`` with a ``data:`` source).

The picture carries a ``<style>`` (``_static.stand_in_style``) keyed by the widget's ``picture_id`` (its
model id, a synced trait): the widget output just before it is hidden unless it holds a live view (an
element matching the class's ``live_selector``), and the picture is hidden while the live view next to
it is there; each live view also hides every picture of its model (``pictureHidingCSS`` in
``js/src/lib/picture.js``), for front ends whose outputs are laid out differently. So a live notebook
shows the view only, a reopened or converted one the picture only, and a closed widget's outputs fall
back to the picture.

The pictures are replaced by the current state (addressed by display id):

- when a job the widget watches ends (:meth:`PicturedWidget._after_job_update`, from the job's thread,
  addressed to the cell that displayed the widget: the front end routes it there even after that cell
  finished);
- by ``wait()`` methods (:meth:`PicturedWidget._wait_for`, addressed to the running cell, which is what
  headless runners such as nbclient listen to);
- at the end of every cell during which what the picture shows changed (an IPython ``post_run_cell``
  hook, addressed to that cell): a training loop's cell, or the cell after a job ended unseen.

Displaying a widget twice makes two such pairs; both pictures are updated. A subclass provides only
what to draw: :meth:`PicturedWidget._picture_caption` (title, status, state attributes) and
:meth:`PicturedWidget._picture_svg` (an SVG document of its current state), and calls
:meth:`PicturedWidget._picture_changed` when that changes.

Every widget saves its picture as a figure file for papers: :meth:`PicturedWidget.save_svg` (print-size vector
graphics on white) and :meth:`PicturedWidget.save_png` (rasterised by ``figures.raster``).

The base class also screens what the browser sends, the same way for every widget: state writes
(:meth:`PicturedWidget.set_state`) to traits only Python sets, or with values the widget's
:meth:`PicturedWidget._check` refuses, are dropped with a logged warning and the page is sent the values it
must show instead; custom messages ``{"type": "command", "command": ...}`` call the method the widget's
``_commands`` names, anything else is logged and ignored. Warnings go to the logger of the widget's module.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import traitlets

from .._atomic import write_atomic, write_text
from ..figures.raster import print_svg, svg_to_png
from ._static import picture_html, stand_in_style

__all__ = ["Caption", "PicturedWidget"]

logger = logging.getLogger(__name__)

TERMINAL = ("done", "cancelled", "error")


@dataclass(frozen=True)
class Caption:
    """The text around a widget's picture.

    Attributes:
        title: First line (what is shown, e.g. layer and statistic).
        status: Second line (progress and job status).
        alt: What the image shows, in words (the ``<img>``'s ``alt``).
        attrs: State as ``data-*`` attributes of the picture's outer element (names without the prefix),
            e.g. ``{"status": "done"}``; the base class puts ``picture-id`` first.
        extra_html: Trusted HTML (callers escape what they put in) shown under the image, e.g. a table.
    """

    title: str
    status: str
    alt: str
    attrs: dict[str, str] = field(default_factory=dict)
    extra_html: str = ""


class PicturedWidget(anywidget.AnyWidget):
    """Base of the package's widgets: the widget output, then a picture output (see the module docstring).

    Subclasses set ``live_selector`` (CSS selector of the root element of a rendered view),
    ``widget_text`` (``text/plain`` of the widget output), ``picture_noun`` and ``picture_waiting``
    (the note shown before there is anything to draw), ``_browser_traits`` (the synced traits the browser
    may set; every other synced trait of the subclass and of this class only Python sets) and
    ``_commands`` (``{command: name of the method it calls}``), and write :meth:`_picture_caption`,
    :meth:`_picture_svg` and :meth:`_check`. Before ``super().__init__()`` they set ``_valid``, the last
    valid value of each browser trait; their ``@traitlets.validate`` of the browser traits returns
    :meth:`_validated`. Their ``__init__`` calls ``super().__init__()`` as usual.
    """

    # Marks this widget's static pictures in the page (their data-picture-id): the model id.
    picture_id = traitlets.Unicode("").tag(sync=True)

    live_selector: ClassVar[str] = ""
    widget_text: ClassVar[str] = ""
    picture_noun: ClassVar[str] = "widget"
    picture_waiting: ClassVar[str] = "waiting for data…"
    _browser_traits: ClassVar[tuple[str, ...]] = ()
    _commands: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs: Any):
        self._displays: list[tuple[str, dict | None]] = []  # (display id, parent header of its cell)
        self._displays_lock = threading.Lock()
        self._refreshing = threading.RLock()  # one refresh at a time: pictures go out in order
        self._picture_version = 0  # bumped whenever what the picture shows changes
        self._pictured_version = 0  # the version every picture output shows
        self._pictured_job = None  # the latest ended job whose end the pictures show
        self._hooked_shell = None  # the IPython shell whose post_run_cell refreshes the pictures
        super().__init__(**kwargs)
        self.picture_id = self.model_id
        if self._commands:
            self.on_msg(self._on_custom_msg)

    def _waiting_text(self) -> str:
        """The note of a picture without data: :attr:`picture_waiting`, or the error of a job that failed
        before it had anything to show."""
        job = getattr(self, "_job", None)
        if job is not None and job.status == "error":
            return f"the job failed: {job.message}"
        return self.picture_waiting

    # ------------------------------------------------------------------ what subclasses provide
    def _picture_caption(self) -> Caption:
        """Abstract hook every widget overrides: title, status and state of the picture (cheap: no drawing)."""
        raise NotImplementedError

    def _picture_svg(self) -> str | None:
        """Abstract hook every widget overrides: the current state as an SVG document
        (``<svg xmlns=... width=... height=...>``), or None when there is nothing to draw yet."""
        raise NotImplementedError

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        """Abstract hook every widget with browser traits overrides: ``(ok, canonical value, reason if not
        ok)`` for a value of the browser trait ``name``."""
        raise NotImplementedError

    def _flush_updates(self) -> None:
        """Apply updates held back by a throttle before a picture is drawn at the end of a cell."""

    # ------------------------------------------------------------------ what subclasses call
    def _picture_changed(self) -> None:
        """Note that what the picture shows has changed (refreshed at the end of the running cell)."""
        self._picture_version += 1

    def _after_job_update(self, job) -> None:
        """Call after a job's update reached the traits, outside the widget's locks (job threads): once
        per ended job, the pictures are refreshed, addressed to the cells that displayed the widget."""
        self._picture_changed()
        if job.status not in TERMINAL:
            return
        with self._displays_lock:
            first = self._pictured_job is not job
            self._pictured_job = job
        if first:
            self._refresh_pictures(own_cells=True)

    def _wait_for(self, job, timeout: float | None) -> bool:
        """``job.wait(timeout)``; once it has ended, refresh the pictures, addressed to the running cell."""
        ended = job.wait(timeout)
        if ended:
            self._refresh_pictures(own_cells=False)
        return ended

    # ------------------------------------------------------------------ browser input
    def set_state(self, sync_data):
        """Apply state from the browser: only the widget's ``_browser_traits`` may be written. Drop writes to
        every other key (the traits only Python sets, those inherited from ipywidgets and anywidget such as
        ``_esm``, ``_dom_classes``, ``tooltip`` or ``_model_name``, and unknown names) and values that make no
        sense, each with a logged warning, then send the page the values it must show instead."""
        log = logging.getLogger(type(self).__module__)
        sync_data = dict(sync_data)
        refused = sorted(set(sync_data) - set(self._browser_traits))
        if refused:
            log.warning("ignored front-end writes to read-only traits %s", refused)
        rejected = []
        for name in self._browser_traits:
            if name in sync_data:
                ok, _, why = self._check(name, sync_data[name])
                if not ok:
                    log.warning("ignored %s=%r from the front end: %s", name, sync_data[name], why)
                    rejected.append(name)
        for name in refused + rejected:
            del sync_data[name]
        super().set_state(sync_data)
        restore = [name for name in refused + rejected if self.has_trait(name) and self.trait_metadata(name, "sync")]
        if restore:
            self.send_state(restore)

    def _validated(self, proposal) -> Any:
        """What a browser trait's ``@traitlets.validate`` returns: the canonical form of a valid value (sent
        back to the page if it differs); for nonsense from Python, a warning and the last valid value."""
        name, value = proposal["trait"].name, proposal["value"]
        ok, canonical, why = self._check(name, value)
        if not ok:
            logging.getLogger(type(self).__module__).warning("ignored %s=%r: %s", name, value, why)
            return self._valid[name]
        self._valid[name] = canonical
        return canonical

    def _on_custom_msg(self, _widget, content, _buffers) -> None:
        """Custom message from the page: ``{"type": "command", "command": c}`` calls the method
        ``_commands[c]``; anything else is logged and ignored."""
        command = content.get("command") if isinstance(content, dict) else None
        if not isinstance(content, dict) or content.get("type") != "command" or command not in tuple(self._commands):
            logging.getLogger(type(self).__module__).warning(
                "ignored front-end message %r; expected {'type': 'command', 'command': one of %s}",
                content,
                list(self._commands),
            )
            return
        getattr(self, self._commands[command])()

    # ------------------------------------------------------------------ figure files
    def _figure_svg(self, path, suffix: str) -> str:
        """The current picture's SVG document for :meth:`save_svg` / :meth:`save_png`, checked."""
        if Path(path).suffix.lower() != suffix:
            raise ValueError(f"{path!s}: expected a file name ending in {suffix} (save_svg writes .svg, save_png .png)")
        self._flush_updates()
        svg = self._picture_svg()
        if svg is None:
            raise ValueError(
                f"the {self.picture_noun} has nothing to draw yet ({self._waiting_text()}); wait for data "
                "(for example with .wait()) and save again"
            )
        return svg

    def save_svg(self, path: str | os.PathLike, *, scale: float = 1.0) -> Path:
        """Write the current view as an SVG document for papers: the chart alone (no toolbar, status line
        or caption) as the notebook picture draws it, on a white background, vector graphics.

        Args:
            path: Output file ending in ``.svg``.
            scale: Factor on the width and height (``0 < scale <= 16``; 1: the size in the notebook).

        Returns:
            The path written (atomically).

        Raises:
            ValueError: For another file suffix, a scale out of range, or nothing drawn yet.
        """
        svg = self._figure_svg(path, ".svg")
        return write_text(path, print_svg(svg, scale=scale))

    def save_png(self, path: str | os.PathLike, *, scale: float = 3.0) -> Path:
        """Write the current view as a PNG image for papers: the picture of :meth:`save_svg` rasterised at
        ``scale`` pixels per screen pixel (3: a 420 px chart is 1260 px, 4.2 inches at 300 dpi), heatmap
        cells sharp, white background. Needs CairoSVG (``pip install 'tscope_widgets[png]'``).

        Args:
            path: Output file ending in ``.png``.
            scale: Pixels per screen pixel (``0 < scale <= 16``).

        Returns:
            The path written (atomically).

        Raises:
            ValueError: For another file suffix, a scale out of range, or nothing drawn yet.
            ImportError: Without CairoSVG or the Cairo library (the message says what to install).
        """
        png = svg_to_png(self._figure_svg(path, ".png"), scale=scale)
        return write_atomic(path, lambda tmp: tmp.write_bytes(png))

    # ------------------------------------------------------------------ outputs
    def _repr_mimebundle_(self, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(data, metadata)`` of the widget output: the widget view and a short ``text/plain``.

        The picture is an output of its own (:meth:`_picture_bundle`), displayed next to it by
        :meth:`_ipython_display_`.
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["text/plain"] = self.widget_text or f"{type(self).__name__}: live view"
        return data, dict(metadata or {})

    def _ipython_display_(self) -> None:
        """Display the widget output, then the picture output with a display id (updated later)."""
        from IPython import get_ipython
        from IPython.display import display

        if self.comm is None:  # closed: only the picture is left
            display(self._picture_bundle(paired=False), raw=True)
            return
        data, metadata = self._repr_mimebundle_()
        display(data, metadata=metadata, raw=True)
        with self._refreshing:
            version = self._picture_version
            handle = display(self._picture_bundle(), raw=True, display_id=True)
            shell = get_ipython()
            if handle is None or not hasattr(shell, "kernel"):  # no Jupyter kernel: nothing to update later
                return
            parent = getattr(getattr(shell, "display_pub", None), "parent_header", None)
            with self._displays_lock:
                if not self._displays:
                    self._pictured_version = version
                self._displays.append((handle.display_id, dict(parent) if parent else None))
            if self._hooked_shell is None:
                shell.events.register("post_run_cell", self._after_cell)
                self._hooked_shell = shell

    def _after_cell(self, _result=None) -> None:
        """IPython ``post_run_cell`` hook: after a cell during which the picture's content changed,
        refresh the pictures, addressed to that cell (still running, so runners listen)."""
        try:
            self._flush_updates()
        except Exception:
            logger.warning("%s could not apply its pending updates", type(self).__name__, exc_info=True)
        if self._picture_version != self._pictured_version:
            self._refresh_pictures(own_cells=False)

    def _refresh_pictures(self, *, own_cells: bool) -> None:
        """Replace the picture outputs of this widget by the current picture.

        Args:
            own_cells: Address each update to the cell that displayed the widget (the front end routes
                it there even after that cell finished); otherwise to the running cell.
        """
        if self.comm is None:
            return
        with self._refreshing:
            with self._displays_lock:
                displays = list(self._displays)
            if not displays:
                return
            from IPython import get_ipython
            from IPython.display import update_display

            version = self._picture_version
            data = self._picture_bundle()
            publisher = getattr(get_ipython(), "display_pub", None)
            for display_id, parent in displays:
                token = None
                if own_cells and parent and hasattr(publisher, "set_thread_parent"):
                    token = publisher.set_thread_parent(parent)  # ipykernel 7: a parent header per thread
                try:
                    update_display(data, raw=True, display_id=display_id)
                except Exception:
                    logger.warning("could not refresh the static picture of output %s", display_id, exc_info=True)
                finally:
                    if token is not None:
                        publisher.reset_thread_parent(token)
            self._pictured_version = version

    def _picture_bundle(self, *, paired: bool = True) -> dict[str, str]:
        """The picture output's data: ``text/html`` (see ``_static.picture_html``) and a one-line
        ``text/plain`` (title and status).

        Args:
            paired: The output follows the widget output: add the style that shows only one of them.
        """
        name = type(self).__name__
        try:
            caption = self._picture_caption()
        except Exception:  # the live view must still show if the picture cannot be made
            logger.warning("could not describe the static picture of the %s", name, exc_info=True)
            return {"text/plain": name}
        plain = f"{caption.title} ({caption.status})"
        try:
            svg = self._picture_svg()
            picture = picture_html(
                svg,
                title=caption.title,
                status=caption.status,
                alt=caption.alt,
                attrs={"picture-id": self.picture_id, **caption.attrs},
                waiting=self._waiting_text(),
                noun=self.picture_noun,
                extra_html=caption.extra_html,
            )
        except Exception:
            logger.warning("could not draw the static picture of the %s", name, exc_info=True)
            return {"text/plain": plain}
        if paired and self.picture_id:
            picture = stand_in_style(self.picture_id, self.live_selector) + picture
        return {"text/plain": plain, "text/html": picture}

    def close(self) -> None:
        """Stop refreshing the pictures, then close the widget (its views disappear from the page)."""
        shell = getattr(self, "_hooked_shell", None)
        if shell is not None:
            try:
                shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass
            self._hooked_shell = None
        super().close()


def bundle(name: str) -> Path:
    """The path of a widget's bundled front end ``tscope_widgets/static/<name>``; ImportError when it is missing."""
    path = Path(__file__).resolve().parent.parent / "static" / name
    if not path.is_file():
        raise ImportError(
            f"the widget's JavaScript bundle {path} is missing; build it from the repository root with "
            "`npm --prefix js ci && npm --prefix js run build` (a wheel ships it prebuilt)"
        )
    return path
