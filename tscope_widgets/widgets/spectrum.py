r"""``SpectrumWidget``: the Hessian spectrum of a model while it trains, live in JupyterLab.

(About 570 lines, most of them documentation: the widget binds two sources, a tracker through a throttle
and a block eigenvalue job, to one set of traits; the checks and conversions of every value it receives
are in ``_spectrum_state``, the Lanczos kernel in ``kernels.blocks``, the charts in ``figures.spectrum``.)

The widget shows what a :class:`~tscope_widgets.tracking.SpectrumTracker` records every few
steps (a :class:`~tscope_widgets.tracking.SpectrumHistory`), or a fixed history:

- line charts of the tracked series over training steps (loss; the extreme eigenvalues
  :math:`\lambda_{\max}, \lambda_{\min}` of :math:`\nabla^2 L` with the edge-of-stability line
  :math:`2/\eta`; the trace with its standard error; per-group gradient norms; the learning rate),
  on a linear or log y axis;
- the spectral density (stochastic Lanczos quadrature) recorded nearest to the picked step (the
  latest by default);
- the block-norm map :math:`\lVert H_{ab}\rVert_F` across parameter groups (a
  :class:`~tscope_widgets.kernels.blocks.BlockNorms`, see :meth:`SpectrumWidget.set_block_norms`),
  with the groups' layers marked;
- a block × step heatmap of the per-block :math:`\lambda_{\max}(H_{aa})`.

Clicking a block (in either heatmap, or choosing it in the block menu) runs Lanczos on that block's
Hessian :math:`H_{aa}` in a background :class:`~tscope_widgets.jobs.Job` (the kernel stays
responsive) on a copy of the weights taken at the click, and shows its top eigenvalues with their
residual norms :math:`\lVert H v - \theta v\rVert`.

No maths here: numbers come from the tracker, ``block_norms`` and the Lanczos kernel; this module
turns them into traits. Updates from the tracker (the training loop's thread) are throttled and
coalesced by :class:`~._throttle.Throttle`: at most one per ``throttle`` seconds reaches the page
while the loop keeps running, and the newest record is always delivered (the final one at once).

Traits the browser may change (``selected_series``, ``picked_step``, ``selected_block``, ``log_y``)
are untrusted: a value that makes no sense is logged as a warning and the trait is put back (and
sent back to the page); nothing raises in the kernel. Buttons send ``{"type": "command", "command":
"stop" | "recompute"}`` (stop the block job; recompute the selected block), validated the same way.

Static fallback: displaying the widget makes two outputs in the cell, the widget view and then a picture
of the charts (one ``<img>`` of an SVG document drawn by ``figures.svg``, and a table of the
block eigenvalues) that stands in for the view where it cannot run (a notebook reopened without widget
state, nbconvert's HTML export, nbviewer, untrusted notebooks). The picture is replaced at the end of each
cell that changed the charts (the training loop's cell), when a block job ends and by
:meth:`SpectrumWidget.wait_block`; see ``_display`` for how the two outputs are paired. Its
``data-status`` is ``pending`` before there is anything to draw, ``running`` while a block job runs or a
tracker update waits in the throttle, and ``done`` when everything the widget received is drawn.

Threads: ``num_threads`` sets PyTorch's intra-op thread count of the block job's thread only for its run
(see :class:`~tscope_widgets.jobs.Job`).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import traitlets

from ..figures.spectrum import (
    PANELS,
    SERIES,
    default_selection,
    eigen_table_html,
    series_options,
    spectrum_charts,
)
from ..figures.svg import render_svg
from ..jobs import Job, check_num_threads
from ..kernels.blocks import block_eigen_kernel
from ..models.registry import adapt
from ._codec import to_json_tree
from ._controls import IDLE_PROGRESS, job_progress
from ._display import Caption, PicturedWidget, bundle
from ._spectrum_state import (
    BROWSER_TRAITS,
    block_groups,
    check_block_norms,
    check_block_options,
    check_history,
    check_source,
    check_view_state,
    density_wire,
    eigen_record,
    eigen_result,
    eigen_wire,
    series_wire,
    status_text,
)
from ._throttle import Throttle
from ._values import MIN_THROTTLE_S, check_flag, check_throttle

__all__ = ["SpectrumWidget", "SERIES", "PANELS", "block_eigen_kernel"]

logger = logging.getLogger(__name__)

BUNDLE = bundle("spectrum_widget.js")

COMMANDS = ("stop", "recompute")
_TERMINAL = ("done", "cancelled", "error")

# PANELS (chart panels) and SERIES (the history's scalar series): see tscope_widgets.figures.spectrum.
_BROWSER_TRAITS = BROWSER_TRAITS  # checked in _spectrum_state.check_view_state
LIVE_VIEW_SELECTOR = ".tscope-spectrum"  # root element of a rendered view (js/src/spectrum_widget.js)
WIDGET_TEXT = "SpectrumWidget: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class SpectrumWidget(PicturedWidget):
    r"""Live charts of the Hessian spectrum during training.

    Args:
        tracker: A :class:`~tscope_widgets.tracking.SpectrumTracker` to attach to: the widget
            subscribes to it and shows each new record (throttled); its ``adapter`` and ``data`` serve
            the block eigenvalues unless given here.
        history: A fixed :class:`~tscope_widgets.tracking.SpectrumHistory` to show (instead
            of a tracker).
        block_norms: A :class:`~tscope_widgets.kernels.blocks.BlockNorms` for the block-norm map.
        adapter: Model or :class:`~tscope_widgets.models.ModelAdapter` for the block eigenvalues.
        data: Batches (a list of dicts with ``input_ids`` ...) for the block eigenvalues.
        throttle: Least seconds between two data updates sent to the browser (``>= 0.05``).
        log_y: Logarithmic y axes and colour scales at first.
        top_k: Eigenvalues per clicked block.
        tol: Lanczos tolerance for the clicked block.
        num_threads: PyTorch intra-op threads of the block job's thread while it runs (a positive int), or
            None to leave the count alone; the process default is put back when the run ends (see
            "Threads" in :mod:`tscope_widgets.jobs`).

    Raises:
        TypeError: For a tracker without ``history``/``subscribe``, or a history/block norms object
            that lacks the fields of its dataclass.
        ValueError: For both a tracker and a history, a bad ``throttle``/``top_k``/``tol``/``num_threads``,
            or arrays of inconsistent shapes.

    Example:
        >>> tracker = SpectrumTracker(model, batches, every=10)  # doctest: +SKIP
        >>> SpectrumWidget(tracker)  # doctest: +SKIP
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_waiting = "waiting for the first record…"
    _browser_traits = _BROWSER_TRAITS
    _commands = {"stop": "stop_block", "recompute": "recompute_block"}

    # View state: the browser may set these; validated in `_validate_view_state`.
    selected_series = traitlets.Any([]).tag(sync=True)
    picked_step = traitlets.Any(None).tag(sync=True)
    selected_block = traitlets.Any(None).tag(sync=True)
    log_y = traitlets.Any(True).tag(sync=True)

    # Choices and labels: series_options [{key, label, panel}], panels [{key, title, y_label}].
    series_options = traitlets.List().tag(sync=True)
    panels = traitlets.List([{"key": k, "title": t, "y_label": y} for k, (t, y) in PANELS.items()]).tag(sync=True)
    block_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    source = traitlets.Unicode("fixed").tag(sync=True)  # "tracker" or "fixed"
    can_compute_blocks = traitlets.Bool(False).tag(sync=True)

    # Data as binary buffers (float32 / int32 on the wire): see _spectrum_state.series_wire; the density of the
    # picked step {step, picked, grid [P], values [P]}; the block norms; the clicked block's eigenvalues.
    series = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    density = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    norms = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    eigen = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)

    # Status of the block job.
    job_status = traitlets.Unicode("idle").tag(sync=True)
    job_message = traitlets.Unicode("").tag(sync=True)
    job_done = traitlets.Int(0).tag(sync=True)
    job_total = traitlets.Int(None, allow_none=True).tag(sync=True)
    job_rate = traitlets.Float(0.0).tag(sync=True)
    job_eta = traitlets.Float(None, allow_none=True).tag(sync=True)
    job_elapsed = traitlets.Float(0.0).tag(sync=True)

    def __init__(
        self,
        tracker=None,
        *,
        history=None,
        block_norms=None,
        adapter=None,
        data=None,
        throttle: float = 0.1,
        log_y: bool = True,
        top_k: int = 5,
        tol: float = 1e-6,
        num_threads: int | None = None,
    ):
        check_source(tracker, history)
        throttle = check_throttle(throttle, MIN_THROTTLE_S)
        top_k, tol = check_block_options(top_k, tol)
        log_y = check_flag(log_y, "log_y")
        num_threads = check_num_threads(num_threads)
        shown = tracker.history if tracker is not None else history  # one copy: checked, then shown
        checked = check_history(shown) if shown is not None else None
        norms = check_block_norms(block_norms) if block_norms is not None else None
        if tracker is not None:
            adapter = adapter if adapter is not None else getattr(tracker, "adapter", None)
            data = data if data is not None else getattr(tracker, "data", None)
        # Set before traitlets' __init__: observers may fire from there on.
        self._lock = threading.RLock()
        self._valid = {"selected_series": [], "picked_step": None, "selected_block": None, "log_y": bool(log_y)}
        self._tracker = tracker
        self._history_obj = None
        self._history: dict[str, Any] | None = None
        self._step_set: set[int] = set()
        self._series_chosen = False  # the user picked series: keep them when options change
        self._syncing_options = False
        self._block_norms_obj, self._norms = None, None
        self._adapter = adapt(adapter) if adapter is not None else None
        self._data = data
        self._top_k, self._tol = top_k, tol
        self._throttle_s = throttle
        self._num_threads = num_threads
        self._eigen_job: Job | None = None
        self._queued_recompute: str | None = None  # a block to recompute once the running block job ends
        self._eigen_unsubscribe: Callable[[], None] = lambda: None
        self._eigen_request: dict[str, Any] | None = None
        self._eigen_results: dict[str, dict[str, Any]] = {}
        self._unsubscribe: Callable[[], None] = lambda: None
        self._throttle = Throttle(self._apply_history, self._throttle_s, name="tscope-spectrum")
        super().__init__()

        with self.hold_sync():
            self.set_trait("log_y", bool(log_y))
            self.source = "tracker" if tracker is not None else "fixed"
            self.can_compute_blocks = self._adapter is not None and self._data is not None
            if norms is not None:
                self._set_norms(block_norms, norms)
            if checked is not None:
                self._apply_checked(shown, checked)
            else:
                self._sync_options()
        if tracker is not None:
            self._unsubscribe = tracker.subscribe(self._on_history)

    # ------------------------------------------------------------------ public API
    @property
    def history(self):
        """The latest history shown (the tracker's ``SpectrumHistory`` object), or None."""
        return self._history_obj

    @property
    def block_norms(self):
        """The :class:`~tscope_widgets.kernels.blocks.BlockNorms` shown, or None."""
        return self._block_norms_obj

    @property
    def eigen_job(self) -> Job | None:
        """The :class:`~tscope_widgets.jobs.Job` of the latest block eigenvalue run, or None."""
        return self._eigen_job

    @property
    def block_eigenvalues(self) -> dict[str, dict[str, Any]]:
        """Finished block runs: ``{label: {"step", "eigenvalues" [k] descending float64, "residuals" [k],
        "status", "message"}}`` (``step``: the latest recorded step when the weights were copied)."""
        with self._lock:
            return {k: dict(v) for k, v in self._eigen_results.items()}

    def set_block_norms(self, result) -> None:
        """Show a :class:`~tscope_widgets.kernels.blocks.BlockNorms` (from ``block_norms(...)``).

        Raises:
            TypeError, ValueError: For an object without the fields of ``BlockNorms`` or bad shapes.
        """
        norms = check_block_norms(result)
        with self._lock, self.hold_sync():
            self._set_norms(result, norms)

    def pick_step(self, step: int | None) -> None:
        """Show the density recorded nearest to ``step`` and mark it on every chart (None: the latest).

        Raises:
            ValueError: If ``step`` is not a recorded step.
        """
        ok, _, why = self._check("picked_step", step)
        if not ok:
            raise ValueError(f"cannot pick step {step!r}: {why}")
        self.picked_step = step

    def select_block(self, label: str | None) -> None:
        """Select a block (as a click does): runs Lanczos on its Hessian block in a background job.

        Raises:
            ValueError: If ``label`` is not a block of the history or of the block norms.
        """
        ok, _, why = self._check("selected_block", label)
        if not ok:
            raise ValueError(f"cannot select block {label!r}: {why}")
        self.selected_block = label

    def recompute_block(self) -> None:
        """Run the selected block again on the current weights (even if a result is cached).

        Requests coalesce: while a block job runs, a recompute is queued (the latest request replaces an
        earlier one) and starts when the running job ends, so a flood of clicks costs one running job and one
        queued, not a job and a copy of the model per click.
        """
        with self._lock:
            if self.selected_block is None:
                return
            job = self._eigen_job
            if job is not None and job.status not in _TERMINAL:
                self._queued_recompute = self.selected_block
                return
            self._start_block(self.selected_block, force=True)

    def stop_block(self) -> None:
        """Stop the block job after the Lanczos step in flight (its partial result stays)."""
        with self._lock:
            self._queued_recompute = None
            if self._eigen_job is not None:
                self._eigen_job.cancel()

    def wait_block(self, timeout: float | None = None) -> bool:
        """Block until the current block job has ended and the widget shows its result.

        Once it has ended, the static pictures in the outputs that show this widget are refreshed,
        addressed to the cell that calls ``wait_block`` (runners such as nbclient take output for the
        running cell only; see ``_display``).

        Returns:
            True if it ended (or none ran), False on timeout.
        """
        job = self._eigen_job
        return True if job is None or job.status == "pending" else self._wait_for(job, timeout)

    def close(self) -> None:
        """Detach from the tracker, stop a block job and close the widget."""
        getattr(self, "_unsubscribe", lambda: None)()
        throttle = getattr(self, "_throttle", None)
        if throttle is not None:
            throttle.close()
        job = getattr(self, "_eigen_job", None)
        if job is not None:
            job.cancel()
        super().close()

    # ----- export
    def to_bokeh(self):
        """The current charts as a static Bokeh layout (line charts of the selected series, density,
        block norms, block × step λ_max, and the block eigenvalues computed so far).

        Raises:
            RuntimeError: When there is nothing to show yet (no record and no block norms).
        """
        from ..figures.bokeh import spectrum_layout

        with self._lock:
            h, norms, charts, eigen = self._history, self._norms, self._charts(), self.block_eigenvalues
        if (h is None or h["steps"].size == 0) and norms is None:
            raise RuntimeError("nothing to export yet: no record in the history and no block norms")
        return spectrum_layout(charts, extra_html=eigen_table_html(eigen) if eigen else "")

    def save_html(
        self, path: str | os.PathLike, *, title: str = "Hessian spectrum during training", notes=None
    ) -> Path:
        """Write a standalone HTML report (BokehJS inlined: opens offline) of :meth:`to_bokeh`.

        Returns:
            The path written.
        """
        from ..export.html import save_report

        layout = self.to_bokeh()
        if notes is None:
            notes = [self._status_text()]
        return save_report(path, layout, title, notes)

    # ------------------------------------------------------------------ history updates
    def _on_history(self, history) -> None:
        """Tracker subscriber (the training loop's thread): check, then hand to the throttle."""
        try:
            checked = check_history(history)
        except (TypeError, ValueError) as e:
            logger.warning("SpectrumWidget ignored a tracker update: %s", e)
            return
        complete = checked["total"] is not None and checked["done"] >= checked["total"] > 0
        if complete:
            self._throttle.flush((history, checked))  # the last record at once, in the caller's thread
        else:
            self._throttle((history, checked))

    def _apply_history(self, item) -> None:
        history, checked = item
        with self._lock, self.hold_sync():
            self._apply_checked(history, checked)

    def _apply_checked(self, history, checked: dict[str, Any]) -> None:
        # Caller holds the lock and hold_sync.
        self._picture_changed()
        self._history_obj, self._history = history, checked
        self._step_set = {int(s) for s in checked["steps"]}
        self._sync_options()
        if self.picked_step is not None and self.picked_step not in self._step_set:
            self.set_trait("picked_step", None)
        self.series = series_wire(checked)
        self._sync_density()

    def _sync_options(self) -> None:
        h = self._history
        grad_labels = h["grad_norm_labels"] if h is not None else []
        options = series_options(grad_labels)  # each with its colour (the live view draws it)
        if options != self.series_options:
            self.series_options = options
            keys = [o["key"] for o in options]
            if self._series_chosen:
                kept = set(self.selected_series)
                chosen = [k for k in keys if k in kept]
            else:
                chosen = default_selection(grad_labels)
            self._syncing_options = True
            try:
                self.set_trait("selected_series", chosen)
            finally:
                self._syncing_options = False
        tracked = h["block_labels"] if h is not None else []
        blocks = list(dict.fromkeys(tracked + (self._norms["labels"] if self._norms is not None else [])))
        if blocks != self.block_options:
            self.block_options = blocks

    def _sync_density(self) -> None:
        wire = density_wire(self._history, self.picked_step)
        current = self.density
        if wire is None or current is None:
            if wire is not current:
                self.density = wire
            return
        if (current["index"], current["step"], current["picked"]) != (wire["index"], wire["step"], wire["picked"]):
            self.density = wire

    def _set_norms(self, result, norms: dict[str, Any]) -> None:
        self._picture_changed()
        self._block_norms_obj, self._norms = result, norms
        self.norms = norms
        self._sync_options()

    # ------------------------------------------------------------------ block eigenvalues
    def _start_block(self, label: str, *, force: bool = False) -> None:
        # Caller holds the lock. A new request supersedes a queued recompute.
        self._queued_recompute = None
        step = self._latest_step()
        cached = self._eigen_results.get(label)
        if cached is not None and not force and cached["step"] == step and cached["status"] == "done":
            self._cancel_block_job()
            self.eigen = eigen_wire(label, step, cached, cached["status"], cached["message"])
            self._sync_job_status(None)
            return
        if self._adapter is None or self._data is None:
            why = "no model and data to compute with: pass adapter= and data= (or a tracker)"
            self.eigen = eigen_wire(label, step, None, "unavailable", why)
            return
        self._cancel_block_job()
        loss = getattr(self._tracker, "loss", None)
        dtype = getattr(self._tracker, "dtype", None) or torch.promote_types(self._adapter.dtype, torch.float32)
        try:
            # A copy of the weights as they are now: training may go on while Lanczos runs.
            adapter = copy.deepcopy(self._adapter.analysis(dtype))
        except Exception as e:
            logger.warning("could not copy the model for block %r", label, exc_info=True)
            self.eigen = eigen_wire(label, step, None, "error", f"{type(e).__name__}: {e}")
            return
        job = Job(
            block_eigen_kernel,
            adapter,
            self._data,
            block_groups(label, getattr(self._tracker, "blocks", None), self._adapter.param_groups()),
            self._top_k,
            self._tol,
            loss=loss,
            dtype=dtype,
            name=f"block-eigenvalues-{label}",
            throttle=self._throttle_s,
            start=False,
            num_threads=self._num_threads,
        )
        self._eigen_job = job
        self._eigen_request = {"label": label, "step": step}
        self._eigen_unsubscribe = job.subscribe(self._on_eigen)
        self.eigen = eigen_wire(label, step, None, "running", "")
        job.start()
        self._sync_job_status(job)

    def _latest_step(self) -> int | None:
        h = self._history
        return int(h["steps"][-1]) if h is not None and h["steps"].size else None

    def _cancel_block_job(self) -> None:
        self._eigen_unsubscribe()
        self._eigen_unsubscribe = lambda: None
        if self._eigen_job is not None:
            self._eigen_job.cancel()

    def _on_eigen(self, job: Job, snapshot) -> None:
        """Block job subscriber (job threads, throttled)."""
        with self._lock:
            if job is not self._eigen_job:
                return
            request = self._eigen_request
            status = job.status
            result = None if snapshot is None else eigen_result(snapshot)
            message = job.message if status in _TERMINAL else ""
            with self.hold_sync():
                self.eigen = eigen_wire(request["label"], request["step"], result, status, message)
                self._sync_job_status(job)
            if status in _TERMINAL:
                self._eigen_results[request["label"]] = eigen_record(request["step"], result, status, message)
                if self._queued_recompute is not None:
                    self._start_block(self._queued_recompute, force=True)
        self._after_job_update(job)

    def _sync_job_status(self, job: Job | None) -> None:
        progress = job_progress(job) if job is not None else dict(IDLE_PROGRESS)
        if job is not None and job.status not in _TERMINAL:
            progress["message"] = ""
        for key, value in progress.items():
            setattr(self, f"job_{key}", value)

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*_BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        """Canonical form of a valid value; for nonsense from Python, a warning and the last valid value."""
        return self._validated(proposal)

    @traitlets.observe(*_BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        name, old, new = change["name"], change["old"], change["new"]
        if type(old) is type(new) and old == new:
            return
        with self._lock:
            self._picture_changed()
            if name == "picked_step":
                self._sync_density()
            elif name == "selected_block" and new is not None:
                self._start_block(new)
            elif name == "selected_series" and not self._syncing_options:
                self._series_chosen = True  # the user's choice: kept when new series appear

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        """``(ok, canonical value, reason if not ok)`` for a view-state trait (see ``check_view_state``)."""
        series = [o["key"] for o in self.series_options]
        return check_view_state(name, value, series=series, steps=self._step_set, blocks=self.block_options)

    # ------------------------------------------------------------------ static picture
    def _flush_updates(self) -> None:
        """Apply a tracker update the throttle holds back (at the end of a cell, before its picture)."""
        self._throttle.flush()

    def _picture_caption(self) -> Caption:
        with self._lock:
            h, norms = self._history, self._norms
            records = 0 if h is None else int(h["steps"].size)
            job = self._eigen_job
            job_status = "idle" if job is None else job.status
            status = self._status_text()
            eigen = self.block_eigenvalues
        if job is not None and job_status not in _TERMINAL:
            state = "running"
            status += f" · block {self._eigen_request['label']}: Lanczos {job_status}"
        elif self._throttle.pending:
            state = "running"
        elif records == 0 and norms is None:
            state = "pending"
        else:
            state = "done"
        title = "SpectrumWidget · Hessian spectrum during training"
        return Caption(
            title=title,
            status=status,
            alt=f"{title}: line charts of the tracked series over training steps, the spectral density, "
            "and heatmaps of the Hessian block norms and of each block's λ_max over steps",
            attrs={"status": state, "records": str(records), "block-job": job_status},
            extra_html=eigen_table_html(eigen) if eigen else "",
        )

    def _picture_svg(self) -> str | None:
        """The current charts (series, scale and picked step as selected), or None before any data."""
        with self._lock:
            return render_svg(self._charts())

    def _charts(self):
        """The charts' description (series, scale and picked step as selected); the caller holds the lock."""
        h, norms, log = self._history, self._norms, bool(self.log_y)
        return spectrum_charts(h, norms=norms, selected=list(self.selected_series), log=log,
                               picked_step=self.picked_step)

    def _status_text(self) -> str:
        return status_text(self._history, self._tracker is not None)
