r"""``SensitivityExplorer``: a live heatmap of position-to-position sensitivity in JupyterLab.

The widget runs :func:`~tscope_widgets.kernels.iter_sensitivity` in a background
:class:`~tscope_widgets.jobs.Job` and shows the per-cell population statistics of
:math:`s_{ij} = \lVert \partial h_i / \partial e_j \rVert_F^2` as they fill in. It holds no maths:
every number comes from the kernel's :class:`~tscope_widgets.kernels.SensitivitySnapshot`, and
this module only turns the latest snapshot into traits.

Traits the browser may change (``layer``, ``statistic``, ``selected_cell``, ``view``,
``log_scale``, ``colormap``, ``color_percentiles``, ``color_limits``, ``sample``) are untrusted input: a value that
makes no sense is logged as a warning and the trait is put back to its previous value (which is sent back
to the page); it never raises in the
kernel. Buttons send custom messages ``{"type": "command", "command": "pause" | "resume" |
"stop"}``, validated the same way. Arrays travel as binary buffers (see ``_codec``); updates
arrive at most once per ``throttle`` seconds (the Job coalesces snapshots), plus one when the job
pauses and one when it ends.

Static fallback: displaying the explorer makes two outputs in the cell, the widget view and then a
picture of the heatmap (an ``<img>`` of an SVG document drawn by ``figures.svg``) that stands in for
the view where it cannot run (a notebook reopened without widget state, nbconvert's HTML export,
nbviewer, untrusted notebooks). The picture is replaced by the final heatmap when the job ends and again
by :meth:`SensitivityExplorer.wait`; see ``_display`` for how the two outputs are paired.

Long sequences: the browser view gives every cell at least 2 pixels (a map too long for a 640-pixel plot
opens on its top left corner), zooms with the wheel around the pointer, pans by dragging, zooms to a
shift-dragged (or brush-mode) square, and goes back with "reset zoom" / "whole map"; the zoom lives in the
page only (nothing is sent to Python), hover and click report the cell under the pointer at every zoom.
Maps above 512 x 512 travel as float16 with a power-of-two scale (11 significant bits; float32 when the
values span more than float16 holds), counts as the narrowest unsigned integers (``_codec``).

Per-sample view: ``sample`` (a data-set index among ``sample_options``, the samples the reservoir holds)
puts that sample's own map ``s_ij`` of the selected layer, with its token strings (``sample_view``), beside the
population statistic; None shows the population alone.

Threads: ``num_threads`` sets PyTorch's intra-op thread count of the job's thread only for the run
(see :class:`SensitivityExplorer` and :class:`~tscope_widgets.jobs.Job`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import traitlets

from ..figures.sensitivity import layer_title, method_note, sensitivity_grid, value_title
from ..figures.svg import render_svg
from ..jobs import Job, check_num_threads
from ..kernels.sensitivity import iter_sensitivity
from ..models.registry import adapt
from ._codec import counts_to_json, map_to_json, to_json_tree
from ._controls import JobControls
from ._display import Caption, PicturedWidget, bundle
from ._sensitivity_state import (
    BROWSER_TRAITS,
    STATISTICS,
    STATISTICS_TITLES,  # noqa: F401  (importable from this module, as before)
    VIEWS,
    cell_detail,
    check_color_options,
    check_data,
    check_kernel_options,
    check_layer,
    check_statistics,
    check_token_labels,
    check_view_state,
    fit_labels,
    sample_detail,
)
from ._static import heatmap_alt
from ._values import MIN_THROTTLE_S, check_throttle

__all__ = ["SensitivityExplorer", "STATISTICS", "VIEWS"]

logger = logging.getLogger(__name__)

BUNDLE = bundle("sensitivity_explorer.js")

# STATISTICS, STATISTICS_TITLES, VIEWS and the checks of every value received: see _sensitivity_state.
COMMANDS = ("pause", "resume", "stop")
QUANTITY = "‖J_ij‖²_F"
_BROWSER_TRAITS = BROWSER_TRAITS
LIVE_VIEW_SELECTOR = ".tscope-explorer"  # root element of a rendered view (js/src/sensitivity_explorer.js)
WIDGET_TEXT = "SensitivityExplorer: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class SensitivityExplorer(JobControls, PicturedWidget):
    r"""Live explorer of position-to-position sensitivity :math:`\lVert J_{ij}\rVert_F^2`.

    Shows, for the chosen layer and statistic, the ``[S, S]`` heatmap (row ``i`` = output position,
    column ``j`` = input position) with token labels, a colour bar (linear or log), hover values, a
    status line with pause/resume/stop, and for a clicked cell the histogram of its values over the
    reservoir samples and the row/column profiles; the ``offset`` view plots the statistic against
    ``i - j``.

    Args:
        model: A :class:`~tscope_widgets.models.TinyTransformer`, a supported Hugging Face model, or a
            :class:`~tscope_widgets.models.ModelAdapter`; analysed on a private copy.
        data: What :func:`~tscope_widgets.kernels.iter_sensitivity` takes: an id tensor ``[N, S]``,
            ``(ids, mask)``, a dict with ``input_ids``, a list of strings (with ``tokenizer``) or an
            iterable of batches such as a ``DataLoader``.
        layers: Target layers (``"all"``, an index, ``"final"`` or a list).
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        batch_size: Samples per batch (one heatmap update per batch at most).
        max_seq_len: Truncation length.
        tokenizer: Hugging Face tokenizer: turns strings into ids, and names the axis positions with
            the tokens of the first sample (unless ``token_labels`` is given).
        token_labels: ``S`` strings naming the positions on both axes.
        log_scale: ``"auto"`` (log where the values span decades), True or False.
        colormap: One of :data:`~tscope_widgets.figures.charts.COLORMAPS`.
        color_percentiles: ``(p_lo, p_hi)`` with ``0 <= p_lo < p_hi <= 100``: clamp the colour range to
            these percentiles of the shown values (e.g. ``(1, 99)``), or None for the full range.
        color_limits: ``(lo, hi)``: clamp the colour range to these values (either may be None: the
            data's end); wins over ``color_percentiles``.
        start: Start the job now; otherwise call :meth:`start`.
        throttle: Least seconds between two data updates sent to the browser (``>= 0.05``).
        num_threads: PyTorch intra-op threads of the job's thread while it runs (a positive int), or
            None to leave the count alone (the job's thread then starts with the process default,
            what a thread that has not called ``torch.set_num_threads`` gets). On small models one
            thread is often fastest: a second one can slow a job 5-10x on a busy machine. Applied by the
            :class:`~tscope_widgets.jobs.Job` in its thread before the first batch; the process default
            is put back when the run ends (see "Threads" in :mod:`tscope_widgets.jobs`). Refused on
            PyTorch builds without the OpenMP backend.
        **kernel_kwargs: More options of ``iter_sensitivity``: ``source``, ``probes``,
            ``chunk_size``, ``dtype``, ``mode``, ``reservoir_size``, ``seed``.

    Raises:
        TypeError: For unknown keyword arguments, non-string token labels, a ``num_threads`` that
            is not an int, ids that are not integers (a float tensor), or what ``iter_sensitivity``
            refuses as a type.
        ValueError: For a bad ``throttle``, ``num_threads < 1`` or ``num_threads`` on a PyTorch
            without the OpenMP backend, token ids outside the model's vocabulary or a bad attention
            mask (all ids of a tensor, the first batch of other data), bad colour options, and everything
            ``iter_sensitivity`` refuses up front (layers, method, sizes, empty data).

    A job that fails later (a bad batch further on) shows its error in the status line and in place of
    the heatmap, and :meth:`wait` raises :class:`~tscope_widgets.jobs.JobError`.

    Example:
        >>> explorer = SensitivityExplorer(model, ids, layers="all", token_labels=labels)  # doctest: +SKIP
        >>> explorer  # doctest: +SKIP
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_noun = "explorer"
    picture_waiting = "waiting for the first batch…"
    _browser_traits = _BROWSER_TRAITS
    _commands = {command: command for command in COMMANDS}  # each calls the method of its name
    _job_name = "sensitivity"
    _work_unit = "batch"

    # View state: the browser may set these; validated in `_validate_view_state`.
    layer = traitlets.Any(None).tag(sync=True)
    statistic = traitlets.Any("mean").tag(sync=True)
    selected_cell = traitlets.Any(None).tag(sync=True)
    sample = traitlets.Any(None).tag(sync=True)  # a reservoir sample shown beside the population, or None
    view = traitlets.Any("matrix").tag(sync=True)
    log_scale = traitlets.Any("auto").tag(sync=True)
    colormap = traitlets.Any("viridis").tag(sync=True)
    color_percentiles = traitlets.Any(None).tag(sync=True)
    color_limits = traitlets.Any(None).tag(sync=True)

    # Choices and labels.
    layer_options = traitlets.List().tag(sync=True)
    statistic_options = traitlets.List(list(STATISTICS)).tag(sync=True)
    view_options = traitlets.List(list(VIEWS)).tag(sync=True)
    sample_options = traitlets.List().tag(sync=True)  # data-set indices of the samples the reservoir holds
    seq_len = traitlets.Int(0).tag(sync=True)
    token_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    label_note = traitlets.Unicode("").tag(sync=True)
    quantity = traitlets.Unicode(QUANTITY).tag(sync=True)
    method = traitlets.Unicode("").tag(sync=True)
    method_note = traitlets.Unicode("").tag(sync=True)  # what the numbers are (Hutchinson: estimates ± sem)

    # Data, as binary buffers: the statistic [S, S] (float32 on the wire; scaled float16 above 512 x 512,
    # see _codec.map_to_json), the counts [S, S] (the narrowest unsigned ints that hold them) and the
    # selected cell's details (scalars + reservoir samples).
    heat = traitlets.Any(None).tag(sync=True, to_json=map_to_json)
    counts = traitlets.Any(None).tag(sync=True, to_json=counts_to_json)
    detail = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    sample_view = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)  # the chosen sample's map

    # Job status.
    status = traitlets.Unicode("pending").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    done = traitlets.Int(0).tag(sync=True)
    total = traitlets.Int(None, allow_none=True).tag(sync=True)
    batches = traitlets.Int(0).tag(sync=True)
    rate = traitlets.Float(0.0).tag(sync=True)
    eta = traitlets.Float(None, allow_none=True).tag(sync=True)
    elapsed = traitlets.Float(0.0).tag(sync=True)

    def __init__(
        self,
        model,
        data,
        *,
        layers="all",
        method: str = "exact",
        batch_size: int = 8,
        max_seq_len: int | None = None,
        tokenizer=None,
        token_labels: Sequence[str] | None = None,
        log_scale: bool | str = "auto",
        colormap: str = "viridis",
        color_percentiles: Sequence[float] | None = None,
        color_limits: Sequence[float | None] | None = None,
        start: bool = True,
        throttle: float = 0.1,
        num_threads: int | None = None,
        **kernel_kwargs,
    ):
        kernel_kwargs = check_kernel_options(kernel_kwargs)
        throttle = check_throttle(throttle, MIN_THROTTLE_S)
        num_threads = check_num_threads(num_threads)
        token_labels = check_token_labels(token_labels)
        colors = check_color_options(
            log_scale=log_scale, colormap=colormap, color_percentiles=color_percentiles, color_limits=color_limits
        )
        # Set before traitlets' __init__: observers may fire from there on.
        self._lock = threading.RLock()
        self._valid = {
            "layer": None,
            "statistic": "mean",
            "selected_cell": None,
            "view": "matrix",
            "sample": None,
            **colors,
        }  # the last valid value of each view-state trait
        self._job: Job | None = None
        self._unsubscribe = lambda: None
        self._stop_requested = False
        self._labels_pending = True  # name the positions from the next snapshot
        self._model, self._data, self._tokenizer = model, data, tokenizer
        self._explicit_labels = token_labels
        self._throttle = throttle
        self._num_threads = num_threads
        self._kernel_kwargs = dict(
            layers=layers,
            method=method,
            batch_size=batch_size,
            max_seq_len=max_seq_len,
            tokenizer=tokenizer,
            **kernel_kwargs,
        )
        # Validate everything before the widget opens its comm to the page: what the job would only find
        # out in its thread (float ids, ids outside the vocabulary, a bad mask) is refused here.
        adapter = adapt(model)
        check_data(adapter, data, batch_size, max_seq_len, tokenizer)
        self._num_layers = adapter.num_layers
        options = adapter.resolve_layers(layers)
        run = self._new_run()
        super().__init__()

        with self.hold_sync():
            self.layer_options = list(options)
            self.set_trait("layer", options[-1])
            for name, value in colors.items():
                self.set_trait(name, value)
            self.method = method
            self.method_note = method_note(method, kernel_kwargs.get("probes"))
        self._new_job(run)
        if start:
            self.start()

    # ------------------------------------------------------------------ public API
    @property
    def snapshot(self):
        """The latest :class:`~tscope_widgets.kernels.SensitivitySnapshot`, or None before the first batch."""
        return self._job.snapshot

    @property
    def stats(self):
        """``LayerDict {layer: WelfordState}`` of the latest snapshot (cells ``[S, S]``, float64), or None."""
        snap = self.snapshot
        return None if snap is None else snap.stats

    def compare(self, other, **options):
        """Where this run differs from ``other``, cell by cell: a :class:`~.comparison.ComparisonExplorer`
        (Welch tests per cell, non-significant cells faded), live while either run fills in.

        Args:
            other: Run ``b``: another explorer, a ``Job`` of ``iter_sensitivity``, a results folder or a snapshot.
            **options: Options of :class:`~.comparison.ComparisonExplorer` (``names``, ``alpha``, ``correction``,
                ``shown``, ``mask``, ``token_labels``, ``throttle``).

        Returns:
            The comparison widget (this run is ``a``).
        """
        from .comparison import ComparisonExplorer

        return ComparisonExplorer(self, other, **options)

    # ----- export
    def to_bokeh(self, *, layers=None, statistics: str | Sequence[str] | None = None):
        """The current statistics as a static Bokeh figure (or a grid of them).

        Args:
            layers: ``None`` (the selected layer), ``"all"``, a label or a list of labels.
            statistics: ``None`` (the selected statistic), a name or a list of names from
                ``STATISTICS``.

        Returns:
            One ``figure`` for one layer and one statistic, else a ``GridPlot`` (a row per layer).
            The colour scales follow ``log_scale`` (``"auto"``: log where the values span decades; never
            for counts), ``colormap``, ``color_percentiles`` and ``color_limits``.

        Raises:
            RuntimeError: Before the first batch is done.
            ValueError: For an unknown layer or statistic.
        """
        from ..figures.bokeh import matrix_chart_figure, matrix_grid

        snap = self._require_snapshot()
        chosen = self._export_layers(snap, layers)
        names = check_statistics(statistics, self.statistic)
        stats = {layer: snap.stats[layer] for layer in chosen}
        labels = self._axis_labels(snap.seq_len)
        colors = self._color_options()
        if len(chosen) == 1 and len(names) == 1:
            ((chart,),) = sensitivity_grid(stats, labels, names, note=self._samples_text(snap), **colors)
            return matrix_chart_figure(chart, width=420, height=400)
        return matrix_grid(sensitivity_grid(stats, labels, names, quantity=QUANTITY, **colors))

    def save_html(
        self,
        path: str | os.PathLike,
        *,
        layers="all",
        statistics: str | Sequence[str] | None = None,
        title: str = "Position-to-position sensitivity",
        notes: str | Sequence[str] | None = None,
    ) -> Path:
        """Write a standalone HTML report (BokehJS inlined: opens offline) of :meth:`to_bokeh`.

        Args:
            path: Output ``.html`` file.
            layers: As in :meth:`to_bokeh` (default: every layer).
            statistics: As in :meth:`to_bokeh` (default: the selected statistic).
            title: Heading.
            notes: Text under the heading; default: method, samples and job status.

        Returns:
            The path written.
        """
        from ..export.html import save_report

        snap = self._require_snapshot()
        figures = self.to_bokeh(layers=layers, statistics=statistics)
        if notes is None:
            notes = [
                f"{snap.method} {QUANTITY} ({snap.mode} mode, source: {snap.source}) over "
                f"{self._samples_text(snap)}; job {self._job.status}.",
                method_note(snap.method, snap.probes) + ".",
                "Rows: output position i; columns: input position j.",
            ]
        return save_report(path, figures, title, notes)

    def save_statistics(self, directory: str | os.PathLike) -> Path:
        """Write the statistics (safetensors + JSON) and the reservoir samples to ``directory``.

        Read back with :func:`tscope_widgets.export.load_statistics` (the per-layer
        :class:`WelfordState`) and :func:`tscope_widgets.export.load_extra_tensors` (``reservoir.*``:
        ``input_ids [C, S]``, ``mask [C, S]``, ``sample_index [C]``, ``maps.<layer> [C, S, S]``).

        Returns:
            The folder.
        """
        from ..export.results import save_statistics

        snap = self._require_snapshot()
        res = snap.reservoir
        extra = {
            "reservoir.input_ids": res.input_ids,
            "reservoir.mask": res.mask.to(torch.uint8),
            "reservoir.sample_index": res.sample_index,
        }
        extra.update({f"reservoir.maps.{layer}": m for layer, m in res.maps.items()})
        meta = dict(snap.meta())
        meta.pop("layers", None)  # save_statistics records the layers itself
        meta.update(
            quantity="||J_ij||_F^2",
            status=self._job.status,
            num_layers=snap.stats.num_layers,
            token_labels=self._axis_labels(snap.seq_len),
        )
        return save_statistics(directory, snap.stats, meta, extra_tensors=extra)

    # ------------------------------------------------------------------ job plumbing
    def _new_run(self):
        """A fresh ``iter_sensitivity`` generator (its arguments are checked here, in the caller)."""
        return iter_sensitivity(self._model, self._data, **self._kernel_kwargs)

    def _clear_data(self) -> None:
        self._labels_pending = True
        self.heat = self.counts = self.detail = None
        self.batches = 0

    # ------------------------------------------------------------------ static picture
    def _picture_lines(self) -> tuple[str, str, str]:
        """Title line, status line and colour-bar title of the picture."""
        snap = self.snapshot
        layer, stat = self.layer, self.statistic
        title = f"SensitivityExplorer · {layer_title(layer)} · {value_title(stat, QUANTITY)}"
        status = f"job {self._job.status}"
        if snap is not None and layer in snap.layers:
            status = f"{self._samples_text(snap)} · {status}"
        if self.method_note:
            status = f"{self.method_note} · {status}"
        if snap is not None and layer in snap.layers:
            if self._job.status == "error":
                status += f": {self._job.message}"
        return title, status, value_title(stat, QUANTITY)

    def _picture_caption(self) -> Caption:
        snap = self.snapshot
        title, status, what = self._picture_lines()
        return Caption(
            title=title,
            status=status,
            alt=heatmap_alt(title, what),
            attrs={
                "layer": str(self.layer),
                "statistic": self.statistic,
                "status": self._job.status,
                "done": str(snap.done if snap is not None else 0),
            },
        )

    def _picture_svg(self) -> str | None:
        """The current heatmap (layer, statistic and colour scale as selected), or None before data."""
        snap = self.snapshot
        layer, stat = self.layer, self.statistic
        if snap is None or layer not in snap.layers:
            return None
        labels = self._axis_labels(snap.seq_len)
        charts = sensitivity_grid({layer: snap.stats[layer]}, labels, [stat], quantity=QUANTITY,
                                  note=self._samples_text(snap), **self._color_options())
        return render_svg(charts[0])

    def _sync_data(self) -> None:
        """Heat, counts and cell details of the latest snapshot for the current view state."""
        snap = self._job.snapshot if self._job is not None else None
        if snap is None:
            return
        with self.hold_sync():
            if self.layer_options != list(snap.layers):
                self.layer_options = list(snap.layers)
            if self.layer not in snap.layers:
                self.set_trait("layer", snap.layers[-1])
            if self.seq_len != snap.seq_len:
                self.seq_len = snap.seq_len
            if self._labels_pending:
                self._labels_pending = False
                self.token_labels, self.label_note = self._position_labels(snap)
            state = snap.stats[self.layer]
            self.method_note = method_note(snap.method, snap.probes)
            self.batches = snap.batches
            self.heat = getattr(state, self.statistic).numpy()
            self.counts = state.count.to(torch.int64).numpy()
            self.detail = cell_detail(snap, self.layer, self.selected_cell)
            res = snap.reservoir
            kept = sorted(int(k) for k in res.sample_index[: res.size].tolist())
            if self.sample_options != kept:
                self.sample_options = kept
            self.sample_view = sample_detail(snap, self.layer, self.sample, self._tokenizer)

    def _position_labels(self, snap) -> tuple[list[str], str]:
        S = snap.seq_len
        if self._explicit_labels is not None:
            labels = self._explicit_labels
            if len(labels) != S:
                logger.warning(
                    "token_labels has %d entries for %d positions; extra ones are dropped, missing ones left blank",
                    len(labels),
                    S,
                )
            return fit_labels(labels, S), ""
        res = snap.reservoir
        if self._tokenizer is None or res.size == 0:
            return [], ""
        slot = int(torch.argmin(res.sample_index[: res.size]))  # the earliest sample kept
        ids, mask = res.input_ids[slot], res.mask[slot]
        try:
            labels = [self._tokenizer.decode([int(t)]) if m else "" for t, m in zip(ids, mask, strict=True)]
        except Exception as err:  # a tokenizer that cannot decode single ids: fall back to indices
            logger.warning("could not decode token labels with the tokenizer (%s); showing positions", err)
            return [], ""
        return labels, f"tokens of sample {int(res.sample_index[slot])}"

    def _color_options(self) -> dict[str, Any]:
        """The colour settings as ``sensitivity_grid`` takes them."""
        limits = self.color_limits
        return {
            "log": self.log_scale,
            "colormap": self.colormap,
            "percentiles": None if self.color_percentiles is None else tuple(self.color_percentiles),
            "limits": None if limits is None else tuple(limits),
        }

    def _axis_labels(self, S: int) -> list[str] | None:
        labels = list(self.token_labels)
        return labels if len(labels) == S else None

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*_BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        """Canonical form of a valid value (e.g. ``-1`` -> ``1``, ``(i, j)`` -> ``[i, j]``, sent back to
        the page if it differs); for nonsense from Python, a warning and the last valid value."""
        return self._validated(proposal)

    @traitlets.observe(*_BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        old, new = change["old"], change["new"]
        changed = type(old) is not type(new) or old != new
        if changed:
            self._picture_changed()
        if changed and change["name"] in ("layer", "statistic", "selected_cell", "sample"):
            with self._lock:
                self._sync_data()

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        """``(ok, canonical value, reason if not ok)`` for a view-state trait (see ``check_view_state``)."""
        return check_view_state(
            name, value, layers=self.layer_options, num_layers=self._num_layers, seq_len=self.seq_len
        )

    # ------------------------------------------------------------------ helpers
    def _require_snapshot(self):
        snap = self.snapshot
        if snap is None:
            raise RuntimeError(
                f"no statistics yet: the job ({self._job.status}) has not finished a batch; "
                "start() it and try again after the first update"
            )
        return snap

    def _export_layers(self, snap, layers) -> list:
        if layers is None:
            return [self.layer]
        if layers == "all":
            return list(snap.layers)
        items = [layers] if isinstance(layers, (int, str)) else list(layers)
        out = []
        for item in items:
            ok, value, why = check_layer(item, self.layer_options, self._num_layers)
            if not ok:
                raise ValueError(f"layer {item!r}: {why}")
            out.append(value)
        return out

    @staticmethod
    def _samples_text(snap) -> str:
        of = f" of {snap.total}" if snap.total is not None else ""
        return f"{snap.done}{of} samples"
