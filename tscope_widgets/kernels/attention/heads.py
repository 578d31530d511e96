"""Per-head weights of every attention head of a model, keyed by ``(layer, head)``.

The slicing itself belongs to the model adapters (:meth:`ModelAdapter.layer_heads`, see
:mod:`tscope_widgets.models.heads` for the storage layouts and the row-vector convention); this module
collects it over layers and heads for the analyses of :mod:`.geometry`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ...models.adapter import Layer, ModelAdapter
from ...models.heads import HeadWeights, LayerHeads
from ...models.registry import adapt

__all__ = ["head_weights", "stacked_heads"]


def _blocks(adapter: ModelAdapter, layers: Layer | Iterable[Layer]) -> list[int]:
    if isinstance(layers, str) and layers == "all":
        if adapter.num_layers == 0:
            adapter.attention_block(0)  # raises: a model without blocks has no heads
        return list(range(adapter.num_layers))
    if isinstance(layers, (int, str)):
        layers = [layers]
    blocks: list[int] = []
    for lay in layers:
        b = adapter.attention_block(lay)
        if b not in blocks:
            blocks.append(b)
    if not blocks:
        raise ValueError("no layers requested: pass block indices or 'all'")
    return blocks


def stacked_heads(
    model: ModelAdapter | nn.Module, layers: Layer | Iterable[Layer] = "all"
) -> dict[int, LayerHeads]:
    """``{block: LayerHeads}`` (stacked per-head views) for the requested blocks, in order.

    Args:
        model: A supported model or its :class:`ModelAdapter`.
        layers: Block indices (negative count from the end) or ``"all"``.

    Raises:
        TypeError: For an unsupported model or one without attention modules.
        ValueError: For an unknown layer or a model without blocks.
    """
    adapter = adapt(model)
    return {b: adapter.layer_heads(b) for b in _blocks(adapter, layers)}


def head_weights(
    model: ModelAdapter | nn.Module, layers: Layer | Iterable[Layer] = "all"
) -> dict[tuple[int, int], HeadWeights]:
    """``{(layer, head): HeadWeights(q [D, d_h], k [D, d_h], v [D, d_h], o [d_h, D])}`` of every head.

    Views of the model's parameters (no copies): GPT-2's fused ``c_attn`` by column slices, GPT-NeoX's
    interleaved ``query_key_value`` through a reshaped view, grouped-query attention by giving query
    head ``h`` the key/value head ``h // (n_heads / n_kv_heads)``. Convention: a residual-stream row
    ``x [D]`` gives the head's query ``x @ q`` (likewise keys and values); the head output ``z [d_h]``
    enters the stream as ``z @ o`` (Elhage et al., 2021, "A Mathematical Framework for Transformer
    Circuits"). Biases are not included.

    Args:
        model: A supported model or its :class:`ModelAdapter`.
        layers: Block indices (negative count from the end) or ``"all"``.

    Returns:
        A dict ordered by layer, then head.

    Raises:
        TypeError: For an unsupported model or one without attention modules.
        ValueError: For an unknown layer or a model without blocks.
    """
    return {
        (b, h): heads.head(h)
        for b, heads in stacked_heads(model, layers).items()
        for h in range(heads.n_heads)
    }
