"""``ModelAdapter``: one uniform view of a transformer for every analysis.

An adapter names the parts of a model that analyses need (token embedding, the list of blocks,
the final norm, the LM head) and builds on them:

- ``forward_from_embeddings(x, mask, layers, source)``: hidden states of the requested layers as a
  differentiable function of the source activations ``x`` (token embeddings, or the residual stream
  entering block ``source``). Implemented with forward hooks on the blocks, so the model's own
  forward (rotary embeddings, masks, position ids) runs unchanged; the pass stops after the last
  block that is needed.
- ``analysis(dtype, device)``: an adapter over a *copy* of the model for analysis, in eval mode,
  with eager attention and the requested dtype. The copy shares parameter storage with the user's
  model when dtype and device already match, so it costs no memory; the user's model is never
  touched (dtype, device, train/eval mode, ``requires_grad`` and attention implementation stay).
- ``loss(batch)``: LM cross-entropy computed in the logits' dtype.

Layer convention: layer ``l`` is the raw output of block ``l`` (the residual stream before any final
norm), ``0 <= l < num_layers``; negative indices count from the end; ``"final"`` is the output of the
final norm (the last block's output where the model has none).
"""

from __future__ import annotations

import abc
import copy
import fnmatch
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import HeadWeights, LayerHeads

Layer = int | str
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ParamSlice:
    """A parameter, or a slice of a fused parameter, that belongs to a parameter group.

    Attributes:
        name: Name of the parameter in ``model.named_parameters()``.
        index: Tuple of slices and ints selecting this group's part of a fused tensor (e.g. the
            query columns of GPT-2's ``c_attn``), or ``None`` for the whole parameter.
        view_shape: Shape the parameter is viewed as before ``index`` is applied, or ``None``.
            Needed where a fused tensor interleaves its parts: GPT-NeoX's ``query_key_value.weight``
            ``[3D, D]`` is viewed as ``[n_head, 3, d_head, D]``; its queries are
            ``index=(slice(None), 0)``.
    """

    name: str
    index: tuple[slice | int, ...] | None = None
    view_shape: tuple[int, ...] | None = None

    def view(self, params: Mapping[str, Tensor]) -> Tensor:
        """The selected part of ``params[self.name]`` (a view sharing its storage, no copy)."""
        t = params[self.name]
        if self.view_shape is not None:
            t = t.view(self.view_shape)
        return t if self.index is None else t[self.index]


class _StopForward(Exception):
    """Raised in a hook once every requested layer has been captured."""


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class LayerDict(dict):
    """A dict keyed by canonical layer labels that also answers negative indices (``d[-1]``)."""

    def __init__(self, data=(), num_layers: int = 0):
        super().__init__(data)
        self.num_layers = num_layers

    def __missing__(self, key):
        if isinstance(key, int) and key < 0 and key + self.num_layers in self:
            return self[key + self.num_layers]
        raise KeyError(f"layer {key!r} not in results; available: {list(self.keys())}")


# The per-module hook tables of torch.nn.Module that a user's register_*_hook calls fill.
_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def drop_user_hooks(model: nn.Module) -> None:
    """Remove every module hook of ``model`` in place (forward, forward-pre, backward, state-dict hooks).

    Meant for the private analysis copy (:meth:`ModelAdapter.analysis`), whose hook tables are copies of the
    user's: emptying them leaves the user's model and its hooks untouched.
    """
    for module in model.modules():
        for table in _HOOK_TABLES:
            if getattr(module, table, None):
                setattr(module, table, OrderedDict())
        if getattr(module, "_is_full_backward_hook", None) is not None:
            module._is_full_backward_hook = None


class ModelAdapter(abc.ABC):
    """Base class of all adapters. Subclasses set the attributes below and may override hooks.

    Subclass contract:
        ``blocks``: the ``nn.ModuleList`` of transformer blocks, in order.
        ``final_norm``: the module applied after the last block, or ``None``.
        ``embedding``: the token-embedding ``nn.Embedding``.
        ``causal``: whether position ``i`` only sees positions ``<= i``.
        ``_run(inputs_embeds, attention_mask)``: the model's forward from token embeddings,
        returning logits ``[B, S, V]``.
        ``_param_groups()``: ordered ``{group_name: [ParamSlice, ...]}`` (``param_groups()`` adds heads).
        ``_head_param_slices(params, block)``: per-head slices of the block's q, k, v, o projections.
        ``_prepare_analysis_copy(model, dtype)``: make the copy analysable (eager attention, ...).
        ``_layer_heads(block)``: the block's per-head weights as views (:class:`LayerHeads`).
        ``_attention_probe(block)``: the module whose forward output carries the block's attention
        weights, and a function extracting them (``[B, n_heads, S, S]``) from that output.
    """

    causal: bool = True
    # True on adapters returned by ``analysis()``: their model is a private copy.
    is_analysis_copy: bool = False

    def __init__(self, model: nn.Module):
        self.model = model

    # ----- subclass hooks -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks in order (``blocks[l]`` is layer ``l``), as held by the model."""

    @property
    def final_norm(self) -> nn.Module | None:
        """The norm between the last block and the head (layer ``"final"``), or ``None`` (post-norm, none)."""
        return None

    @property
    @abc.abstractmethod
    def embedding(self) -> nn.Embedding:
        """The token embedding ``[V, D]`` (positions, if learned, are not part of it)."""

    @abc.abstractmethod
    def _run(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> Tensor: ...

    @abc.abstractmethod
    def _param_groups(self) -> dict[str, list[ParamSlice]]:
        """Ordered ``{group: [ParamSlice, ...]}``: ``embed``, ``block{l}.attn.q|k|v|o``, ``block{l}.mlp.in|out``,
        ``block{l}.ln1|ln2``, ``ln_f``, ``head`` (those the model has); fused weights as views."""

    def _head_param_slices(self, params: Mapping[str, Tensor], block: int) -> dict[str, list[list[ParamSlice]]]:
        """``{"q"|"k"|"v"|"o": [head][ParamSlice]}`` of block ``block``; adapters with attention override it."""
        raise TypeError(
            f"{type(self).__name__} ({type(self.model).__name__}) does not expose attention modules, so it "
            "has no per-head parameter groups; use param_groups() without heads"
        )

    def param_groups(self, heads: bool | str = False) -> dict[str, list[ParamSlice]]:
        """Ordered ``{group: [ParamSlice, ...]}`` of the model's parameters, as views (never copies).

        Groups: ``embed``, ``block{l}.attn.q|k|v|o``, ``block{l}.mlp.in|out``, ``block{l}.ln1|ln2``,
        ``ln_f`` and ``head`` (those the model has); together they cover every trained parameter once.
        With ``heads`` the per-head groups ``block{l}.attn.{q,k,v,o}.head{h}`` follow (every block's, in
        block order): the rows of ``W_Q, W_K, W_V`` (weights and biases) and the columns of ``W_O`` (its
        bias belongs to no head) of one head, sliced out of fused storage (GPT-2 ``c_attn``, GPT-NeoX
        ``query_key_value``) by :class:`ParamSlice` views; under grouped-query attention ``k`` and ``v``
        have the key/value heads (``n_kv_heads`` of them). Head groups overlap their projection's group,
        so one operator may select either, not both (``HessianOperator`` refuses overlaps).

        Args:
            heads: ``False`` (no head groups), ``True`` (all), or a :mod:`fnmatch` pattern selecting
                some, e.g. ``"block*.attn.q.head*"``.

        Raises:
            TypeError: ``heads`` that is neither a bool nor a string, or heads of a model without
                attention modules.
            ValueError: A pattern that matches no head group.
        """
        if not isinstance(heads, (bool, str)):
            raise TypeError(f"heads must be True, False or a pattern such as 'block*.attn.q.head*', got {heads!r}")
        groups = self._param_groups()
        if heads is False:
            return groups
        params = dict(self.model.named_parameters())
        added: dict[str, list[ParamSlice]] = {}
        for block in range(self.num_layers):
            for kind, per_head in self._head_param_slices(params, block).items():
                for h, slices in enumerate(per_head):
                    name = f"block{block}.attn.{kind}.head{h}"
                    if heads is True or fnmatch.fnmatchcase(name, heads):
                        added[name] = slices
        if isinstance(heads, str) and not added:
            raise ValueError(
                f"heads={heads!r} matches no head group; they are named block{{l}}.attn.{{q,k,v,o}}.head{{h}} "
                f"(this model: blocks 0..{self.num_layers - 1})"
            )
        return {**groups, **added}

    def _prepare_analysis_copy(self, model: nn.Module, dtype: torch.dtype) -> None:  # noqa: B027 (optional hook)
        """Adjust the private analysis copy in place (eager attention, dtype-faithful norms)."""

    def _layer_heads(self, block: int) -> LayerHeads:
        """Per-head weights of block ``block`` (views); adapters of models with attention override it."""
        raise TypeError(
            f"{type(self).__name__} ({type(self.model).__name__}) does not expose attention modules, so it "
            "has no per-head weights; per-head analyses need a model with attention (see models.adapt)"
        )

    def _attention_probe(self, block: int) -> tuple[nn.Module, Callable[[object], Tensor | None]]:
        """``(module, extract)``: ``extract(module output)`` is block ``block``'s attention weights."""
        raise TypeError(
            f"{type(self).__name__} ({type(self.model).__name__}) does not expose attention modules, so "
            "its attention weights cannot be read"
        )

    @property
    def attention_kind(self) -> str:
        """``"softmax"`` (rows of the attention weights are distributions) or ``"linear"`` (no softmax)."""
        return "softmax"

    # ----- sizes ----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of blocks ``L``."""
        return len(self.blocks)

    @property
    def vocab_size(self) -> int:
        """Rows ``V`` of the token embedding."""
        return self.embedding.num_embeddings

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model takes (learned position embeddings), or ``None`` when unbounded."""
        return None

    @property
    def d_model(self) -> int:
        """Embedding width ``D``, the size of the residual stream."""
        return self.embedding.embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating dtype (that of the token embedding), which embeddings passed in must have."""
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device of the token embedding (the model is assumed to sit on one device)."""
        return self.embedding.weight.device

    # ----- layers ---------------------------------------------------------------------------
    def resolve_layer(self, layer: Layer) -> Layer:
        """Canonical label of ``layer``: an int in ``[0, num_layers)`` or ``"final"``.

        Raises:
            ValueError: for an index out of range or an unknown name.
        """
        L = self.num_layers
        if isinstance(layer, str):
            if layer == "final":
                return "final"
            raise ValueError(f"unknown layer {layer!r}: use an int in [-{L}, {L}) or 'final'")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layer must be an int or 'final', got {type(layer).__name__} {layer!r}")
        if not -L <= layer < L:
            raise ValueError(f"layer {layer} out of range for a model with {L} blocks: use [-{L}, {L}) or 'final'")
        return layer % L

    def resolve_layers(self, layers: Layer | Iterable[Layer]) -> list[Layer]:
        """Canonical labels for ``layers`` (``"all"`` = every block), duplicates removed, in order.

        Raises:
            TypeError: for ``layers`` that are not ``"all"``, an int, a name or an iterable of them (a float,
                ``None``, a tensor), or for an element that is not an int or a name.
            ValueError: for an index out of range, an unknown name, or no layers.
        """
        if isinstance(layers, str) and layers == "all":
            return list(range(self.num_layers))
        if isinstance(layers, (int, str)):
            layers = [layers]
        elif not isinstance(layers, Iterable) or isinstance(layers, Tensor):
            L = self.num_layers
            raise TypeError(
                f"layers must be 'all', an int in [-{L}, {L}), 'final' or a list of them, got "
                f"{type(layers).__name__} {layers!r}"
            )
        out: list[Layer] = []
        for layer in layers:
            r = self.resolve_layer(layer)
            if r not in out:
                out.append(r)
        if not out:
            raise ValueError("no layers requested")
        return out

    def resolve_source(self, source: Layer) -> str | int:
        """``"embeddings"`` or the index of the block whose *input* is the source."""
        if source == "embeddings":
            return source
        if isinstance(source, str):
            raise ValueError(f"unknown source {source!r}: use 'embeddings' or a block index")
        r = self.resolve_layer(source)
        return r

    @staticmethod
    def _block_index(layer: Layer, num_layers: int) -> int:
        return num_layers - 1 if layer == "final" else layer

    # ----- attention heads ------------------------------------------------------------------
    def attention_block(self, layer: Layer) -> int:
        """The block index of ``layer`` for per-head questions: an int in ``[-L, L)`` (``"final"`` is no block).

        Raises:
            ValueError: For a model without blocks, ``"final"``, or an index out of range.
            TypeError: For a layer that is not an int.
        """
        if self.num_layers == 0:
            raise ValueError(f"{type(self.model).__name__} has no transformer blocks, so no attention heads")
        if layer == "final":
            raise ValueError("layer 'final' is the final norm, not an attention layer: use a block index")
        return self.resolve_layer(layer)

    def layer_heads(self, layer: Layer) -> LayerHeads:
        """All heads of block ``layer``, stacked: ``q, k, v [n(_kv)_heads, D, d_h]``, ``o [n_heads, d_h, D]``.

        Views of the parameters (fused GPT-2 ``c_attn`` and GPT-NeoX ``query_key_value`` included),
        never copies; see :mod:`tscope_widgets.models.heads` for the convention.
        """
        return self._layer_heads(self.attention_block(layer))

    def head_weights(self, layer: Layer, head: int) -> HeadWeights:
        """``HeadWeights(q [D, d_h], k [D, d_h], v [D, d_h], o [d_h, D])`` of one head, as views.

        Under grouped-query attention ``k`` and ``v`` are those of key/value head ``head // group``.

        Raises:
            ValueError: For an unknown layer or head, naming the valid range.
        """
        heads = self.layer_heads(layer)
        try:
            return heads.head(head)
        except ValueError as err:
            raise ValueError(f"layer {layer}: {err}") from None

    def attention_weights(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, layers: Layer | Iterable[Layer] = "all"
    ) -> LayerDict:
        """Attention weights ``{block: [B, n_heads, S, S]}`` (query rows, key columns) of one forward pass.

        Read from the model's own attention modules by forward hooks; the pass stops after the last
        requested block. Needs an attention implementation that returns its weights: run it on an
        analysis copy (``adapter.analysis()``), whose attention is eager.

        Args:
            input_ids: ``[B, S]`` token ids (validated).
            attention_mask: ``[B, S]`` 0/1 or ``None``.
            layers: Block indices, or ``"all"``.

        Raises:
            RuntimeError: If an attention module returned no weights (e.g. ``sdpa``).
        """
        input_ids, attention_mask = self.check_inputs(input_ids, attention_mask)
        if self.num_layers == 0:
            self.attention_block(0)  # raises: no blocks, no attention
        if isinstance(layers, str) and layers == "all":
            layers = range(self.num_layers)
        elif isinstance(layers, (int, str)):
            layers = [layers]
        blocks = sorted({self.attention_block(lay) for lay in layers})
        if not blocks:
            raise ValueError("no layers requested")
        out: dict[int, Tensor] = {}
        handles = []

        def capture(block, extract):
            def hook(module, args, output):
                w = extract(output)
                if w is None:
                    raise RuntimeError(
                        f"block {block}'s attention returned no weights (attention implementation "
                        f"{getattr(getattr(self.model, 'config', None), '_attn_implementation', '?')!r}); "
                        "use adapter.analysis(), whose copy runs eager attention"
                    )
                out[block] = w
                if len(out) == len(blocks):
                    raise _StopForward

            return hook

        try:
            for b in blocks:
                module, extract = self._attention_probe(b)
                handles.append(module.register_forward_hook(capture(b, extract)))
            with torch.no_grad():
                self._run(self.embed(input_ids), attention_mask)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return LayerDict({b: out[b] for b in blocks}, num_layers=self.num_layers)

    # ----- inputs ---------------------------------------------------------------------------
    def check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Validate ``input_ids [B, S]`` (integer, in vocabulary) and ``attention_mask [B, S]`` (0/1).

        Returns the inputs moved to the model's device. Raises ``TypeError``/``ValueError`` naming
        the problem.
        """
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [batch, seq], got {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); found values in [{lo}, {hi}]")
        if attention_mask is not None:
            if not isinstance(attention_mask, Tensor):
                raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids "
                    f"shape {tuple(input_ids.shape)}"
                )
            if not ((attention_mask == 0) | (attention_mask == 1)).all():
                raise ValueError("attention_mask must contain only 0 (padding) and 1 (token)")
            attention_mask = attention_mask.to(self.device, torch.long)
        return input_ids.to(self.device), attention_mask

    def check_labels(self, labels: Tensor, input_ids: Tensor) -> Tensor:
        """Validate ``labels [B, S]`` against ``input_ids [B, S]`` the way :meth:`check_inputs` checks ids.

        Args:
            labels: Target token ids: an integer tensor of the ids' shape whose values lie in
                ``[0, vocab_size)`` or equal the ignore index ``-100``.
            input_ids: The batch's (already checked) ids, whose shape and device the labels must match.

        Returns:
            The labels on the ids' device.

        Raises:
            TypeError: When ``labels`` is not a tensor or does not hold integers.
            ValueError: When the shape differs from the ids', or a value is outside the vocabulary and
                not the ignore index (naming the first bad value and its position).
        """
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a torch.Tensor of token ids, got {type(labels).__name__}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(
                f"labels must hold integer token ids (in [0, {self.vocab_size}) or {IGNORE_INDEX} to ignore), "
                f"got dtype {labels.dtype}"
            )
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        labels = labels.to(input_ids.device)
        bad = ((labels < 0) | (labels >= self.vocab_size)) & (labels != IGNORE_INDEX)
        if bool(bad.any()):
            pos = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"labels{list(pos)} = {int(labels[pos])} is not a token id: labels must lie in "
                f"[0, {self.vocab_size}) or equal the ignore index {IGNORE_INDEX}"
            )
        return labels

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings ``[B, S, D]`` of ``input_ids [B, S]`` (what the model takes as ``inputs_embeds``)."""
        return self.embedding(input_ids.to(self.device))

    # ----- analysis copy --------------------------------------------------------------------
    def analysis(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> ModelAdapter:
        """An adapter over a private, eval-mode copy of the model in ``dtype`` on ``device``.

        Parameters and buffers are converted, not copied, when dtype and device already match
        (``Tensor.to`` returns the same storage), so the copy is cheap; the user's model is not
        modified in any way. Returns ``self`` when this adapter already is such a copy in ``dtype``.

        Hooks the user registered on the model's modules (forward, forward-pre, backward and state-dict
        hooks; :func:`drop_user_hooks`) are not carried into the copy: the analyses run it inside
        ``torch.func`` transforms, where a hook that calls ``.numpy()`` fails and a hook that edits
        outputs would silently change the results. The user's model keeps its hooks. Global hooks
        (``torch.nn.modules.module.register_module_forward_hook``) still apply.
        """
        dtype = dtype or self.dtype
        device = torch.device(device) if device is not None else self.device
        if not dtype.is_floating_point:
            raise TypeError(f"analysis dtype must be floating point, got {dtype}")
        if self.is_analysis_copy and dtype == self.dtype and device == self.device:
            return self
        memo = {}
        for p in self.model.parameters():
            memo[id(p)] = nn.Parameter(p.detach().to(device=device, dtype=dtype), requires_grad=False)
        for b in self.model.buffers():
            memo[id(b)] = b.detach().to(device=device, dtype=dtype if b.is_floating_point() else b.dtype)
        clone = copy.deepcopy(self.model, memo)
        drop_user_hooks(clone)
        clone.eval()
        self._prepare_analysis_copy(clone, dtype)
        adapter = copy.copy(self)
        adapter.model = clone
        adapter.is_analysis_copy = True
        return adapter

    # ----- forward --------------------------------------------------------------------------
    def source_activations(self, input_ids: Tensor, attention_mask: Tensor | None, source: Layer) -> Tensor:
        """The activations that ``forward_from_embeddings`` differentiates: ``[B, S, D]``.

        ``"embeddings"``: token embeddings. An int ``l``: the residual stream entering block ``l``.
        """
        source = self.resolve_source(source)
        embeds = self.embed(input_ids)
        if source == "embeddings":
            return embeds
        captured = {}

        def grab(module, args, kwargs):
            captured["x"] = args[0] if args else kwargs["hidden_states"]
            raise _StopForward

        handle = self.blocks[source].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                self._run(embeds, attention_mask)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["x"].detach()

    def forward_from_embeddings(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        layers: Sequence[Layer] = (-1,),
        source: Layer = "embeddings",
    ) -> dict[Layer, Tensor]:
        """Hidden states ``{layer: [B, S, H]}`` as a differentiable function of ``x [B, S, D]``.

        Args:
            x: Token embeddings (``source="embeddings"``) or the residual stream entering block
                ``source``; any float dtype matching the model.
            attention_mask: ``[B, S]`` 0/1, or ``None``.
            layers: Layers to return (see module docstring); every one must be ``>= source``.
            source: ``"embeddings"`` or a block index.

        Returns:
            ``{canonical_layer: Tensor[B, S, H]}`` from one forward pass that stops after the last
            needed block.
        """
        layers = self.resolve_layers(layers)
        source = self.resolve_source(source)
        L = self.num_layers
        if source != "embeddings":
            early = [lay for lay in layers if self._block_index(lay, L) < source]
            if early:
                raise ValueError(f"layers {early} come before source block {source}; targets must be >= source")
        last_block = max(self._block_index(lay, L) for lay in layers)
        out: dict[Layer, Tensor] = {}
        handles = []

        def capture(layer):
            def hook(module, args, output):
                out[layer] = _first(output)
                if len(out) == len(layers):
                    raise _StopForward

            return hook

        try:
            for lay in layers:
                if lay == "final":
                    module = self.final_norm if self.final_norm is not None else self.blocks[L - 1]
                    handles.append(module.register_forward_hook(capture("final")))
                else:
                    handles.append(self.blocks[lay].register_forward_hook(capture(lay)))
            if source == "embeddings":
                embeds = x
            else:
                def replace(module, args, kwargs):
                    if args:
                        return (x, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": x}

                handles.append(self.blocks[source].register_forward_pre_hook(replace, with_kwargs=True))
                # Blocks before `source` run on zeros; their output is replaced and never differentiated.
                embeds = torch.zeros(x.shape[:-1] + (self.d_model,), dtype=x.dtype, device=x.device)
            try:
                self._run(embeds, attention_mask)
            except _StopForward:
                pass
        finally:
            for h in handles:
                h.remove()
        missing = [lay for lay in layers if lay not in out]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached in the forward pass (last block {last_block})")
        return {lay: out[lay] for lay in layers}

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits ``[B, S, V]``."""
        return self._run(self.embed(input_ids), attention_mask)

    def targets(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, Tensor]:
        """The label rules of :meth:`loss`: validated inputs and the target of every logits position.

        Args:
            batch: ``input_ids [B, S]``, optional ``attention_mask [B, S]`` and ``labels [B, S]``.
                Causal models predict ``labels[:, 1:]`` from positions ``:-1``, skipping padded
                predicting positions; ``labels`` default to ``input_ids`` with padding ignored.
                Masked LMs need ``labels`` (``-100`` = ignore).

        Returns:
            ``(input_ids [B, S], attention_mask [B, S] or None, targets [B, S])`` on the model's
            device: ``targets[b, t]`` is the token that logits position ``(b, t)`` is scored on, or
            ``IGNORE_INDEX`` (always at the last position of a causal model).
        """
        input_ids, mask = self.check_inputs(batch["input_ids"], batch.get("attention_mask"))
        labels = batch.get("labels")
        if labels is None:
            if not self.causal:
                raise ValueError("a masked LM needs batch['labels'] (use -100 for positions without a target)")
            labels = input_ids if mask is None else input_ids.masked_fill(mask == 0, IGNORE_INDEX)
        else:
            labels = self.check_labels(labels, input_ids)
        if self.causal:
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
            if mask is not None:
                # A padded position predicts nothing: under left padding its query sees no key at all,
                # and what such a row outputs depends on the attention implementation.
                labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        return input_ids, mask, labels

    def num_targets(self, batch: Mapping[str, Tensor]) -> int:
        """Number of labelled positions that :meth:`loss` averages over (see :meth:`targets`)."""
        return int((self.targets(batch)[2] != IGNORE_INDEX).sum())

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Mean token cross-entropy of ``batch`` over its labelled positions (see :meth:`targets`),
        computed in the logits' dtype.

        Args:
            batch: ``input_ids [B, S]``, optional ``attention_mask [B, S]`` and ``labels [B, S]``.

        Returns:
            Scalar tensor; raises ``ValueError`` if no position carries a label.
        """
        input_ids, mask, targets = self.targets(batch)
        if not (targets != IGNORE_INDEX).any():
            raise ValueError("no position in the batch has a label; nothing to average")
        logits = self.logits(input_ids, mask)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)

    def __repr__(self) -> str:
        kind = "analysis copy" if self.is_analysis_copy else "user model"
        return f"{type(self).__name__}({type(self.model).__name__}, layers={self.num_layers}, {kind}, {self.dtype})"
