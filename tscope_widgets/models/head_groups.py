r"""Per-head parameter groups: ``block{l}.attn.{q,k,v,o}.head{h}`` as :class:`ParamSlice` views.

Each helper returns, for one projection, a list over heads of the slices (weight and, where the bias is
per head, bias) that belong to that head, viewing the stored tensor with ``view_shape`` and selecting with
``index``, so nothing is copied and fused storage needs no special case downstream:

- :func:`linear_in_head_slices`: ``nn.Linear`` ``D -> n·d_h`` (weight ``[n·d_h, D]`` viewed ``[n, d_h, D]``,
  bias ``[n·d_h]`` viewed ``[n, d_h]``; head ``h`` is index ``(h,)``);
- :func:`linear_out_head_slices`: ``nn.Linear`` ``n·d_h -> D`` (weight ``[D, n·d_h]`` viewed ``[D, n, d_h]``,
  index ``(:, h)``);
- :func:`conv1d_fused_head_slices`: GPT-2's ``c_attn`` ``Conv1D`` (weight ``[D, 3·n·d_h]`` viewed
  ``[D, 3, n, d_h]``, index ``(:, part, h)``; bias ``[3·n·d_h]`` viewed ``[3, n, d_h]``);
- :func:`conv1d_out_head_slices`: GPT-2's ``c_proj`` (weight ``[n·d_h, D]`` viewed ``[n, d_h, D]``);
- :func:`interleaved_qkv_head_slices`: GPT-NeoX's ``query_key_value`` (weight ``[3·n·d_h, D]`` viewed
  ``[n, 3, d_h, D]``, index ``(h, part)``; bias viewed ``[n, 3, d_h]``).

The output projection's bias is added once after the heads are summed, so it belongs to no head: it
stays in ``block{l}.attn.o`` only. Under grouped-query attention the ``k`` and ``v`` groups are those of
the key/value heads (``head0 .. head{n_kv-1}``), as stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from .adapter import ModelAdapter, ParamSlice

__all__ = [
    "HEAD_GROUP",
    "is_head_group",
    "param_groups_with_heads",
    "linear_in_head_slices",
    "linear_out_head_slices",
    "conv1d_fused_head_slices",
    "conv1d_out_head_slices",
    "interleaved_qkv_head_slices",
]

# block{l}.attn.{q,k,v,o}.head{h}
HEAD_GROUP = re.compile(r"^block\d+\.attn\.[qkvo]\.head\d+$")

HeadSlices = list[list[ParamSlice]]  # [head][slice]


def is_head_group(name: str) -> bool:
    """Whether ``name`` is a per-head group ``block{l}.attn.{q,k,v,o}.head{h}``."""
    return bool(HEAD_GROUP.match(name))


def param_groups_with_heads(adapter: ModelAdapter) -> dict[str, list[ParamSlice]]:
    """``adapter.param_groups(heads=True)``, or ``adapter.param_groups()`` for a model without attention modules."""
    try:
        return adapter.param_groups(heads=True)
    except TypeError:
        return adapter.param_groups()


def _split(n_out: int, n_heads: int, what: str) -> int:
    if n_out % n_heads:
        raise ValueError(f"{what}: {n_out} outputs do not split into {n_heads} heads")
    return n_out // n_heads


def linear_in_head_slices(params: Mapping[str, Tensor], prefix: str, n_heads: int) -> HeadSlices:
    """Per-head slices of an ``nn.Linear`` ``prefix`` projecting ``D -> n_heads·d_h`` (weight and bias)."""
    w, b = f"{prefix}.weight", f"{prefix}.bias"
    n_out, d = params[w].shape
    dh = _split(n_out, n_heads, prefix)
    return [
        [ParamSlice(w, (h,), (n_heads, dh, d))] + ([ParamSlice(b, (h,), (n_heads, dh))] if b in params else [])
        for h in range(n_heads)
    ]


def linear_out_head_slices(params: Mapping[str, Tensor], prefix: str, n_heads: int) -> HeadSlices:
    """Per-head slices of an ``nn.Linear`` ``prefix`` projecting ``n_heads·d_h -> D`` (weight columns only)."""
    w = f"{prefix}.weight"
    d, n_in = params[w].shape
    dh = _split(n_in, n_heads, prefix)
    return [[ParamSlice(w, (slice(None), h), (d, n_heads, dh))] for h in range(n_heads)]


def conv1d_fused_head_slices(params: Mapping[str, Tensor], prefix: str, n_heads: int, part: int, parts: int = 3):
    """Per-head slices of part ``part`` (0 = q, 1 = k, 2 = v) of a fused ``Conv1D`` ``[D, parts·n·d_h]``."""
    w, b = f"{prefix}.weight", f"{prefix}.bias"
    d, n_out = params[w].shape
    dh = _split(n_out, parts * n_heads, prefix)
    return [
        [ParamSlice(w, (slice(None), part, h), (d, parts, n_heads, dh))]
        + ([ParamSlice(b, (part, h), (parts, n_heads, dh))] if b in params else [])
        for h in range(n_heads)
    ]


def conv1d_out_head_slices(params: Mapping[str, Tensor], prefix: str, n_heads: int) -> HeadSlices:
    """Per-head slices of a ``Conv1D`` output projection ``[n_heads·d_h, D]`` (weight rows only)."""
    w = f"{prefix}.weight"
    n_in, d = params[w].shape
    dh = _split(n_in, n_heads, prefix)
    return [[ParamSlice(w, (h,), (n_heads, dh, d))] for h in range(n_heads)]


def interleaved_qkv_head_slices(params: Mapping[str, Tensor], prefix: str, n_heads: int, part: int) -> HeadSlices:
    """Per-head slices of part ``part`` of GPT-NeoX's ``query_key_value`` (rows ``[n_heads, 3, d_h]``)."""
    w, b = f"{prefix}.weight", f"{prefix}.bias"
    n_out, d = params[w].shape
    dh = _split(n_out, 3 * n_heads, prefix)
    return [
        [ParamSlice(w, (h, part), (n_heads, 3, dh, d))]
        + ([ParamSlice(b, (h, part), (n_heads, 3, dh))] if b in params else [])
        for h in range(n_heads)
    ]
