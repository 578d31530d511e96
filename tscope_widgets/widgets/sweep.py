r"""``SweepWidget``: any swept quantity against a swept axis on log-log axes, live while a sweep runs.

The widget shows one :class:`~tscope_widgets.figures.sweep.SweepChart`: the runs of a sweep as dots, their
means over seeds with ± one standard error bars, one line (colour) per value of the other axes, the power
law :math:`y = c\,x^a` fitted to each (:func:`~tscope_widgets.kernels.power_law.fit_power_law`, percentile
bootstrap over seeds; the legend gives :math:`a` and its interval), guide lines :math:`\propto x^k` and an
optional marker. Its rows come from

- a *source*: a generator (or a function returning a fresh one, so that :meth:`~._controls.JobControls.start`
  can run it again) yielding snapshots, run in a background :class:`~tscope_widgets.jobs.Job`; e.g.
  ``iter_growth_rates(...)`` (its :class:`~tscope_widgets.kernels.theory.growth.GrowthRates` become rows
  ``setting, sigma, seed, q_hessian, ...`` by :func:`~tscope_widgets.figures.sweep.growth_table`) or
  ``tscope_widgets.cli.sweep.iter_sweep_tables(...)`` (a :class:`~tscope_widgets.figures.sweep.SweepTable`
  after each finished point of ``tscope sweep``);
- or fixed rows: ``rows=`` with ``axes=``, or :meth:`SweepWidget.from_table` on the ``table.json`` a finished
  ``tscope sweep`` wrote.

No maths here: the description is built by ``figures.sweep``, values are checked in ``_sweep_state``. The page
may set ``x_axis``, ``summary`` and ``fit_range`` (untrusted: a value that makes no sense is logged and put
back). Buttons send ``{"type": "command", "command": "pause" | "resume" | "stop"}``. Displaying the widget
also shows a static picture of the chart (see ``_display``); :meth:`SweepWidget.to_bokeh` and
:meth:`SweepWidget.save_html` export it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import traitlets

from ..figures.svg import render_svg
from ..figures.sweep import SweepChart, SweepTable, sweep_chart
from ..jobs import Job, check_num_threads
from ._codec import to_json_tree
from ._controls import JobControls
from ._display import Caption, PicturedWidget, bundle
from ._sweep_state import (
    BROWSER_TRAITS,
    as_table,
    axis_options,
    chart_wire,
    check_fit_range,
    check_guides,
    check_view_state,
    status_text,
    summary_options,
)
from ._values import MIN_THROTTLE_S, check_throttle, is_finite

__all__ = ["SweepWidget"]

BUNDLE = bundle("sweep_widget.js")

COMMANDS = ("pause", "resume", "stop")
LIVE_VIEW_SELECTOR = ".tscope-sweep"  # root element of a rendered view (js/src/sweep_widget.js)
WIDGET_TEXT = "SweepWidget: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class SweepWidget(JobControls, PicturedWidget):
    r"""A swept quantity against a swept axis on log-log axes, with power-law fits, filled in as runs finish.

    Args:
        source: A generator of sweep snapshots (:class:`SweepTable`, ``GrowthRates``, or a dict with
            ``rows`` and ``axes``), or a function of no arguments returning one (restartable).
        rows: Fixed rows instead (dicts: axis values and summaries); needs ``axes``.
        axes: The swept columns of ``rows``.
        seed_axes: The axes of ``rows`` whose values are seeds (averaged, resampled by the fits).
        summary: The y column at first (default: the first summary offered).
        x_axis: The x column at first (default: the first numeric axis with more than one value).
        guides: Exponents ``k`` of grey guide lines :math:`\propto x^k` (e.g. ``(5, 2)`` for the paper's
            :math:`\sigma^5`, :math:`\sigma^2`).
        fit_range: ``(lo, hi)``: fit only runs with ``x`` in range (e.g. ``(0, 0.26)`` is refused: use a
            positive ``lo`` such as ``(1e-3, 0.26)``), or None for all.
        marker_x: A dashed vertical line at this x (e.g. ``σ = 1``), or None.
        confidence: Coverage of the fits' intervals, in ``(0, 1)``.
        num_bootstrap: Bootstrap replicates per fit.
        start: Start the source's job now (otherwise call :meth:`start`).
        throttle: Least seconds between two updates sent to the browser (``>= 0.05``).
        num_threads: PyTorch intra-op threads of the job's thread while it runs, or None.

    Raises:
        TypeError, ValueError: For both or neither of ``source`` and ``rows``, rows without ``axes``, and
            bad guides, fit range, confidence or sizes (the message names the argument).

    Example:
        >>> from tscope_widgets.kernels.theory.growth import GrowthSetting, iter_growth_rates  # doctest: +SKIP
        >>> setting = GrowthSetting("L=1", sigmas=growth_sigmas(-2, 0, 6))  # doctest: +SKIP
        >>> SweepWidget(lambda: iter_growth_rates(setting, seeds=3, d_model=16, d_mlp=64),  # doctest: +SKIP
        ...             summary="q_hessian", x_axis="sigma", guides=(5, 6), marker_x=1.0)
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_noun = "sweep chart"
    picture_waiting = "waiting for the first finished run…"
    _browser_traits = BROWSER_TRAITS
    _commands = {command: command for command in COMMANDS}
    _job_name = "sweep"
    _work_unit = "run"

    # View state: the browser may set these; validated in `_validate_view_state`.
    x_axis = traitlets.Any(None).tag(sync=True)
    summary = traitlets.Any(None).tag(sync=True)
    fit_range = traitlets.Any(None).tag(sync=True)

    # Choices, and the chart as _sweep_state.chart_wire describes it.
    x_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    summary_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    chart = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    runs = traitlets.Int(0).tag(sync=True)
    live = traitlets.Bool(False).tag(sync=True)

    # Job status.
    status = traitlets.Unicode("pending").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    done = traitlets.Int(0).tag(sync=True)
    total = traitlets.Int(None, allow_none=True).tag(sync=True)
    rate = traitlets.Float(0.0).tag(sync=True)
    eta = traitlets.Float(None, allow_none=True).tag(sync=True)
    elapsed = traitlets.Float(0.0).tag(sync=True)

    def __init__(
        self,
        source: Iterator | Callable[[], Iterator] | None = None,
        *,
        rows: Sequence[Mapping[str, Any]] | None = None,
        axes: Sequence[str] | None = None,
        seed_axes: Sequence[str] = (),
        summary: str | None = None,
        x_axis: str | None = None,
        guides: Sequence[float] = (),
        fit_range: tuple[float, float] | None = None,
        marker_x: float | None = None,
        confidence: float = 0.95,
        num_bootstrap: int = 1000,
        start: bool = True,
        throttle: float = 0.2,
        num_threads: int | None = None,
    ):
        if (source is None) == (rows is None):
            raise ValueError("pass either a source (a generator of sweep snapshots, live) or rows= (fixed), "
                             "exactly one of them")
        fixed = None
        if rows is not None:
            if axes is None:
                raise ValueError("rows= needs axes= (the swept columns), and seed_axes= for seeds")
            fixed = as_table({"rows": list(rows), "axes": axes, "seed_axes": seed_axes})
        elif not (callable(source) or isinstance(source, Iterator)):
            raise TypeError(f"source must be a generator or a function returning one, got {type(source).__name__}")
        self._guides = check_guides(guides)
        initial_range = check_fit_range(fit_range)
        if marker_x is not None and not (is_finite(marker_x) and marker_x > 0):
            raise ValueError(f"marker_x must be a positive number (an x value on the log axis) or None, got "
                             f"{marker_x!r}")
        if not (is_finite(confidence) and 0 < confidence < 1):
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, int) or num_bootstrap < 1:
            raise ValueError(f"num_bootstrap must be an int >= 1, got {num_bootstrap!r}")
        self._marker_x, self._confidence, self._num_bootstrap = marker_x, float(confidence), num_bootstrap
        self._throttle = check_throttle(throttle, MIN_THROTTLE_S)
        self._num_threads = check_num_threads(num_threads)
        self._lock = threading.RLock()
        self._valid = {"x_axis": None, "summary": None, "fit_range": None}
        self._job: Job | None = None
        self._unsubscribe = lambda: None
        self._stop_requested = False
        self._source, self._source_used = source, False
        self._fixed = fixed
        self._table: SweepTable | None = None
        self._chart: SweepChart | None = None
        self._wanted = {"x_axis": x_axis, "summary": summary}  # applied once the table offers them
        super().__init__()
        with self.hold_sync():
            self.live = fixed is None
            self.set_trait("fit_range", initial_range)
        self._new_job(self._new_run())
        if fixed is not None:
            with self._lock, self.hold_sync():
                self._apply_table(fixed)
            self.start()  # yields the fixed table once: the status reads done
            if x_axis is not None and x_axis not in self.x_options:
                raise ValueError(f"x_axis={x_axis!r} is not a numeric, non-seed axis of the rows; choose from "
                                 f"{list(self.x_options)}")
            if summary is not None and summary not in self.summary_options:
                raise ValueError(f"summary={summary!r} is not a summary column of the rows; choose from "
                                 f"{list(self.summary_options)}")
        elif start:
            self.start()

    @classmethod
    def from_table(cls, path: str | os.PathLike, **kwargs) -> SweepWidget:
        """The widget on the ``table.json`` a finished (or running) ``tscope sweep`` wrote (its rows, axes and
        seed axes); ``kwargs`` as for the constructor (``summary``, ``x_axis``, ``guides`` ...).

        Raises:
            ValueError: For a file that is not such a table (the message says what to do).
        """
        from ..files import read_json

        doc = read_json(Path(path), what="a sweep table (table.json written by tscope sweep)",
                        fix="point to the table.json in the output folder of `tscope sweep`")
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not isinstance(doc.get("axes"), list):
            raise ValueError(f"{path}: not a sweep table (no 'rows' and 'axes' lists); point to the table.json "
                             "in the output folder of `tscope sweep`")
        rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in doc["rows"]]
        return cls(rows=rows, axes=doc["axes"], seed_axes=doc.get("seed_axes", ()), **kwargs)

    # ------------------------------------------------------------------ public API
    @property
    def table(self) -> SweepTable | None:
        """The rows shown (a :class:`SweepTable`), or None before the first run finished."""
        return self._table

    @property
    def chart_description(self) -> SweepChart | None:
        """The current :class:`~tscope_widgets.figures.sweep.SweepChart` (with its fits), or None."""
        with self._lock:
            return self._chart

    @property
    def fits(self) -> dict[str, Any]:
        """``{group: PowerLawFit or None}`` of the current chart."""
        chart = self.chart_description
        return {} if chart is None else {g.key: g.fit for g in chart.groups}

    def to_bokeh(self):
        r"""The chart as a Bokeh figure (log-log, hover, legend that hides groups) beside the fits' residuals
        :math:`\log y - \log \hat y` against x (a curve there: not a power law over the fit range).

        Raises:
            RuntimeError: Before there is a run to show.
        """
        from bokeh.layouts import row

        from ..figures.bokeh import scaling_chart_figure, sweep_chart_figure
        from ..figures.sweep import residual_chart

        chart = self.chart_description
        if chart is None or not chart.groups:
            raise RuntimeError("nothing to export yet: no finished run with a positive value of the summary")
        return row(sweep_chart_figure(chart), scaling_chart_figure(residual_chart(chart), width=420))

    def save_html(self, path: str | os.PathLike, *, title: str = "Sweep: power-law scaling", notes=None) -> Path:
        """Write a standalone HTML report (BokehJS inlined: opens offline) of :meth:`to_bokeh`."""
        from ..export.html import save_report

        layout = self.to_bokeh()
        if notes is None:
            notes = [status_text(self._table, self.live),
                     "Dots: runs; filled dots: means over seeds with ± one standard error; lines: least-squares "
                     "fits of log y on log x with the exponent and its percentile bootstrap interval over seeds in "
                     "the legend; grey dashed: guide slopes. Right: the fits' residuals, log y − log fit."]
        return save_report(path, layout, title, notes)

    # ------------------------------------------------------------------ job plumbing (JobControls)
    def _new_run(self):
        if self._fixed is not None:
            return iter([self._fixed])
        if callable(self._source) and not isinstance(self._source, Iterator):
            run = self._source()
            if not isinstance(run, Iterator):
                raise TypeError(f"the source function must return a generator, got {type(run).__name__}")
            return run
        if self._source_used:
            raise RuntimeError("this sweep's generator is used up; pass a function returning a fresh generator "
                               "(e.g. lambda: iter_growth_rates(...)) to run it again")
        self._source_used = True
        return self._source

    def _clear_data(self) -> None:
        if self._fixed is None:
            self._table, self._chart = None, None
            self.chart, self.runs = None, 0

    def _sync_data(self) -> None:
        snapshot = self._job.snapshot
        if snapshot is not None:
            self._apply_table(as_table(snapshot))

    def _apply_table(self, table: SweepTable) -> None:
        # Caller holds the lock and hold_sync.
        self._table = table
        self.x_options, self.summary_options = axis_options(table), summary_options(table)
        for name, options in (("x_axis", self.x_options), ("summary", self.summary_options)):
            current, wanted = getattr(self, name), self._wanted[name]
            if current not in options:
                pick = wanted if wanted in options else (self._default_axis(table) if name == "x_axis"
                                                         else (options[0] if options else None))
                self._valid[name] = pick
                self.set_trait(name, pick)
        self.runs = len(table.rows)
        self._redraw()

    @staticmethod
    def _default_axis(table: SweepTable) -> str | None:
        options = axis_options(table)
        varied = [a for a in options if len({r[a] for r in table.rows}) > 1]
        return (varied or options or [None])[0]

    def _redraw(self) -> None:
        table = self._table
        if table is None or self.x_axis is None or self.summary is None:
            self._chart = None
        else:
            self._chart = sweep_chart(table, self.summary, self.x_axis, guides=self._guides,
                                      fit_range=self.fit_range, marker_x=self._marker_x,
                                      confidence=self._confidence, num_bootstrap=self._num_bootstrap)
        self.chart = chart_wire(self._chart)
        self._picture_changed()

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        return self._validated(proposal)

    @traitlets.observe(*BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        if change["old"] == change["new"]:
            return
        with self._lock, self.hold_sync():
            if change["name"] in self._wanted:
                self._wanted[change["name"]] = change["new"]
            self._redraw()

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        return check_view_state(name, value, axes=list(self.x_options), summaries=list(self.summary_options))

    # ------------------------------------------------------------------ static picture
    def _picture_caption(self) -> Caption:
        with self._lock:
            table, job = self._table, self._job
        state = "done" if job is None or job.status in ("done", "cancelled", "error") else "running"
        if table is None and state == "done":
            state = "pending"
        title = f"SweepWidget · {self.summary or '…'} against {self.x_axis or '…'}"
        return Caption(title=title, status=status_text(table, self.live),
                       alt=f"{title}: log-log chart of the runs, means over seeds with error bars and power-law fits",
                       attrs={"status": state, "runs": str(0 if table is None else len(table.rows))})

    def _picture_svg(self) -> str | None:
        with self._lock:
            return None if self._chart is None else render_svg([self._chart])
