r"""Per-head attention weights as views of a model's parameters (no copies).

Convention (row vectors, as in Elhage et al., 2021, "A Mathematical Framework for Transformer
Circuits"): for a residual-stream row ``x [D]`` the query of head ``h`` is ``x @ q`` with
``q = W_Q^h [D, d_h]``, likewise the key ``x @ k`` and value ``x @ v``; the head's output
``z [d_h]`` is written back to the stream as ``z @ o`` with ``o = W_O^h [d_h, D]``. Biases are not
part of the head weights.

Each model stores these matrices differently; the helpers below turn every storage layout into the
stacked form ``[n_heads, D, d_h]`` (inputs) and ``[n_heads, d_h, D]`` (outputs) with ``view``,
``transpose`` and ``permute`` only, so the results share storage with the parameters:

- :func:`linear_in_heads`: ``nn.Linear`` projecting ``D -> n·d_h`` (weight ``[n·d_h, D]``, ``y = x Wᵀ``);
- :func:`linear_out_heads`: ``nn.Linear`` projecting ``n·d_h -> D`` (weight ``[D, n·d_h]``);
- :func:`conv1d_in_heads` / :func:`conv1d_out_heads`: GPT-2's ``Conv1D`` (weight ``[in, out]``, ``y = x W``);
  the fused ``c_attn`` ``[D, 3D]`` holds the columns ``q | k | v``;
- :func:`interleaved_qkv_heads`: GPT-NeoX's ``query_key_value`` ``[3D, D]``, rows ordered
  ``[n_heads, 3, d_h]`` (each head's q, k, v rows together).

Grouped-query attention (Ainslie et al., 2023) has fewer key/value heads than query heads: query head
``h`` uses key/value head ``h // (n_heads / n_kv_heads)`` (:attr:`LayerHeads.group`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "HeadWeights",
    "LayerHeads",
    "linear_in_heads",
    "linear_out_heads",
    "conv1d_in_heads",
    "conv1d_out_heads",
    "interleaved_qkv_heads",
]


@dataclass(frozen=True)
class HeadWeights:
    """The four weight matrices of one attention head, as views of the model's parameters.

    Attributes:
        q: ``W_Q [D, d_h]``: the head's query is ``x @ q`` for a residual-stream row ``x [D]``.
        k: ``W_K [D, d_h]``: the key ``x @ k`` (shared by the query heads of a key/value group).
        v: ``W_V [D, d_h]``: the value ``x @ v`` (shared like ``k``).
        o: ``W_O [d_h, D]``: the head's output ``z [d_h]`` enters the residual stream as ``z @ o``.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    o: Tensor


@dataclass(frozen=True)
class LayerHeads:
    """All heads of one attention layer, stacked, as views of the model's parameters.

    Attributes:
        q: ``[n_heads, D, d_h]``, query weights of every query head.
        k: ``[n_kv_heads, D, d_h]``, key weights of every key/value head.
        v: ``[n_kv_heads, D, d_h]``, value weights of every key/value head.
        o: ``[n_heads, d_h, D]``, output weights of every query head.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    o: Tensor

    def __post_init__(self):
        n, d, dh = self.q.shape
        if self.k.shape != self.v.shape or self.k.shape[1:] != (d, dh) or self.o.shape != (n, dh, d):
            raise ValueError(
                f"inconsistent head shapes: q {list(self.q.shape)}, k {list(self.k.shape)}, "
                f"v {list(self.v.shape)}, o {list(self.o.shape)} (want q, o [n, D, d_h], [n, d_h, D] and "
                "k, v [n_kv, D, d_h])"
            )
        if n % self.k.shape[0]:
            raise ValueError(f"{n} query heads are not a multiple of {self.k.shape[0]} key/value heads")

    @property
    def n_heads(self) -> int:
        """Number of query heads."""
        return self.q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads (``< n_heads`` under grouped-query attention)."""
        return self.k.shape[0]

    @property
    def group(self) -> int:
        """Query heads per key/value head: head ``h`` uses key/value head ``h // group``."""
        return self.n_heads // self.n_kv_heads

    @property
    def d_head(self) -> int:
        """Head dimension ``d_h``."""
        return self.q.shape[2]

    def head(self, h: int) -> HeadWeights:
        """The weights of query head ``h`` (views; ``k`` and ``v`` of its key/value head).

        Raises:
            ValueError: If ``h`` is not an int in ``[0, n_heads)``.
        """
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < self.n_heads:
            raise ValueError(f"head {h!r} out of range: this layer has heads 0..{self.n_heads - 1}")
        g = h // self.group
        return HeadWeights(q=self.q[h], k=self.k[g], v=self.v[g], o=self.o[h])


def _split(n_out: int, n_heads: int, what: str) -> int:
    if n_out % n_heads:
        raise ValueError(f"{what}: {n_out} outputs do not split into {n_heads} heads")
    return n_out // n_heads


def linear_in_heads(weight: Tensor, n_heads: int) -> Tensor:
    """``[n_heads, D, d_h]`` views of an ``nn.Linear`` weight ``[n_heads·d_h, D]`` (``y = x Wᵀ``)."""
    n_out, d = weight.shape
    dh = _split(n_out, n_heads, "linear projection")
    return weight.view(n_heads, dh, d).transpose(1, 2)  # [n, D, dh]


def linear_out_heads(weight: Tensor, n_heads: int) -> Tensor:
    """``[n_heads, d_h, D]`` views of an ``nn.Linear`` output weight ``[D, n_heads·d_h]``."""
    d, n_in = weight.shape
    dh = _split(n_in, n_heads, "output projection")
    return weight.view(d, n_heads, dh).permute(1, 2, 0)  # [n, dh, D]


def conv1d_in_heads(weight: Tensor, n_heads: int, parts: int = 1) -> tuple[Tensor, ...]:
    """``parts`` stacks ``[n_heads, D, d_h]`` of a ``Conv1D`` weight ``[D, parts·n_heads·d_h]`` (``y = x W``).

    GPT-2's ``c_attn`` is ``parts=3``: its columns are ``q | k | v``, each ``n_heads·d_h`` wide.
    """
    d, n_out = weight.shape
    dh = _split(n_out, parts * n_heads, "Conv1D projection")
    w = weight.view(d, parts, n_heads, dh).permute(1, 2, 0, 3)  # [parts, n, D, dh]
    return tuple(w[i] for i in range(parts))


def conv1d_out_heads(weight: Tensor, n_heads: int) -> Tensor:
    """``[n_heads, d_h, D]`` views of a ``Conv1D`` output weight ``[n_heads·d_h, D]``."""
    n_in, d = weight.shape
    dh = _split(n_in, n_heads, "Conv1D output projection")
    return weight.view(n_heads, dh, d)  # [n, dh, D]


def interleaved_qkv_heads(weight: Tensor, n_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(q, k, v)``, each ``[n_heads, D, d_h]``, of GPT-NeoX's ``query_key_value`` weight ``[3·n·d_h, D]``.

    Its rows are ordered ``[n_heads, 3, d_h]``: each head's query, key and value rows lie together.
    """
    n_out, d = weight.shape
    dh = _split(n_out, 3 * n_heads, "fused query_key_value")
    w = weight.view(n_heads, 3, dh, d).permute(1, 0, 3, 2)  # [3, n, D, dh]
    return w[0], w[1], w[2]
