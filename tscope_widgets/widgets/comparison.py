r"""``ComparisonExplorer``: where two sensitivity runs differ, cell by cell, live while they fill in.

Each side is a :class:`~.sensitivity.SensitivityExplorer`, a running (or finished)
:class:`~tscope_widgets.jobs.Job` of :func:`~tscope_widgets.kernels.iter_sensitivity`, or a results folder
(``SensitivityExplorer.save_statistics``, ``tscope run``). For the chosen layer the view shows the difference of
the mean maps :math:`\bar s_a - \bar s_b` (or :math:`\ln(\bar s_a / \bar s_b)`, or Hedges' g) in the diverging
colour map ``rdbu`` on a domain symmetric about 0, with the cells whose Welch test is not significant
(``q >= alpha`` after the chosen correction) faded; both mean maps beside it on one shared colour scale; and for a
clicked cell both runs' values of that cell in their reservoirs. Every number comes from
:func:`~tscope_widgets.kernels.compare.compare_statistics` (see ``_comparison_state``); this module only turns
the two runs' latest snapshots into traits.

Live: every new snapshot of either side asks for a recomputation, at most once per ``throttle`` seconds (the
latest state always arrives: :class:`~._throttle.Throttle` delivers the trailing one).

Traits the browser may change (``layer``, ``shown``, ``mask``, ``alpha``, ``correction``, ``selected_cell``) are
untrusted input: a value that makes no sense is logged as a warning and put back (see ``_display``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import traitlets

from ..figures.compare import difference_chart, mean_charts
from ..figures.sensitivity import layer_title
from ..figures.svg import render_svg
from ..jobs import Job
from ._codec import to_json_tree
from ._comparison_state import (
    ALPHAS,
    BROWSER_TRAITS,
    SHOWN,
    SHOWN_TITLES,
    RunSide,
    cell_distributions,
    check_alpha,
    check_comparable,
    check_correction,
    check_view_state,
    layer_view,
    side_from_folder,
    side_from_snapshot,
)
from ._display import Caption, PicturedWidget, bundle
from ._sensitivity_state import check_token_labels, fit_labels
from ._static import heatmap_alt
from ._throttle import Throttle
from ._values import MIN_THROTTLE_S, check_throttle

__all__ = ["ComparisonExplorer"]

logger = logging.getLogger(__name__)

BUNDLE = bundle("comparison_explorer.js")
LIVE_VIEW_SELECTOR = ".tscope-comparison"  # root element of a rendered view (js/src/comparison_explorer.js)


class _Source:
    """One side: where its snapshots come from, and how to hear about new ones."""

    def __init__(self, run: Any, name: str):
        from .sensitivity import SensitivityExplorer

        self.name = name
        self.explorer = self.job = None
        self.static: RunSide | None = None
        if isinstance(run, SensitivityExplorer):
            self.explorer = run
        elif isinstance(run, Job):
            self.job = run
        elif isinstance(run, (str, os.PathLike)):
            self.static = side_from_folder(run)
        elif hasattr(run, "stats") and hasattr(run, "reservoir") and hasattr(run, "layers"):
            self.static = side_from_snapshot(run, "done")
        else:
            raise TypeError(
                f"run {name} must be a SensitivityExplorer, a Job of iter_sensitivity, a results folder (a path) "
                f"or a SensitivitySnapshot; got {type(run).__name__}"
            )

    def side(self) -> RunSide | None:
        """The latest state, or None before the first batch."""
        if self.static is not None:
            return self.static
        job = self.explorer.job if self.explorer is not None else self.job
        snap = job.snapshot
        if snap is None:
            return None
        if not (hasattr(snap, "stats") and hasattr(snap, "reservoir")):
            raise TypeError(f"run {self.name}: the job yields {type(snap).__name__}, not sensitivity snapshots")
        return side_from_snapshot(snap, job.status)

    def status(self) -> str:
        if self.static is not None:
            return self.static.status
        job = self.explorer.job if self.explorer is not None else self.job
        return job.status

    def token_labels(self) -> list[str]:
        return list(self.explorer.token_labels) if self.explorer is not None else []

    def subscribe(self, callback) -> Any:
        """Call ``callback()`` on every update; returns an unsubscribe function."""
        if self.explorer is not None:
            explorer, names = self.explorer, ["done", "status", "batches"]
            handler = lambda _change: callback()  # noqa: E731
            explorer.observe(handler, names=names)

            def unsubscribe() -> None:
                try:
                    explorer.unobserve(handler, names=names)
                except ValueError:  # already removed (idempotent)
                    pass

            return unsubscribe
        if self.job is not None:
            return self.job.subscribe(lambda _job, _snap: callback())
        return lambda: None


class ComparisonExplorer(PicturedWidget):
    r"""Per-cell Welch tests of two sensitivity runs, drawn as a difference map with non-significant cells faded.

    Args:
        a: Run ``a``: a :class:`~.sensitivity.SensitivityExplorer`, a :class:`~tscope_widgets.jobs.Job` of
            ``iter_sensitivity`` (running or not), a results folder or a ``SensitivitySnapshot``.
        b: Run ``b``, the same kinds (same layers and sequence length).
        names: How the two runs are called (titles, legends).
        alpha: Significance level in ``(0, 1)``.
        correction: ``"fdr_bh"`` (Benjamini–Hochberg over the layer's tested cells), ``"bonferroni"`` or None.
        shown: ``"difference"`` (``a - b``), ``"log_ratio"`` (``ln(a / b)``) or ``"effect_size"`` (Hedges' g).
        mask: Fade the non-significant cells.
        token_labels: ``S`` strings naming the positions (default: those of an explorer side).
        throttle: Least seconds between two recomputations while a side is filling in (``>= 0.05``).

    Raises:
        TypeError: For a run of another kind, or names that are not two strings.
        ValueError: For a bad ``alpha``, ``correction``, ``shown`` or ``throttle``, or runs that hold different
            layers or cell grids (naming what differs).

    Example:
        >>> view = explorer_a.compare(explorer_b, names=("step 100", "step 2000"))  # doctest: +SKIP
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = (
        "ComparisonExplorer: live view (needs its running kernel, or widget state saved with a trusted notebook)"
    )
    picture_noun = "comparison"
    picture_waiting = "waiting for the first batch of both runs…"
    _browser_traits = BROWSER_TRAITS

    # View state: the browser may set these.
    layer = traitlets.Any(None).tag(sync=True)
    shown = traitlets.Any("difference").tag(sync=True)
    mask = traitlets.Any(True).tag(sync=True)
    alpha = traitlets.Any(0.05).tag(sync=True)
    correction = traitlets.Any("fdr_bh").tag(sync=True)
    selected_cell = traitlets.Any(None).tag(sync=True)

    # Choices and labels.
    layer_options = traitlets.List().tag(sync=True)
    shown_options = traitlets.List(list(SHOWN)).tag(sync=True)
    alpha_options = traitlets.List(list(ALPHAS)).tag(sync=True)
    names = traitlets.List(traitlets.Unicode(), ["a", "b"]).tag(sync=True)
    seq_len = traitlets.Int(0).tag(sync=True)
    token_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)

    # Data [S, S] (float32 / uint8 / int32 on the wire) and the selected cell's two distributions.
    values = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    significant = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    q = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    mean_a = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    mean_b = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    counts_a = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    counts_b = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    detail = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)

    # Status of the two runs and of the comparison.
    status = traitlets.Unicode("waiting").tag(sync=True)  # "waiting" | "running" | "done" | "error"
    status_a = traitlets.Unicode("").tag(sync=True)
    status_b = traitlets.Unicode("").tag(sync=True)
    done_a = traitlets.Int(0).tag(sync=True)
    done_b = traitlets.Int(0).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    num_tests = traitlets.Int(0).tag(sync=True)
    num_significant = traitlets.Int(0).tag(sync=True)
    updates = traitlets.Int(0).tag(sync=True)  # recomputations so far

    def __init__(
        self,
        a,
        b,
        *,
        names: Sequence[str] = ("a", "b"),
        alpha: float = 0.05,
        correction: str | None = "fdr_bh",
        shown: str = "difference",
        mask: bool = True,
        token_labels: Sequence[str] | None = None,
        throttle: float = 0.25,
    ):
        if isinstance(names, str) or len(list(names)) != 2 or not all(isinstance(n, str) for n in names):
            raise TypeError(f"names must be two strings (how runs a and b are called), got {names!r}")
        names = [str(n) for n in names]
        for option, check, value in (("alpha", check_alpha, alpha), ("correction", check_correction, correction)):
            ok, _, why = check(value)
            if not ok:
                raise ValueError(f"{option}={value!r}: {why}")
        if shown not in SHOWN:
            raise ValueError(f"shown={shown!r}: choose one of {list(SHOWN)}")
        if not isinstance(mask, bool):
            raise TypeError(f"mask must be True or False, got {mask!r}")
        throttle = check_throttle(throttle, MIN_THROTTLE_S)
        self._explicit_labels = check_token_labels(token_labels)
        self._sources = (_Source(a, names[0]), _Source(b, names[1]))
        self._lock = threading.RLock()
        self._valid = {"layer": None, "shown": shown, "mask": mask, "alpha": float(alpha),
                       "correction": correction, "selected_cell": None}
        self._sides: tuple[RunSide, RunSide] | None = None
        self._comparison = None
        sides = [s.side() for s in self._sources]
        if None not in sides:
            check_comparable(sides[0], sides[1], tuple(names))  # refuse mismatched runs up front
        super().__init__()
        with self.hold_sync():
            self.names = names
            for name in ("shown", "mask", "alpha", "correction"):
                self.set_trait(name, self._valid[name])
        self._throttle = Throttle(lambda _: self._refresh(), throttle, name="tscope-comparison")
        self._unsubscribe = [s.subscribe(lambda: self._throttle(None)) for s in self._sources]
        self._refresh()

    # ------------------------------------------------------------------ public API
    @property
    def comparison(self):
        """The :class:`~tscope_widgets.kernels.compare.Comparison` of the selected layer shown now, or None."""
        return self._comparison

    def to_bokeh(self):
        """The selected layer as a static Bokeh row: the difference map (non-significant cells faded when ``mask``
        is on), then both mean maps on one colour scale.

        Raises:
            RuntimeError: Before both runs have a first batch (or while they cannot be compared).
        """
        from ..figures.bokeh import matrix_grid

        return matrix_grid([self._charts()], width=380, height=360)

    def save_html(self, path: str | os.PathLike, *, title: str = "Where two runs differ") -> Path:
        """Write :meth:`to_bokeh` as a standalone HTML report (opens offline), with the test's summary as notes.

        Returns:
            The path written.
        """
        from ..export.html import save_report

        figure = self.to_bokeh()
        caption = self._picture_caption()
        notes = [caption.status, "Welch's t-test per cell on the runs' Welford statistics; rows: output position i, "
                 "columns: input position j."]
        return save_report(path, figure, title, notes)

    def refresh(self) -> None:
        """Recompute now from both runs' latest snapshots (updates arrive by themselves while they run)."""
        self._throttle.flush(None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both live runs have ended, then show their final state.

        Returns:
            True if both ended, False on timeout.
        """
        ended = True
        for source in self._sources:
            job = source.explorer.job if source.explorer is not None else source.job
            if job is not None:
                ended = job.wait(timeout) and ended
        self.refresh()
        if ended:
            self._refresh_pictures(own_cells=False)
        return ended

    def close(self) -> None:
        """Stop listening to both runs and close the widget (the runs go on)."""
        throttle = getattr(self, "_throttle", None)
        if throttle is not None:
            throttle.close()
            unsubscribers, self._unsubscribe = self._unsubscribe, []
            for unsubscribe in unsubscribers:
                unsubscribe()
        super().close()

    # ------------------------------------------------------------------ updates
    def _flush_updates(self) -> None:
        self._throttle.flush()

    def _refresh(self) -> None:
        """Read both runs, test the selected layer, push the arrays (any thread; under the lock)."""
        with self._lock:
            try:
                sides = [s.side() for s in self._sources]
                statuses = [s.status() for s in self._sources]
            except Exception as err:  # a source that cannot be read: say so in the view
                self._set_error(str(err))
                return
            with self.hold_sync():
                self.status_a, self.status_b = statuses
                if None in sides:
                    self.status = "error" if "error" in statuses else "waiting"
                    self.message = self._failures(statuses)
                    return
                a, b = sides
                self.done_a, self.done_b = a.done, b.done
                try:
                    check_comparable(a, b, tuple(self.names))
                except ValueError as err:
                    self._set_error(str(err))
                    return
                self._sides = (a, b)
                layers = a.layers
                if self.layer_options != layers:
                    self.layer_options = layers
                if self.layer not in layers:
                    self.set_trait("layer", layers[-1])
                S = int(a.stats[self.layer].shape[-1])
                if self.seq_len != S:
                    self.seq_len = S
                labels = self._explicit_labels or next((t for s in self._sources if (t := s.token_labels())), [])
                labels = fit_labels(labels, S) if labels else []
                if list(self.token_labels) != labels:
                    self.token_labels = labels
                self._compute()
                live = any(st in ("pending", "running", "paused") for st in statuses)
                self.status = "error" if "error" in statuses else "running" if live else "done"
                self.message = self._failures(statuses)
                self.updates += 1
        self._picture_changed()

    def _compute(self) -> None:
        """The selected layer's test into the data traits (caller holds the lock and ``hold_sync``)."""
        a, b = self._sides
        c, arrays = layer_view(a, b, self.layer, alpha=self.alpha, correction=self.correction, shown=self.shown)
        self._comparison = c
        self.values = arrays["values"]
        self.significant = arrays["significant"]
        self.q = arrays["q"]
        self.mean_a, self.mean_b = arrays["mean_a"], arrays["mean_b"]
        self.counts_a, self.counts_b = arrays["count_a"], arrays["count_b"]
        self.num_tests, self.num_significant = c.num_tests, c.num_significant
        self.detail = cell_distributions(a, b, c, self.layer, self.selected_cell)

    def _failures(self, statuses: list[str]) -> str:
        return "; ".join(f"run {s.name} failed" for s, st in zip(self._sources, statuses, strict=True) if st == "error")

    def _set_error(self, text: str) -> None:
        if self.message != text:  # once per problem, not once per update
            logger.warning("ComparisonExplorer: %s", text)
        self.status, self.message = "error", text

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        return self._validated(proposal)

    @traitlets.observe(*BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        old, new = change["old"], change["new"]
        if type(old) is type(new) and old == new:
            return
        self._picture_changed()
        if change["name"] == "mask":
            return  # drawn from `significant`: nothing to recompute
        with self._lock:
            if self._sides is not None:
                with self.hold_sync():
                    self._compute()

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        return check_view_state(name, value, layers=self.layer_options, seq_len=self.seq_len)

    # ------------------------------------------------------------------ static picture
    def _value_title(self) -> str:
        a, b = self.names
        return SHOWN_TITLES[self.shown].format(a=a, b=b)

    def _picture_caption(self) -> Caption:
        title = f"ComparisonExplorer · {layer_title(self.layer)} · {self._value_title()}"
        correction = self.correction or "no correction"
        status = (f"{self.num_significant} of {self.num_tests} cells significant (Welch, {correction}, "
                  f"α = {self.alpha:g}) · {self.names[0]}: {self.status_a}, {self.names[1]}: {self.status_b}")
        if self.status == "error":
            status += f" · {self.message}"
        attrs = {"layer": str(self.layer), "status": self.status, "significant": str(self.num_significant)}
        return Caption(title=title, status=status, alt=heatmap_alt(title, self._value_title()), attrs=attrs)

    def _picture_svg(self) -> str | None:
        if self._comparison is None or self.layer is None:
            return None
        return render_svg(self._charts())

    def _charts(self) -> list:
        """Difference chart and both mean charts of the selected layer (:mod:`~tscope_widgets.figures.compare`)."""
        c = self._comparison
        if c is None or self.layer is None:
            raise RuntimeError(
                f"nothing to draw yet (comparison {self.status}{': ' + self.message if self.message else ''}); "
                "wait until both runs have a first batch, e.g. with wait()"
            )
        labels = list(self.token_labels) or None
        names = tuple(self.names)
        values = getattr(c, self.shown).numpy()
        significant = c.significant.numpy() if self.mask else np.isfinite(values)
        diff = difference_chart(values, significant, title=f"{layer_title(self.layer)} · {self._value_title()}",
                                token_labels=labels, names=names, value_title=self._value_title())
        means = mean_charts(c.mean_a.numpy(), c.mean_b.numpy(), layer=self.layer, token_labels=labels, names=names)
        return [diff, *means]
