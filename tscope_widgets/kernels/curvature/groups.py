"""Parameter groups and the flat vector over them: the boundary between curvature algorithms and tensors.

Curvature algorithms (Lanczos, Hutch++, SLQ) see one flat vector. Products are computed on the
parameter tensors themselves: a flat vector is cut into one tangent tensor per parameter, and the
per-parameter results are cut back into the flat order. No parameter is ever assembled from a flat
vector inside autograd (a slice of a flat leaf costs a whole-vector buffer in every backward).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...models.adapter import ParamSlice
from ...models.head_groups import is_head_group

__all__ = ["GroupSpec", "ParamLayout", "resolve_groups"]

GroupSpec = str | Sequence[str] | None


def resolve_groups(available: Mapping[str, list[ParamSlice]], spec: GroupSpec) -> list[str]:
    """Group names selected by ``spec``, in the order requested (a pattern expands in adapter order).

    Per-head groups (``block{l}.attn.q.head{h}``, present when ``available`` is
    ``adapter.param_groups(heads=True)``) overlap their projection's group: ``None`` leaves them out, and
    a pattern matches them only when it names heads (contains ``".head"``, e.g. ``"block*.attn.q.head*"``),
    so ``"block0.attn.*"`` still means the four projections.

    Args:
        available: ``adapter.param_groups()`` or ``adapter.param_groups(heads=True)``.
        spec: ``None`` (all groups but per-head ones), a name, a glob pattern (``"block0.attn.*"``,
            :mod:`fnmatch`), or a list of names and patterns.

    Raises:
        TypeError: for a ``spec`` that is neither ``None``, a string nor an iterable of strings.
        ValueError: for a name or pattern that matches no group (listing the available ones), an
            empty list, or a group selected twice.
    """
    plain = [n for n in available if not is_head_group(n)]
    listing = ", ".join(plain) + (
        " (and per-head groups block{l}.attn.{q,k,v,o}.head{h})" if len(plain) < len(available) else ""
    )
    if spec is None:
        return plain
    if not isinstance(spec, str) and not isinstance(spec, Iterable):
        raise TypeError(
            f"groups must be None (all), a group name or pattern, or a list of them, got {type(spec).__name__} "
            f"{spec!r}; e.g. groups='block0.attn.*' or groups=['embed', 'head']"
        )
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not patterns:
        raise ValueError(f"no parameter groups requested; pass None for all, or some of: {listing}")
    names: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"group names must be strings, got {type(pattern).__name__} {pattern!r}")
        heads = ".head" in pattern
        hits = (
            [pattern]
            if pattern in available
            else [n for n in available if fnmatch.fnmatchcase(n, pattern) and (heads or not is_head_group(n))]
        )
        if not hits:
            raise ValueError(f"unknown parameter group {pattern!r}; available groups: {listing}")
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


@dataclass(frozen=True)
class _Piece:
    slice: ParamSlice
    start: int
    stop: int
    shape: torch.Size  # of the selected part

    @property
    def whole(self) -> bool:
        return self.slice.index is None and self.slice.view_shape is None

    def of(self, t: Tensor) -> Tensor:
        """The selected part of ``t [K, *param_shape]`` as ``[K, *shape]`` (a view)."""
        s = self.slice
        if s.view_shape is not None:
            t = t.view(t.shape[0], *s.view_shape)
        return t if s.index is None else t[(slice(None), *s.index)]


class ParamLayout:
    """The flat order of the selected groups' slices, and the maps between it and parameter tensors.

    The flat vector is the concatenation, in group order, of each group's :class:`ParamSlice` views
    flattened (so GPT-2's fused ``c_attn`` query columns are a group of their own).

    Attributes:
        names: Group names in order.
        sizes: ``{group: numel}``.
        offsets: ``{group: slice}`` into the flat vector.
        numel: Length of the flat vector.
        param_names: The parameters touched, each once, in first-use order.
    """

    def __init__(self, params: Mapping[str, Tensor], groups: Mapping[str, list[ParamSlice]], names: list[str]):
        _check_disjoint(params, groups, names)
        self.names = names
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, slice] = {}
        self._pieces: dict[str, list[_Piece]] = {}
        self._order: list[_Piece] = []
        self._shapes = {n: params[n].shape for n in params}
        pos = 0
        for g in names:
            start = pos
            for s in groups[g]:
                shape = s.view(params).shape
                piece = _Piece(s, pos, pos + shape.numel(), shape)
                self._pieces.setdefault(s.name, []).append(piece)
                self._order.append(piece)
                pos += shape.numel()
            self.sizes[g] = pos - start
            self.offsets[g] = slice(start, pos)
        self.numel = pos
        self.param_names = list(self._pieces)

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """``{param: [K, *param_shape]}`` -> the selected parts in flat order, ``[K, numel]``."""
        return torch.cat([p.of(tensors[p.slice.name]).reshape(-1, p.stop - p.start) for p in self._order], dim=1)

    def flatten_values(self, params: Mapping[str, Tensor]) -> Tensor:
        """The flat vector ``[numel]`` of the current values of ``params`` (unbatched)."""
        return self.flatten({n: params[n][None] for n in self.param_names})[0]

    def unflatten(self, flat: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``flat [K, numel]`` -> ``{param: [K, *param_shape]}`` for ``names`` (default: the touched ones).

        Entries outside the selected slices (other columns of a fused tensor; parameters in ``names``
        this layout does not touch) are zero. A parameter selected whole is a view of ``flat`` when
        ``K = 1``.
        """
        K = flat.shape[0]
        out = {}
        for name in self.param_names if names is None else names:
            pieces = self._pieces.get(name, [])
            shape = self._shapes[name]
            if len(pieces) == 1 and pieces[0].whole:
                out[name] = flat[:, pieces[0].start : pieces[0].stop].reshape(K, *shape)
                continue
            t = flat.new_zeros(K, *shape)
            for p in pieces:
                p.of(t).copy_(flat[:, p.start : p.stop].reshape(K, *p.shape))
            out[name] = t
        return out
