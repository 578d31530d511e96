"""Parameters of checkpoints and directions, read one tensor at a time and checked against a model.

A checkpoint (:data:`ModelState`) is a model, an adapter or a state dict: any ``Mapping[str, Tensor]``,
possibly lazy (``tscope_widgets.export.open_state_dict(path)``), so that a trajectory too large for memory
can be streamed. :class:`_StateReader` reads one, :func:`_resolve_keys` matches parameter names across
checkpoints (tied weights under any of their names), and ``_check_*`` check a :data:`Direction` against
the parameters of a model. Nothing here touches the disk.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ...models.adapter import ModelAdapter

__all__ = ["Direction", "ModelState", "TensorDescriptions", "direction_norm"]

Direction = dict[str, Tensor]


def direction_norm(d: Mapping[str, Tensor]) -> float:
    r""":math:`\lVert d \rVert_2` of a direction over all its parameters (flat), summed in float64.

    Example:
        >>> direction_norm({"w": torch.tensor([3.0]), "b": torch.tensor([[4.0]])})
        5.0
    """
    return math.sqrt(sum(float(t.detach().to(torch.float64).pow(2).sum()) for t in d.values()))


def _as_module(x: ModelAdapter | nn.Module) -> nn.Module:
    if isinstance(x, ModelAdapter):
        return x.model
    if isinstance(x, nn.Module):
        return x
    raise TypeError(f"expected a model (nn.Module) or a ModelAdapter, got {type(x).__name__}")


def _tied_aliases(module: nn.Module) -> dict[str, list[str]]:
    """``{name in named_parameters(): [that name, then every other name of the same (tied) tensor]}``."""
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[first[id(p)]].append(name)
        else:
            first[id(p)] = name
            aliases[name] = [name]
    return aliases


@runtime_checkable
class TensorDescriptions(Protocol):
    """A state dict that can tell a tensor's shape and dtype without reading it (a lazy file reader).

    :func:`pca_directions` and its companions check names and shapes before they read values; a
    ``Mapping`` that also has this method (``tscope_widgets.export.LazyStateDict`` does) answers those
    checks from the file's header instead of loading every tensor an extra time.
    """

    def shape_and_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of the tensor under ``key``."""
        ...


# Where parameters come from: a model, an adapter, or a state dict (eager or lazy).
ModelState = ModelAdapter | nn.Module | Mapping[str, Tensor]


class _StateReader:
    """Read-only access to the parameters of one checkpoint, one tensor at a time.

    A checkpoint is a model or adapter (its ``named_parameters()``) or a state dict: any
    ``Mapping[str, Tensor]``, possibly lazy (values read on access). Its values are read only through
    :meth:`get`, one key at a time, and never copied as a whole.
    """

    def __init__(self, item: Any, what: str):
        self.what = what
        if isinstance(item, (ModelAdapter, nn.Module)):
            self._tensors: Mapping[str, Tensor] = {n: p.detach() for n, p in _as_module(item).named_parameters()}
            self._described = False
        elif isinstance(item, Mapping):
            bad = [k for k in item if not isinstance(k, str)]
            if bad:
                raise TypeError(f"{what}: a state dict must map parameter names (str) to tensors; bad keys {bad[:5]}")
            self._tensors = item
            self._described = isinstance(item, TensorDescriptions)
        else:
            hint = (
                "; to read a safetensors file use tscope_widgets.export.open_state_dict(path)"
                if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__")
                else ""
            )
            raise TypeError(
                f"{what}: expected a model, an adapter or a state dict (a Mapping {{name: Tensor}}), "
                f"got {type(item).__name__}{hint}"
            )

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def _tensor(self, key: str) -> Tensor:
        t = self._tensors[key]
        if not isinstance(t, Tensor):
            raise TypeError(f"{self.what}: entry {key!r} must be a tensor, got {type(t).__name__}")
        return t

    def shape_and_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        if self._described:
            shape, dtype = self._tensors.shape_and_dtype(key)
            return tuple(shape), dtype
        t = self._tensor(key)
        return tuple(t.shape), t.dtype

    def shape(self, key: str) -> tuple[int, ...]:
        return self.shape_and_dtype(key)[0]

    def get(self, key: str) -> Tensor:
        return self._tensor(key).detach()

    def untied_float_keys(self) -> list[str]:
        """Floating-point keys, without a second name of a tied tensor (same storage, shape and strides)."""
        seen, out = set(), []
        for key in self.keys():
            if not self.shape_and_dtype(key)[1].is_floating_point:
                continue
            if not self._described:  # a lazy mapping reads fresh copies: no shared storage to compare
                t = self._tensor(key)
                ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
                if t.numel() and ident in seen:
                    continue
                seen.add(ident)
            out.append(key)
        return out


def _resolve_keys(
    readers: Sequence[_StateReader], names: Sequence[str] | None, reference: ModelAdapter | nn.Module | None
) -> list[tuple[str, list[str]]]:
    """``[(parameter name, [its key in each reader])]``, checking that every reader has it with one shape.

    Names come from ``names``, else from ``reference.named_parameters()``, else from the first reader's
    floating-point tensors (tied duplicates removed). With a ``reference``, a reader may hold a tied
    parameter under any of its names (``save_model`` of safetensors keeps only one of them).
    """
    aliases: dict[str, list[str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    if reference is not None:
        module = _as_module(reference)
        aliases = _tied_aliases(module)
        shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
        if names is None:
            names = list(aliases)
    elif names is None:
        names = readers[0].untied_float_keys()
        if not names:
            raise ValueError(f"{readers[0].what} holds no floating-point tensors")
    out = []
    for name in names:
        keys = []
        for r in readers:
            key = next((a for a in aliases.get(name, [name]) if a in r), None)
            if key is None:
                hint = "" if reference is not None else " (pass reference=model to match tied or renamed weights)"
                raise ValueError(f"{r.what} has no parameter {name!r}{hint}")
            shape = r.shape(key)
            want = shapes.setdefault(name, shape)
            if shape != want:
                raise ValueError(f"{r.what}: parameter {name!r} has shape {list(shape)}, expected {list(want)}")
            keys.append(key)
        out.append((name, keys))
    return out


def _flat64(t: Tensor) -> Tensor:
    """``t`` flattened, as float64 on the CPU (for dot products)."""
    return t.detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` promoted to at least float32 (directions of bf16/fp16 models are kept in float32)."""
    return torch.promote_types(dtype, torch.float32)


# ======================================================================================
# direction dicts against a model's parameters
# ======================================================================================
def _check_plain_direction(direction: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """``direction`` as a dict, after checking that it holds finite floating-point tensors."""
    _moved_names(direction, what)
    return dict(direction)


def _moved_names(direction: Mapping[str, Tensor], what: str) -> set[str]:
    """Check that ``direction`` is a non-empty dict of finite floating-point tensors; return the names of those
    that are not all zero. One min/max pass per tensor (NaN propagates into both), no temporaries."""
    if not isinstance(direction, Mapping) or not direction:
        raise TypeError(f"{what} must be a non-empty dict {{parameter name: Tensor}}, got {type(direction).__name__}")
    moved = set()
    for name, t in direction.items():
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise ValueError(f"{what}[{name!r}] must be a floating-point tensor, got {getattr(t, 'dtype', type(t))}")
        if t.numel() == 0:
            continue
        lo, hi = (float(x) for x in torch.aminmax(t.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{what}[{name!r}] holds non-finite values")
        if lo != 0 or hi != 0:
            moved.add(name)
    return moved


def _check_direction(
    direction: Mapping[str, Tensor], params: Mapping[str, Tensor], what: str
) -> tuple[dict[str, Tensor], set[str]]:
    """``direction`` in the order, dtype and device of ``params``, after checking names, shapes and values;
    and the names of its tensors that are not all zero."""
    moved = _moved_names(direction, what)
    missing = [n for n in params if n not in direction]
    extra = [n for n in direction if n not in params]
    if missing:
        raise ValueError(f"{what} lacks parameter(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                         "a direction needs every name of model.named_parameters()")
    if extra:
        raise ValueError(
            f"{what} has parameter(s) {extra[:5]} that the model does not have (a buffer or a tied duplicate? "
            "pass reference=model to checkpoint_direction / pca_directions)"
        )
    out = {}
    for name, p in params.items():
        d = direction[name]
        if d.shape != p.shape:
            raise ValueError(f"{what}[{name!r}] has shape {list(d.shape)}, but the parameter has {list(p.shape)}")
        out[name] = d.detach().to(device=p.device, dtype=p.dtype)
    return out, moved
