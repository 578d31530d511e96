r"""Attention geometry during training: per-head spectra, effective ranks and attention entropy over time.

Every ``every`` calls :class:`AttentionTracker` records, at the current parameters, for every head of the
tracked layers:

- the singular values of ``W_Q, W_K, W_V, W_O`` and of the circuits ``W_QK = W_Q W_Kᵀ/√d_h`` and
  ``W_OV = W_V W_O`` (Elhage et al., 2021), with participation ratio, entropy rank (Roy & Vetterli, 2007),
  stable rank and floored condition number — :func:`~tscope_widgets.kernels.attention.head_spectra`;
- the mean attention entropy :math:`\tfrac{1}{|Q|}\sum_{(b, i) \in Q} -\sum_j A_{b,h,ij} \log A_{b,h,ij}`
  (nats) of the head on a fixed probe batch, over its real query positions ``Q`` (padding excluded; on a
  causal model the first position attends to itself only and counts with entropy 0) —
  :func:`~tscope_widgets.kernels.attention.attention_entropy`.

Like :class:`~tscope_widgets.tracking.SpectrumTracker` it never changes the training: the weights are read
(``head_spectra`` detaches them) and the probe batch runs through a private analysis copy in eval mode
with no random numbers drawn, so a run with the tracker gives bitwise the same parameters as one without.
:class:`AttentionHistory` is saved with :func:`tscope_widgets.export.save_attention_history`
(safetensors, no pickle).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import batch_list
from ..kernels.attention import KINDS, attention_entropy, head_spectra
from ..models.adapter import Layer, ModelAdapter
from ..models.registry import adapt

__all__ = ["AttentionHistory", "AttentionTracker", "RANK_MEASURES"]

logger = logging.getLogger(__name__)

RANK_MEASURES = ("participation_ratio", "entropy_rank", "stable_rank", "condition_number")


@dataclass
class AttentionHistory:
    """Records of an :class:`AttentionTracker`: NumPy arrays with one row per record (``T`` records).

    Attributes:
        steps: Training step of each record ``[T]`` int64.
        layers: The ``L`` tracked block indices.
        n_heads: Query heads per layer ``n``.
        rank: Singular values kept per matrix ``r = min(D, d_h)``.
        singular_values: ``{kind: [T, L, n, r]}`` float64, descending, ``kind`` in ``q k v o qk ov`` (``k`` and
            ``v`` of a query head are its key/value head's).
        participation_ratio: ``{kind: [T, L, n]}``.
        entropy_rank: ``{kind: [T, L, n]}``.
        stable_rank: ``{kind: [T, L, n]}``.
        condition_number: ``{kind: [T, L, n]}``.
        entropy: Mean attention entropy on the probe batch ``[T, L, n]`` (nats).
        total: Records expected in all, when known, else ``None``.
    """

    layers: list[int]
    n_heads: int
    rank: int
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    singular_values: dict[str, np.ndarray] = field(default_factory=dict)
    participation_ratio: dict[str, np.ndarray] = field(default_factory=dict)
    entropy_rank: dict[str, np.ndarray] = field(default_factory=dict)
    stable_rank: dict[str, np.ndarray] = field(default_factory=dict)
    condition_number: dict[str, np.ndarray] = field(default_factory=dict)
    entropy: np.ndarray | None = None
    total: int | None = None

    def __post_init__(self):
        L, n, r = len(self.layers), self.n_heads, self.rank
        for kind in KINDS:
            self.singular_values.setdefault(kind, np.zeros((0, L, n, r)))
            for m in RANK_MEASURES:
                getattr(self, m).setdefault(kind, np.zeros((0, L, n)))
        if self.entropy is None:
            self.entropy = np.zeros((0, L, n))

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @property
    def done(self) -> int:
        """Records so far (for a Job's progress)."""
        return len(self)

    def copy(self) -> AttentionHistory:
        """A deep copy."""
        return AttentionHistory.from_state(self.state_dict(), self.meta())

    def append(self, step: int, spectra, entropy: np.ndarray) -> None:
        """Append one record: a :class:`~tscope_widgets.kernels.attention.HeadSpectra` and entropy ``[L, n]``."""

        def add(old: np.ndarray, new) -> np.ndarray:
            row = np.asarray(new, dtype=np.float64)[None]
            if row.shape[1:] != old.shape[1:]:
                raise ValueError(
                    f"a record of shape {list(row.shape[1:])} does not fit the history's {list(old.shape[1:])}"
                )
            return np.concatenate([old, row])

        for kind in KINDS:
            self.singular_values[kind] = add(self.singular_values[kind], spectra.singular_values[kind].cpu())
            for m in RANK_MEASURES:
                getattr(self, m)[kind] = add(getattr(self, m)[kind], getattr(spectra, m)[kind].cpu())
        self.entropy = add(self.entropy, entropy)
        self.steps = np.concatenate([self.steps, np.asarray([step], np.int64)])

    def state_dict(self) -> dict[str, Tensor]:
        """Every array as a CPU tensor: ``steps``, ``entropy``, ``singular_values.<kind>``, ``<measure>.<kind>``."""
        out = {"steps": torch.from_numpy(self.steps.copy()), "entropy": torch.from_numpy(self.entropy.copy())}
        for kind in KINDS:
            out[f"singular_values.{kind}"] = torch.from_numpy(self.singular_values[kind].copy())
            for m in RANK_MEASURES:
                out[f"{m}.{kind}"] = torch.from_numpy(getattr(self, m)[kind].copy())
        return out

    def meta(self) -> dict[str, Any]:
        """JSON values: ``kind``, ``layers``, ``n_heads``, ``rank``, ``done``, ``total``."""
        return {
            "kind": "attention_history",
            "layers": list(self.layers),
            "n_heads": self.n_heads,
            "rank": self.rank,
            "done": self.done,
            "total": self.total,
        }

    @classmethod
    def from_state(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> AttentionHistory:
        """Rebuild a history from :meth:`state_dict` and :meth:`meta`, bit for bit.

        Raises:
            ValueError: If ``meta`` is not an attention history's, or an array is missing, not float64
                (``steps``: int64) or of a shape that disagrees with the others.
        """
        if meta.get("kind") != "attention_history":
            raise ValueError(f"not an attention history (meta kind={meta.get('kind')!r})")
        layers, n, r, total = meta.get("layers"), meta.get("n_heads"), meta.get("rank"), meta.get("total")
        if not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise ValueError(f"attention history: meta['layers'] must be a list of ints, got {layers!r}")
        for name, value in (("n_heads", n), ("rank", r)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"attention history: meta[{name!r}] must be an int >= 1, got {value!r}")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise ValueError(f"attention history: meta['total'] must be an int or None, got {total!r}")

        def get(name: str, dtype, shape_tail: tuple[int, ...]) -> np.ndarray:
            t = tensors.get(name)
            if not isinstance(t, Tensor):
                raise ValueError(f"attention history lacks the array {name!r}")
            a = t.detach().cpu().numpy().copy()
            if a.dtype != dtype or a.shape[1:] != shape_tail:
                raise ValueError(
                    f"attention history: {name!r} is {a.dtype} {list(a.shape)}, expected {np.dtype(dtype)} "
                    f"[T, {', '.join(map(str, shape_tail))}]"
                )
            return a

        L = len(layers)
        steps = get("steps", np.int64, ())
        arrays: dict[str, Any] = {"entropy": get("entropy", np.float64, (L, n))}
        arrays["singular_values"] = {k: get(f"singular_values.{k}", np.float64, (L, n, r)) for k in KINDS}
        for m in RANK_MEASURES:
            arrays[m] = {k: get(f"{m}.{k}", np.float64, (L, n)) for k in KINDS}
        T = steps.shape[0]
        lengths = {arrays["entropy"].shape[0]} | {a.shape[0] for a in arrays["singular_values"].values()}
        lengths |= {a.shape[0] for m in RANK_MEASURES for a in arrays[m].values()}
        if lengths != {T}:
            raise ValueError(f"attention history: arrays disagree on the number of records ({sorted(lengths)} vs {T})")
        return cls(layers=list(layers), n_heads=n, rank=r, steps=steps, total=total, **arrays)


class AttentionTracker:
    """Record per-head spectra, effective ranks and attention entropy every ``every`` training steps.

    Call :meth:`step` once per training step, or pass :meth:`trainer_callback` to a Hugging Face
    ``Trainer``. See the module docstring for what is recorded.

    Args:
        model: The model being trained (``nn.Module`` or :class:`ModelAdapter`); only read.
        data: The fixed probe batch for the attention entropy: a batch dict (``input_ids [B, S]``, optional
            ``attention_mask``), an id tensor ``[B, S]``, or a list of batch dicts.
        every: Record on every ``every``-th call of :meth:`step` (the first call records).
        layers: Block indices or ``"all"``.
        dtype: Analysis dtype (``None``: the model's, at least float32).

    Raises:
        ValueError: ``every < 1``, a probe batch without ``input_ids``, a model with linear attention.
        TypeError: A model without attention modules.
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        data,
        *,
        every: int = 10,
        layers: Layer | Iterable[Layer] = "all",
        dtype: torch.dtype | None = None,
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
        self.adapter = adapt(model)
        if self.adapter.attention_kind != "softmax":
            raise ValueError(
                f"the model's attention is {self.adapter.attention_kind!r}: its weights are not distributions, so "
                "their entropy is undefined; track a softmax-attention model"
            )
        if isinstance(data, Tensor):
            data = {"input_ids": data}
        self.data = batch_list(data)
        for i, b in enumerate(self.data):
            if not isinstance(b, Mapping) or not isinstance(b.get("input_ids"), Tensor):
                raise ValueError(f"probe batch {i} must be a dict with 'input_ids' [B, S], got {type(b).__name__}")
        self.every, self.dtype = every, dtype
        if isinstance(layers, str) and layers == "all":
            layers = range(self.adapter.num_layers)
        elif isinstance(layers, (int, str)):
            layers = [layers]
        self.layers = sorted({self.adapter.attention_block(lay) for lay in layers})
        if not self.layers:
            raise ValueError("no layers requested: pass block indices or 'all'")
        first = self.adapter.layer_heads(self.layers[0])
        self._history = AttentionHistory(self.layers, first.n_heads, min(first.q.shape[1], first.d_head))
        self._calls = 0
        self._subscribers: list[Callable[[AttentionHistory], Any]] = []

    @property
    def history(self) -> AttentionHistory:
        """A copy of the records so far."""
        return self._history.copy()

    def subscribe(self, callback: Callable[[AttentionHistory], Any]) -> Callable[[], None]:
        """Call ``callback(history)`` after each record; returns a function that unsubscribes it.

        Exceptions raised by a callback are logged and do not reach the training loop.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def step(self, model: nn.Module | ModelAdapter | None = None, *, step: int | None = None) -> bool:
        """Count one training step and record on every ``every``-th call (the first call records).

        Args:
            model: The model in its current state (default: the one given at construction).
            step: Step label of the record (default: the number of calls before this one).

        Returns:
            Whether this call recorded.
        """
        call = self._calls
        self._calls += 1
        if call % self.every:
            return False
        adapter = self.adapter if model is None else adapt(model)
        spectra = head_spectra(adapter, self.layers, dtype=self.dtype)
        self._history.append(call if step is None else int(step), spectra, self._entropy(adapter))
        for callback in list(self._subscribers):
            try:
                callback(self._history.copy())
            except Exception:  # a view's failure must not stop training
                logger.exception("AttentionTracker subscriber %r raised; ignored", callback)
        return True

    def _entropy(self, adapter: ModelAdapter) -> np.ndarray:
        """Mean entropy ``[L, n]`` of each head's attention over the real queries of the probe batches."""
        dtype = self.dtype or (adapter.dtype if adapter.dtype.itemsize >= 4 else torch.float32)
        copy_ = adapter.analysis(dtype)
        total = torch.zeros(len(self.layers), self._history.n_heads, dtype=torch.float64)
        count = 0
        for b in self.data:
            ids, mask = b["input_ids"], b.get("attention_mask")
            weights = copy_.attention_weights(ids, mask, layers=self.layers)
            real = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.to("cpu").bool()  # [B, S]
            for i, lay in enumerate(self.layers):
                h = attention_entropy(weights[lay].detach().to("cpu", torch.float64))  # [B, n, S]
                total[i] += torch.where(real[:, None], h, 0.0).sum((0, 2))  # a padded query may hold NaN
            count += int(real.sum())
        return (total / count).numpy()

    def trainer_callback(self):
        """A ``transformers.TrainerCallback`` that calls :meth:`step` at the end of every training step."""
        from transformers import TrainerCallback

        tracker = self

        class AttentionTrackerCallback(TrainerCallback):
            """Calls ``AttentionTracker.step`` at the end of each optimisation step."""

            def on_step_end(self, args, state, control, model=None, **kwargs):
                tracker.step(model, step=state.global_step)
                return control

        return AttentionTrackerCallback()
