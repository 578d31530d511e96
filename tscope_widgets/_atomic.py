"""Atomic, durable file writes: the one writer of every file this package saves (results, checkpoints, directions).

Each file is written under a temporary name in its own folder (``.tmp-<random>-<name>``), flushed to disk
(``fsync``), moved into place with ``os.replace`` and its folder flushed too, so that

- a reader never sees a half-written file: it sees the old file or the new one;
- a reader that has the old file open (memory-mapped, as
  :class:`~tscope_widgets.export.lazy_state_dict.LazyStateDict` does) keeps reading the old contents
  instead of a file truncated under it;
- a process killed or a machine that loses power at any moment leaves the old file or the new one;
- a failure while writing (a full disk, a bad tensor) leaves the old file as it was and no temporary
  file behind;
- the file gets the permissions of any new file (``0o666`` less the process umask), whatever mode the
  writer created it with (safetensors writes ``0o600``).

Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

__all__ = ["TMP_PREFIX", "write_atomic", "write_safetensors", "write_text"]

TMP_PREFIX = ".tmp-"  # temporary files start with this; a folder's owner may remove leftovers of a killed writer


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # directories cannot be opened for fsync on Windows
        _fsync_path(path)


def _umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux ``/proc``); elsewhere
    set and put back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, then make it ``path`` atomically.

    Folders are created as needed; an old file at ``path`` is replaced in one step. If ``write`` (or
    anything after it) raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to write.
        write: Writes the whole file to the path it is given (which does not exist yet).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace
    _fsync_dir(path.parent)
    return path


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` with header ``metadata`` as a safetensors file at ``path``, atomically (:func:`write_atomic`).

    The bytes are exactly those of ``safetensors.torch.save_file(dict(tensors), path, metadata)``.

    Returns:
        The path written.
    """
    header = None if metadata is None else dict(metadata)
    return write_atomic(path, lambda tmp: save_file(dict(tensors), str(tmp), metadata=header))


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` (e.g. a JSON document) to ``path``, atomically (:func:`write_atomic`).

    Returns:
        The path written.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)

    return write_atomic(path, write)
