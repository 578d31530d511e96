r"""Spectral evolution during training: a tracker called from the training loop every step.

(Longer than 500 lines because the record and its recorder are one job: every field of
:class:`SpectrumHistory` is written by one method of :class:`SpectrumTracker`, and the two change
together. The maths is in ``kernels``, including :func:`~tscope_widgets.kernels.stability.sgd_stability_threshold`.)

Every ``every`` calls :class:`SpectrumTracker` measures the loss Hessian at the current parameters on
fixed evaluation batches and appends one record to a :class:`SpectrumHistory`:

- :math:`\lambda_{max}` and :math:`\lambda_{min}` by Lanczos (``which="both"``), warm-started from the
  previous record's Ritz vectors: parameters move little between records, so the new top and bottom
  eigenvectors are close to the old ones and Lanczos needs fewer products than from a random start.
- :math:`\operatorname{tr}(H)` by Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021). Hessians of networks
  have a few outlier eigenvalues above a bulk concentrated near zero (Sagun et al. 2017; Ghorbani, Krishnan
  & Xiao, ICML 2019; Papyan 2020), which is the decaying spectrum where the sketch's exact low-rank part
  takes most of the trace and the error falls like ``1/m`` in the budget ``m`` instead of Hutchinson's
  ``1/sqrt(m)``; the outliers dominate Hutchinson's variance :math:`2 \sum_{i \ne j} H_{ij}^2`.
- per-layer gradient norms :math:`\lVert \nabla_{\theta_l} L \rVert` (``embed``, ``block0`` ... ``final``),
- :math:`\lambda_{max}` of chosen diagonal blocks :math:`H_{aa}` (e.g. one per transformer layer),
- the edge-of-stability threshold of the optimiser, and every ``density_every`` records a spectral
  density by stochastic Lanczos quadrature.

**Edge of stability.** Full-batch gradient descent with step size :math:`\eta` on a quadratic with curvature
:math:`\lambda` multiplies the error along that eigenvector by :math:`1 - \eta\lambda`, which diverges once
:math:`\lambda > 2/\eta`. Cohen, Kaur, Li, Kolter & Talwalkar ("Gradient Descent on Neural Networks Typically
Occurs at the Edge of Stability", ICLR 2021) observe that :math:`\lambda_{max}` of the training loss rises
until it reaches this threshold and then hovers at it. For heavy-ball momentum :math:`\beta` the
iteration :math:`\theta_{t+1} = \theta_t - \eta\lambda\theta_t + \beta(\theta_t - \theta_{t-1})` has a root at
:math:`-1` when :math:`\eta\lambda = 2 + 2\beta`, so the threshold is :math:`(2 + 2\beta)/\eta` (their
Appendix); :func:`sgd_stability_threshold` also covers PyTorch's dampening, Nesterov momentum and L2 weight
decay. Adaptive optimisers (Adam, AdamW, ...) have no threshold on the raw Hessian: their step is
preconditioned, and the edge of stability they reach concerns :math:`\lambda_{max}(P^{-1} H)` with the
optimiser's changing preconditioner ``P`` (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of
Stability"), so the SGD threshold is recorded as NaN for them. For ``torch.optim.Adam``/``AdamW`` the tracker
records instead the preconditioned sharpness :math:`\lambda_{max}(P^{-1} H)` with
:math:`P = \operatorname{diag}(\sqrt{\hat v} + \epsilon)`, :math:`\hat v = v / (1 - \beta_2^t)` the optimiser's
bias-corrected second moment (:func:`~tscope_widgets.kernels.stability.adam_preconditioner`), as the top
eigenvalue of the symmetric :math:`P^{-1/2} H P^{-1/2}` by Lanczos, and its threshold
:math:`(2 + 2\beta_1)/((1 - \beta_1)\eta)` (38/η for :math:`\beta_1 = 0.9`).

The tracker never modifies the training: it analyses a private copy of the model (``ModelAdapter.analysis``,
without the hooks registered on the model's modules: they are not run by the analysis)
with its own seeded random generator, so the user's parameters, gradients, modes and the global random state
are untouched, and a training run with the tracker gives bitwise the same parameters as one without.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import batch_list
from ..kernels.block_types import BlockTypeSharpness, block_type_sharpness
from ..kernels.curvature import HessianOperator, resolve_groups
from ..kernels.density import slq_density
from ..kernels.lanczos import lanczos
from ..kernels.operator import DiagonalScaledOperator
from ..kernels.stability import adam_preconditioner, adam_stability_threshold, sgd_stability_threshold
from ..kernels.trace import hutchpp_trace
from ..models.adapter import ModelAdapter
from ..models.registry import adapt

__all__ = ["SpectrumHistory", "SpectrumTracker", "sgd_stability_threshold", "layer_of_group"]

logger = logging.getLogger(__name__)

_BLOCK_GROUP = re.compile(r"block(\d+)\.")


# ======================================================================================
# labels
# ======================================================================================
def layer_of_group(group: str) -> str:
    """The layer a parameter group belongs to: ``"embed"``, ``"block{l}"`` or ``"final"`` (``ln_f``, ``head``
    and any other group after the blocks)."""
    if group == "embed" or group.startswith("embed."):
        return "embed"
    m = _BLOCK_GROUP.match(group)
    return f"block{m.group(1)}" if m else "final"


def _layer_labels(groups: Sequence[str]) -> list[str]:
    """Distinct layers of ``groups`` in model order: ``embed``, ``block0``, ..., ``final``."""
    layers = {layer_of_group(g) for g in groups}

    def order(label: str) -> tuple[int, int]:
        if label == "embed":
            return (0, 0)
        if label == "final":
            return (2, 0)
        return (1, int(label[5:]))

    return sorted(layers, key=order)


# ======================================================================================
# SpectrumHistory
# ======================================================================================
_RECORD_FIELDS = (
    "steps",
    "loss",
    "train_loss",
    "lambda_max",
    "lambda_min",
    "trace",
    "trace_stderr",
    "grad_norms",
    "block_lambda_max",
    "threshold",
    "precond_lambda_max",
    "adam_threshold",
    "lr",
    "matvecs",
    "converged",
)
_DENSITY_FIELDS = ("density_steps", "density_grid", "density")
# Fields added after the first files were written: filled with NaN when a saved history lacks them.
_LATER_FIELDS = ("precond_lambda_max", "adam_threshold")


def _empty(*shape: int, dtype=np.float64) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class SpectrumHistory:
    r"""Records of a :class:`SpectrumTracker`: NumPy arrays with one row per record (``T`` records).

    Attributes:
        steps: Training step of each record ``[T]`` int64.
        loss: Loss on the curvature data at the record ``[T]`` float64 (the point where the Hessian is taken).
        train_loss: Training loss passed to :meth:`SpectrumTracker.step` ``[T]`` (NaN when none was passed).
        lambda_max: Largest Hessian eigenvalue ``[T]``.
        lambda_min: Smallest Hessian eigenvalue ``[T]``.
        trace: Hutch++ estimate of :math:`\operatorname{tr}(H)` ``[T]`` (NaN when not tracked).
        trace_stderr: Its standard error ``[T]``.
        grad_norms: Per-layer gradient norms ``[T, L]``.
        grad_norm_labels: The ``L`` layers: ``"embed"``, ``"block0"``, ..., ``"final"`` (``ln_f``, ``head``).
        block_lambda_max: :math:`\lambda_{max}(H_{aa})` of each tracked block ``[T, G]`` (``G = 0`` when not
            tracked; NaN where not computed).
        block_labels: The ``G`` block labels.
        threshold: Edge-of-stability threshold :math:`2/\eta` (SGD), :math:`(2+2\beta)/\eta` (momentum), see
            :func:`sgd_stability_threshold` ``[T]``; NaN for other optimisers or an unknown learning rate.
        precond_lambda_max: Adam's preconditioned sharpness :math:`\lambda_{max}(P^{-1} H)`,
            :math:`P = \operatorname{diag}(\sqrt{\hat v} + \epsilon)` (see :func:`adam_preconditioner`) ``[T]``;
            NaN unless the optimiser is Adam/AdamW with state.
        adam_threshold: :math:`(2 + 2\beta_1)/((1 - \beta_1)\eta)` (Cohen et al. 2022) ``[T]``; NaN unless Adam/AdamW.
        lr: Learning rate at the record ``[T]`` (NaN when unknown).
        matvecs: Hessian-vector products spent on the record ``[T]`` int64.
        converged: Whether the Lanczos run for :math:`\lambda_{max}, \lambda_{min}` converged ``[T]`` bool.
        density_steps: Steps of the records with a spectral density ``[D]`` int64.
        density_grid: Evaluation points of each density ``[D, P]``.
        density: Spectral densities by stochastic Lanczos quadrature ``[D, P]``.
        total: Records expected in all, when known (for a Job's progress), else None.
    """

    steps: np.ndarray = field(default_factory=lambda: _empty(0, dtype=np.int64))
    loss: np.ndarray = field(default_factory=lambda: _empty(0))
    train_loss: np.ndarray = field(default_factory=lambda: _empty(0))
    lambda_max: np.ndarray = field(default_factory=lambda: _empty(0))
    lambda_min: np.ndarray = field(default_factory=lambda: _empty(0))
    trace: np.ndarray = field(default_factory=lambda: _empty(0))
    trace_stderr: np.ndarray = field(default_factory=lambda: _empty(0))
    grad_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    grad_norm_labels: list[str] = field(default_factory=list)
    block_lambda_max: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    block_labels: list[str] = field(default_factory=list)
    threshold: np.ndarray = field(default_factory=lambda: _empty(0))
    precond_lambda_max: np.ndarray = field(default_factory=lambda: _empty(0))
    adam_threshold: np.ndarray = field(default_factory=lambda: _empty(0))
    lr: np.ndarray = field(default_factory=lambda: _empty(0))
    matvecs: np.ndarray = field(default_factory=lambda: _empty(0, dtype=np.int64))
    converged: np.ndarray = field(default_factory=lambda: _empty(0, dtype=np.bool_))
    density_steps: np.ndarray = field(default_factory=lambda: _empty(0, dtype=np.int64))
    density_grid: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    density: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    total: int | None = None

    @classmethod
    def empty(cls, grad_norm_labels: Sequence[str], block_labels: Sequence[str] = ()) -> SpectrumHistory:
        """A history with no records and the given label sets."""
        return cls(
            grad_norms=_empty(0, len(grad_norm_labels)),
            grad_norm_labels=list(grad_norm_labels),
            block_lambda_max=_empty(0, len(block_labels)),
            block_labels=list(block_labels),
        )

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @property
    def done(self) -> int:
        """Records so far (for a Job's progress)."""
        return len(self)

    def copy(self) -> SpectrumHistory:
        """A deep copy (arrays and label lists)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SpectrumHistory(**{k: v.copy() if isinstance(v, (np.ndarray, list)) else v for k, v in values.items()})

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record: ``record[name]`` for every per-record array (``grad_norms [L]``,
        ``block_lambda_max [G]``, scalars for the rest; ``precond_lambda_max`` and ``adam_threshold`` default to NaN);
        optional ``density_grid [P]`` and ``density [P]``."""
        for name in _RECORD_FIELDS:
            old = getattr(self, name)
            value = record.get(name, math.nan) if name in _LATER_FIELDS else record[name]
            row = np.asarray(value, dtype=old.dtype).reshape((1,) + old.shape[1:])
            setattr(self, name, np.concatenate([old, row]))
        if record.get("density") is not None:
            grid = np.asarray(record["density_grid"], dtype=np.float64)
            dens = np.asarray(record["density"], dtype=np.float64)
            if len(self.density_steps) and grid.shape[0] != self.density_grid.shape[1]:
                raise ValueError(f"density has {grid.shape[0]} points, earlier ones {self.density_grid.shape[1]}")
            old_grid = self.density_grid if len(self.density_steps) else _empty(0, grid.shape[0])
            old_dens = self.density if len(self.density_steps) else _empty(0, grid.shape[0])
            self.density_grid = np.concatenate([old_grid, grid[None]])
            self.density = np.concatenate([old_dens, dens[None]])
            self.density_steps = np.concatenate([self.density_steps, np.asarray([record["steps"]], np.int64)])

    def to_dict(self) -> dict[str, Any]:
        """Plain values for widgets and exports: NumPy arrays (copies), label lists, ``done``/``total``."""
        out = {k: v.copy() if isinstance(v, (np.ndarray, list)) else v for k, v in self._items().items()}
        out.update(done=self.done, total=self.total)
        return out

    def _items(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def state_dict(self) -> dict[str, Tensor]:
        """Every array as a tensor (a contiguous copy, same dtype and shape), keyed by field name.

        With :meth:`meta` this is the whole history (for Job checkpoints and ``export.save_spectrum_history``).
        """
        return {
            k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in self._items().items()
            if isinstance(v, np.ndarray)
        }

    def meta(self) -> dict[str, Any]:
        """JSON values: ``kind``, the label lists, ``done`` and ``total``."""
        return {
            "kind": "spectrum_history",
            "grad_norm_labels": list(self.grad_norm_labels),
            "block_labels": list(self.block_labels),
            "done": self.done,
            "total": self.total,
        }

    @classmethod
    def from_state(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> SpectrumHistory:
        """Rebuild a history from :meth:`state_dict` and :meth:`meta`, bit for bit (CPU tensors become arrays).

        Raises:
            ValueError: If ``meta`` is not that of a spectrum history, an array is missing or has another dtype,
                or the arrays disagree on the number of records or with the labels.
        """
        if meta.get("kind") != "spectrum_history":
            raise ValueError(f"not a spectrum history (meta kind={meta.get('kind')!r})")
        labels = {}
        for name in ("grad_norm_labels", "block_labels"):
            value = meta.get(name)
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"spectrum history: meta[{name!r}] must be a list of strings, got {value!r}")
            labels[name] = list(value)
        total = meta.get("total")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise ValueError(f"spectrum history: meta['total'] must be an int or None, got {total!r}")
        template = cls.empty(labels["grad_norm_labels"], labels["block_labels"])
        names = [k for k, v in template._items().items() if isinstance(v, np.ndarray)]
        T0 = tensors["steps"].shape[0] if isinstance(tensors.get("steps"), Tensor) else 0
        tensors = {**{n: torch.full((T0,), math.nan, dtype=torch.float64) for n in _LATER_FIELDS}, **tensors}
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"spectrum history lacks arrays {missing}")
        arrays = {}
        for name in names:
            t = tensors[name]
            if not isinstance(t, Tensor):
                raise ValueError(f"spectrum history: {name!r} must be a tensor, got {type(t).__name__}")
            a = t.detach().cpu().numpy().copy()
            want = getattr(template, name)
            if a.dtype != want.dtype or a.ndim != want.ndim:
                raise ValueError(
                    f"spectrum history: {name!r} is {a.dtype} with {a.ndim} dims, "
                    f"expected {want.dtype} with {want.ndim}"
                )
            arrays[name] = a
        T, D = arrays["steps"].shape[0], arrays["density_steps"].shape[0]
        widths = {"grad_norms": len(labels["grad_norm_labels"]), "block_lambda_max": len(labels["block_labels"])}
        for name in _RECORD_FIELDS:
            if arrays[name].shape[0] != T or (name in widths and arrays[name].shape[1] != widths[name]):
                raise ValueError(
                    f"spectrum history: {name!r} has shape {arrays[name].shape}; expected {T} records"
                    + (f" of {widths[name]} values (one per label)" if name in widths else "")
                )
        if arrays["density_grid"].shape != arrays["density"].shape or arrays["density"].shape[0] != D:
            raise ValueError(
                f"spectrum history: density_grid {arrays['density_grid'].shape} and density "
                f"{arrays['density'].shape} must both be [{D}, P] (one row per density step)"
            )
        return cls(**arrays, **labels, total=total)


# ======================================================================================
# SpectrumTracker
# ======================================================================================
class SpectrumTracker:
    r"""Record the Hessian spectrum every ``every`` training steps (see the module docstring).

    Call :meth:`step` once per training step (after ``optimizer.step()``, or anywhere in the step: the
    tracker reads the parameters and touches nothing), or pass :meth:`trainer_callback` to a Hugging Face
    ``Trainer``.

    Args:
        model: The model being trained (``nn.Module`` or :class:`ModelAdapter`); only read.
        data: Fixed evaluation batches for the curvature (a batch ``{"input_ids": [B, S], ...}`` or a list of
            them). Preferred: records are then comparable over time. Without it each record uses the batch
            passed to :meth:`step`.
        every: Record on every ``every``-th call of :meth:`step` (the first call records).
        k: Eigenpairs at each end of the spectrum for Lanczos (``lambda_max``/``lambda_min`` are the extremes).
        tol: Relative Lanczos residual tolerance (see :func:`~.lanczos.iter_lanczos`).
        max_iter: Lanczos steps at most per run.
        trace_matvecs: Hutch++ budget per record (``0``: no trace; otherwise ``>= 3``).
        blocks: Diagonal blocks whose :math:`\lambda_{max}` to record: ``None``; ``"layers"`` (one block per
            transformer layer, groups ``block{l}.*``); ``"groups"`` (one block per parameter group, for the
            block-type view :meth:`type_sharpness`); a list of group names or glob patterns (one block each,
            labelled by the entry); or ``{label: [groups or patterns]}``.
        density_every: Record an SLQ spectral density every this many records (``0``: never).
        density_probes: SLQ probes.
        density_steps: Lanczos steps per SLQ probe.
        optimizer: The training optimiser; its ``param_groups[0]`` give ``lr`` (read at every record, so
            schedules show) and, for ``torch.optim.SGD``, momentum, dampening, Nesterov and weight decay.
        lr: Learning rate to use instead of the optimiser's; with no optimiser, plain gradient descent at this
            rate is assumed for the threshold.
        loss: Custom loss passed to :class:`~.curvature.HessianOperator` (``None``: the adapter's LM loss).
        dtype: Analysis dtype (``None``: the operator's default).
        seed: Seed of the tracker's own random generator (Lanczos starts, probes).

    Attributes:
        adapter: Adapter of the tracked model.
        data: The evaluation batches (a list) or None.

    Raises:
        ValueError: For ``every < 1``, bad budgets, or a block naming no parameter group.
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        data=None,
        *,
        every: int = 10,
        k: int = 1,
        tol: float = 1e-4,
        max_iter: int = 100,
        trace_matvecs: int = 30,
        blocks: None | str | Sequence[str] | Mapping[str, Sequence[str]] = None,
        density_every: int = 0,
        density_probes: int = 4,
        density_steps: int = 20,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        loss: Callable | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
    ):
        _check_int("every", every, 1)
        _check_int("k", k, 1)
        _check_int("max_iter", max_iter, 2 * k)
        _check_int("trace_matvecs", trace_matvecs, 0)
        if 0 < trace_matvecs < 3:
            raise ValueError(f"trace_matvecs must be 0 (off) or >= 3 (Hutch++), got {trace_matvecs}")
        _check_int("density_every", density_every, 0)
        _check_int("density_probes", density_probes, 1)
        _check_int("density_steps", density_steps, 1)
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number or None, got {lr!r}")
        if optimizer is not None and not hasattr(optimizer, "param_groups"):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.adapter = adapt(model)
        self.data = batch_list(data) if data is not None else None
        self.every, self.k, self.tol, self.max_iter = every, k, float(tol), max_iter
        self.trace_matvecs = trace_matvecs
        self.density_every, self.density_probes, self.density_steps = density_every, density_probes, density_steps
        self.optimizer, self.lr, self.loss, self.dtype, self.seed = optimizer, lr, loss, dtype, seed
        self._group_names = list(self.adapter.param_groups())
        self._blocks = _resolve_blocks(blocks, self.adapter.param_groups(), self.adapter.num_layers)
        layer_labels = _layer_labels(self._group_names)
        self._layer_index = {g: layer_labels.index(layer_of_group(g)) for g in self._group_names}
        self._history = SpectrumHistory.empty(layer_labels, list(self._blocks))
        self._generator = torch.Generator().manual_seed(seed)
        self._calls = 0
        self._eigenvectors: Tensor | None = None  # [N, m] Ritz vectors of the last record (warm start)
        self._block_vectors: dict[str, Tensor] = {}
        self._subscribers: list[Callable[[SpectrumHistory], Any]] = []
        self._trainer_optimizer = None

    # ----- public API ---------------------------------------------------------------------
    @property
    def history(self) -> SpectrumHistory:
        """A copy of the records so far."""
        return self._history.copy()

    @property
    def blocks(self) -> dict[str, list[str]]:
        """The tracked blocks: ``{label: [group names]}`` (patterns expanded)."""
        return {k: list(v) for k, v in self._blocks.items()}

    def type_sharpness(self, reduce: str = "mean") -> BlockTypeSharpness:
        r"""The tracked blocks' :math:`\lambda_{max}(H_{aa})` aggregated by block type over the records so far.

        Embedding, query-key, value-output, MLP, normalisation and head blocks, as in the Sharpness Disparity
        Principle (Wang et al. 2025, arXiv 2502.19002); see :func:`~tscope_widgets.kernels.block_type_sharpness`.

        Args:
            reduce: ``"mean"`` or ``"max"`` over the blocks of a type.

        Returns:
            :class:`~tscope_widgets.kernels.BlockTypeSharpness` with ``values [T, Ty]``.

        Raises:
            ValueError: Without tracked blocks, or with a block that mixes types (``blocks="layers"``): track
                one block per parameter group (``blocks="groups"``, or a list of group names).
        """
        if not self._blocks:
            raise ValueError("no blocks are tracked; create the tracker with blocks=[group names or patterns]")
        return block_type_sharpness(self._history.block_lambda_max, self._blocks, reduce=reduce)

    def subscribe(self, callback: Callable[[SpectrumHistory], Any]) -> Callable[[], None]:
        """Call ``callback(history)`` after each record; returns a function that unsubscribes it.

        Exceptions raised by a callback are logged and do not reach the training loop.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def step(self, model: nn.Module | ModelAdapter | None = None, batch=None, *, step: int | None = None,
             loss: float | Tensor | None = None) -> bool:
        """Count one training step and record on every ``every``-th call (the first call records).

        Args:
            model: The model in its current state (default: the one given at construction).
            batch: The training batch of this step; used for the curvature only when the tracker has no
                ``data``.
            step: Step label of the record (default: the number of calls before this one).
            loss: Training loss of this step, stored as ``train_loss`` (a non-finite value records NaNs).

        Returns:
            Whether this call recorded.

        Raises:
            ValueError: When it records without ``data`` and without ``batch``, or when the model's parameter
                groups differ from the tracked ones.
        """
        call = self._calls
        self._calls += 1
        if call % self.every:
            return False
        label = call if step is None else int(step)
        data = self.data if self.data is not None else (batch_list(batch) if batch is not None else None)
        if data is None:
            raise ValueError("SpectrumTracker has no evaluation data: pass data= at construction or batch= to step()")
        adapter = self.adapter if model is None else adapt(model)
        record = self._measure(adapter, data, label, loss)
        self._history.append(record)
        self._notify()
        return True

    def trainer_callback(self):
        """A ``transformers.TrainerCallback`` that calls :meth:`step` at the end of every training step.

        The step label is ``state.global_step``; the optimiser the ``Trainer`` passes is used for the
        threshold when the tracker has none. Needs ``data`` (the Trainer does not hand the batch to callbacks).

        Raises:
            ValueError: If the tracker has no ``data``.
        """
        if self.data is None:
            raise ValueError(
                "trainer_callback needs fixed evaluation batches: build the tracker with "
                "SpectrumTracker(model, data=[batch, ...])"
            )
        from transformers import TrainerCallback

        tracker = self

        class SpectrumTrackerCallback(TrainerCallback):
            """Calls ``SpectrumTracker.step`` at the end of each optimisation step."""

            def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
                if optimizer is not None:
                    tracker._trainer_optimizer = optimizer
                tracker.step(model, step=state.global_step)
                return control

        return SpectrumTrackerCallback()

    # ----- one record ---------------------------------------------------------------------
    def _measure(self, adapter: ModelAdapter, data: list, label: int, train_loss) -> dict[str, Any]:
        lr, threshold = self._lr_and_threshold()
        L, G = len(self._history.grad_norm_labels), len(self._blocks)
        record: dict[str, Any] = dict(
            steps=label,
            loss=math.nan,
            train_loss=_as_float(train_loss),
            lambda_max=math.nan,
            lambda_min=math.nan,
            trace=math.nan,
            trace_stderr=math.nan,
            grad_norms=np.full(L, np.nan),
            block_lambda_max=np.full(G, np.nan),
            threshold=threshold,
            precond_lambda_max=math.nan,
            adam_threshold=math.nan,
            lr=lr,
            matvecs=0,
            converged=False,
        )
        if train_loss is not None and not math.isfinite(record["train_loss"]):
            logger.warning("step %d: training loss is %s; recording NaNs", label, record["train_loss"])
            return record
        with torch.enable_grad():
            try:
                op = HessianOperator(adapter, data, kind="hessian", loss=self.loss, dtype=self.dtype)
            except FloatingPointError as err:  # the operator refuses a non-finite loss
                logger.warning("step %d: %s; recording NaNs", label, err)
                return record
            if list(op.offsets) != self._group_names:
                raise ValueError(
                    f"the model's parameter groups {list(op.offsets)} differ from the tracked ones "
                    f"{self._group_names}: track each model with its own SpectrumTracker"
                )
            record["loss"] = op.loss_value()
            spent = 0
            try:
                self._extremes(op, record)
                grad = op.gradient().detach()  # after Lanczos: reuses the retained gradient graph
                if torch.isfinite(grad).all():
                    record["grad_norms"] = self._layer_norms(op, grad)
                else:
                    logger.warning("step %d: the gradient is not finite; its norms are NaN", label)
                if self.trace_matvecs:
                    est = hutchpp_trace(op, self.trace_matvecs, generator=self._generator)
                    record["trace"], record["trace_stderr"] = est.value, est.stderr
                spent += self._block_maxima(op, record)
                spent += self._preconditioned(op, record, lr)
                if self.density_every and len(self._history) % self.density_every == 0:
                    dens = slq_density(op, self.density_probes, self.density_steps, generator=self._generator)
                    record["density_grid"], record["density"] = dens.grid.numpy(), dens.density.numpy()
            except torch.linalg.LinAlgError as err:  # eigh of a tridiagonal matrix holding NaN or inf
                logger.warning("step %d: the curvature is not finite (%s); recording NaNs", label, err)
                for key in ("lambda_max", "lambda_min", "trace", "trace_stderr"):
                    record[key] = math.nan
                record["block_lambda_max"] = np.full(G, np.nan)
                record.pop("density", None)
                self._eigenvectors, self._block_vectors = None, {}
            record["matvecs"] = op.num_matvecs + spent
        return record

    def _extremes(self, op: HessianOperator, record: dict) -> None:
        """Lanczos for both ends, warm-started from the last record's Ritz vectors; fills ``lambda_max``,
        ``lambda_min`` and ``converged`` (products are counted on ``op``)."""
        v0 = self._eigenvectors if _fits(self._eigenvectors, op) else None
        res = lanczos(op, k=self.k, which="both", tol=self.tol, max_iter=self.max_iter, v0=v0,
                      generator=self._generator)
        values = res.eigenvalues
        if torch.isfinite(values).all():
            record["lambda_max"], record["lambda_min"] = float(values[-1]), float(values[0])
            record["converged"] = bool(res.converged)
            self._eigenvectors = res.eigenvectors.detach().clone()
        else:
            logger.warning("step %s: Lanczos returned non-finite eigenvalues; recording NaNs", record["steps"])
            self._eigenvectors = None

    def _block_maxima(self, op: HessianOperator, record: dict) -> int:
        """Largest eigenvalue of each tracked diagonal block, warm-started; returns products spent."""
        spent = 0
        for i, (label, groups) in enumerate(self._blocks.items()):
            block = op.restrict(groups)
            prev = self._block_vectors.get(label)
            v0 = prev if _fits(prev, block) else None
            res = lanczos(block, k=1, which="largest", tol=self.tol, max_iter=self.max_iter, v0=v0,
                          generator=self._generator)
            spent += res.num_matvecs
            value = float(res.eigenvalues[-1])
            if math.isfinite(value):
                record["block_lambda_max"][i] = value
                self._block_vectors[label] = res.eigenvectors.detach().clone()
            else:
                self._block_vectors.pop(label, None)
        return spent

    def _preconditioned(self, op: HessianOperator, record: dict, lr: float) -> int:
        r"""For Adam/AdamW: :math:`\lambda_{max}(P^{-1} H)` as the top eigenvalue of the symmetric
        :math:`P^{-1/2} H P^{-1/2}` (same eigenvalues) by Lanczos, and the threshold
        :math:`(2 + 2\beta_1)/((1 - \beta_1)\eta)`; returns the products not counted on ``op`` (none)."""
        optimizer = _unwrap(self.optimizer if self.optimizer is not None else self._trainer_optimizer)
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            return 0
        record["adam_threshold"] = adam_stability_threshold(lr, optimizer.param_groups[0]["betas"][0])
        P = adam_preconditioner(optimizer, dict(self.adapter.model.named_parameters()))
        if P is None:  # before the first optimiser step
            return 0
        scaled = DiagonalScaledOperator(op, op.flatten_params(P).rsqrt())
        res = lanczos(scaled, k=1, which="largest", tol=self.tol, max_iter=self.max_iter, generator=self._generator)
        value = float(res.eigenvalues[-1])
        record["precond_lambda_max"] = value if math.isfinite(value) else math.nan
        return 0  # the products are counted on op (the scaled operator multiplies through it)

    def _layer_norms(self, op: HessianOperator, grad: Tensor) -> np.ndarray:
        """``[L]`` norms of the gradient restricted to each layer's groups."""
        sq = np.zeros(len(self._history.grad_norm_labels))
        for name, where in op.offsets.items():
            sq[self._layer_index[name]] += float(grad[where].double().square().sum())
        return np.sqrt(sq)

    def _lr_and_threshold(self) -> tuple[float, float]:
        """Learning rate and edge-of-stability threshold at this record (see the module docstring)."""
        optimizer = _unwrap(self.optimizer if self.optimizer is not None else self._trainer_optimizer)
        group = optimizer.param_groups[0] if optimizer is not None else None
        lr = float(self.lr) if self.lr is not None else (_as_float(group["lr"]) if group is not None else math.nan)
        if optimizer is None:
            return lr, sgd_stability_threshold(lr) if self.lr is not None else math.nan
        if not isinstance(optimizer, torch.optim.SGD):
            return lr, math.nan  # adaptive optimisers: no raw-Hessian threshold (module docstring)
        threshold = sgd_stability_threshold(
            lr,
            _as_float(group.get("momentum", 0.0)),
            dampening=_as_float(group.get("dampening", 0.0)),
            nesterov=bool(group.get("nesterov", False)),
            weight_decay=_as_float(group.get("weight_decay", 0.0)),
        )
        return lr, threshold

    def _notify(self) -> None:
        if not self._subscribers:
            return
        history = self.history
        for callback in list(self._subscribers):
            try:
                callback(history)
            except Exception:
                logger.exception("SpectrumTracker subscriber %r raised; ignored", callback)


# ======================================================================================
# helpers
# ======================================================================================
def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _as_float(value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, Tensor):
        return float(value.detach().double().cpu())
    return float(value)


def _unwrap(optimizer):
    """The torch optimiser inside wrappers such as accelerate's ``AcceleratedOptimizer`` (``.optimizer``)."""
    for _ in range(8):  # wrappers subclass Optimizer themselves; their class says nothing
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return optimizer


def _fits(vectors: Tensor | None, op) -> bool:
    return vectors is not None and vectors.shape[0] == op.shape[0]


def _resolve_blocks(blocks, available: Mapping[str, Any], num_layers: int) -> dict[str, list[str]]:
    """``{label: [group names]}`` from the ``blocks`` argument of :class:`SpectrumTracker`."""
    if blocks is None:
        return {}
    if isinstance(blocks, str):
        if blocks == "groups":
            return {g: [g] for g in available}
        if blocks != "layers":
            raise ValueError(
                f"blocks must be None, 'layers', 'groups', a list of groups or a dict, got {blocks!r}"
            )
        spec = {f"block{i}": [f"block{i}.*"] for i in range(num_layers)}
    elif isinstance(blocks, Mapping):
        spec = {}
        for label, groups in blocks.items():
            if not isinstance(label, str):
                raise ValueError(f"block labels must be strings, got {label!r}")
            spec[label] = [groups] if isinstance(groups, str) else list(groups)
    else:
        spec = {}
        for entry in blocks:
            if not isinstance(entry, str):
                raise ValueError(f"blocks must list group names or patterns (str), got {entry!r}")
            spec[entry] = [entry]
    out = {}
    for label, patterns in spec.items():
        try:
            names = resolve_groups(available, patterns)
        except ValueError as err:
            raise ValueError(f"block {label!r}: {err}") from None
        out[label] = [g for g in available if g in names]
    return out
