r"""The passes behind :func:`~.maps.position_sensitivity`: the function differentiated, and how its
Jacobian is pushed through in bounded memory.

:class:`_Problem` is the map from source activations ``e [B, S, D]`` to the stacked hidden states of the
target layers, with its batched VJPs (one layer, a causal prefix) and JVPs (all layers). The exact and
Hutchinson methods cut their one-hot or Rademacher vectors into vmapped passes (:class:`_PassPlan`, at
most ``chunk_size`` vectors, :data:`CHUNK_MEMORY_BUDGET` when automatic; causal prefix groups in reverse
mode), the full method materialises the Jacobian under :data:`FULL_JACOBIAN_MAX_BYTES`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vjp, vmap

from ...models.adapter import ModelAdapter

if TYPE_CHECKING:
    from .maps import Layer

__all__ = [
    "CHUNK_MEMORY_BUDGET",
    "FULL_JACOBIAN_MAX_BYTES",
    "MIN_PASS_WORK",
    "MAX_PREFIX_GROUPS",
    "MIN_VECTORS_PER_PASS",
]

# Extra memory the automatic chunk size aims at (vmapped cotangents/tangents and what the
# batched backward/forward holds for them); an estimate, see `_vector_bytes`.
CHUNK_MEMORY_BUDGET = 256 * 2**20
# method="full" refuses when the Jacobian plus its basis vectors would need more than this.
FULL_JACOBIAN_MAX_BYTES = 256 * 2**20


# ----- the function being differentiated ---------------------------------------------------------
@dataclass
class _Problem:
    """``target(e)``: the stacked hidden states ``[B, L·S, H]`` of all target layers, and the batched
    VJPs (one layer, a prefix of the sequence) and JVPs (all layers) that the chunked methods push."""

    model: ModelAdapter
    e: Tensor  # [B, S, D] source activations
    mask: Tensor | None  # [B, S] 0/1 or None
    layers: list[Layer]
    source: str | int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        B, S, D = self.e.shape
        return B, len(self.layers), S, D

    @property
    def hidden_size(self) -> int:
        return self.model.d_model

    def target(self, x: Tensor) -> Tensor:
        hs = self.model.forward_from_embeddings(x, self.mask, self.layers, self.source)
        if len(self.layers) == 1:
            return hs[self.layers[0]]  # [B, S, H]
        return torch.stack([hs[lay] for lay in self.layers], 1).flatten(1, 2)  # [B, L*S, H]

    def vjp_squared(self, layer: Layer, length: int, cot: Tensor) -> Tensor:
        """``Σ_d (g_{jd})²`` for ``g = cotᵀ ∂h/∂e`` of each cotangent, where ``h [B, P, H]`` is ``layer``'s
        output on the prefix ``e[:, :P]`` (``P = length``): ``cot [n, B, P, H] -> [n, B, P]``."""
        mask = None if self.mask is None else self.mask[:, :length]

        def hidden(x: Tensor) -> Tensor:
            return self.model.forward_from_embeddings(x, mask, [layer], self.source)[layer]

        _, vjp_fn = vjp(hidden, self.e[:, :length])
        (g,) = vmap(vjp_fn)(cot)  # [n, B, P, D]
        return g.square().sum(-1)

    def jvp_squared(self, tan: Tensor) -> Tensor:
        """``Σ_c (t_{lic})²`` for ``t = ∂h/∂e · tan`` of each tangent: ``tan [n, B, S, D] -> [n, B, L·S]``."""

        def tangent_out(t: Tensor) -> Tensor:
            return jvp(self.target, (self.e,), (t,))[1]

        return vmap(tangent_out)(tan).square().sum(-1)

    def num_vectors(self, mode: str, per_position: int | None) -> int:
        """Vectors per batch: per output row (reverse) or input position (forward) times the width."""
        B, L, S, D = self.shape
        if mode == "reverse":
            return L * S * (per_position or self.model.d_model)
        return S * (per_position or D)

    def check_hidden(self, h: Tensor) -> None:
        """Raise if hidden states ``h [B, L·S, H]`` are not finite at a non-padded position."""
        B, L, S, _ = self.shape
        bad = ~torch.isfinite(h).view(B, L, S, -1).all(-1)  # [B, L, S]
        if self.mask is not None:
            bad &= self.mask.bool()[:, None, :]
        if bad.any():
            layer = self.layers[int(bad.any(2).any(0).nonzero()[0])]
            raise ValueError(
                f"hidden states of layer {layer!r} are not finite at {int(bad.sum())} non-padded position(s) "
                f"in {self.e.dtype}; compute in float64 (dtype=torch.float64) or check the model's weights "
                "and inputs"
            )


# ----- chunked exact / Hutchinson ------------------------------------------------------------------
def _chunked_sensitivity(
    problem: _Problem, mode: str, K: int | None, chunk_size: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None, dict]:
    """``s [L, B, S, S]`` (and Hutchinson stderr) from passes of vmapped VJPs or JVPs.

    Work is organised in *lines*: output rows ``i`` of one target layer in reverse mode (``S`` lines
    of width ``H`` per layer), input positions ``j`` in forward mode (``S`` lines of width ``D``,
    serving all layers at once). A vector lives on one line; pushing it through the model gives, per
    sample, a squared norm for every cell of the line's counterpart (all ``j`` for a reverse line,
    all ``(l, i)`` for a forward line).
    """
    B, L, S, D = problem.shape
    with torch.no_grad():
        h = problem.target(problem.e)  # [B, L*S, H]
    problem.check_hidden(h)
    H = h.shape[-1]
    del h
    width = K if K is not None else (H if mode == "reverse" else D)
    chunk = min(chunk_size or _auto_chunk(problem.e, L, H, problem.model), S * width * L)
    if mode == "reverse":
        groups = _prefix_groups(problem, width) if problem.model.causal else 1
        plan = _PassPlan(S * width, chunk, groups)
        values, stderr = _reverse_sensitivity(problem, plan, width, K, generator)
        num_chunks = L * len(plan.bounds)
    else:
        groups, plan = 1, _PassPlan(S * width, chunk, 1)
        values, stderr = _forward_sensitivity(problem, plan, width, K, generator)
        num_chunks = len(plan.bounds)
    info = {
        "num_passes": L * S * width if mode == "reverse" else S * width,
        "chunk_size": chunk,
        "num_chunks": num_chunks,
        "largest_pass": max(b - a for a, b in plan.bounds),
        "prefix_groups": groups,
    }
    return values, stderr, info


@dataclass
class _PassPlan:
    """Cuts ``num_vectors`` vectors, in line order, into passes ``[a, b)`` of at most ``chunk``.

    At least ``min(groups, num_vectors)`` passes, of (nearly) equal size: with causal prefixes, more
    passes means shorter average prefixes (``(G+1)/(2G)`` of the full length for ``G`` passes) but
    more per-pass overhead.
    """

    num_vectors: int
    chunk: int
    groups: int = 1
    bounds: list[tuple[int, int]] = field(init=False)

    def __post_init__(self):
        n = self.num_vectors
        passes = max(-(-n // self.chunk), min(self.groups, n))
        edges = [n * k // passes for k in range(passes + 1)]
        self.bounds = list(itertools.pairwise(edges))


# Causal prefix groups. A pass costs a fixed overhead (a forward pass, graph set-up, some hundred
# vmapped kernel calls) plus work of about n·P·B·D² multiply-adds per block (n vectors, prefix length
# P, B samples, width D); more groups shorten the average prefix to (G+1)/(2G) of the sequence.
# Measured on one CPU thread (GPT-2-shaped blocks, D=64, S=16, B=1..32, see BENCHMARKS.md): the best G
# leaves about 2^25 of that work per pass; beyond 16 groups the saving is under 3%. A pass also keeps at
# least 16 vectors: at GPT-2-small size (D=768, Hutchinson with 8 probes, S=16, B=2) 16 passes of 8
# vectors took 17.0 s, 8 passes of 16 vectors 15.4 s and 4 of 32 15.7 s (the vmapped calls' overhead).
MIN_PASS_WORK = 2**25
MAX_PREFIX_GROUPS = 16
MIN_VECTORS_PER_PASS = 16


def _prefix_groups(problem: _Problem, width: int) -> int:
    """Prefix groups per layer ``G``: about :data:`MIN_PASS_WORK` of work per pass and at least
    :data:`MIN_VECTORS_PER_PASS` vectors per pass, ``1 <= G <= min(S, MAX_PREFIX_GROUPS)``."""
    B, _, S, D = problem.shape
    work = S * width * S * B * D * D  # one layer, all S·width vectors on the full sequence
    return max(1, min(MAX_PREFIX_GROUPS, S, work // MIN_PASS_WORK, S * width // MIN_VECTORS_PER_PASS))


def _reverse_sensitivity(
    problem: _Problem, plan: _PassPlan, width: int, K: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None]:
    """Reverse mode: per target layer, cotangents on output rows ``i``, ``width`` per row.

    Vector ``v`` of a layer sits on row ``i = v // width``: coordinate ``c = v % width`` (exact,
    one-hot, the same for every sample, so built once and expanded over the batch) or probe
    ``k = v % width`` (Hutchinson, Rademacher signs per sample). On a causal model, ``h_i`` depends
    only on ``e_{≤i}`` and the hidden states of positions ``< p`` do not depend on later positions, so
    a pass whose last row is ``i`` runs the VJP through the prefix ``[:, :i+1]`` only. (Positions are
    ``0..p-1`` in the prefix as in the full sequence for learned and rotary positions, with left or
    right padding; tests compare every causal adapter against the dense full-sequence Jacobian.)
    """
    B, L, S, D = problem.shape
    e = problem.e
    dev, dtype = e.device, e.dtype
    acc = e.new_zeros(L, S, B, S) if K is None else e.new_zeros(L, S * K, B, S)  # rows or (row, probe)
    for k, layer in enumerate(problem.layers):
        signs = None if K is None else _rademacher_bits((S * K, B, problem.hidden_size), generator)
        for a, b in plan.bounds:
            n = b - a
            v = torch.arange(a, b, device=dev)
            rows = v // width
            p = (b - 1) // width + 1 if problem.model.causal else S  # last row + 1
            if K is None:
                cot = torch.zeros(n, 1, p, width, dtype=dtype, device=dev)
                cot[torch.arange(n, device=dev), 0, rows, v % width] = 1
                cot = cot.expand(n, B, p, width)
            else:
                cot = torch.zeros(n, B, p, problem.hidden_size, dtype=dtype, device=dev)
                cot[torch.arange(n, device=dev), :, rows, :] = (2 * signs[a:b] - 1).to(dev, dtype)
            out = problem.vjp_squared(layer, p, cot)  # [n, B, p]
            if K is None:
                acc[k, :, :, :p].index_add_(0, rows, out)
            else:
                acc[k, a:b, :, :p] = out
    if K is None:
        return acc.permute(0, 2, 1, 3), None  # [L, B, S_i, S_j]
    var, mean = torch.var_mean(acc.view(L, S, K, B, S), dim=2, correction=1 if K > 1 else 0)
    stderr = (var / K).sqrt() if K > 1 else torch.full_like(mean, float("nan"))
    return mean.permute(0, 2, 1, 3), stderr.permute(0, 2, 1, 3)


def _forward_sensitivity(
    problem: _Problem, plan: _PassPlan, width: int, K: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None]:
    """Forward mode: tangents on input positions ``j``, ``width`` per position, all layers at once.

    Vector ``v`` sits on position ``j = v // width``: coordinate ``d = v % width`` (exact, one-hot,
    expanded over the batch) or probe ``k`` (Hutchinson). ``s[b, l, i, j] += Σ_c t[b, l, i, c]²``.
    """
    B, L, S, D = problem.shape
    e = problem.e
    dev, dtype = e.device, e.dtype
    acc = e.new_zeros(S, B, L * S) if K is None else e.new_zeros(S * K, B, L * S)
    signs = None if K is None else _rademacher_bits((S * K, B, D), generator)
    for a, b in plan.bounds:
        n = b - a
        v = torch.arange(a, b, device=dev)
        cols = v // width
        if K is None:
            tan = torch.zeros(n, 1, S, D, dtype=dtype, device=dev)
            tan[torch.arange(n, device=dev), 0, cols, v % width] = 1
            tan = tan.expand(n, B, S, D)
        else:
            tan = torch.zeros(n, B, S, D, dtype=dtype, device=dev)
            tan[torch.arange(n, device=dev), :, cols, :] = (2 * signs[a:b] - 1).to(dev, dtype)
        out = problem.jvp_squared(tan)  # [n, B, L*S]
        if K is None:
            acc.index_add_(0, cols, out)
        else:
            acc[a:b] = out
    if K is None:
        return acc.view(S, B, L, S).permute(2, 1, 3, 0), None  # [L, B, S_i, S_j]
    var, mean = torch.var_mean(acc.view(S, K, B, L * S), dim=1, correction=1 if K > 1 else 0)
    stderr = (var / K).sqrt() if K > 1 else torch.full_like(mean, float("nan"))

    def layout(x: Tensor) -> Tensor:
        return x.view(S, B, L, S).permute(2, 1, 3, 0)

    return layout(mean), layout(stderr)


def _rademacher_bits(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform ``{0, 1}`` int8 bits of ``shape``, drawn on the generator's device (CPU by default);
    the signs are ``2·bits − 1``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2, shape, generator=generator, device=dev, dtype=torch.int8)


def _line_layout(acc: Tensor, L: int, B: int, S: int) -> Tensor:
    """Per-row results ``[L·S_i, B, S_j]`` -> ``[L, B, S_i, S_j]``."""
    return acc.view(L, S, B, S).permute(0, 2, 1, 3)


def _auto_chunk(e: Tensor, L: int, H: int, model: ModelAdapter) -> int:
    return max(1, CHUNK_MEMORY_BUDGET // _vector_bytes(e, L, H, model))


def _vector_bytes(e: Tensor, L: int, H: int, model: ModelAdapter) -> int:
    """Estimated memory per vmapped vector: its cotangent/tangent outputs ``B·S·L·H``, the gradient
    ``B·S·D``, a few ``B·S·4·max(D, H)`` MLP-sized intermediates and ``B·heads·S²`` attention maps."""
    B, S, D = e.shape
    heads = _num_heads(model)
    elements = B * S * (L * H + D + 8 * max(D, H) + 2 * heads * S)
    return elements * e.element_size()


def _num_heads(model: ModelAdapter) -> int:
    config = getattr(model.model, "config", None)
    for name in ("n_head", "num_attention_heads"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


# ----- full Jacobian ------------------------------------------------------------------------------
def _full_sensitivity(problem: _Problem, mode: str) -> Tensor:
    """``s [L, B, S, S]`` from the materialised per-sample Jacobian (samples do not interact).

    Reverse: ``jacrev`` of the batch-summed outputs gives ``[L·S, H, B, S, D]``. Forward: ``jacfwd``
    of a perturbation ``δ [S, D]`` shared by all samples gives ``[B, L·S, H, S, D]``.
    """
    B, L, S, D = problem.shape
    e = problem.e
    H = problem.model.d_model
    n_vec = problem.num_vectors(mode, None)
    needed = e.element_size() * n_vec * B * S * (L * H + D)
    if needed > FULL_JACOBIAN_MAX_BYTES:
        raise ValueError(
            f"method='full' would materialise a Jacobian of about {needed / 2**20:.0f} MiB "
            f"(B={B}, S={S}, D={D}, H={H}, {L} layer(s), {e.dtype}), over the "
            f"{FULL_JACOBIAN_MAX_BYTES / 2**20:.0f} MiB limit; use method='exact', which computes the same "
            "numbers in bounded-memory chunks"
        )
    with torch.no_grad():
        problem.check_hidden(problem.target(e))
    if mode == "reverse":
        jac = jacrev(lambda x: problem.target(x).sum(0))(e)  # [L*S, H, B, S, D]
        s = jac.square().sum((1, 4))  # [L*S, B, S_j]
    else:
        jac = jacfwd(lambda d: problem.target(e + d))(torch.zeros_like(e[0]))  # [B, L*S, H, S, D]
        s = jac.square().sum((2, 4)).transpose(0, 1)  # [L*S, B, S_j]
    return _line_layout(s, L, B, S)


