"""Fingerprints that bind a checkpoint to the model and the data it was made from.

A resumed run must continue the run that wrote the checkpoint: the same model (same architecture, the
same parameter values), the same settings and the same data. :func:`model_fingerprint` describes the
model (its class, every parameter's name, shape and dtype, and a sha256 over all parameter values in a
fixed order); :class:`DataHasher` keeps a sha256 over the samples processed so far.
:func:`fingerprint_difference` says in words what differs between two fingerprints.

Cost: hashing reads every parameter's bytes once (on the CPU; a model on an accelerator is copied one
tensor at a time). At GPT-2 size (124M parameters, float32, about 500 MB) this is a few tenths of a
second on one core (measured: 0.26 s for 99M float32 values on one shared CPU core, so about 0.33 s
at 124M), computed once per run, when a snapshot's ``meta()`` is first asked for (a checkpoint, a
results file) or a run resumes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["DataHasher", "LazyFingerprint", "fingerprint_difference", "model_fingerprint", "tensor_sha256"]


def _update(h, t: Tensor) -> None:
    """Feed the bytes of ``t`` (any dtype, any device) to the hash object ``h``, in C order."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    h.update(t.view(torch.uint8).numpy())


def tensor_sha256(t: Tensor) -> str:
    """sha256 (hex) over a tensor's dtype, shape and bytes.

    Args:
        t: Any tensor.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    _update(h, t)
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """The model's class, parameter names and shapes, and a sha256 over all parameter values.

    The values are hashed in the order of ``named_parameters()`` (the module's definition order),
    each parameter's name, dtype and shape before its bytes, so two models differ in ``params_sha256``
    whenever any value, name, shape or dtype differs. Buffers (e.g. causal masks) are not hashed.

    Args:
        model: The module to describe (e.g. the analysis copy of an adapter's model).

    Returns:
        A JSON dict: ``class`` (qualified class name), ``num_params`` (values), ``shapes_sha256``
        (names, shapes and dtypes) and ``params_sha256`` (names, shapes, dtypes and values).
    """
    shapes, values = hashlib.sha256(), hashlib.sha256()
    n = 0
    for name, p in model.named_parameters():
        head = f"{name}|{p.dtype}|{tuple(p.shape)};".encode()
        shapes.update(head)
        values.update(head)
        _update(values, p)
        n += p.numel()
    cls = type(model)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "num_params": n,
        "shapes_sha256": shapes.hexdigest(),
        "params_sha256": values.hexdigest(),
    }


class LazyFingerprint:
    """A fingerprint computed on first use and kept (thread-safe), e.g. when a checkpoint is written.

    Args:
        compute: Returns the fingerprint (a JSON dict).
    """

    def __init__(self, compute: Callable[[], dict[str, Any]]):
        self._compute: Callable[[], dict[str, Any]] | None = compute
        self._value: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        """The fingerprint (computed now if not yet).

        Returns:
            A copy of the fingerprint dict.
        """
        with self._lock:
            if self._value is None:
                self._value = self._compute()
                self._compute = None
            return dict(self._value)


class DataHasher:
    """A running sha256 over the batches of a data set: each batch's ids and mask with their shapes.

    Example:
        >>> h = DataHasher()
        >>> h.add(torch.ones(2, 3, dtype=torch.long), None)
        >>> h.samples, len(h.hexdigest())
        (2, 64)
    """

    def __init__(self):
        """An empty hasher (no samples)."""
        self._h = hashlib.sha256()
        self.samples = 0

    def add(self, ids: Tensor, mask: Tensor | None) -> None:
        """Feed one batch.

        Args:
            ids: ``[B, S_b]`` integer token ids (hashed as int64).
            mask: ``[B, S_b]`` attention mask or ``None`` (hashed as uint8).
        """
        self._h.update(f"ids{tuple(ids.shape)}".encode())
        _update(self._h, ids.to(torch.int64))
        if mask is not None:
            self._h.update(f"mask{tuple(mask.shape)}".encode())
            _update(self._h, mask.to(torch.uint8))
        self.samples += int(ids.shape[0])

    def hexdigest(self) -> str:
        """The sha256 (hex) of the batches fed so far.

        Returns:
            The hex digest.
        """
        return self._h.copy().hexdigest()


def _short(value: Any) -> str:
    return f"{value[:12]}…" if isinstance(value, str) and len(value) > 12 else repr(value)


def fingerprint_difference(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """What differs between the model fingerprint of a checkpoint and the current one, in words.

    Args:
        saved: The fingerprint stored in the checkpoint.
        now: The fingerprint of the current model.

    Returns:
        ``None`` when they agree, else a sentence naming the first difference (class, parameter names
        or shapes, parameter values) with both values.
    """
    if saved.get("class") != now.get("class"):
        return f"another architecture (checkpoint {saved.get('class')!r}, now {now.get('class')!r})"
    if saved.get("num_params") != now.get("num_params") or saved.get("shapes_sha256") != now.get(
        "shapes_sha256"
    ):
        return (
            f"other parameter names or shapes (checkpoint {saved.get('num_params')} values, shapes sha256 "
            f"{_short(saved.get('shapes_sha256'))}; now {now.get('num_params')} values, "
            f"{_short(now.get('shapes_sha256'))})"
        )
    if saved.get("params_sha256") != now.get("params_sha256"):
        return (
            f"parameter values differ (checkpoint sha256 {_short(saved.get('params_sha256'))}, "
            f"now {_short(now.get('params_sha256'))})"
        )
    return None
