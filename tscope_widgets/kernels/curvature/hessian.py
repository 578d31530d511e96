r"""Curvature of a transformer's loss as linear operators: Hessian, Gauss–Newton and functional parts.

:class:`HessianOperator` multiplies vectors by one of three symmetric matrices of the loss
:math:`L(\theta)` of :mod:`.problem`, restricted to any pair of parameter groups ``(a, b)`` (the block
:math:`H_{ab} = \partial^2 L / \partial\theta_a \partial\theta_b`):

- ``"hessian"``: :math:`H = \nabla^2 L`.
- ``"ggn"``: the generalised Gauss–Newton (outer-product) part :math:`G = J^\top H_z J` (shown for the LM
  loss; ``"mse"``, a subset of positions or any loss on the logits: :mod:`.losses`), with
  :math:`J = \partial z / \partial\theta` and :math:`H_z = \nabla_z^2 L` block diagonal over tokens,
  :math:`(\operatorname{diag}(p_t) - p_t p_t^\top) / N` for a labelled token with softmax
  :math:`p_t` (zero otherwise), :math:`N = \sum_b n_b`. Positive semi-definite
  (Schraudolph, 2002; Martens, 2020, JMLR 21(146)).
- ``"functional"``: :math:`H - G = \sum_t \sum_k (\partial L / \partial z_{tk})\, \nabla^2_\theta z_{tk}`,
  the part from the curvature of the network itself (Singh, Bachmann & Hofmann, NeurIPS 2021;
  Ormaniec et al., ICLR 2025, for its block structure in transformers), computed as a difference of products.

The operator acts on one flat vector (:class:`~.groups.ParamLayout`: each group's
:class:`~tscope_widgets.models.adapter.ParamSlice` views flattened, in group order), but every product
is computed on the parameter tensors themselves, as a plain double backward is: the flat vector is cut
into one tangent per parameter, and only the parameters of the requested groups are differentiated,
so a block :math:`H_{ab}` costs a product over those groups' parameters, not the whole model's. The
model is a private eval-mode copy (``adapter.analysis(dtype)``, without the hooks registered on the user's
modules, which therefore neither run nor change the products); parameters are swapped in with
``torch.func.functional_call``, so the user's model is never written to, and tied weights count once.

Routes (all give the same numbers up to rounding, or, for finite differences, their stated error):

- ``"double_backward"``: reverse over reverse. :math:`g_b = \partial L / \partial\theta_b` is built once
  with ``create_graph=True`` over all batches and kept (``reuse_graph=True``); each product
  :math:`H_{ab} v = \partial (g_b^\top v) / \partial\theta_a` is one more backward through it, ``K``
  columns at once with ``is_grads_batched``. GGN: :math:`Jv` by the double-VJP trick
  (:math:`Jv = \partial (J^\top u)^\top v / \partial u`), :math:`J^\top w` by a VJP.
- ``"forward_over_reverse"``: ``torch.func.jvp`` of ``torch.func.grad``, vmapped over the ``K``
  columns, batch by batch (nothing kept between products). GGN: ``jvp`` of the logits, then a vmapped
  VJP. (In torch 2.13, ``jvp`` over ``vmap(vjp)`` through ``layer_norm`` gets mixed derivatives wrong;
  ``jvp(grad)`` and ``jvp(vjp)`` are right, and those are what we use.)
- ``"finite_difference"``: central differences of gradients (:mod:`.finite_difference`), two
  gradients per column; for attention kernels without double backward (SDPA, flash) and sharded models.
- ``"auto"``: ``double_backward``, except the GGN from 8 columns on (``forward_over_reverse``).

Measured (CPU, one thread, torch 2.13, float32; GPT-2 with 2 layers, d=64, vocab 512, batch 8 x 32):
double backward and forward-over-reverse Hessian products took 45 vs 116 ms per vector at ``K=1`` and
31 vs 53 ms at ``K=8``; GGN 27 vs 76 ms at ``K=1`` and 31 vs 29 ms at ``K=8``; hence ``"auto"``.
Against a plain ten-line double backward at GPT-2-small size see ``benchmarks/scale.py``.

Under ``torch.distributed`` (``process_group=``), each rank passes its shard of the batches; gradients
and products are summed over ranks (``all_reduce``) with the token weights of all ranks, so every rank
holds the single-process product, and Lanczos, Hutch++ and SLQ (seeded identically) run identically on
every rank.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from ...models.adapter import ModelAdapter
from ..operator import LinearOperator
from .finite_difference import finite_difference_step, richardson_error
from .groups import GroupSpec, ParamLayout, resolve_groups
from .losses import LogitLoss, as_logit_loss
from .problem import CurvatureProblem, LossFn, build_problem

__all__ = ["HessianOperator", "KINDS", "ROUTES", "EXACT_ROUTES"]

KINDS = ("hessian", "ggn", "functional")
EXACT_ROUTES = ("double_backward", "forward_over_reverse")
ROUTES = ("auto", *EXACT_ROUTES, "finite_difference")
# Parameters the loss does not use (e.g. an MLP norm of an attention-only model) get zero derivatives.
_UNUSED_IS_ZERO = dict(allow_unused=True, materialize_grads=True)
# Measured fastest route per kind and number of columns (module docstring): [(max K or None, route)].
_AUTO_ROUTES = {
    "hessian": ((None, "double_backward"),),
    "ggn": ((7, "double_backward"), (None, "forward_over_reverse")),
}

Params = dict[str, Tensor]


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
            ``attention_mask [B, S]`` and ``labels [B, S]``), read once into a list. Under a process
            group: this rank's shard.
        groups: Row groups: ``None`` (all of ``param_groups()``), a name, a glob pattern, or a list;
            per-head groups of ``param_groups(heads=True)`` (``"block0.attn.q.head1"``,
            ``"block*.attn.k.head*"``) by name or by a pattern naming heads (see ``resolve_groups``).
        col_groups: Column groups (``None``: the row groups, a symmetric operator).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"`` (Hessian minus GGN); see the module docstring.
        loss: ``None`` for the adapter's LM loss, batches weighted by their labelled tokens; ``"ce"``,
            ``"mse"`` or a :class:`~.losses.LogitLoss` (a loss on the logits, optionally on a subset of
            positions: the GGN is :math:`J^\top (\nabla_z^2 \ell) J` for that loss); or a callable
            ``loss(adapter, batch) -> scalar`` (called with the analysis copy), batches weighted by their
            number of samples ``B``, for ``kind="hessian"`` only.
        dtype: Analysis dtype; ``None`` = the model's dtype promoted to at least float32.
        route: ``"auto"``, ``"double_backward"``, ``"forward_over_reverse"`` or ``"finite_difference"``.
        reuse_graph: ``double_backward`` keeps the gradient graph of all batches between products
            (memory: one retained double-backward graph per batch); ``False`` rebuilds it per product.
        process_group: ``None``, or a ``torch.distributed`` process group (usually
            ``torch.distributed.group.WORLD``) whose ranks each pass a shard of the data; every
            rank must build the operator with the same model and groups.

    Attributes:
        adapter: The analysis copy. data: This rank's list of batches. kind, route: As given.
        groups, col_groups: Resolved group names. group_sizes: ``{row group: numel}``.
        offsets, col_offsets: ``{group: slice}`` into the flat row / column vector.
        num_params: ``P_rows``. symmetric: Whether rows and columns are the same groups.

    The parameters are read when the operator is built (and kept in the double-backward graph); when
    the model's dtype and device match ``dtype``, the analysis copy shares their storage, so build a new
    operator after changing the model's parameters (e.g. a training step).

    Raises:
        ValueError: unknown group, empty data, a group listed twice, ``kind``/``route`` unknown, or
            GGN with a ``loss(adapter, batch)`` callable. FloatingPointError: a batch's loss is not finite.
            MemoryError: the products would not fit in memory (checked before anything is allocated; the
            message gives the estimate and alternatives, see :mod:`tscope_widgets.kernels.cost`).
    """

    def __init__(
        self,
        adapter: ModelAdapter | nn.Module,
        data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
        *,
        groups: GroupSpec = None,
        col_groups: GroupSpec = None,
        kind: str = "hessian",
        loss: LossFn | LogitLoss | str | None = None,
        dtype: torch.dtype | None = None,
        route: str = "auto",
        reuse_graph: bool = True,
        process_group=None,
    ):
        _check_choice(kind, route)
        loss = as_logit_loss(loss)
        if kind != "hessian" and loss is not None and not isinstance(loss, LogitLoss):
            raise ValueError(
                f"kind={kind!r} splits the Hessian through the logits, so it needs a loss on the logits: None "
                "(the LM loss), 'ce', 'mse' or LogitLoss(fn, positions); a loss(adapter, batch) callable only "
                "allows kind='hessian' (wrap a loss of the logits as LogitLoss(lambda logits, batch: ...))"
            )
        problem = build_problem(adapter, data, loss, dtype, process_group, route)
        self._setup(problem, groups, col_groups, kind, route, reuse_graph)

    def _setup(self, problem: CurvatureProblem, groups, col_groups, kind: str, route: str, reuse_graph: bool):
        _check_choice(kind, route)
        self._problem = problem
        rows = resolve_groups(problem.groups, groups)
        cols = rows if col_groups is None else resolve_groups(problem.groups, col_groups)
        self._rows = ParamLayout(problem.params, problem.groups, rows)
        self._cols = self._rows if cols == rows else ParamLayout(problem.params, problem.groups, cols)
        self._union = self._rows.param_names + [n for n in self._cols.param_names if n not in self._rows.param_names]
        self.groups, self.col_groups = rows, cols
        self.group_sizes = self._rows.sizes
        self.offsets, self.col_offsets = self._rows.offsets, self._cols.offsets
        self.num_params = self._rows.numel
        self.symmetric = cols == rows
        self.kind, self.route, self.reuse_graph = kind, route, reuse_graph
        self.adapter, self.data = problem.adapter, problem.batches
        self._graph: dict[str, tuple] = {}
        super().__init__((self._rows.numel, self._cols.numel), problem.adapter.dtype, problem.adapter.device)

    def restrict(self, groups: GroupSpec, col_groups: GroupSpec = None) -> HessianOperator:
        r"""The block operator for ``groups`` x ``col_groups`` on the same model copy and data (no re-copy).

        When this operator holds its double-backward gradient graph (``reuse_graph=True``, after a product or
        :meth:`share_gradient_graph`) and it covers the block's parameters, the block reuses it: its products
        :math:`H_{ab} v = \partial (g_b^\top v) / \partial \theta_a` are backward passes through the same
        :math:`g = \nabla L` (built with ``create_graph=True`` at the same parameters), so the blocks of one
        operator cost one forward and one backward in all, not one each.
        """
        op = HessianOperator.__new__(HessianOperator)
        op._setup(self._problem, groups, col_groups, self.kind, self.route, self.reuse_graph)
        graph = self._graph.get("hessian")
        if graph is not None and self.reuse_graph and all(n in graph[1] for n in op._union):
            op._graph["hessian"] = graph
            op._uses_parameters = self._uses_parameters
        return op

    def share_gradient_graph(self) -> None:
        """Build (once) the retained gradient graph that :meth:`restrict` hands to its blocks.

        Only for the exact Hessian on the double-backward route with ``reuse_graph=True``; otherwise nothing
        is built (the blocks then build what they need themselves).
        """
        if self.kind == "hessian" and self.reuse_graph and self.route_for(1) == "double_backward":
            if "hessian" not in self._graph:
                self._hessian_graph()

    @property
    def process_group(self):
        """The ``torch.distributed`` process group the products are reduced over, or ``None`` (one process)."""
        return self._problem.process_group

    # ----- values ---------------------------------------------------------------------------------
    def loss_value(self) -> float:
        """The combined loss :math:`\\sum_b w_b L_b` at the current parameters (over every rank)."""
        return self._problem.loss_value()

    def _leaves(self, shift: Params | None = None, scale: float = 0.0) -> Params:
        """Fresh leaves ``{param: theta (+ scale * shift)}`` for the union of row and column parameters."""
        params = self._problem.params
        return {
            n: (params[n] + scale * shift[n] if shift is not None and n in shift else params[n])
            .detach()
            .requires_grad_()
            for n in self._union
        }

    def _with(self, leaves: Params) -> Params:
        return {**self._problem.params, **leaves}

    @functools.cached_property
    def _uses_parameters(self) -> bool:
        """Whether the loss depends on the operator's parameters at all (one forward per batch, once)."""
        leaves = self._leaves()
        with torch.enable_grad():
            local = any(self._problem.batch_loss(self._with(leaves), b).requires_grad for b in range(len(self.data)))
        return bool(self._problem.all_sum(torch.tensor(float(local), dtype=torch.float64)) > 0)

    def _grad_rows(self, leaves: Params) -> list[Tensor]:
        """This rank's ``dL/dtheta`` for each row parameter at ``leaves`` (one forward and backward)."""
        with torch.enable_grad():
            loss = self._problem.loss(self._with(leaves))
            if not loss.requires_grad:
                return [torch.zeros_like(leaves[n]) for n in self._rows.param_names]
            return list(torch.autograd.grad(loss, [leaves[n] for n in self._rows.param_names], **_UNUSED_IS_ZERO))

    def gradient(self) -> Tensor:
        """Flat gradient ``[P_rows]`` of the combined loss with respect to the row groups."""
        if not self._uses_parameters:
            return torch.zeros(self.num_params, dtype=self.dtype, device=self.device)
        if "hessian" in self._graph and self.symmetric:
            g = [self._graph["hessian"][1][n] for n in self._rows.param_names]
        else:
            g = self._grad_rows(self._leaves())
        flat = self._rows.flatten({n: t.detach()[None] for n, t in zip(self._rows.param_names, g, strict=True)})[0]
        return self._problem.all_sum(flat)

    def flatten_params(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """``{param name: tensor of the parameter's shape}`` -> the flat row vector ``[P_rows]`` (the selected
        slices in the operator's order), e.g. an optimiser's per-parameter state."""
        missing = [n for n in self._rows.param_names if n not in tensors]
        if missing:
            raise ValueError(f"flatten_params needs a tensor for every parameter of the groups; missing {missing}")
        return self._rows.flatten({n: tensors[n].to(self.dtype)[None] for n in self._rows.param_names})[0]

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
        if self.kind != "ggn" and self.route_for(K) == "double_backward" and "hessian" not in self._graph:
            self._hessian_graph()  # also tells whether the loss uses the parameters, without another forward
        if not self._uses_parameters:  # e.g. only the MLP norms of an attention-only model
            return V.new_zeros(self.num_params, K)
        tangents = self._cols.unflatten(V.T)  # {col param: [K, *shape]}
        if self.kind == "hessian":
            out = self._hessian(tangents, K, self.route_for(K, "hessian"))
        elif self.kind == "ggn":
            out = self._ggn(tangents, K, self.route_for(K, "ggn"))
        else:
            hv = self._hessian(tangents, K, self.route_for(K, "hessian"))
            gv = self._ggn(tangents, K, self.route_for(K, "ggn"))
            out = {n: hv[n] - gv[n] for n in hv}
        return self._problem.all_sum(self._rows.flatten(out).T)

    # Hessian -----------------------------------------------------------------------------------------
    def _hessian(self, tangents: Params, K: int, route: str) -> Params:
        """``{row param: [K, *shape]}`` of ``H_ab V`` for column tangents ``{col param: [K, *shape]}``."""
        if route == "forward_over_reverse":
            return self._hessian_forward_over_reverse(tangents, K)
        if route == "finite_difference":
            return self._hessian_finite_difference(tangents, K)
        leaves, g = self._graph.get("hessian") or self._hessian_graph()
        if not self.reuse_graph:
            self._graph.pop("hessian", None)
        pairs = [(g[n], tangents[n]) for n in self._cols.param_names if g[n].requires_grad]
        return self._backward(pairs, [leaves[n] for n in self._rows.param_names], K, retain=self.reuse_graph)

    def _hessian_graph(self) -> tuple[Params, dict[str, Tensor]]:
        leaves = self._leaves()
        with torch.enable_grad():
            loss = self._problem.loss(self._with(leaves))
            inputs = [leaves[n] for n in self._cols.param_names]
            g = torch.autograd.grad(loss, inputs, create_graph=True, **_UNUSED_IS_ZERO) if loss.requires_grad else []
        if "_uses_parameters" not in self.__dict__:
            self._uses_parameters = bool(self._problem.all_sum(torch.tensor(float(loss.requires_grad))) > 0)
        names = self._cols.param_names
        by_name = dict(zip(names, g, strict=True)) if g else {n: torch.zeros_like(leaves[n]) for n in names}
        self._graph["hessian"] = (leaves, by_name)
        return self._graph["hessian"]

    def _backward(self, pairs: list[tuple[Tensor, Tensor]], inputs: list[Tensor], K: int, retain: bool) -> Params:
        """``d(sum_i <outputs_i, tangents_i>) / d inputs`` for ``K`` tangent columns: ``{row param: [K, ...]}``."""
        names = self._rows.param_names
        if not pairs:
            return {n: x.new_zeros(K, *x.shape) for n, x in zip(names, inputs, strict=True)}
        outputs = [o for o, _ in pairs]
        cols = [t if K > 1 else t[0] for _, t in pairs]
        out = _grad_columns(outputs, inputs, cols, K, retain)
        return dict(zip(names, out, strict=True))

    def _hessian_forward_over_reverse(self, tangents: Params, K: int) -> Params:
        P = self._problem
        primals = {n: P.params[n] for n in self._union}
        tan = {n: tangents.get(n, None) for n in self._union}
        tan = {n: (t if t is not None else primals[n].new_zeros(K, *primals[n].shape)) for n, t in tan.items()}
        out = None
        for b in range(len(self.data)):
            g = grad(lambda p, b=b: P.batch_loss(self._with(p), b))
            hvp = lambda t, g=g: jvp(g, (primals,), (t,))[1]  # noqa: E731
            hv = {n: x[None] for n, x in hvp({n: t[0] for n, t in tan.items()}).items()} if K == 1 else vmap(hvp)(tan)
            out = hv if out is None else {n: out[n] + hv[n] for n in out}
        return {n: out[n] for n in self._rows.param_names}

    def _hessian_finite_difference(self, tangents: Params, K: int, error: bool = False):
        """Central differences of row gradients along each column (see :mod:`.finite_difference`); a loop over
        columns, since each column is its own pair of perturbed models (two forward and backward passes)."""
        cols, errs = [], []
        for k in range(K):
            v = {n: t[k] for n, t in tangents.items()}
            h = self._fd_step(v)
            if h == 0:
                cols.append([torch.zeros_like(self._problem.params[n]) for n in self._rows.param_names])
                errs.append(0.0)
                continue
            d_h, gnorm = self._central_difference(v, h)
            cols.append(d_h)
            if error:
                d_2h, _ = self._central_difference(v, 2 * h)
                flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])[None]  # noqa: E731
                errs.append(float(richardson_error(flat(d_h), flat(d_2h), gnorm, h, self.dtype)[0]))
        out = {n: torch.stack([c[i] for c in cols]) for i, n in enumerate(self._rows.param_names)}
        return (out, errs) if error else out

    @functools.cached_property
    def _col_rms(self) -> float:
        """Root-mean-square entry of the column parameters (the finite-difference step's scale)."""
        params = self._problem.params
        numel = sum(params[n].numel() for n in self._cols.param_names)
        return math.sqrt(sum(float(params[n].double().pow(2).sum()) for n in self._cols.param_names) / max(numel, 1))

    def _fd_step(self, v: Params) -> float:
        v_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in v.values()))  # the same on every rank
        return finite_difference_step(self._col_rms, v_norm, self.dtype)

    def _central_difference(self, v: Params, h: float) -> tuple[list[Tensor], Tensor]:
        plus = self._grad_rows(self._leaves(v, h))
        minus = self._grad_rows(self._leaves(v, -h))
        sq = sum(p.double().square().sum() + m.double().square().sum() for p, m in zip(plus, minus, strict=True))
        gnorm = torch.sqrt(sq / 2)
        return [(p - m) / (2 * h) for p, m in zip(plus, minus, strict=True)], gnorm[None]

    def hvp_with_error(self, v: Tensor) -> tuple[Tensor, float]:
        """``(H v [P_rows], estimated ||error||)`` by central differences at steps ``h`` and ``2h``
        (four gradients; the estimate is that of the step-``h`` result returned, see
        :mod:`.finite_difference`). Any route; only the Hessian (``kind="hessian"``)."""
        if self.kind != "hessian":
            raise ValueError("hvp_with_error estimates finite-difference Hessian products; use kind='hessian'")
        if v.ndim != 1 or v.shape[0] != self.shape[1]:
            raise ValueError(f"hvp_with_error expects a vector of shape [{self.shape[1]}], got {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        self.num_matvecs += 1
        out, errs = self._hessian_finite_difference(self._cols.unflatten(v[None]), 1, error=True)
        flat = self._problem.all_sum(self._rows.flatten(out)[0])
        return flat, float(self._problem.all_sum(torch.tensor(errs[0], dtype=torch.float64)))

    # GGN ---------------------------------------------------------------------------------------------
    def _ggn(self, tangents: Params, K: int, route: str) -> Params:
        """``{row param: [K, *shape]}`` of ``J_a^T H_z J_b V``."""
        P = self._problem
        if route == "forward_over_reverse":
            primals = {n: P.params[n] for n in self._union}
            tan = {n: tangents[n] if n in tangents else primals[n].new_zeros(K, *primals[n].shape) for n in primals}
            out = None
            for b in range(len(self.data)):
                f = lambda p, b=b: P.batch_logits(self._with(p), b)  # noqa: E731
                z, pullback = vjp(f, primals)
                Jv = vmap(lambda t, f=f: jvp(f, (primals,), (t,))[1])(tan)  # [K, B, S, V]
                gv = vmap(pullback)(P.output_hessian(b, z)(Jv))[0]
                out = gv if out is None else {n: out[n] + gv[n] for n in out}
            return {n: out[n] for n in self._rows.param_names}
        leaves, zs, us, gu, hz = self._graph.get("ggn") or self._ggn_graph()
        if not self.reuse_graph:
            self._graph.pop("ggn", None)
        if route == "finite_difference":
            Jv = self._logits_finite_difference(tangents, K, zs)
        else:
            pairs = [(gi, tangents[n]) for gi, n in zip(gu, self._cols.param_names, strict=True) if gi.requires_grad]
            if not pairs:
                return {n: leaves[n].new_zeros(K, *leaves[n].shape) for n in self._rows.param_names}
            Jv = _grad_columns([o for o, _ in pairs], us, [t if K > 1 else t[0] for _, t in pairs], K, True)
        HJv = [h(j) for h, j in zip(hz, Jv, strict=True)]  # [K, B, S, V] each
        pairs = [(z, w) for z, w in zip(zs, HJv, strict=True) if z.requires_grad]
        return self._backward(pairs, [leaves[n] for n in self._rows.param_names], K, retain=self.reuse_graph)

    def _ggn_graph(self) -> tuple:
        leaves = self._leaves()
        cols = [leaves[n] for n in self._cols.param_names]
        with torch.enable_grad():
            zs = [self._problem.batch_logits(self._with(leaves), b) for b in range(len(self.data))]
            us = [torch.zeros_like(z, requires_grad=True) for z in zs]
            gu = []
            if self.route_for(1, "ggn") != "finite_difference" and any(z.requires_grad for z in zs):
                gu = torch.autograd.grad(zs, cols, us, create_graph=True, **_UNUSED_IS_ZERO)  # J^T u, linear in u
        hz = [self._problem.output_hessian(b, z) for b, z in enumerate(zs)]
        self._graph["ggn"] = (leaves, zs, us, list(gu), hz)
        return self._graph["ggn"]

    def _logits_finite_difference(self, tangents: Params, K: int, zs: list[Tensor]) -> list[Tensor]:
        """``J_b V`` per batch, ``[K, B, S, V]``, by central differences of the logits."""
        P = self._problem
        out = [[] for _ in self.data]
        with torch.no_grad():
            for k in range(K):
                v = {n: t[k] for n, t in tangents.items()}
                h = self._fd_step(v)
                for b in range(len(self.data)):
                    if h == 0:
                        out[b].append(torch.zeros_like(zs[b]))
                        continue
                    plus = P.batch_logits({**P.params, **{n: P.params[n] + h * t for n, t in v.items()}}, b)
                    minus = P.batch_logits({**P.params, **{n: P.params[n] - h * t for n, t in v.items()}}, b)
                    out[b].append((plus - minus) / (2 * h))
        return [torch.stack(o) for o in out]

    def __repr__(self) -> str:
        cols = "" if self.symmetric else f" x {len(self.col_groups)} groups"
        dist = "" if self.process_group is None else ", distributed"
        return (
            f"HessianOperator(kind={self.kind!r}, shape={self.shape}, {len(self.groups)} groups{cols}, "
            f"{len(self.data)} batches, route={self.route!r}, dtype={self.dtype}{dist})"
        )


def _grad_columns(outputs: list[Tensor], inputs: list[Tensor], cols: list[Tensor], K: int, retain: bool):
    """``[K, *input.shape]`` per input: the vector-Jacobian products of ``K`` columns (batched when
    ``K > 1``), zeros for inputs the outputs do not depend on."""
    try:
        out = torch.autograd.grad(outputs, inputs, cols, retain_graph=retain, is_grads_batched=K > 1, allow_unused=True)
    except (RuntimeError, NotImplementedError) as e:
        if "not implemented" in str(e):
            raise RuntimeError(
                "this model has an operation without a double backward (e.g. a fused attention kernel: "
                "SDPA or flash attention), so the exact curvature routes cannot differentiate it twice; "
                "use route='finite_difference' (two gradients per product, with a stated error), or build "
                f"the model with eager attention. PyTorch said: {e}"
            ) from e
        raise
    pairs = zip(inputs, out, strict=True)
    return [x.new_zeros(K, *x.shape) if o is None else (o if K > 1 else o[None]) for x, o in pairs]


def _check_choice(kind: str, route: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    if route not in ROUTES:
        raise ValueError(f"route={route!r}; expected one of {ROUTES}")
