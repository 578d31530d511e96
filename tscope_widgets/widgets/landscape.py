r"""``LandscapeWidget``: a loss landscape in JupyterLab, filled in row by row.

The widget evaluates :math:`f(\alpha, \beta) = L(\theta + \alpha d_1 + \beta d_2)` on a grid around the
model's parameters :math:`\theta` with :func:`~tscope_widgets.kernels.landscape.slice_2d` in a background
:class:`~tscope_widgets.jobs.Job`, and shows it as a heatmap with contour lines, colour bar and hover values
(or as a 3D surface), the two 1D slices through a clicked grid point (the grid's row and column; nothing is
recomputed), a training trajectory projected onto the plane, and, along Hessian eigenvectors, the quadratic
model :math:`L_0 + \tfrac12 \lambda \alpha^2` on the slices through the origin (Li et al., NeurIPS 2018).
It holds no maths: directions, projections, slices and the quadratic model come from
:mod:`tscope_widgets.kernels.landscape`; this module builds the directions the user asked for and turns the
latest :class:`~tscope_widgets.kernels.landscape.LandscapeSlice` into traits.

Traits the browser may change (``selected_point``, ``log_scale``, ``view``, ``quantity``,
``show_contours``) are untrusted input: a value that makes no sense is logged as a warning and the trait is
put back to its previous value (which is sent back to the page); it never raises in the kernel. Buttons send
custom messages ``{"type": "command", "command": "pause" | "resume" | "stop"}``, validated the same way.
The grid travels as binary buffers (``_codec``; float32 on the wire, NaN for points not computed yet), at
most once per ``throttle`` seconds (the Job coalesces rows), plus once when the job pauses and once when it
ends.

The 3D surface uses three.js, bundled apart (``static/landscape_surface.js``, about 0.6 MB): its code is
sent to the page (trait ``_surface_esm``) only once a view switches to 3D, so that 2D use stays light.

Static fallback: displaying the widget makes two outputs in the cell, the widget view and then a picture
of the heatmap (an ``<img>`` of an SVG document drawn by ``figures.svg``) that stands in for the view
where it cannot run (a notebook reopened without widget state, nbconvert's HTML export, nbviewer,
untrusted notebooks). The picture is replaced by the final grid when the job ends and again by
:meth:`LandscapeWidget.wait`; see ``_display`` for how the two outputs are paired.

Threads: ``num_threads`` sets PyTorch's intra-op thread count of the job's thread only for the run (see
:class:`~tscope_widgets.jobs.Job`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import traitlets
from torch import Tensor

from ..figures.charts import resolve_log
from ..figures.landscape import QUANTITY_TITLES, landscape_chart
from ..figures.svg import render_svg
from ..jobs import Job, check_num_threads
from ..kernels.landscape import (
    DIRECTION_KINDS,
    check_grid_memory,
    direction_norm,
    eigen_span,
    make_directions,
    probe_span,
    project_trajectory,
    slice_2d,
)
from ..models.registry import adapt
from ._codec import to_json_tree
from ._controls import JobControls
from ._display import Caption, PicturedWidget
from ._landscape_state import (
    BROWSER_TRAITS,
    CHECKPOINT_MARGIN,  # noqa: F401  (importable from this module, as before)
    MIN_RESOLUTION,  # noqa: F401  (importable from this module, as before)
    QUANTITIES,
    VIEWS,
    check_direction_kind,
    check_eigenvalues,
    check_given_directions,
    check_grid_options,
    check_grids,
    check_trajectory_steps,
    check_view_state,
    direction_labels,
    nearest_index,
    quadratic_curves,
)
from ._sensitivity_state import check_log_scale
from ._values import MIN_THROTTLE_S, check_throttle

__all__ = ["LandscapeWidget", "DIRECTION_KINDS", "QUANTITIES", "VIEWS"]

logger = logging.getLogger(__name__)

_STATIC = Path(__file__).resolve().parent.parent / "static"
BUNDLE = _STATIC / "landscape_widget.js"
SURFACE_BUNDLE = _STATIC / "landscape_surface.js"
if not BUNDLE.is_file():
    raise ImportError(
        f"the widget's JavaScript bundle {BUNDLE} is missing; build it from the repository root with "
        "`npm --prefix js ci && npm --prefix js run build` (a wheel ships it prebuilt)"
    )

# QUANTITIES, VIEWS, the grid's defaults and the checks of every value received: see _landscape_state.
COMMANDS = ("pause", "resume", "stop")
_BROWSER_TRAITS = BROWSER_TRAITS
LIVE_VIEW_SELECTOR = ".tscope-landscape"  # root element of a rendered view (js/src/landscape_widget.js)
WIDGET_TEXT = "LandscapeWidget: live view (needs its running kernel, or widget state saved with a trusted notebook)"


class LandscapeWidget(JobControls, PicturedWidget):
    r"""Live 2D loss landscape :math:`L(\theta + \alpha d_1 + \beta d_2)` around a model.

    Args:
        model: A :class:`~tscope_widgets.models.TinyTransformer`, a supported Hugging Face model, or a
            :class:`~tscope_widgets.models.ModelAdapter`; evaluated on a private copy, never modified.
        data: What :func:`~tscope_widgets.kernels.landscape.slice_2d` takes: a batch dict (``input_ids``,
            optional ``attention_mask``, ``labels``) or a list of them; an id tensor ``[N, S]`` is taken as
            ``{"input_ids": ids}``.
        directions: ``"random"`` (Gaussian, filter-normalised, seeded by ``seed``), ``"eigen"`` (the top two
            Hessian eigenvectors on ``data``, unit norm, found by Lanczos here in the constructor, which
            blocks for as long as that takes), ``"pca"`` (the top two principal directions of
            ``trajectory``), ``"checkpoints"`` (the plane through the model and the two ``checkpoints``:
            :math:`d_1 = \theta_a - \theta`, :math:`d_2 = \theta_b - \theta`, so ``a`` sits at (1, 0) and
            ``b`` at (0, 1)), or a pair ``(d1, d2)`` of directions ``{parameter name: Tensor}``.
        span: The grid runs from ``-span`` to ``span`` along both directions; ``None``: for ``"eigen"``
            directions (unit-norm Hessian eigenvectors) the span where the quadratic
            model :math:`\tfrac12\lambda_{\max}\alpha^2` reaches a loss rise of one nat
            (:func:`~tscope_widgets.kernels.landscape.eigen_span`); for ``"checkpoints"``
            ``[-0.5, 1.5]``; for the other kinds (and eigenvectors without a positive eigenvalue) the
            span where the loss measured along the sharper direction has risen by one nat, at most 1
            (:func:`~tscope_widgets.kernels.landscape.probe_span`, a 1D probe of 16 points per
            direction in the constructor). ``span_rule`` says which rule chose it.
        resolution: Grid points per direction (``>= 2``; odd numbers put a point on the origin).
        alphas, betas: Explicit increasing grid coordinates (override ``span``/``resolution``).
        trajectory: Checkpoints (state dicts, models or safetensors paths) to project onto the plane and
            draw as a path with step markers (required for ``"pca"``).
        trajectory_steps: Step numbers of the trajectory's checkpoints (default ``0 .. T-1``).
        checkpoints: ``(a, b)`` for ``directions="checkpoints"``.
        eigenvalues: Hessian eigenvalues :math:`(\lambda_1, \lambda_2)` of directions given as ``(d1, d2)``
            (``None`` for one without): the quadratic model uses them. ``"eigen"`` computes its own.
        log_scale: Logarithmic colour scale (and contours in log values): ``"auto"`` (log where the values
            span decades, the explorer's rule :func:`~tscope_widgets.figures.charts.resolve_log`), True or False.
        seed: Seed of the random directions (and of the Lanczos start vector for ``"eigen"``).
        start: Start the job now; otherwise call :meth:`start`.
        throttle: Least seconds between two data updates sent to the browser (``>= 0.05``).
        points_per_call: Grid points per vmapped call (see ``slice_2d``); ``None`` = automatic.
        dtype: Compute dtype of the slices (``None`` = the model's, at least float32).
        num_threads: PyTorch intra-op threads of the job's thread while it evaluates the grid (a positive
            int), or None to leave the count alone; the process default is put back when the run ends
            (see "Threads" in :mod:`tscope_widgets.jobs`). ``"eigen"`` directions are computed in the
            constructor, in the calling thread, with its count.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For bad sizes, a missing ``trajectory``/``checkpoints``, eigenvalues with
            non-eigenvector directions, and everything the kernel refuses up front (directions that do not
            match the model, data without targets).

    Example:
        >>> w = LandscapeWidget(model, {"input_ids": ids}, directions="random", resolution=21)  # doctest: +SKIP
        >>> w  # doctest: +SKIP
    """

    _esm = BUNDLE
    live_selector = LIVE_VIEW_SELECTOR
    widget_text = WIDGET_TEXT
    picture_noun = "loss landscape"
    picture_waiting = "waiting for the first row…"
    _browser_traits = _BROWSER_TRAITS
    _commands = {command: command for command in COMMANDS}  # each calls the method of its name
    _job_name = "landscape"
    _work_unit = "row"

    # View state: the browser may set these; validated in `_validate_view_state`.
    selected_point = traitlets.Any(None).tag(sync=True)
    log_scale = traitlets.Any("auto").tag(sync=True)
    view = traitlets.Any("2d").tag(sync=True)
    quantity = traitlets.Any("loss").tag(sync=True)
    show_contours = traitlets.Any(True).tag(sync=True)

    # Choices and labels.
    direction_kind = traitlets.Unicode("").tag(sync=True)
    direction_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    quantity_options = traitlets.List(list(QUANTITIES)).tag(sync=True)
    quantity_titles = traitlets.Dict(dict(QUANTITY_TITLES)).tag(sync=True)

    # Data, as binary buffers: coordinates [A], [B]; loss and accuracy [A, B] (NaN = not computed yet);
    # the projected trajectory {points [T, 2], steps [T], label}; the quadratic model
    # {alpha [A] | None, beta [B] | None, eigenvalues [2]} (curves through the origin).
    _alphas = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    _betas = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    _loss = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    _accuracy = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    _trajectory = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    _quadratic = traitlets.Any(None).tag(sync=True, to_json=to_json_tree)
    rows_done = traitlets.Int(0).tag(sync=True)
    origin_loss = traitlets.Float(None, allow_none=True).tag(sync=True)

    # The 3D view's code, sent once a view asks for 3D; or why it cannot be sent.
    _surface_esm = traitlets.Unicode("").tag(sync=True)
    _surface_error = traitlets.Unicode("").tag(sync=True)

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
        model,
        data,
        *,
        directions="random",
        span: float | None = None,
        resolution: int = 25,
        alphas: Sequence[float] | Tensor | None = None,
        betas: Sequence[float] | Tensor | None = None,
        trajectory: Sequence[Any] | None = None,
        trajectory_steps: Sequence[int] | None = None,
        checkpoints: tuple[Any, Any] | None = None,
        eigenvalues: Sequence[float | None] | Tensor | None = None,
        log_scale: bool | str = "auto",
        seed: int = 0,
        start: bool = True,
        throttle: float = 0.1,
        points_per_call: int | None = None,
        dtype: torch.dtype | None = None,
        num_threads: int | None = None,
    ):
        throttle = check_throttle(throttle, MIN_THROTTLE_S)
        resolution, span, seed = check_grid_options(resolution, span, seed)
        ok, log_value, why = check_log_scale(log_scale)
        if not ok:
            raise (ValueError if isinstance(log_scale, str) else TypeError)(f"log_scale={log_scale!r}: {why}")
        log_scale = log_value
        self._num_threads = check_num_threads(num_threads)
        # Set before traitlets' __init__: observers may fire from there on.
        self._lock = threading.RLock()
        self._valid = {
            "selected_point": None,
            "log_scale": log_scale,
            "view": "2d",
            "quantity": "loss",
            "show_contours": True,
        }  # the last valid value of each view-state trait
        self._job: Job | None = None
        self._unsubscribe = lambda: None
        self._stop_requested = False
        self._throttle = throttle

        self._adapter = adapt(model)
        self._data = {"input_ids": data} if isinstance(data, Tensor) else data
        kind = directions if isinstance(directions, str) else "given"
        self._alphas_t, self._betas_t = check_grids(kind, span, resolution, alphas, betas)
        grid_set_by = "alphas, betas" if alphas is not None else f"resolution={resolution}"
        check_grid_memory(len(self._alphas_t), len(self._betas_t), grid_set_by)
        self._d1, self._d2, labels, self._eigenvalues = self._build_directions(
            directions, trajectory, checkpoints, eigenvalues, seed, dtype
        )
        self.span_rule = "given" if span is not None or alphas is not None or betas is not None else "default"
        if self.span_rule == "default" and kind != "checkpoints":
            if kind == "eigen" and any(v is not None and v > 0 for v in self._eigenvalues):  # unit norm
                chosen, self.span_rule = eigen_span(self._eigenvalues), "curvature"
            else:
                chosen = probe_span(self._adapter, self._data, (self._d1, self._d2), dtype=dtype,
                                    points_per_call=points_per_call)
                self.span_rule = "loss rise"
            self._alphas_t, self._betas_t = check_grids(kind, chosen, resolution, None, None)
        self._norms = (direction_norm(self._d1), direction_norm(self._d2))
        self._trajectory_points, self._trajectory_steps = self._project(trajectory, trajectory_steps)
        self._kernel_kwargs = {"points_per_call": points_per_call, "dtype": dtype}
        run = self._new_run()  # the kernel checks directions, grid and data here, before the comm opens
        super().__init__()

        with self.hold_sync():
            self.direction_kind = kind
            self.direction_labels = labels
            self.set_trait("log_scale", log_scale)
            self._alphas = self._alphas_t.numpy()
            self._betas = self._betas_t.numpy()
            if self._trajectory_points is not None:
                self._trajectory = {
                    "points": self._trajectory_points.numpy(),
                    "steps": self._trajectory_steps,
                    "label": "trajectory",
                }
        self._new_job(run)
        if start:
            self.start()

    # ------------------------------------------------------------------ public API
    @property
    def snapshot(self):
        """The latest :class:`~tscope_widgets.kernels.landscape.LandscapeSlice`, or None before the first row."""
        return self._job.snapshot

    @property
    def alphas(self) -> np.ndarray:
        """``[A]`` float64 grid coordinates along the first direction."""
        return self._alphas_t.numpy().copy()

    @property
    def betas(self) -> np.ndarray:
        """``[B]`` float64 grid coordinates along the second direction."""
        return self._betas_t.numpy().copy()

    @property
    def loss(self) -> np.ndarray:
        """``[A, B]`` float64 loss :math:`L(\\theta + \\alpha_i d_1 + \\beta_j d_2)`; NaN where not computed yet."""
        return self._grid_values("loss")

    @property
    def accuracy(self) -> np.ndarray:
        """``[A, B]`` float64 token accuracy at each grid point; NaN where not computed yet."""
        return self._grid_values("accuracy")

    @property
    def directions(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(d1, d2)``: the directions ``{parameter name: Tensor}`` of the plane."""
        return self._d1, self._d2

    @property
    def eigenvalues(self) -> np.ndarray | None:
        """``[2]`` float64 Hessian eigenvalues of the directions (NaN for one without), or None."""
        return None if self._eigenvalues is None else self._eigenvalues.numpy().copy()

    @property
    def trajectory_points(self) -> np.ndarray | None:
        """``[T, 2]`` float64 coordinates :math:`(\\alpha_t, \\beta_t)` of the trajectory, or None."""
        return None if self._trajectory_points is None else self._trajectory_points.numpy().copy()

    @property
    def selected_index(self) -> tuple[int, int] | None:
        """``(i, j)`` grid indices of ``selected_point``, or None."""
        point = self.selected_point
        if point is None:
            return None
        return nearest_index(self._alphas_t, point[0]), nearest_index(self._betas_t, point[1])

    # ----- export
    def to_bokeh(self, *, quantity: str | None = None, contours: bool | None = None):
        """The current grid as a static Bokeh figure: heatmap, contour lines, trajectory, colour bar, hover.

        Args:
            quantity: ``"loss"`` or ``"accuracy"``; None = the one shown.
            contours: Draw contour lines; None = as shown.

        Returns:
            A ``bokeh.plotting.figure``; the colour scale is logarithmic when ``log_scale`` is on (or
            ``"auto"`` and the values span decades).

        Raises:
            RuntimeError: Before the first row is done.
            ValueError: For an unknown quantity.
        """
        from ..figures.bokeh import landscape_chart_figure

        snap = self._require_snapshot()
        quantity = self.quantity if quantity is None else quantity
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {quantity!r}; choose from {list(QUANTITIES)}")
        contours = self.show_contours if contours is None else contours
        return landscape_chart_figure(self._chart(snap, quantity, bool(contours)))

    def save_html(self, path: str | os.PathLike, *, title: str = "Loss landscape", notes=None) -> Path:
        """Write a standalone HTML report (BokehJS inlined: opens offline) of :meth:`to_bokeh`.

        Args:
            path: Output ``.html`` file.
            title: Heading.
            notes: Text under the heading; default: the directions, the grid and the job status.

        Returns:
            The path written.
        """
        from ..export.html import save_report

        snap = self._require_snapshot()
        figure = self.to_bokeh()
        if notes is None:
            a, b = self.alphas, self.betas
            notes = [
                f"L(θ + α d1 + β d2) on a {a.size} × {b.size} grid, α in [{a[0]:.4g}, {a[-1]:.4g}], "
                f"β in [{b[0]:.4g}, {b[-1]:.4g}]; {self._rows_text(snap)}; job {self._job.status}.",
                f"d1: {self.direction_labels[0]}. d2: {self.direction_labels[1]}.",
                f"Loss at the origin (the model's parameters): {snap.origin_loss:.6g}.",
            ]
        return save_report(path, figure, title, notes)

    # ------------------------------------------------------------------ directions
    def _build_directions(self, directions, trajectory, checkpoints, eigenvalues, seed, dtype):
        """``(d1, d2, [label1, label2], eigenvalues [2] or None)`` for the requested kind."""
        if isinstance(directions, str):
            check_direction_kind(directions, eigenvalues)
            made = make_directions(
                directions,
                self._adapter,
                data=self._data,
                seed=seed,
                dtype=dtype,
                trajectory=trajectory,
                checkpoints=checkpoints,
            )
            d1, d2 = made.directions
            evals = made.eigenvalues[:2].clone() if directions == "eigen" else None
            ratio = made.explained_variance_ratio
            labels = direction_labels(directions, d1, d2, seed=seed, eigenvalues=evals, explained=ratio)
            return d1, d2, labels, evals
        d1, d2 = check_given_directions(directions)
        evals = check_eigenvalues(eigenvalues)
        return d1, d2, direction_labels("given", d1, d2, eigenvalues=evals), evals

    def _project(self, trajectory, steps) -> tuple[Tensor | None, np.ndarray | None]:
        if trajectory is None:
            if steps is not None:
                raise ValueError("trajectory_steps needs a trajectory")
            return None, None
        items = list(trajectory)
        model = self._adapter.model
        points = project_trajectory(items, self._d1, self._d2, origin=model, reference=model)
        return points.to(torch.float64).cpu(), check_trajectory_steps(steps, len(items))

    # ------------------------------------------------------------------ job plumbing
    def _new_run(self):
        """A fresh ``slice_2d`` generator (its arguments are checked here, in the caller)."""
        return slice_2d(
            self._adapter, self._data, self._d1, self._d2, self._alphas_t, self._betas_t, **self._kernel_kwargs
        )

    def _clear_data(self) -> None:
        self._loss = self._accuracy = None
        self.rows_done = 0

    def _sync_data(self) -> None:
        snap = self._job.snapshot
        if snap is None:
            return
        self._loss = snap.loss.numpy()
        self._accuracy = snap.accuracy.numpy()
        self.rows_done = int(snap.rows_done)
        origin = float(snap.origin_loss)
        if math.isfinite(origin) and self.origin_loss != origin:
            self.origin_loss = origin
            self._quadratic = self._quadratic_curves(origin)

    def _quadratic_curves(self, origin_loss: float) -> dict[str, Any] | None:
        return quadratic_curves(self._alphas_t, self._betas_t, self._eigenvalues, self._norms, origin_loss)

    def _grid_values(self, quantity: str) -> np.ndarray:
        snap = self.snapshot
        if snap is None:
            return np.full((self._alphas_t.numel(), self._betas_t.numel()), np.nan)
        return getattr(snap, quantity).to(torch.float64).numpy().copy()

    # ------------------------------------------------------------------ static picture
    def _picture_caption(self) -> Caption:
        snap = self.snapshot
        quantity = self.quantity
        status = f"job {self._job.status}"
        if snap is not None:
            status = f"{self._rows_text(snap)} · {status}"
        if self._job.status == "error":
            status += f": {self._job.message}"
        title = f"LandscapeWidget · {QUANTITY_TITLES[quantity]} · {self.direction_kind} directions"
        return Caption(
            title=title,
            status=status,
            alt=f"{title}: heatmap of {quantity} over the plane (α across, β upwards) with contour lines",
            attrs={"status": self._job.status, "rows": str(snap.rows_done if snap is not None else 0)},
        )

    def _picture_svg(self) -> str | None:
        """The current grid (quantity, colour scale and contours as shown), or None before the first row."""
        snap = self.snapshot
        if snap is None or not np.isfinite(self._grid_values(self.quantity)).any():
            return None
        return render_svg([self._chart(snap, self.quantity, bool(self.show_contours))])

    def _chart(self, snap, quantity: str, contours: bool):
        """The view's chart description (:func:`~tscope_widgets.figures.landscape_chart`) of ``quantity``."""
        labels = list(self.direction_labels) or ["", ""]
        return landscape_chart(
            self.alphas,
            self.betas,
            self._grid_values(quantity),
            value_title=QUANTITY_TITLES[quantity],
            value_name=quantity,
            title=f"{QUANTITY_TITLES[quantity]} · {self._rows_text(snap)}",
            x_label=f"α · {labels[0]}",
            y_label=f"β · {labels[1]}",
            log=resolve_log(self.log_scale, self._grid_values(quantity)),
            contours=contours,
            trajectory=self.trajectory_points,
            trajectory_steps=self._trajectory_steps,
        )

    # ------------------------------------------------------------------ browser input
    @traitlets.validate(*_BROWSER_TRAITS)
    def _validate_view_state(self, proposal) -> Any:
        """Canonical form of a valid value (a point snapped to the grid, sent back to the page if it
        differs); for nonsense from Python, a warning and the last valid value."""
        return self._validated(proposal)

    @traitlets.observe("quantity", "log_scale", "show_contours")  # what the static picture draws
    def _on_view_state(self, change) -> None:
        if type(change["old"]) is not type(change["new"]) or change["old"] != change["new"]:
            self._picture_changed()

    @traitlets.observe("view")
    def _on_view(self, change) -> None:
        if change["new"] == "3d":
            self._load_surface_code()

    def _load_surface_code(self) -> None:
        """Send the 3D view's code to the page (once), or say why it cannot be sent."""
        if self._surface_esm or self._surface_error:
            return
        try:
            self._surface_esm = SURFACE_BUNDLE.read_text(encoding="utf-8")
        except OSError as e:
            why = (
                f"its JavaScript bundle {SURFACE_BUNDLE.name} could not be read ({e.strerror or e}); "
                "build it with `npm --prefix js run build`"
            )
            logger.warning("3D view unavailable: %s", why)
            self._surface_error = why

    def _check(self, name: str, value: Any) -> tuple[bool, Any, str]:
        """``(ok, canonical value, reason if not ok)`` for a view-state trait (see ``check_view_state``)."""
        return check_view_state(name, value, alphas=self._alphas_t, betas=self._betas_t)

    # ------------------------------------------------------------------ helpers
    def _require_snapshot(self):
        snap = self.snapshot
        if snap is None:
            raise RuntimeError(
                f"no rows yet: the job ({self._job.status}) has not finished a row; "
                "start() it and try again after the first update"
            )
        return snap

    @staticmethod
    def _rows_text(snap) -> str:
        return f"{snap.rows_done} of {snap.total} rows"

