"""Checkpoints: a kernel snapshot as safetensors plus JSON on disk, and back (no pickle).

:func:`save_checkpoint` writes a directory holding ``meta.json`` (format, version, ``done``,
``total``, the kernel's ``meta()``) and ``state-<id>.safetensors`` (the tensors). Each file is written
atomically and durably (:mod:`tscope_widgets._atomic`: a temporary name, fsync, ``os.replace``, fsync of
the directory); ``meta.json`` is replaced last and names the tensors file, so a process killed at any
moment leaves either the previous checkpoint or the new one, never a mix. No pickle is written or read.
One writer per directory.

A snapshot (see :mod:`tscope_widgets.jobs.job` for the kernel protocol) has ``done: int`` and
``total: int | None``; a checkpointable one also ``state_dict() -> dict[str, Tensor]`` and
``meta() -> dict`` (JSON values). :func:`load_checkpoint` returns a :class:`Checkpoint`, which a
kernel receives as ``resume=``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._atomic import TMP_PREFIX, write_safetensors, write_text
from ..files import read_json, read_safetensors

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "tscope_widgets.checkpoint"
CHECKPOINT_VERSION = 1
_META_FILE = "meta.json"
# state-<sha256 of the tensors, 64 hex>.safetensors; older checkpoints: state-<uuid, 32 hex>.safetensors.
_STATE_FILE = re.compile(r"state-(?:[0-9a-f]{32}|[0-9a-f]{64})\.safetensors")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as loaded from disk and passed to a kernel as ``resume=``.

    Attributes:
        tensors: The snapshot's ``state_dict()`` (CPU tensors).
        meta: The snapshot's ``meta()`` (JSON values).
        done: The snapshot's ``done`` when it was saved.
        total: The snapshot's ``total`` when it was saved.
        path: The directory it was loaded from (for messages), or ``None``.
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    done: int = 0
    total: int | None = None
    path: str | None = None


# ---------------------------------------------------------------------------- snapshot access
def progress_of(snapshot: Any) -> tuple[int, int | None]:
    try:
        done, total = snapshot.done, snapshot.total
    except AttributeError:
        raise TypeError(
            f"a kernel snapshot needs attributes `done: int` and `total: int | None`; "
            f"got a {type(snapshot).__name__} without them"
        ) from None
    try:
        return int(done), None if total is None else int(total)
    except (TypeError, ValueError):
        raise TypeError(
            f"snapshot.done must be an int and snapshot.total an int or None, got {done!r} and {total!r}"
        ) from None


def check_checkpointable(snapshot: Any) -> None:
    for name in ("state_dict", "meta"):
        if not callable(getattr(snapshot, name, None)):
            raise TypeError(
                f"a checkpointing job needs snapshots with state_dict() and meta(); "
                f"{type(snapshot).__name__} has no {name}()"
            )


def _snapshot_tensors(snapshot: Any) -> dict[str, Tensor]:
    tensors = snapshot.state_dict()
    if not isinstance(tensors, Mapping):
        raise TypeError(f"snapshot.state_dict() must return a dict of tensors, got {type(tensors).__name__}")
    out = {}
    for key, t in tensors.items():
        if not isinstance(key, str) or not isinstance(t, Tensor):
            raise TypeError(f"snapshot.state_dict() must map str to Tensor, got {key!r}: {type(t).__name__}")
        # A private contiguous CPU copy: safetensors rejects views that share storage.
        out[key] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


def _snapshot_meta(snapshot: Any) -> dict[str, Any]:
    meta = snapshot.meta()
    if not isinstance(meta, dict):
        raise TypeError(f"snapshot.meta() must return a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"snapshot.meta() must be JSON-serialisable: {e}") from e
    return meta


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 (hex) over the tensors in key order: each key, dtype, shape and the bytes (C order).

    It names the tensors file (``state-<sha256>.safetensors``, recorded in ``meta.json``) at save
    time and is compared at load time, so a tensors file changed or
    damaged after it was written is refused. Checkpoint tensors are small (statistics ``[S, S]`` per
    layer and a reservoir), so this costs about as much as writing them.

    Args:
        tensors: CPU tensors by name.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(tensors[key].shape)};".encode())
        h.update((t.to(torch.uint8) if t.dtype == torch.bool else t).view(torch.uint8).numpy())
    return h.hexdigest()


# ---------------------------------------------------------------------------- checkpoint files
def save_checkpoint(path_dir: str | os.PathLike, snapshot: Any, *, job_name: str | None = None) -> Path:
    """Write ``snapshot`` (its ``state_dict()``, ``meta()``, ``done`` and ``total``) to a directory.

    The directory is created if needed; an earlier checkpoint in it is replaced atomically (see the
    module docstring). Older tensors files are removed once the new ``meta.json`` is in place.

    Args:
        path_dir: Checkpoint directory.
        snapshot: A kernel snapshot with ``done``, ``total``, ``state_dict()`` and ``meta()``.
        job_name: Recorded in ``meta.json`` for humans.

    Returns:
        The checkpoint directory.

    Raises:
        TypeError: If the snapshot lacks a part of the protocol, ``state_dict()`` is not a dict of
            tensors, or ``meta()`` is not JSON-serialisable.
    """
    done, total = progress_of(snapshot)
    check_checkpointable(snapshot)
    tensors = _snapshot_tensors(snapshot)
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "job": job_name,
        "done": done,
        "total": total,
        "saved_unix_s": time.time(),
        "tensors_file": "",
        "tensor_keys": sorted(tensors),
        "meta": _snapshot_meta(snapshot),
    }
    directory = Path(path_dir)
    directory.mkdir(parents=True, exist_ok=True)
    token = tensors_sha256(tensors)  # content-addressed: load_checkpoint verifies it
    state_name = f"state-{token}.safetensors"
    record["tensors_file"] = state_name

    write_safetensors(directory / state_name, tensors, {"format": CHECKPOINT_FORMAT})
    write_text(directory / _META_FILE, json.dumps(record, indent=1))  # the commit point

    for old in directory.iterdir():
        stale_state = _STATE_FILE.fullmatch(old.name) and old.name != state_name
        if stale_state or old.name.startswith(TMP_PREFIX):
            old.unlink(missing_ok=True)
    return directory


def load_checkpoint(path_dir: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors + JSON; no pickle).

    Args:
        path_dir: Checkpoint directory.

    Returns:
        The :class:`Checkpoint` (tensors on the CPU).

    Raises:
        FileNotFoundError: If the directory holds no checkpoint.
        ValueError: If ``meta.json`` is not a checkpoint of this format and version, it does not
            match the tensors file (keys, or the sha256 of the tensors recorded at save time), or
            ``done``/``total`` are not non-negative ints with ``done <= total``. Checkpoints written
            before the sha256 was recorded (``state-<uuid>.safetensors``) are read without that check.
    """
    directory = Path(path_dir)
    meta_path = directory / _META_FILE
    for attempt in range(2):
        try:
            record = read_json(meta_path, what=f"the description of a {CHECKPOINT_FORMAT} checkpoint", expect=None)
        except FileNotFoundError:
            raise FileNotFoundError(f"no checkpoint in {directory}: {_META_FILE} not found") from None
        if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{meta_path} is not a {CHECKPOINT_FORMAT} file")
        if record.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{meta_path} has checkpoint version {record.get('version')!r}; this code reads "
                f"version {CHECKPOINT_VERSION}"
            )
        state_name = record.get("tensors_file")
        if not isinstance(state_name, str) or not _STATE_FILE.fullmatch(state_name):
            raise ValueError(f"{meta_path}: bad tensors_file entry {state_name!r}")
        try:
            tensors, _ = read_safetensors(
                directory / state_name, what=f"the tensors of the {CHECKPOINT_FORMAT} checkpoint {meta_path}"
            )
            break
        except FileNotFoundError:
            if attempt:  # a concurrent writer may have replaced the checkpoint in between: retry once
                raise FileNotFoundError(f"{meta_path} names missing file {state_name}") from None
    keys = record.get("tensor_keys")
    if keys is not None and sorted(tensors) != keys:
        raise ValueError(f"{meta_path} lists tensors {keys}, but the tensors file has {sorted(tensors)}")
    digest = state_name[len("state-") : -len(".safetensors")]
    if len(digest) == 64 and digest != tensors_sha256(tensors):
        raise ValueError(
            f"{directory / state_name}: the tensors' sha256 is not the {digest[:12]}… recorded in "
            f"{meta_path} (field tensors_file): the file changed after it was saved"
        )
    meta = record.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: 'meta' must be a JSON object")
    done, total = record.get("done"), record.get("total")
    if (
        isinstance(done, bool)
        or not isinstance(done, int)
        or done < 0
        or not (total is None or (isinstance(total, int) and not isinstance(total, bool) and total >= done))
    ):
        raise ValueError(f"{meta_path}: bad done/total entries {done!r}, {total!r}")
    if "done" in meta and meta["done"] != done:
        raise ValueError(f"{meta_path}: field meta.done={meta['done']!r} differs from done={done!r}")
    return Checkpoint(tensors=tensors, meta=meta, done=done, total=total, path=str(directory))
