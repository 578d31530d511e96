r"""Curvature of a transformer's loss as linear operators: Hessian, Gauss–Newton and functional parts.

The loss over a list of batches is the token-weighted mean of the adapter's LM loss (every labelled
token counts once, whatever batch it is in):

.. math::

    L(\theta) = \frac{\sum_b n_b L_b(\theta)}{\sum_b n_b},
    \qquad L_b = \frac{1}{n_b} \sum_{t \in T_b} \ell(z_t(\theta), y_t),

with :math:`n_b` the labelled targets of batch :math:`b` (:meth:`ModelAdapter.num_targets`),
:math:`z_t` the logits and :math:`\ell` softmax cross-entropy. :class:`HessianOperator` multiplies
vectors by one of three symmetric matrices, restricted to any pair of parameter groups ``(a, b)``
(the block :math:`H_{ab} = \partial^2 L / \partial\theta_a \partial\theta_b`):

- ``"hessian"``: :math:`H = \nabla^2 L`.
- ``"ggn"``: the generalised Gauss–Newton (outer-product) part :math:`G = J^\top H_z J`, with
  :math:`J = \partial z / \partial\theta` and :math:`H_z = \nabla_z^2 L` block diagonal over tokens,
  :math:`(\operatorname{diag}(p_t) - p_t p_t^\top) / N` for a labelled token with softmax
  :math:`p_t` (zero otherwise), :math:`N = \sum_b n_b`. Positive semi-definite
  (Schraudolph, 2002; Martens, 2020, JMLR 21(146)).
- ``"functional"``: :math:`H - G = \sum_t \sum_k (\partial L / \partial z_{tk})\, \nabla^2_\theta z_{tk}`,
  the part from the curvature of the network itself (Singh, Bachmann & Hofmann, NeurIPS 2021;
  Ormaniec et al., ICLR 2025, for its block structure in transformers), computed as a difference of products.

The operator acts on one flat vector: the concatenation, in group order, of each group's
:class:`~tscope_widgets.models.adapter.ParamSlice` views flattened (so GPT-2's fused ``c_attn`` query
columns are their own group). The model is a private eval-mode copy (``adapter.analysis(dtype)``);
the parameters are swapped in with ``torch.func.functional_call``, so the user's model is never
written to, and tied weights (a head tied to the token embedding) count once.

Routes (both give the same numbers; pick by speed):

- ``"double_backward"``: reverse over reverse. :math:`g = \nabla L` is built once with
  ``create_graph=True`` over all batches and kept (``reuse_graph=True``); each product
  :math:`Hv = \partial (g^\top v) / \partial\theta` is one more backward through it, ``K`` columns
  at once with ``torch.autograd.grad(..., is_grads_batched=True)``. GGN: :math:`Jv` by the
  double-VJP trick (:math:`Jv = \partial (J^\top u)^\top v / \partial u`), :math:`J^\top w` by a VJP.
- ``"forward_over_reverse"``: ``torch.func.jvp`` of ``torch.func.grad`` of the functional loss,
  vmapped over the ``K`` columns, batch by batch (nothing kept between products). GGN: ``jvp`` of
  the logits, then a vmapped VJP. (In torch 2.13, ``jvp`` over ``vmap(vjp)`` through ``layer_norm``
  gets mixed derivatives wrong; ``jvp(grad)`` and ``jvp(vjp)`` are right, and those are what we use.)
- ``"auto"``: the faster of the two per number of columns, as measured below.

Measured (CPU, ``torch.set_num_threads(1)``, torch 2.13, float32; GPT-2 with 2 layers, d=64, 4 heads,
vocab 512, one batch of 8 x 32 tokens, all 136,960 parameters): milliseconds of process CPU time per
vector, median of 21 after warm-up (two runs agreed within ~10%; wall clock on the shared test machine
was ~1.5-2x higher and noisy). The double-backward graph is built once per operator, outside the
timing (hessian 23 ms, ggn 26 ms)::

    kind      route                                   K=1     K=8
    hessian   double_backward (is_grads_batched)       45      31
    hessian   double_backward (loop over columns)      45      33
    hessian   forward_over_reverse (vmapped jvp)      116      53
    ggn       double_backward                          27      31
    ggn       forward_over_reverse (vmapped jvp)       76      29

So ``"auto"`` takes ``double_backward`` for the Hessian at any ``K``, and for the GGN below 8 columns
and ``forward_over_reverse`` from 8 columns on (faster by ~5% in both runs, a near tie); ``functional``
chooses for its two parts separately. Batched and looped double backward nearly tie on the CPU; the
batched call is kept (one autograd call per product).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..models.adapter import IGNORE_INDEX, ModelAdapter, ParamSlice
from ..models.registry import adapt
from .operator import LinearOperator

__all__ = ["HessianOperator", "dense_hessian", "resolve_groups", "DENSE_HESSIAN_MAX_BYTES", "KINDS", "ROUTES"]

KINDS = ("hessian", "ggn", "functional")
ROUTES = ("auto", "double_backward", "forward_over_reverse")
DENSE_HESSIAN_MAX_BYTES = 256 * 2**20
DENSE_CHUNK_COLUMNS = 64  # identity columns per vmapped product in dense_hessian
# Parameters the loss does not use (e.g. an MLP norm of an attention-only model) get zero derivatives.
_UNUSED_IS_ZERO = dict(allow_unused=True, materialize_grads=True)

LossFn = Callable[[ModelAdapter, Mapping[str, Tensor]], Tensor]
GroupSpec = str | Sequence[str] | None


# ----- parameter groups -> one flat vector --------------------------------------------------------
def resolve_groups(available: Mapping[str, list[ParamSlice]], spec: GroupSpec) -> list[str]:
    """Group names selected by ``spec``, in the order requested (a pattern expands in adapter order).

    Args:
        available: ``adapter.param_groups()``.
        spec: ``None`` (all groups), a name, a glob pattern (``"block0.attn.*"``, :mod:`fnmatch`), or a
            list of names and patterns.

    Raises:
        ValueError: for a name or pattern that matches no group (listing the available ones), an
            empty list, or a group selected twice.
    """
    if spec is None:
        return list(available)
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not patterns:
        raise ValueError(f"no parameter groups requested; pass None for all, or some of: {', '.join(available)}")
    names: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"group names must be strings, got {type(pattern).__name__} {pattern!r}")
        hits = [pattern] if pattern in available else [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"unknown parameter group {pattern!r}; available groups: {', '.join(available)}")
        for name in hits:
            if name in names:
                raise ValueError(
                    f"parameter group {name!r} is selected twice by {patterns!r}; each parameter entry may "
                    "appear once in a group list"
                )
            names.append(name)
    return names


def _check_disjoint(params: Mapping[str, Tensor], groups: Mapping[str, list[ParamSlice]], names: list[str]) -> None:
    """Raise ``ValueError`` if two selected slices share a tensor entry (checked elementwise on fused tensors)."""
    owners: dict[str, list[tuple[str, ParamSlice]]] = {}
    for g in names:
        for s in groups[g]:
            owners.setdefault(s.name, []).append((g, s))
    for pname, slices in owners.items():
        if len(slices) == 1:
            continue
        count = torch.zeros(params[pname].shape, dtype=torch.int16)
        for g, s in slices:
            view = s.view({pname: count})
            if (view > 0).any():
                others = sorted({o for o, _ in slices if o != g})
                raise ValueError(
                    f"group {g!r} overlaps {others} in parameter {pname!r}; the same entries cannot appear "
                    "twice in one group list"
                )
            view.add_(1)


def _scatter(base: Tensor, index: tuple, piece: Tensor, dim: int = 0) -> Tensor:
    """``base`` with ``base[(:,)*dim + index]`` replaced by ``piece``, out of place and differentiable."""
    if not index:
        return piece
    i, rest = index[0], index[1:]
    if isinstance(i, int):
        return base.select_scatter(_scatter(base.select(dim, i), rest, piece, dim), dim, i)
    if isinstance(i, slice):
        start, stop, step = i.indices(base.shape[dim])
        sub = base[(slice(None),) * dim + (i,)]
        return base.slice_scatter(_scatter(sub, rest, piece, dim + 1), dim, start, stop, step)
    raise TypeError(f"ParamSlice index entries must be ints or slices, got {type(i).__name__}")


class _FlatLayout:
    """Where each group's slices sit in the flat vector, and how to write a flat vector into the parameters.

    Attributes:
        names: Group names in order.
        sizes: ``{group: numel}``.
        offsets: ``{group: slice}`` into the flat vector.
        numel: Length of the flat vector.
    """

    def __init__(self, params: Mapping[str, Tensor], groups: Mapping[str, list[ParamSlice]], names: list[str]):
        _check_disjoint(params, groups, names)
        self.names = names
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, slice] = {}
        # parameter name -> [(slice, start, stop, piece shape)], in flat order
        self.pieces: dict[str, list[tuple[ParamSlice, int, int, torch.Size]]] = {}
        self.order: list[ParamSlice] = []  # slices in flat order
        pos = 0
        for g in names:
            start = pos
            for s in groups[g]:
                shape = s.view(params).shape
                n = shape.numel()
                self.pieces.setdefault(s.name, []).append((s, pos, pos + n, shape))
                self.order.append(s)
                pos += n
            self.sizes[g] = pos - start
            self.offsets[g] = slice(start, pos)
        self.numel = pos

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """The flat vector ``[numel]`` of the current values of ``params``."""
        return torch.cat([s.view(params).reshape(-1) for s in self.order])

    def assemble(self, theta: Tensor, base: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """``{prefix + name: tensor}`` for every parameter touched: ``base`` with ``theta [numel]`` written
        into the selected slices (out of place, so ``theta`` may be a leaf, dual or vmapped tensor)."""
        out = {}
        for pname, pieces in self.pieces.items():
            t = base[pname]
            for s, start, stop, shape in pieces:
                piece = theta[start:stop].view(shape)
                v = t if s.view_shape is None else t.reshape(s.view_shape)
                t = _scatter(v, s.index or (), piece).reshape(base[pname].shape)
            out[prefix + pname] = t
        return out


def _layout_for(adapter: ModelAdapter, names: list[str]) -> _FlatLayout:
    return _FlatLayout(dict(adapter.model.named_parameters()), adapter.param_groups(), names)


# ----- the problem shared by an operator and its restrictions ---------------------------------------
class _Call(nn.Module):
    """Runs ``fn(*args)`` with ``model`` as a submodule, so ``functional_call`` can swap its parameters."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _materialise(data) -> list[Mapping[str, Tensor]]:
    batches = [data] if isinstance(data, Mapping) else list(data)
    if not batches:
        raise ValueError("data is empty: pass a batch dict or a non-empty iterable of batch dicts")
    for i, b in enumerate(batches):
        if not isinstance(b, Mapping) or "input_ids" not in b:
            raise TypeError(
                f"batch {i} must be a dict with 'input_ids' [B, S] (and optional 'attention_mask', 'labels'), "
                f"got {type(b).__name__}"
            )
    return batches


class _Problem:
    """The analysis copy, the batches, their weights and losses: everything ``restrict`` shares."""

    def __init__(self, adapter: ModelAdapter, batches: list[Mapping[str, Tensor]], loss: LossFn | None):
        self.adapter = adapter
        self.batches = batches
        self.params = {n: p.detach() for n, p in adapter.model.named_parameters()}  # tied weights once
        self.groups = adapter.param_groups()
        if loss is None:
            counts = [adapter.num_targets(b) for b in batches]
            empty = [i for i, n in enumerate(counts) if n == 0]
            if empty:
                raise ValueError(f"batches {empty} have no labelled target; drop them or give them labels")
            self.targets = [adapter.targets(b)[2] for b in batches]
        else:
            counts = [int(b["input_ids"].shape[0]) for b in batches]
            self.targets = None
        self.count = sum(counts)  # labelled targets N (default loss) or samples (custom loss)
        self.weights = [n / self.count for n in counts]
        self.loss_call = _Call(adapter.model, adapter.loss if loss is None else (lambda b: loss(adapter, b)))
        self.logits_call = _Call(adapter.model, adapter.logits)
        with torch.no_grad():
            self.losses = [self._checked(i, self.loss_call(b)) for i, b in enumerate(batches)]

    @staticmethod
    def _checked(i: int, value) -> float:
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(f"the loss of batch {i} must be a scalar tensor, got {value!r}")
        v = float(value)
        if v != v or v in (float("inf"), float("-inf")):
            raise FloatingPointError(
                f"the loss of batch {i} is {v} (not finite): check that batch's inputs and labels and the "
                "model's parameters for nan/inf, or analyse in a wider dtype (dtype=torch.float64)"
            )
        return v

    def batch_loss(self, theta: Tensor, layout: _FlatLayout, b: int) -> Tensor:
        """``w_b L_b`` as a function of the flat vector ``theta``."""
        params = layout.assemble(theta, self.params, prefix="model.")
        return functional_call(self.loss_call, params, (self.batches[b],)) * self.weights[b]

    def batch_logits(self, theta: Tensor, layout: _FlatLayout, b: int) -> Tensor:
        """Logits ``[B, S, V]`` of batch ``b`` as a function of ``theta``."""
        batch = self.batches[b]
        params = layout.assemble(theta, self.params, prefix="model.")
        return functional_call(self.logits_call, params, (batch["input_ids"], batch.get("attention_mask")))

    def output_hessian(self, b: int, logits: Tensor) -> Callable[[Tensor], Tensor]:
        """``w -> H_z w`` for batch ``b``: ``(p ⊙ w - p (p·w)) m / N`` per token, ``w [..., B, S, V]``."""
        p = torch.softmax(logits.detach(), dim=-1)  # [B, S, V]
        m = (self.targets[b] != IGNORE_INDEX).to(p.dtype)[..., None] / self.count  # [B, S, 1]
        return lambda w: (p * w - p * (p * w).sum(-1, keepdim=True)) * m


# ----- the operator ------------------------------------------------------------------------------------
# Measured fastest route per kind and number of columns (see the module docstring): [(max K or None, route)].
_AUTO_ROUTES = {
    "hessian": ((1, "double_backward"), (None, "double_backward")),
    "ggn": ((7, "double_backward"), (None, "forward_over_reverse")),
}
_BATCHED_DOUBLE_BACKWARD = True  # is_grads_batched for K > 1 (a loop over columns was ~5% slower)


class HessianOperator(LinearOperator):
    r"""Curvature of the token-weighted LM loss over ``data`` as a ``[P_rows, P_cols]`` operator.

    Example:
        >>> from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
        >>> _ = torch.manual_seed(0)
        >>> model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=8))
        >>> batch = {"input_ids": torch.randint(0, 11, (2, 6))}
        >>> H = HessianOperator(model, batch, groups="block0.attn.*", dtype=torch.float64)
        >>> H.shape, H.groups
        ((288, 288), ['block0.attn.q', 'block0.attn.k', 'block0.attn.v', 'block0.attn.o'])
        >>> Hv = H @ torch.ones(288, dtype=torch.float64)  # [288]

    Args:
        adapter: A :class:`ModelAdapter` or a supported ``nn.Module`` (see ``adapt``). It is never
            modified; the operator works on ``adapter.analysis(dtype)``.
        data: One batch dict or an iterable of them (``input_ids [B, S]``, optional
            ``attention_mask [B, S]`` and ``labels [B, S]``), read once into a list.
        groups: Row groups: ``None`` (all of ``param_groups()``), a name, a glob pattern, or a list.
        col_groups: Column groups (``None``: the row groups, a symmetric operator).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"`` (Hessian minus GGN); see the module docstring.
        loss: ``None`` for the adapter's LM loss, batches weighted by their labelled tokens; or a
            callable ``loss(adapter, batch) -> scalar`` (called with the analysis copy), batches
            weighted by their number of samples ``B``. ``"ggn"``/``"functional"`` need ``None``.
        dtype: Analysis dtype; ``None`` = the model's dtype promoted to at least float32.
        route: ``"auto"``, ``"double_backward"`` or ``"forward_over_reverse"``.
        reuse_graph: ``double_backward`` keeps the gradient graph of all batches between products
            (memory: one retained double-backward graph per batch); ``False`` rebuilds it per product.

    Attributes:
        adapter: The analysis copy. data: The list of batches. kind, route: As given.
        groups, col_groups: Resolved group names. group_sizes: ``{row group: numel}``.
        offsets, col_offsets: ``{group: slice}`` into the flat row / column vector.
        num_params: ``P_rows``. symmetric: Whether rows and columns are the same groups.

    The parameters are read when the operator is built (and kept in the double-backward graph); when
    the model's dtype and device match ``dtype``, the analysis copy shares their storage, so build a new
    operator after changing the model's parameters (e.g. a training step).

    Raises:
        ValueError: unknown group, empty data, a group listed twice, ``kind``/``route`` unknown, or
            GGN with a custom loss. FloatingPointError: a batch's loss is not finite.
    """

    def __init__(
        self,
        adapter: ModelAdapter | nn.Module,
        data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
        *,
        groups: GroupSpec = None,
        col_groups: GroupSpec = None,
        kind: str = "hessian",
        loss: LossFn | None = None,
        dtype: torch.dtype | None = None,
        route: str = "auto",
        reuse_graph: bool = True,
    ):
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be None or a callable loss(adapter, batch) -> scalar, got {loss!r}")
        _check_choice(kind, route)
        if kind != "hessian" and loss is not None:
            raise ValueError(
                f"kind={kind!r} splits the Hessian of the LM cross-entropy through the logits, so it needs the "
                "default loss (loss=None); with a custom loss use kind='hessian'"
            )
        user = adapt(adapter)
        copy = user.analysis(dtype or torch.promote_types(user.dtype, torch.float32))
        problem = _Problem(copy, _materialise(data), loss)
        self._setup(problem, groups, col_groups, kind, route, reuse_graph)

    def _setup(self, problem: _Problem, groups, col_groups, kind: str, route: str, reuse_graph: bool) -> None:
        _check_choice(kind, route)
        self._problem = problem
        rows = resolve_groups(problem.groups, groups)
        cols = rows if col_groups is None else resolve_groups(problem.groups, col_groups)
        union = rows + [g for g in cols if g not in rows]
        self._layout = _FlatLayout(problem.params, problem.groups, union)
        row_layout = _FlatLayout(problem.params, problem.groups, rows)
        col_layout = row_layout if cols == rows else _FlatLayout(problem.params, problem.groups, cols)
        self.groups, self.col_groups = rows, cols
        self.group_sizes = row_layout.sizes
        self.offsets, self.col_offsets = row_layout.offsets, col_layout.offsets
        self.num_params = row_layout.numel
        self.symmetric = cols == rows
        self.kind, self.route, self.reuse_graph = kind, route, reuse_graph
        self.adapter, self.data = problem.adapter, problem.batches
        self._theta0 = self._layout.flatten(problem.params).detach()
        # positions of the column vector's entries in the union vector (None: they are the rows)
        self._col_index = None
        if cols != rows:
            pos = torch.arange(self._layout.numel, device=self._theta0.device)
            self._col_index = torch.cat([pos[self._layout.offsets[g]] for g in cols])
        self._graph: dict[str, tuple] = {}
        super().__init__((row_layout.numel, col_layout.numel), problem.adapter.dtype, problem.adapter.device)

    def restrict(self, groups: GroupSpec, col_groups: GroupSpec = None) -> HessianOperator:
        """The block operator for ``groups`` x ``col_groups`` on the same model copy and data (no re-copy)."""
        op = HessianOperator.__new__(HessianOperator)
        op._setup(self._problem, groups, col_groups, self.kind, self.route, self.reuse_graph)
        return op

    # ----- values ---------------------------------------------------------------------------------
    def loss_value(self) -> float:
        """The combined loss :math:`\\sum_b w_b L_b` at the current parameters."""
        return float(sum(w * v for w, v in zip(self._problem.weights, self._problem.losses, strict=True)))

    @functools.cached_property
    def _uses_parameters(self) -> bool:
        """Whether the loss depends on the operator's parameters at all (one forward per batch, once)."""
        theta = self._theta0.clone().requires_grad_()
        with torch.enable_grad():
            return any(self._problem.batch_loss(theta, self._layout, b).requires_grad for b in range(len(self.data)))

    def gradient(self) -> Tensor:
        """Flat gradient ``[P_rows]`` of the combined loss with respect to the row groups."""
        if not self._uses_parameters:
            return self._theta0.new_zeros(self.num_params)
        if "hessian" in self._graph:
            return self._graph["hessian"][1].detach()[: self.num_params].clone()
        theta = self._theta0.clone().requires_grad_()
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.enable_grad():
            for b in range(len(self.data)):
                (g,) = torch.autograd.grad(self._problem.batch_loss(theta, self._layout, b), theta, **_UNUSED_IS_ZERO)
                total = total + g
        return total[: self.num_params]

    def split(self, v: Tensor) -> dict[str, Tensor]:
        """``{row group: v[offsets[group]]}`` for a flat row vector ``v [P_rows, ...]`` (views)."""
        if v.shape[:1] != (self.num_params,):
            raise ValueError(f"split expects a vector of length {self.num_params}, got shape {tuple(v.shape)}")
        return {g: v[s] for g, s in self.offsets.items()}

    # ----- products -------------------------------------------------------------------------------
    def route_for(self, num_columns: int, kind: str = "hessian") -> str:
        """The route a ``kind`` product (``"hessian"`` or ``"ggn"``) with ``num_columns`` columns takes."""
        if self.route != "auto":
            return self.route
        return next(r for k, r in _AUTO_ROUTES[kind] if k is None or num_columns <= k)

    def _matmat(self, V: Tensor) -> Tensor:
        K = V.shape[1]
        if not self._uses_parameters:  # e.g. only the MLP norms of an attention-only model
            return V.new_zeros(self.num_params, K)
        if self._col_index is None:
            Vu = V
        else:
            Vu = V.new_zeros(self._layout.numel, K)
            Vu[self._col_index] = V
        if self.kind == "hessian":
            out = self._hessian(Vu, self.route_for(K, "hessian"))
        elif self.kind == "ggn":
            out = self._ggn(Vu, self.route_for(K, "ggn"))
        else:
            out = self._hessian(Vu, self.route_for(K, "hessian")) - self._ggn(Vu, self.route_for(K, "ggn"))
        return out[: self.num_params]

    def _hessian(self, V: Tensor, route: str) -> Tensor:
        """``H_u V`` on the union vector, ``V [P_u, K] -> [P_u, K]``."""
        P = self._problem
        if route == "forward_over_reverse":
            out = torch.zeros_like(V)
            for b in range(len(self.data)):
                g = grad(lambda th, b=b: P.batch_loss(th, self._layout, b))
                hvp = lambda v, g=g: jvp(g, (self._theta0,), (v,))[1]  # noqa: E731
                out = out + (hvp(V[:, 0])[:, None] if V.shape[1] == 1 else vmap(hvp, in_dims=1, out_dims=1)(V))
            return out
        theta, g = self._graph.get("hessian") or self._hessian_graph()
        if not self.reuse_graph:
            self._graph.pop("hessian", None)
        return _backward(g, theta, V, retain=self.reuse_graph)

    def _hessian_graph(self) -> tuple[Tensor, Tensor]:
        theta = self._theta0.clone().requires_grad_()
        with torch.enable_grad():
            loss = sum(self._problem.batch_loss(theta, self._layout, b) for b in range(len(self.data)))
            (g,) = torch.autograd.grad(loss, theta, create_graph=True, **_UNUSED_IS_ZERO)
        self._graph["hessian"] = (theta, g)
        return theta, g

    def _ggn(self, V: Tensor, route: str) -> Tensor:
        """``G_u V`` on the union vector, ``V [P_u, K] -> [P_u, K]``."""
        P = self._problem
        if route == "forward_over_reverse":
            out = torch.zeros_like(V)
            for b in range(len(self.data)):
                f = lambda th, b=b: P.batch_logits(th, self._layout, b)  # noqa: E731
                z, pullback = vjp(f, self._theta0)
                Jv = vmap(lambda v, f=f: jvp(f, (self._theta0,), (v,))[1], in_dims=1)(V)  # [K, B, S, V]
                out = out + vmap(pullback)(P.output_hessian(b, z)(Jv))[0].T
            return out
        theta, zs, us, gu, hz = self._graph.get("ggn") or self._ggn_graph()
        if not self.reuse_graph:
            self._graph.pop("ggn", None)
        batched = V.shape[1] > 1
        cols = V.T if batched else V[:, 0]
        Jv = torch.autograd.grad(gu, us, cols, retain_graph=True, is_grads_batched=batched)
        HJv = [h(j) for h, j in zip(hz, Jv, strict=True)]
        (out,) = torch.autograd.grad(zs, theta, HJv, retain_graph=self.reuse_graph, is_grads_batched=batched)
        return out.T if batched else out[:, None]

    def _ggn_graph(self) -> tuple:
        theta = self._theta0.clone().requires_grad_()
        with torch.enable_grad():
            zs = [self._problem.batch_logits(theta, self._layout, b) for b in range(len(self.data))]
            us = [torch.zeros_like(z, requires_grad=True) for z in zs]
            (gu,) = torch.autograd.grad(zs, theta, us, create_graph=True, **_UNUSED_IS_ZERO)  # J^T u, linear in u
        hz = [self._problem.output_hessian(b, z) for b, z in enumerate(zs)]
        self._graph["ggn"] = (theta, zs, us, gu, hz)
        return self._graph["ggn"]

    def __repr__(self) -> str:
        cols = "" if self.symmetric else f" x {len(self.col_groups)} groups"
        return (
            f"HessianOperator(kind={self.kind!r}, shape={self.shape}, {len(self.groups)} groups{cols}, "
            f"{len(self.data)} batches, route={self.route!r}, dtype={self.dtype})"
        )


def _check_choice(kind: str, route: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    if route not in ROUTES:
        raise ValueError(f"route={route!r}; expected one of {ROUTES}")


def _backward(g: Tensor, theta: Tensor, V: Tensor, retain: bool) -> Tensor:
    """``d(g · v)/d theta`` for each column ``v`` of ``V [P, K]``: ``[P, K]``."""
    if not g.requires_grad:  # the loss is linear in these parameters
        return torch.zeros_like(V)
    K = V.shape[1]
    opts = _UNUSED_IS_ZERO
    if K == 1 or not _BATCHED_DOUBLE_BACKWARD:
        cols = [torch.autograd.grad(g, theta, V[:, k], retain_graph=retain or k < K - 1, **opts)[0] for k in range(K)]
        return torch.stack(cols, dim=1)
    (out,) = torch.autograd.grad(g, theta, V.T, retain_graph=retain, is_grads_batched=True, **opts)
    return out.T


# ----- dense ---------------------------------------------------------------------------------------
def dense_hessian(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    *,
    groups: GroupSpec = None,
    col_groups: GroupSpec = None,
    kind: str = "hessian",
    loss: LossFn | None = None,
    dtype: torch.dtype = torch.float64,
    max_bytes: int = DENSE_HESSIAN_MAX_BYTES,
) -> Tensor:
    """The dense curvature matrix ``[P_rows, P_cols]`` in ``dtype``: :class:`HessianOperator` times the identity.

    Identity columns go through the operator in vmapped chunks of ``DENSE_CHUNK_COLUMNS``. For small
    models and tests; sizes are checked before any model copy is made.

    Args:
        adapter, data, groups, col_groups, kind, loss: As for :class:`HessianOperator`.
        dtype: Analysis and result dtype (float64 by default).
        max_bytes: Refuse when the matrix ``P_rows * P_cols * itemsize`` would exceed this many bytes.

    Returns:
        ``H [P_rows, P_cols]`` in the flat order of :class:`HessianOperator` (``offsets`` locate groups).

    Raises:
        MemoryError: when the matrix is over ``max_bytes``; the message gives the sizes and alternatives.
    """
    user = adapt(adapter)
    available = user.param_groups()
    rows = resolve_groups(available, groups)
    cols = rows if col_groups is None else resolve_groups(available, col_groups)
    P, Q = _layout_for(user, rows).numel, _layout_for(user, cols).numel
    need = P * Q * torch.empty((), dtype=dtype).element_size()
    if need > max_bytes:
        raise MemoryError(
            f"a dense {kind} of {P} x {Q} parameters in {dtype} needs {need:,} bytes ({need / 2**20:.3g} MiB), "
            f"over max_bytes={max_bytes:,} ({max_bytes / 2**20:.3g} MiB); restrict groups= (and col_groups=) to "
            "fewer parameter groups, raise max_bytes, or use HessianOperator with lanczos / hutchpp_trace / "
            "slq_density, which need only products"
        )
    op = HessianOperator(user, data, groups=rows, col_groups=None if col_groups is None else cols, kind=kind,
                         loss=loss, dtype=dtype)
    out = torch.empty(P, Q, dtype=dtype, device=op.device)
    for start in range(0, Q, DENSE_CHUNK_COLUMNS):
        stop = min(start + DENSE_CHUNK_COLUMNS, Q)
        eye = torch.zeros(Q, stop - start, dtype=dtype, device=op.device)
        eye[torch.arange(start, stop), torch.arange(stop - start)] = 1
        out[:, start:stop] = op.matmat(eye)
    return out
