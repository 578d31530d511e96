"""Directions files: named loss-landscape directions in one safetensors file with a JSON header.

Layout: tensor keys ``"<direction name>/<parameter name>"``; header metadata ``format``
(``tscope_widgets.directions``), ``version`` (``"1"``), ``order`` (JSON ``{direction: [parameter, ...]}``)
and ``meta`` (the caller's JSON). Tensors keep their dtype, so :func:`load_directions` returns them bit
for bit. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from .._atomic import write_safetensors
from ..files import parse_json
from .lazy_state_dict import open_state_dict

__all__ = ["save_directions", "load_directions", "DIRECTIONS_FORMAT", "DIRECTIONS_VERSION"]

DIRECTIONS_FORMAT = "tscope_widgets.directions"
DIRECTIONS_VERSION = "1"


def save_directions(
    path: str | os.PathLike, directions: Mapping[str, Mapping[str, Tensor]], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write named directions (e.g. from ``random_direction`` or ``eigen_directions``) to one safetensors file.

    The file is written under a temporary name and then moved into place, so an existing file is replaced
    at once (a reader holding it open keeps the old contents).

    Args:
        path: File to write (conventionally ``*.safetensors``; folders are created).
        directions: ``{name: {parameter name: Tensor}}``; names are non-empty and contain no ``/``.
        meta: JSON-serialisable dict (e.g. how the directions were made, eigenvalues), or ``None``.

    Returns:
        The path written.

    Raises:
        ValueError: Bad names, empty directions, non-tensor values or metadata that is not JSON.
    """
    if not isinstance(directions, Mapping) or not directions:
        raise ValueError("directions must be a non-empty dict {name: {parameter name: Tensor}}")
    tensors: dict[str, Tensor] = {}
    order: dict[str, list[str]] = {}
    for dname, d in directions.items():
        if not isinstance(dname, str) or not dname or "/" in dname:
            raise ValueError(f"direction name {dname!r} must be a non-empty string without '/'")
        if not isinstance(d, Mapping) or not d:
            raise ValueError(f"direction {dname!r} must be a non-empty dict {{parameter name: Tensor}}")
        order[dname] = []
        for pname, t in d.items():
            if not isinstance(pname, str) or not isinstance(t, Tensor):
                raise ValueError(f"direction {dname!r}: entry {pname!r} must map a name to a tensor")
            tensors[f"{dname}/{pname}"] = t.detach().to("cpu").contiguous().clone()  # clone: no shared storage
            order[dname].append(pname)
    try:
        meta_json = json.dumps({} if meta is None else dict(meta), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable (finite numbers, strings, lists, dicts): {e}") from e
    header = {
        "format": DIRECTIONS_FORMAT,
        "version": DIRECTIONS_VERSION,
        "order": json.dumps(order),
        "meta": meta_json,
    }
    return write_safetensors(path, tensors, header)


def load_directions(path: str | os.PathLike) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read a file written by :func:`save_directions` (safetensors + JSON header; no pickle).

    Returns:
        ``({name: {parameter name: Tensor}}, meta)`` with CPU tensors, bit for bit as saved, in the saved
        order.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is not a safetensors file, not a directions file of this version, or its
            header does not match its tensors.
    """
    with open_state_dict(path) as sd:
        header = sd.metadata
        if header.get("format") != DIRECTIONS_FORMAT:
            raise ValueError(
                f"{sd.path} is not a {DIRECTIONS_FORMAT} file (format {header.get('format')!r}); "
                "write directions with save_directions"
            )
        if header.get("version") != DIRECTIONS_VERSION:
            raise ValueError(
                f"{sd.path} has version {header.get('version')!r}; this code reads {DIRECTIONS_VERSION}"
            )
        what = "a directions file written by save_directions"
        for key in ("order", "meta"):
            if key not in header:
                raise ValueError(f"{sd.path}: bad header (no {key!r} entry); expected {what}")
        order = parse_json(header["order"], source=f"{sd.path}: bad header entry 'order'", what=what, expect=dict)
        meta = parse_json(header["meta"], source=f"{sd.path}: bad header entry 'meta'", what=what, expect=dict)
        if not all(isinstance(ps, list) and all(isinstance(p, str) for p in ps) for ps in order.values()):
            raise ValueError(f"{sd.path}: bad header (order must map direction names to parameter lists)")
        listed = {f"{d}/{p}" for d, ps in order.items() for p in ps}
        if set(sd) != listed:
            raise ValueError(f"{sd.path}: header lists {len(listed)} tensors, file holds {len(sd)}")
        directions = {d: {p: sd[f"{d}/{p}"] for p in ps} for d, ps in order.items()}
    return directions, meta
