r"""The loss a curvature operator differentiates: a model copy, batches, their weights, and reductions.

The loss over a list of batches is the token-weighted mean of the adapter's LM loss (every labelled
token counts once, whatever batch, or whatever process, it is in):

.. math::

    L(\theta) = \frac{\sum_b n_b L_b(\theta)}{\sum_b n_b},
    \qquad L_b = \frac{1}{n_b} \sum_{t \in T_b} \ell(z_t(\theta), y_t),

with :math:`n_b` the labelled targets of batch :math:`b` (:meth:`ModelAdapter.num_targets`). Under
``torch.distributed`` each rank holds its own shard of the batches; :math:`\sum_b n_b` runs over every
rank's batches, so each rank's partial loss, gradients and products add up (``all_reduce``) to exactly
those of one process holding all the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ...models.adapter import IGNORE_INDEX, ModelAdapter
from ...models.head_groups import param_groups_with_heads
from ..collectives import all_reduce_, check_group
from .losses import LogitLoss, as_logit_loss

__all__ = ["CurvatureProblem", "LossFn", "materialise_batches"]

LossFn = Callable[[ModelAdapter, Mapping[str, Tensor]], Tensor]


class _Call(nn.Module):
    """Runs ``fn(*args)`` with ``model`` as a submodule, so ``functional_call`` can swap its parameters."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def materialise_batches(data) -> list[Mapping[str, Tensor]]:
    """``data`` (one batch dict or an iterable of them) as a checked list of batch dicts."""
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


class CurvatureProblem:
    """The analysis copy, this rank's batches, their weights and losses: what every operator on it shares.

    Args:
        adapter: An analysis copy (``adapter.analysis(dtype)``); never modified.
        batches: This rank's batch dicts (all batches without a process group).
        loss: ``None`` for the LM loss (batches weighted by labelled tokens); a :class:`~.losses.LogitLoss`
            (``"ce"``/``"mse"`` on a subset of positions: weighted by labelled tokens; a callable on the logits:
            by samples); or ``loss(adapter, batch)`` (batches weighted by samples ``B``; no GGN split).
        process_group: ``None``, or the ``torch.distributed`` group whose ranks each hold a shard.

    Attributes:
        params: ``{name: tensor}`` of the copy's parameters (detached; tied weights once).
        groups: ``adapter.param_groups(heads=True)`` (per-head groups selectable by name or pattern).
        count: ``N``, labelled targets (or samples) over every rank.
        weights: ``[n_b / N]`` of this rank's batches.
        targets: Per batch ``[B, S]`` targets (default loss) or ``None``.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        batches: list[Mapping[str, Tensor]],
        loss: LossFn | None,
        process_group=None,
    ):
        check_group(process_group)
        self.adapter = adapter
        self.batches = batches
        self.process_group = process_group
        self.params = {n: p.detach() for n, p in adapter.model.named_parameters()}
        self.groups = param_groups_with_heads(adapter)
        self.logit_loss = LogitLoss("ce") if loss is None else loss if isinstance(loss, LogitLoss) else None
        if self.logit_loss is not None and self.logit_loss.token_weighted:
            self.targets = [self.logit_loss.targets(adapter.targets(b)[2]) for b in batches]
            counts = [int((t != IGNORE_INDEX).sum()) for t in self.targets]
            empty = [i for i, n in enumerate(counts) if n == 0]
            if empty:
                where = "" if self.logit_loss.positions is None else f" at positions {self.logit_loss.positions}"
                raise ValueError(f"batches {empty} have no labelled target{where}; drop them or give them labels")
        else:
            counts = [int(b["input_ids"].shape[0]) for b in batches]
            self.targets = None
        self.count = int(self.all_sum(torch.tensor(float(sum(counts)), dtype=torch.float64)))
        if self.count == 0:
            raise ValueError("no rank holds a labelled target; nothing to differentiate")
        self.weights = [n / self.count for n in counts]
        self.loss_call = _Call(adapter.model, self._loss_function(loss))
        self.logits_call = _Call(adapter.model, adapter.logits)
        with torch.no_grad():
            self.losses = [self._checked(i, self.loss_call(b)) for i, b in enumerate(batches)]

    def _loss_function(self, loss) -> Callable:
        """``batch -> L_b``: the adapter's LM loss, a :class:`LogitLoss` on its logits, or ``loss(adapter, batch)``."""
        adapter = self.adapter
        if loss is None:
            return adapter.loss
        if not isinstance(loss, LogitLoss):
            return lambda b: loss(adapter, b)

        def logit_loss(b):
            input_ids, mask, targets = adapter.targets(b)
            logits = adapter.logits(input_ids, mask)
            if not loss.token_weighted:
                return loss.fn(logits, b)
            return loss.mean(logits, loss.targets(targets))

        return logit_loss

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

    # ----- reductions over ranks --------------------------------------------------------------------
    def all_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks of the process group, in place (``t`` itself without one)."""
        return t if self.process_group is None else all_reduce_(t, self.process_group)

    def loss_value(self) -> float:
        """:math:`L(\\theta)` over every rank's batches."""
        local = sum(w * v for w, v in zip(self.weights, self.losses, strict=True))
        return float(self.all_sum(torch.tensor(local, dtype=torch.float64)))

    # ----- the functions that are differentiated -------------------------------------------------------
    def batch_loss(self, params: Mapping[str, Tensor], b: int) -> Tensor:
        """``w_b L_b`` with the copy's parameters replaced by ``params`` (``{name: tensor}``, any subset)."""
        return functional_call(self.loss_call, _prefixed(params), (self.batches[b],)) * self.weights[b]

    def loss(self, params: Mapping[str, Tensor]) -> Tensor:
        """This rank's share :math:`\\sum_b w_b L_b` (the full loss is its sum over ranks)."""
        return sum(self.batch_loss(params, b) for b in range(len(self.batches)))

    def batch_logits(self, params: Mapping[str, Tensor], b: int) -> Tensor:
        """Logits ``[B, S, V]`` of batch ``b`` with the parameters ``params``."""
        batch = self.batches[b]
        args = (batch["input_ids"], batch.get("attention_mask"))
        return functional_call(self.logits_call, _prefixed(params), args)

    def output_hessian(self, b: int, logits: Tensor) -> Callable[[Tensor], Tensor]:
        """``W -> H_z W`` for batch ``b``, ``W [K, B, S, V]``: the Hessian of this batch's share of the loss
        with respect to its logits (cross-entropy: ``(p ⊙ w - p (p·w)) m / N`` per token; see
        :mod:`.losses`)."""
        if self.logit_loss is None:
            raise ValueError("the GGN splits a loss on the logits; this problem's loss(adapter, batch) is not one")
        targets = None if self.targets is None else self.targets[b]
        return self.logit_loss.output_hessian(logits, targets, self.batches[b], self.weights[b], self.count)


def _prefixed(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"model.{n}": t for n, t in params.items()}


def build_problem(adapter, data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]], loss, dtype, process_group,
                  route: str = "double_backward"):
    """The :class:`CurvatureProblem` of a user's model (or adapter) and data, on a private analysis copy.

    Refuses with ``MemoryError`` (estimate, what is free, alternatives), before the copy is made, when the
    products would not fit in the device's memory (:func:`~tscope_widgets.kernels.cost.product_memory`).
    """
    from ...models.registry import adapt

    loss = as_logit_loss(loss)
    user = adapt(adapter)
    dtype = dtype or torch.promote_types(user.dtype, torch.float32)
    batches = materialise_batches(data)
    _check_product_memory(user, batches, dtype, route)
    return CurvatureProblem(user.analysis(dtype), batches, loss, process_group)


def _check_product_memory(user: ModelAdapter, batches, dtype: torch.dtype, route: str) -> None:
    from ..cost import check_memory, product_memory

    fd = route == "finite_difference"
    need = product_memory(user, batches, dtype, activation_copies=2 if fd else 7)
    if dtype != user.dtype:  # the analysis copy
        need += sum(p.numel() for p in user.model.parameters()) * torch.empty((), dtype=dtype).element_size()
    tokens = sum(int(b["input_ids"].numel()) for b in batches)
    alternatives = [
        f"fewer or shorter sequences (the graph grows with the {tokens} tokens given; the loss is a token-weighted "
        "mean, so an operator on a subset is an unbiased estimate)",
        "float32 instead of float64" if dtype == torch.float64 else "a smaller model or a GPU with more memory",
        "groups= for a block (its products differentiate only those parameters, at less time, not less memory)",
    ]
    if not fd:
        alternatives.append("route='finite_difference' (no second-order graph: about a gradient's memory)")
    check_memory(need, user.device, f"Hessian-vector products of {user!r} over {tokens} tokens in {dtype}",
                 alternatives)

