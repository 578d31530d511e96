"""Spectrum history files: the records of a ``SpectrumTracker`` in one safetensors file.

Layout: one tensor per array of :class:`~tscope_widgets.tracking.SpectrumHistory` (its
``state_dict()``: ``steps``, ``lambda_max``, ``grad_norms``, ``density``, ...) with its NumPy dtype; header
metadata ``format`` (``tscope_widgets.spectrum_history``), ``version`` (``"1"``) and, as JSON,
``grad_norm_labels``, ``block_labels`` and ``total``. :func:`load_spectrum_history` rebuilds the history
bit for bit through ``SpectrumHistory.from_state``. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._atomic import write_safetensors
from ..files import parse_json
from ..tracking import SpectrumHistory, SpectrumTracker
from .lazy_state_dict import open_state_dict

__all__ = ["save_spectrum_history", "load_spectrum_history", "SPECTRUM_HISTORY_FORMAT", "SPECTRUM_HISTORY_VERSION"]

SPECTRUM_HISTORY_FORMAT = "tscope_widgets.spectrum_history"
SPECTRUM_HISTORY_VERSION = "1"
_JSON_KEYS = ("grad_norm_labels", "block_labels", "total")


def save_spectrum_history(path: str | os.PathLike, history: SpectrumHistory | SpectrumTracker) -> Path:
    """Write a spectrum history (or a tracker's records so far) to one safetensors file.

    The file is written under a temporary name and then moved into place, so an existing file is replaced
    at once; saving after every record from a training loop is safe.

    Args:
        path: File to write (conventionally ``*.safetensors``; folders are created).
        history: A :class:`~tscope_widgets.tracking.SpectrumHistory`, or a
            :class:`~tscope_widgets.tracking.SpectrumTracker` (its ``history``).

    Returns:
        The path written.

    Raises:
        TypeError: If ``history`` is neither.
    """
    if isinstance(history, SpectrumTracker):
        history = history.history
    if not isinstance(history, SpectrumHistory):
        raise TypeError(f"history must be a SpectrumHistory or a SpectrumTracker, got {type(history).__name__}")
    meta = history.meta()
    header = {"format": SPECTRUM_HISTORY_FORMAT, "version": SPECTRUM_HISTORY_VERSION}
    header.update({key: json.dumps(meta[key]) for key in _JSON_KEYS})
    return write_safetensors(path, history.state_dict(), header)


def load_spectrum_history(path: str | os.PathLike) -> SpectrumHistory:
    """Read a file written by :func:`save_spectrum_history` (safetensors + JSON header; no pickle).

    Returns:
        The :class:`~tscope_widgets.tracking.SpectrumHistory`, every array bit for bit as saved (dtype,
        shape and NaNs included).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a safetensors file, not a spectrum history of this version, or lacks
            an array or a label list.
    """
    with open_state_dict(path) as sd:
        header = sd.metadata
        if header.get("format") != SPECTRUM_HISTORY_FORMAT:
            raise ValueError(
                f"{sd.path} is not a spectrum history (format {header.get('format')!r}); "
                "write one with save_spectrum_history"
            )
        if header.get("version") != SPECTRUM_HISTORY_VERSION:
            raise ValueError(
                f"{sd.path}: unsupported spectrum history version {header.get('version')!r}; "
                f"this code reads {SPECTRUM_HISTORY_VERSION}"
            )
        what = "a spectrum history written by save_spectrum_history"
        missing = [key for key in _JSON_KEYS if key not in header]
        if missing:
            raise ValueError(f"{sd.path}: bad header (no {missing} entries); expected {what}")
        meta = {key: parse_json(header[key], source=f"{sd.path}: bad header entry {key!r}", what=what)
                for key in _JSON_KEYS}
        tensors = {name: sd[name] for name in sd}
    try:
        return SpectrumHistory.from_state(tensors, {"kind": "spectrum_history", **meta})
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:  # a damaged file's arrays or labels
        raise ValueError(f"{sd.path}: {e}") from None
