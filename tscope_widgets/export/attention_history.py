"""Attention history files: the records of an ``AttentionTracker`` in one safetensors file.

Layout: one tensor per array of :class:`~tscope_widgets.tracking.AttentionHistory` (its ``state_dict()``:
``steps``, ``entropy``, ``singular_values.<kind>``, ``<rank measure>.<kind>``); header metadata ``format``
(``tscope_widgets.attention_history``), ``version`` (``"1"``) and, as JSON, ``layers``, ``n_heads``, ``rank``
and ``total``. :func:`load_attention_history` rebuilds the history bit for bit through
``AttentionHistory.from_state``. Written through ``_atomic`` (temporary file, then rename); nothing is pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._atomic import write_safetensors
from ..files import parse_json
from ..tracking import AttentionHistory, AttentionTracker
from .lazy_state_dict import open_state_dict

__all__ = ["save_attention_history", "load_attention_history", "ATTENTION_HISTORY_FORMAT"]

ATTENTION_HISTORY_FORMAT = "tscope_widgets.attention_history"
ATTENTION_HISTORY_VERSION = "1"
_JSON_KEYS = ("layers", "n_heads", "rank", "total")


def save_attention_history(path: str | os.PathLike, history: AttentionHistory | AttentionTracker) -> Path:
    """Write an attention history (or a tracker's records so far) to one safetensors file, atomically.

    Args:
        path: File to write (conventionally ``*.safetensors``; folders are created).
        history: An :class:`~tscope_widgets.tracking.AttentionHistory` or an
            :class:`~tscope_widgets.tracking.AttentionTracker` (its ``history``).

    Returns:
        The path written.

    Raises:
        TypeError: If ``history`` is neither.
    """
    if isinstance(history, AttentionTracker):
        history = history.history
    if not isinstance(history, AttentionHistory):
        raise TypeError(f"history must be an AttentionHistory or an AttentionTracker, got {type(history).__name__}")
    meta = history.meta()
    header = {"format": ATTENTION_HISTORY_FORMAT, "version": ATTENTION_HISTORY_VERSION}
    header.update({key: json.dumps(meta[key]) for key in _JSON_KEYS})
    return write_safetensors(path, history.state_dict(), header)


def load_attention_history(path: str | os.PathLike) -> AttentionHistory:
    """Read a file written by :func:`save_attention_history` (safetensors + JSON header; no pickle).

    Returns:
        The :class:`~tscope_widgets.tracking.AttentionHistory`, every array bit for bit as saved.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a safetensors file, not an attention history of this version, or
            lacks an array or a header entry.
    """
    with open_state_dict(path) as sd:
        header = sd.metadata
        if header.get("format") != ATTENTION_HISTORY_FORMAT:
            raise ValueError(
                f"{sd.path} is not an attention history (format {header.get('format')!r}); "
                "write one with save_attention_history"
            )
        if header.get("version") != ATTENTION_HISTORY_VERSION:
            raise ValueError(
                f"{sd.path}: unsupported attention history version {header.get('version')!r}; "
                f"this code reads {ATTENTION_HISTORY_VERSION}"
            )
        what = "an attention history written by save_attention_history"
        missing = [key for key in _JSON_KEYS if key not in header]
        if missing:
            raise ValueError(f"{sd.path}: bad header (no {missing} entries); expected {what}")
        meta = {key: parse_json(header[key], source=f"{sd.path}: bad header entry {key!r}", what=what)
                for key in _JSON_KEYS}
        tensors = {name: sd[name] for name in sd}
    try:
        return AttentionHistory.from_state(tensors, {"kind": "attention_history", **meta})
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        raise ValueError(f"{sd.path}: {e}") from None
