"""Attention over a data set: per-cell statistics of weights, entropy and rollout, streamed and resumable.

:func:`iter_attention` reads any data :mod:`tscope_widgets.data` accepts, runs the analysis copy of the
model (eager attention, so the weights are returned; transformers' default ``sdpa`` returns none)
batch by batch, and folds into one :class:`~tscope_widgets.kernels.welford.WelfordState` per layer:

- the attention weights ``[n_heads, S, S]`` (query ``i``, key ``j``; a cell counts a sample when both
  positions are tokens, so padding is excluded; causally masked cells ``j > i`` are real zeros);
- the per-query entropy ``[n_heads, S]`` (:func:`~.maps.attention_entropy`; padded queries excluded);
- the attention rollout ``[S, S]`` after that block (:func:`~.maps.attention_rollout`).

It yields an :class:`AttentionSnapshot` after each batch, so a Job can stream and checkpoint it;
``resume=`` continues from such a checkpoint, bit for bit, like
:func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import batch_stream
from ...models.adapter import Layer, LayerDict, ModelAdapter
from ..fingerprint import LazyFingerprint, fingerprint_difference
from ..sensitivity.maps import analysis_adapter
from ..streaming import BatchRun, check_counters, check_welford, checkpoint_where
from ..welford import WelfordState
from .maps import attention_entropy, attention_rollout

__all__ = ["AttentionSnapshot", "iter_attention", "STATISTICS"]

# statistic -> shape of one sample's cells, given (n_heads, S)
STATISTICS = {
    "weights": lambda n, S: (n, S, S),
    "entropy": lambda n, S: (n, S),
    "rollout": lambda n, S: (S, S),
}


@dataclass
class AttentionSnapshot:
    """Population statistics of attention after some batches; one per batch (owns copies of its states).

    Attributes:
        weights: ``LayerDict {layer: WelfordState [n_heads, S_max, S_max]}`` of attention weights.
        entropy: ``LayerDict {layer: WelfordState [n_heads, S_max]}`` of per-query entropies (nats).
        rollout: ``LayerDict {layer: WelfordState [S_max, S_max]}`` of the rollout after each layer.
        done: Samples processed so far (including resumed ones).
        total: Samples in the data set when known, else ``None``.
        batches: Batches processed so far.
        layers: Block indices.
        n_heads: Query heads per layer.
        seq_len: ``S_max``, the size of the cell grid.
        batch_size: Samples per batch requested.
        dtype: Compute dtype of the analysis copy, e.g. ``"torch.float64"``.
        max_seq_len: The ``max_seq_len`` argument of the run.
        data_sha256: sha256 of the batches processed so far.
        model_fingerprint: :class:`~..fingerprint.LazyFingerprint` of the analysed model.
    """

    weights: LayerDict
    entropy: LayerDict
    rollout: LayerDict
    done: int
    total: int | None
    batches: int
    layers: list[int]
    n_heads: int
    seq_len: int
    batch_size: int = 8
    dtype: str = ""
    max_seq_len: int | None = None
    data_sha256: str = ""
    model_fingerprint: LazyFingerprint | None = field(default=None, repr=False, compare=False)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for a checkpoint: ``<statistic>.<layer>.<key>`` for weights, entropy and rollout."""
        return {
            f"{stat}.{layer}.{k}": v
            for stat in STATISTICS
            for layer, state in getattr(self, stat).items()
            for k, v in state.state_dict().items()
        }

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description: counters and the settings a resume must match."""
        return {
            "kernel": "attention",
            "done": self.done,
            "total": self.total,
            "batches": self.batches,
            "layers": list(self.layers),
            "n_heads": self.n_heads,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "max_seq_len": self.max_seq_len,
            "fingerprint": {
                "model": None if self.model_fingerprint is None else self.model_fingerprint.get(),
                "data_samples": self.done,
                "data_sha256": self.data_sha256,
            },
        }


def iter_attention(
    adapter: ModelAdapter | torch.nn.Module,
    data,
    *,
    layers: Layer | Iterable[Layer] = "all",
    batch_size: int = 8,
    max_seq_len: int | None = None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    resume=None,
) -> Iterator[AttentionSnapshot]:
    """Stream per-cell statistics of attention weights, per-query entropy and rollout over a data set.

    Each batch runs one forward pass of the analysis copy through the last requested block (rollout
    needs every block before it); its maps are padded to ``S_max`` and folded into Welford states with
    padded positions masked out. Data and ``S_max`` are as in
    :func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity`.

    Resume: pass the ``Checkpoint`` (``.tensors``: :meth:`AttentionSnapshot.state_dict`, ``.meta``:
    :meth:`AttentionSnapshot.meta`) of an earlier run; it is refused (``ValueError`` saying what
    differs) unless model, settings (layers, batch size, dtype, max_seq_len) and the data read so far
    are the same. The first ``batches`` batches are read, hashed and skipped; the result is
    bit-identical to an uninterrupted run.

    Args:
        adapter: Model or :class:`ModelAdapter`; analysed on a private copy (eager attention).
        data: Id tensors, ``(ids, mask)``, dicts, strings with ``tokenizer``, or iterables of batches.
        layers: Block indices (negative count from the end) or ``"all"``.
        batch_size: Samples per batch (``>= 1``) for tensors and strings.
        max_seq_len: Truncation length (``>= 1``) and, for iterables of batches, ``S_max``.
        tokenizer: Hugging Face tokenizer, required for strings.
        dtype: Compute dtype; ``None`` = the model's, promoted to at least float32.
        resume: A ``Checkpoint`` or ``None``.

    Returns:
        A generator of :class:`AttentionSnapshot`.

    Raises:
        ValueError: Bad sizes or layers, linear (softmax-free) attention, empty data, a checkpoint from
            other settings, model or data.
        TypeError: Unsupported data or model, a model without attention modules.
    """
    for name, value in (("batch_size", batch_size), ("max_seq_len", max_seq_len)):
        if (value is not None or name == "batch_size") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be an int >= 1{' or None' if name == 'max_seq_len' else ''}, got {value!r}")
    model = analysis_adapter(adapter, dtype)
    if model.attention_kind != "softmax":
        raise ValueError(
            f"the model's attention is {model.attention_kind!r}: its weights are not distributions, so "
            "entropy and rollout are undefined; use a softmax-attention model"
        )
    if isinstance(layers, str) and layers == "all":
        layers = range(model.num_layers) if model.num_layers else [0]
    elif isinstance(layers, (int, str)):
        layers = [layers]
    blocks = sorted({model.attention_block(lay) for lay in layers})
    if not blocks:
        raise ValueError("no layers requested: pass block indices or 'all'")
    run = _Run(model, batch_stream(data, batch_size, max_seq_len, tokenizer), blocks, batch_size, max_seq_len)
    if resume is not None:
        run.restore(resume)
    return run.snapshots()


class _Run(BatchRun):
    """The state of one :func:`iter_attention` run: statistics (counters and resume: :class:`BatchRun`)."""

    def __init__(self, model: ModelAdapter, stream, layers: list[int], batch_size: int, max_seq_len: int | None):
        super().__init__(model, stream)
        self.layers = layers
        self.batch_size, self.max_seq_len = batch_size, max_seq_len
        self.n_heads = model.layer_heads(layers[0]).n_heads
        self.stats: dict[str, LayerDict] | None = None
        self.dtype = str(model.dtype)
        if self.seq_len is not None:
            self._allocate(self.seq_len)

    def _allocate(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self.stats = {
            stat: LayerDict(
                {lay: WelfordState(shape(self.n_heads, seq_len)) for lay in self.layers},
                num_layers=self.model.num_layers,
            )
            for stat, shape in STATISTICS.items()
        }

    def restore(self, checkpoint) -> None:
        tensors, meta = getattr(checkpoint, "tensors", None), getattr(checkpoint, "meta", None)
        if not isinstance(tensors, Mapping) or not isinstance(meta, Mapping):
            raise TypeError(f"resume must be a Checkpoint with .tensors and .meta, got {type(checkpoint).__name__}")
        if meta.get("kernel") != "attention":
            raise ValueError(f"resume checkpoint is from kernel {meta.get('kernel')!r}, not 'attention'")
        where = checkpoint_where(checkpoint)
        fingerprint = meta.get("fingerprint")
        if not isinstance(fingerprint, Mapping) or not isinstance(fingerprint.get("model"), Mapping):
            raise ValueError(f"{where} has no model and data fingerprint, so it cannot be checked; start a new run")
        want = {
            "layers": self.layers,
            "n_heads": self.n_heads,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "max_seq_len": self.max_seq_len,
        }
        if self.seq_len is not None:
            want["seq_len"] = self.seq_len
        for key, value in want.items():
            if meta.get(key) != value:
                raise ValueError(f"resume checkpoint was made with {key}={meta.get(key)!r}; this run has {value!r}")
        diff = fingerprint_difference(fingerprint["model"], self.model_fp.get())
        if diff is not None:
            raise ValueError(f"the checkpoint was made with another model: {diff}")
        done, batches, seq_len = check_counters(meta, where)
        self._allocate(seq_len)
        for stat, shape in STATISTICS.items():
            for lay in self.layers:
                prefix = f"{stat}.{lay}."
                part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                try:
                    state = WelfordState.from_state_dict(part, device="cpu")
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{where}: field {stat}.{lay}: {err}") from None
                if state.shape != shape(self.n_heads, seq_len):
                    raise ValueError(
                        f"{where}: field {stat}.{lay} has shape {list(state.shape)}, "
                        f"want {list(shape(self.n_heads, seq_len))}"
                    )
                check_welford(state, done, f"{where}: field {stat}.{lay}")
                self.stats[stat][lay] = state
        self.done, self.batches = done, batches
        self._skip_resumed(fingerprint)
        self.resumed = True

    def _update(self, ids: Tensor, mask: Tensor | None) -> None:
        weights = self.model.attention_weights(ids, mask, layers=range(self.layers[-1] + 1))
        B, S_b = ids.shape
        real = torch.ones(B, S_b, dtype=torch.bool) if mask is None else mask.to("cpu").bool()  # [B, S_b]
        rollout = attention_rollout([weights[b] for b in range(self.layers[-1] + 1)], real)  # [L, B, S_b, S_b]
        pad = self.seq_len - S_b
        cells = F.pad(real[:, :, None] & real[:, None, :], (0, pad, 0, pad))  # [B, S, S]
        queries = F.pad(real, (0, pad))  # [B, S]
        for lay in self.layers:
            a = weights[lay].detach().to("cpu", torch.float64)  # [B, nh, S_b, S_b]
            maps = {
                "weights": (F.pad(a, (0, pad, 0, pad)), cells[:, None]),
                "entropy": (F.pad(attention_entropy(a), (0, pad)), queries[:, None]),
                "rollout": (F.pad(rollout[lay].detach().to("cpu", torch.float64), (0, pad, 0, pad)), cells),
            }
            for stat, (x, valid) in maps.items():
                self.stats[stat][lay].update(torch.where(valid, x, 0.0), mask=valid)

    def _snapshot(self) -> AttentionSnapshot:
        copies = {
            stat: LayerDict({lay: st.clone() for lay, st in by_layer.items()}, num_layers=self.model.num_layers)
            for stat, by_layer in self.stats.items()
        }
        return AttentionSnapshot(
            **copies,
            done=self.done,
            total=self.stream.total,
            batches=self.batches,
            layers=list(self.layers),
            n_heads=self.n_heads,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            dtype=self.dtype,
            max_seq_len=self.max_seq_len,
            data_sha256=self.hasher.hexdigest(),
            model_fingerprint=self.model_fp,
        )
