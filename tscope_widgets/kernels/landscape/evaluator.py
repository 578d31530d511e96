r"""The grid evaluator: loss and token accuracy at many points :math:`\theta + \sum_j c_j d_j` at once.

Batches are validated once (:func:`_batches`), the points of a call are written into parameter buffers
allocated once, and ``torch.func.functional_call`` runs the private analysis copy of the model at them
(vmapped over the points on small models, one point per call on large ones;
:func:`default_points_per_call` chooses). Under a process group the per-point sums are reduced over the
ranks. :mod:`.slices` streams a grid through this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ...data import batch_list
from ...models.adapter import IGNORE_INDEX, ModelAdapter
from ..collectives import all_reduce_

__all__ = ["default_points_per_call", "POINTS_MEMORY_BUDGET"]

# Extra memory the automatic points_per_call aims at: P stacked copies of the parameters plus what
# P forward passes hold at once (an estimate, see `default_points_per_call`).
POINTS_MEMORY_BUDGET = 256 * 2**20
# vmap over more points stops paying off on a CPU (per-point time was flat from 4 to 16 points on a
# 2-layer d=64 model; a GPT-2-shaped d=8 model went from 2.3 ms to 0.5 ms per point at 16).
MAX_POINTS_PER_CALL = {"cpu": 16}
MAX_POINTS_PER_CALL_DEFAULT = 256
# On a CPU, vmap only pays off while the P parameter copies of a call stay small (it saves Python
# overhead, not arithmetic). GPT-2-shaped, 4 layers, batch 4 x 32, float32, one thread, ms per point at
# P = 1 / 4 / 8: 5 MB of parameters 22 / 17 / 17, 11 MB 35 / 27 / 25, 22 MB 42 / 43 / 54; 86 MB: 128 at
# P = 1, 183 at P = 2. So P copies are kept within this many bytes on a CPU (a larger model gets P = 1).
CPU_PARAMETER_COPIES_BUDGET = 64 * 2**20
# With one point per call, the buffer is moved from point to point by at most this many in-place updates in a
# row before it is written from θ again (each update rounds once: the drift stays within a few ulps).
MAX_UPDATES_IN_PLACE = 16


class _BatchObjective(nn.Module):
    """Summed token loss and number of correct argmax predictions of one batch, ``[2]``.

    A module around the analysis model (registered as ``net``) so that ``functional_call`` can swap
    the model's parameters (keys ``"net.<name>"``) while the adapter runs its own forward.
    """

    def __init__(self, adapter: ModelAdapter):
        super().__init__()
        self.net = adapter.model
        self._adapter = adapter  # not a module; shares `net`

    def forward(self, input_ids: Tensor, mask: Tensor | None, labels: Tensor) -> Tensor:
        logits = self._adapter.logits(input_ids, mask)  # [B, S, V]
        flat = logits.reshape(-1, logits.shape[-1])  # [N, V]
        y = labels.reshape(-1)
        loss_sum = F.cross_entropy(flat, y, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((flat.argmax(-1) == y) & (y != IGNORE_INDEX)).sum().to(loss_sum.dtype)
        return torch.stack([loss_sum, correct])


@dataclass(frozen=True)
class _Targets:
    """One validated batch: ``input_ids [B, S]``, ``mask [B, S]`` or None, ``labels [B, S]`` aligned with the
    logits (``IGNORE_INDEX`` where a position is not scored), ``count`` labelled positions."""

    input_ids: Tensor
    mask: Tensor | None
    labels: Tensor
    count: int


def _targets(adapter: ModelAdapter, batch: Mapping[str, Tensor], what: str) -> _Targets:
    """The validated batch and its targets by the label rule of :meth:`ModelAdapter.loss` (``adapter.targets``)."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise TypeError(f"{what} must be a dict with 'input_ids' (and optional 'attention_mask', 'labels')")
    try:
        input_ids, mask, labels = adapter.targets(batch)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e
    count = int((labels != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError(f"{what}: no position has a label; nothing to average")
    return _Targets(input_ids, mask, labels, count)


def _batches(
    adapter: ModelAdapter, data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]], allow_empty: bool = False
) -> list[_Targets]:
    """All batches of ``data`` (one dict, or an iterable of dicts read once), validated; an empty iterable
    only with ``allow_empty`` (a rank's shard under torch.distributed)."""
    return [_targets(adapter, b, f"batch {i}") for i, b in enumerate(batch_list(data, allow_empty))]


def default_points_per_call(adapter: ModelAdapter, batches: Sequence[_Targets]) -> int:
    """Grid points per call so that the extra memory stays near :data:`POINTS_MEMORY_BUDGET`.

    Per point: a copy of the parameters plus the activations of one forward pass over the largest
    batch, estimated as ``tokens * (4 V + 24 D + 4 S)`` values (logits and their softmax, the residual
    stream and MLP of a layer at a time, attention scores). Capped at 256 points, and on a CPU at 16 points
    and at :data:`CPU_PARAMETER_COPIES_BUDGET` bytes of parameter copies, beyond which vmap over points was
    slower than one point per call: a model of more than 16M float32 parameters gets 1 point per call there.
    """
    itemsize = adapter.dtype.itemsize
    param_bytes = itemsize * sum(p.numel() for p in adapter.model.parameters())
    tokens = max((t.input_ids.numel() for t in batches), default=0)
    S = max((t.input_ids.shape[1] for t in batches), default=0)
    per_point = param_bytes + itemsize * tokens * (4 * adapter.vocab_size + 24 * adapter.d_model + 4 * S)
    cap = MAX_POINTS_PER_CALL.get(adapter.device.type, MAX_POINTS_PER_CALL_DEFAULT)
    P = min(cap, POINTS_MEMORY_BUDGET // per_point)
    if adapter.device.type == "cpu":
        P = min(P, CPU_PARAMETER_COPIES_BUDGET // param_bytes)
    return int(max(1, P))


class _GridEvaluator:
    r"""Loss and accuracy at :math:`\theta + \sum_j c_j d_j` for up to ``P`` rows of coordinates ``c [n, m]``.

    The parameters of a call's points are written in place (under ``no_grad``) into buffers allocated
    once and reused by every call: ``[P, *shape]`` for each parameter that some direction moves (is
    nonzero somewhere); every other parameter, and all of them at the origin ``c = 0``, is θ itself.
    With ``P > 1`` one ``addmm`` per parameter writes all points of a call from the stacked directions
    ``[m, numel]`` and ``functional_call`` is vmapped over the points. With ``P = 1`` there is no stacked
    copy of the directions and the call is plain; the buffer keeps the previous point, and the next one is
    reached by whichever takes fewer passes over the parameters (memory-bound, the cost that remains beyond
    the forward passes at GPT-2-small size): ``θ + c_j d_j`` for the first nonzero coefficient
    (``torch.add(out=)``) then ``+= c_k d_k`` for the others, or ``+= (c_k - c'_k) d_k`` for the coefficients
    that changed. Along a row of a 2D grid, and from row to row when the rows are walked as a serpentine (as
    :mod:`.slices` does), that is one pass per point instead of two; the buffer is rewritten
    from θ at least every :data:`MAX_UPDATES_IN_PLACE` points, so rounding cannot accumulate. Memory beyond
    the model: ``P`` copies of the moved parameters, plus ``m`` stacked copies of the directions when ``P > 1``.

    Each batch gives its summed token loss and number of correct argmax predictions. Under a process
    group the per-point sums ``[n, 3]`` (loss, correct, targets; float64) are added over the ranks by
    one ``all_reduce`` per call, so every rank gets the token-weighted loss and accuracy of all shards.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        batches: list[_Targets],
        directions: list[dict[str, Tensor]],
        moved: set[str],
        points_per_call: int,
        process_group: Any = None,
    ):
        self.objective = _BatchObjective(adapter)
        self.batches = batches
        self.group = process_group
        self.P = points_per_call
        self.device, self.dtype = adapter.device, adapter.dtype
        self.base = {n: p.detach() for n, p in adapter.model.named_parameters()}
        self.directions = {n: [d[n] for d in directions] for n in self.base if n in moved}
        self.buffers = {n: self.base[n].new_empty((self.P, *self.base[n].shape)) for n in self.directions}
        self.stacked = (
            {n: torch.stack([d.reshape(-1) for d in ds]) for n, ds in self.directions.items()} if self.P > 1 else {}
        )
        self._held: list[float] | None = None  # coordinates of the point buf[0] holds (P = 1)
        self._updates = 0  # in-place updates since buf[0] was last written from θ

    @torch.no_grad()
    def _parameters_at(self, coords: Tensor) -> dict[str, Tensor]:
        """``{"net.<name>": [n, *shape]}``: the moved parameters at the points ``coords [n, m]``, in the buffers."""
        n = coords.shape[0]
        if self.P > 1:
            c = coords.to(self.device, self.dtype)
            for name, buf in self.buffers.items():
                torch.addmm(self.base[name].reshape(1, -1), c, self.stacked[name], out=buf[:n].view(n, -1))
        else:
            self._move_to(coords[0].tolist())
        return {f"net.{name}": buf[:n] for name, buf in self.buffers.items()}

    def _move_to(self, point: list[float]) -> None:
        """Write the parameters at ``point`` (``m`` coefficients, not all zero) into ``buf[0]``, in as few passes
        over the parameters as possible (see the class docstring)."""
        fresh = [(c, j) for j, c in enumerate(point) if c != 0]
        held = self._held
        steps = [] if held is None else [(c - h, j) for j, (c, h) in enumerate(zip(point, held, strict=True)) if c != h]
        in_place = held is not None and len(steps) < len(fresh) and self._updates < MAX_UPDATES_IN_PLACE
        for name, buf in self.buffers.items():
            ds = self.directions[name]
            if in_place:
                for c, j in steps:
                    buf[0].add_(ds[j], alpha=c)
                continue
            (c, j), *rest = fresh
            torch.add(self.base[name], ds[j], alpha=c, out=buf[0])
            for c, j in rest:
                buf[0].add_(ds[j], alpha=c)
        self._updates = self._updates + 1 if in_place else 0
        self._held = list(point)

    @torch.no_grad()
    def __call__(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """``coords [n, m]`` float64, ``n <= P`` -> ``(loss [n], accuracy [n])`` float64 (CPU), over all ranks."""
        n = coords.shape[0]
        moved = self._parameters_at(coords) if coords.any() else {}
        static = {f"net.{k}": v for k, v in self.base.items() if f"net.{k}" not in moved}
        totals = torch.zeros(n, 3, dtype=torch.float64)  # summed token loss, correct predictions, targets
        for b in self.batches:
            args = (b.input_ids, b.mask, b.labels)
            if n == 1 or not moved:  # a plain call (also the route for models vmap cannot trace)
                out = functional_call(self.objective, {**static, **{k: v[0] for k, v in moved.items()}}, args)
                out = out.expand(n, 2)
            else:
                out = vmap(lambda mv, args=args: functional_call(self.objective, {**static, **mv}, args))(moved)
            totals[:, :2] += out.to("cpu", torch.float64)
            totals[:, 2] += b.count
        if self.group is not None:
            all_reduce_(totals, self.group)
        if not totals[:, 2].all():
            raise ValueError("no rank holds a labelled position; nothing to average")
        return totals[:, 0] / totals[:, 2], totals[:, 1] / totals[:, 2]


def _check_points_per_call(points_per_call: int | None) -> None:
    if points_per_call is None:
        return
    if isinstance(points_per_call, bool) or not isinstance(points_per_call, int):
        raise TypeError(f"points_per_call must be an int >= 1 or None, got {points_per_call!r}")
    if points_per_call < 1:
        raise ValueError(f"points_per_call must be >= 1, got {points_per_call}")
