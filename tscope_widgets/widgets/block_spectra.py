r"""``BlockSpectraWidget``: the spectra of the diagonal Hessian blocks, their heterogeneity and the sharpness by
block type, live in JupyterLab.

The panel Zhang et al. ("Why Transformers Need Adam: A Hessian Perspective", NeurIPS 2024) draw, next to the
Sharpness Disparity order of Wang et al. (ICML 2025):

- the stochastic-Lanczos-quadrature density of each picked block :math:`H_{aa}`, normalised by its
  10th-largest Ritz value and drawn on the signed log scale with a floor (overlaid in one chart, or side by
  side on a shared y range), on a log y axis;
- the Jensen–Shannon distances between all block densities as a heatmap, titled with their mean
  :math:`JS^0`;
- :math:`S(t)`, each block type's mean :math:`\lambda_{\max}(H_{aa})` (largest Ritz value of the block), as
  points in the principle's order :math:`S(\mathrm{Emb}) < S(\mathrm{QK}) < S(\mathrm{FFN}) < S(\mathrm{VO})
  < S(\mathrm{Norm})`, with the ratios of neighbours and whether the order holds.

Sources: a model and data (the widget runs
:func:`~tscope_widgets.kernels.block_density.iter_block_densities` in a background
:class:`~tscope_widgets.jobs.Job` and shows every block as it finishes), a finished ``BlockDensities`` (or
``{label: SpectralDensity}``) via ``densities=``, or the output folder of ``tscope run`` with ``[analysis]
kind = "blocks"`` via :meth:`BlockSpectraWidget.from_results`.

No maths here: the numbers come from the kernels (``_block_spectra_state.blocks_view``), the charts from
``figures.block_spectra``. Traits the browser may change (``selected_blocks``, ``overlay``, ``log_y``) are
untrusted and checked by ``_block_spectra_state.check_view_state``; nonsense is logged and put back.
Displaying the widget also shows a static picture of its charts (see ``_display``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch
import traitlets

from ..figures.block_spectra import block_spectra_charts
from ..figures.block_types import type_table_html
from ..figures.svg import render_svg
from ..jobs import Job, check_num_threads
from ..kernels.block_density import iter_block_densities
from ..models.registry import adapt
from ._block_spectra_state import (
    BROWSER_TRAITS,
    blocks_view,
    check_block_counts,
    check_view_state,
    load_blocks_folder,
    view_wire,
)
from ._codec import to_json_tree
from ._controls import JobControls
from ._display import TERMINAL, Caption, PicturedWidget, bundle
from ._values import MIN_THROTTLE_S, check_flag, check_throttle, is_int

__all__ = ["BlockSpectraWidget"]

logger = logging.getLogger(__name__)

BUNDLE = bundle("block_spectra_widget.js")

LIVE_VIEW_SELECTOR = ".tscope-blocks"  # root element of a rendered view (js/src/block_spectra_widget.js)
WIDGET_TEXT = "BlockSpectraWidget: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class BlockSpectraWidget(JobControls, PicturedWidget):
    r"""Block Hessian spectra, their Jensen–Shannon heterogeneity and the sharpness by block type.

    Args:
        model: A supported model or :class:`~tscope_widgets.models.ModelAdapter` (read only: the kernel works
            on a private analysis copy), with ``data``; or None with ``densities=``.
        data: A batch ``{"input_ids": [B, S], ...}`` or a list of them.
        groups: The blocks (see :func:`~tscope_widgets.kernels.block_density.iter_block_densities`): None (one
            per parameter group), names or patterns, or ``{label: groups}``.
        num_probes: Gaussian probes per block (Zhang et al.: 10).
        num_steps: Lanczos steps per probe (Zhang et al.: 100).
        densities: A finished ``BlockDensities`` or ``{label: SpectralDensity}`` to show (no job).
        selected: Blocks whose densities are drawn at first (None: all).
        overlay: Overlay the densities in one chart (else side by side).
        log_y: Logarithmic y axes.
        seed: Seed of the probes.
        dtype: Analysis dtype (float64 as Zhang et al.).
        start: Start the job now (else call :meth:`start`).
        throttle: Least seconds between two data updates sent to the browser (``>= 0.05``).
        num_threads: PyTorch intra-op threads of the job's thread while it runs, or None.

    Raises:
        ValueError: For both or neither of ``model``/``densities``, bad counts, throttle or blocks.
        TypeError: For densities of the wrong kind or flags that are not booleans.

    Example:
        >>> w = BlockSpectraWidget(model, {"input_ids": ids}, num_probes=4, num_steps=30)  # doctest: +SKIP
        >>> w  # doctest: +SKIP
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_waiting = "waiting for the first block…"
    _browser_traits = BROWSER_TRAITS
    _commands = {"pause": "pause", "resume": "resume", "stop": "stop"}
    _job_name = "block-densities"
    _work_unit = "block"

    # View state: the browser may set these.
    selected_blocks = traitlets.Any([]).tag(sync=True)
    overlay = traitlets.Any(True).tag(sync=True)
    log_y = traitlets.Any(True).tag(sync=True)

    # Data: the view (see _block_spectra_state.view_wire), where it comes from.
    view = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    block_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    source = traitlets.Unicode("job").tag(sync=True)  # "job", "densities" or "results"

    # Job status (JobControls).
    status = traitlets.Unicode("pending").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    done = traitlets.Int(0).tag(sync=True)
    total = traitlets.Int(None, allow_none=True).tag(sync=True)
    rate = traitlets.Float(0.0).tag(sync=True)
    eta = traitlets.Float(None, allow_none=True).tag(sync=True)
    elapsed = traitlets.Float(0.0).tag(sync=True)

    def __init__(
        self,
        model=None,
        data=None,
        groups=None,
        num_probes: int = 10,
        num_steps: int = 100,
        *,
        densities=None,
        selected=None,
        overlay: bool = True,
        log_y: bool = True,
        seed: int = 0,
        dtype: torch.dtype | None = torch.float64,
        start: bool = True,
        throttle: float = 0.1,
        num_threads: int | None = None,
        _source: str | None = None,
    ):
        if (model is None) == (densities is None):
            raise ValueError("pass either a model and data (a live run) or densities= (a finished result), not both")
        if model is not None and data is None:
            raise ValueError("a live run needs data: a batch {'input_ids': [B, S]} or a list of them")
        num_probes, num_steps = check_block_counts(num_probes, num_steps)
        if not is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        overlay, log_y = check_flag(overlay, "overlay"), check_flag(log_y, "log_y")
        self._throttle = check_throttle(throttle, MIN_THROTTLE_S)
        self._num_threads = check_num_threads(num_threads)
        fixed = None if densities is None else blocks_view(densities)
        if fixed is None and densities is not None:
            raise ValueError("densities holds no block: nothing to show")
        if selected is not None:
            if isinstance(selected, str) or not all(isinstance(g, str) for g in selected):
                raise TypeError(f"selected must be a list of block labels, got {selected!r}")
            unknown = [g for g in selected if fixed is not None and g not in fixed["labels"]]
            if unknown:
                raise ValueError(f"selected names blocks {unknown} that are not among {fixed['labels']}")
        self._lock = threading.RLock()
        self._valid = {"selected_blocks": [], "overlay": overlay, "log_y": log_y}
        self._job: Job | None = None
        self._unsubscribe = lambda: None
        self._stop_requested = False
        self._view: dict[str, Any] | None = None
        self._selection = None if selected is None else list(selected)  # applied as blocks arrive
        self._showing = False  # _show sets selected_blocks: not the user's choice
        if model is not None:
            self._kernel_args = (adapt(model), data, groups, num_probes, num_steps)
            self._kernel_kwargs = {"dtype": dtype, "seed": int(seed)}
            run = self._new_run()  # a generator: the kernel checks groups and data at its first block (in the job)
        super().__init__()
        with self.hold_sync():
            self.set_trait("overlay", overlay)
            self.set_trait("log_y", log_y)
        if fixed is not None:
            self.source = _source or "densities"
            self.status = "done"
            with self._lock, self.hold_sync():
                self._show(fixed)
            return
        self.source = "job"
        self._new_job(run)
        if start:
            self.start()

    @classmethod
    def from_results(cls, path: str | os.PathLike, **kwargs: Any) -> BlockSpectraWidget:
        """The view of a ``tscope run`` output folder with ``[analysis] kind = "blocks"``.

        Args:
            path: The folder (``blocks.safetensors``, ``meta.json``).
            **kwargs: ``selected``, ``overlay``, ``log_y``, ``throttle``.

        Raises:
            FileNotFoundError, ValueError: For a missing folder or one of another kind (see
                ``_block_spectra_state.load_blocks_folder``).
        """
        return cls(densities=load_blocks_folder(path), _source="results", **kwargs)

    # ------------------------------------------------------------------ public API
    @property
    def result(self) -> dict[str, Any] | None:
        """The view shown: ``labels``, ``distances [G, G]``, ``js_mean``, ``block_lambda_max [G]``, ``types``
        ... (float64 arrays; see ``_block_spectra_state.blocks_view``), or None before the first block."""
        with self._lock:
            return None if self._view is None else dict(self._view)

    def start(self) -> None:
        """Start the job (see :class:`~._controls.JobControls`). Raises RuntimeError for a fixed result."""
        self._require_job()
        super().start()

    def pause(self) -> None:
        """Pause after the block in flight."""
        self._require_job()
        super().pause()

    def resume(self) -> None:
        """Continue a paused job."""
        self._require_job()
        super().resume()

    def stop(self) -> None:
        """Stop after the block in flight (the blocks done stay)."""
        self._require_job()
        super().stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended and the widget shows it (True at once for a fixed result)."""
        return True if self._job is None else super().wait(timeout)

    def to_bokeh(self):
        """The charts and the type table as a static Bokeh layout.

        Raises:
            RuntimeError: Before the first block.
        """
        from bokeh.layouts import column
        from bokeh.models import Div

        from ..figures.bokeh import chart_figure

        with self._lock:
            if self._view is None:
                raise RuntimeError("nothing to export yet: no block density is done")
            charts, table = self._charts(), self._table_html()
        return column(*(chart_figure(c) for c in charts), *([Div(text=table)] if table else []))

    # ------------------------------------------------------------------ job plumbing
    def _require_job(self) -> None:
        if self._job is None:
            raise RuntimeError(f"this widget shows a finished result ({self.source}); there is no job to control")

    def _new_run(self):
        adapter, data, groups, probes, steps = self._kernel_args
        generator = torch.Generator().manual_seed(self._kernel_kwargs["seed"])
        return iter_block_densities(adapter, data, groups, probes, steps, dtype=self._kernel_kwargs["dtype"],
                                    generator=generator)

    def _clear_data(self) -> None:
        self._view = None
        self.view = None
        self.block_labels = []
        self._picture_changed()

    def _sync_data(self) -> None:
        snap = self._job.snapshot
        if snap is None:
            return
        view = blocks_view(snap)
        if view is not None:
            self._show(view)

    def _show(self, view: dict[str, Any]) -> None:
        """Put a view into the traits (the caller holds the lock and ``hold_sync``)."""
        self._picture_changed()
        self._view = view
        labels = view["labels"]
        if labels != self.block_labels:
            self.block_labels = labels
            wanted = labels if self._selection is None else [g for g in labels if g in set(self._selection)]
            self._showing = True
            try:
                self.set_trait("selected_blocks", wanted)
            finally:
                self._showing = False
        self.view = view_wire(view)

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        return self._validated(proposal)

    @traitlets.observe(*BROWSER_TRAITS)
    def _on_view_state(self, change) -> None:
        if change["name"] == "selected_blocks" and not self._showing:
            self._selection = list(change["new"])  # the user's choice, kept as more blocks arrive
        self._picture_changed()

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        return check_view_state(name, value, labels=list(self.block_labels))

    # ------------------------------------------------------------------ static picture
    def _charts(self):
        return block_spectra_charts(self._view, list(self.selected_blocks), overlay=bool(self.overlay),
                                    log=bool(self.log_y))

    def _table_html(self) -> str:
        types = None if self._view is None else self._view["types"]
        if types is None:
            return ""
        return type_table_html(types["types"], types["values"], types["counts"], types["ratios"], types["follows"])

    def _picture_caption(self) -> Caption:
        with self._lock:
            view, job = self._view, self._job
            status = "done" if job is None else job.status
            table = self._table_html()
        G = 0 if view is None else len(view["labels"])
        text = f"{G} blocks" if view is None else f"{view['done']} of {view['total']} blocks"
        if view is not None and view["js_mean"] is not None:
            text += f" · JS⁰ = {view['js_mean']:.3g}"
        text += f" · {self.source} {status}" + (f": {job.message}" if job is not None and status == "error" else "")
        state = status if status in TERMINAL else ("pending" if view is None else "running")
        return Caption(
            title="BlockSpectraWidget · Hessian block spectra, heterogeneity and sharpness by block type",
            status=text,
            alt="line charts of the normalised block densities, a heatmap of the Jensen–Shannon distances "
            "between blocks and a point chart of the sharpness by block type",
            attrs={"status": state, "blocks": str(G)},
            extra_html=table,
        )

    def _picture_svg(self) -> str | None:
        with self._lock:
            return render_svg(self._charts()) if self._view is not None else None

