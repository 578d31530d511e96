"""A state dict in a safetensors file, read one tensor at a time.

:func:`open_state_dict` returns a :class:`LazyStateDict`: a read-only ``Mapping[str, Tensor]`` whose
``sd[name]`` reads that one tensor from the file, and whose :meth:`~LazyStateDict.shape_and_dtype`
answers from the file's header without reading anything. The landscape kernels
(``checkpoint_direction``, ``pca_directions``, ``project_trajectory``) take such mappings like any state
dict, so the PCA of a training trajectory saved as many checkpoint files holds only one parameter's
tensors at a time::

    trajectory = [open_state_dict(p) for p in sorted(Path("run").glob("step*.safetensors"))]
    (d1, d2), explained = pca_directions(trajectory, k=2, reference=model)

The file is memory-mapped while the mapping is open (which costs address space, not memory or file
descriptors); :meth:`LazyStateDict.close` or a ``with`` block releases it. Replace an open file
atomically (write a new file, then ``os.replace``), as this package's writers do; a file truncated in
place under an open mapping cannot be read. Nothing is unpickled: safetensors holds raw tensor bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..files import read_safetensors_header

__all__ = ["LazyStateDict", "open_state_dict"]

class LazyStateDict(Mapping[str, Tensor]):
    """A read-only ``Mapping[str, Tensor]`` over one safetensors file; ``sd[name]`` reads one tensor.

    Iteration gives the names in the file's order without reading tensors; ``len``, ``in`` and
    :meth:`shape_and_dtype` use the header only. Each ``sd[name]`` reads the tensor anew (a fresh
    tensor on ``device``, not shared with earlier reads).

    Args:
        path: A safetensors file.
        device: Where tensors are placed when read (``"cpu"``, ``"cuda:0"``, ...).

    Attributes:
        path: The file.
        metadata: The string-to-string metadata of the file's header (``{}`` when it has none).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is not a sound safetensors file (see :func:`~tscope_widgets.files.read_safetensors_header`).
    """

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu"):
        self.path = Path(path)
        header = read_safetensors_header(self.path, what="a safetensors file of a state dict")
        try:
            self._file = safe_open(str(self.path), framework="pt", device=str(device))
        except Exception as e:  # safetensors raises its own error types (the file may have changed since)
            raise ValueError(f"{self.path}: cannot read it as a safetensors file ({e})") from e
        self.metadata: dict[str, str] = header.metadata
        self._specs = {key: (spec.shape, spec.torch_dtype) for key, spec in header.tensors.items()}

    def _open_file(self):
        if self._file is None:
            raise ValueError(f"{self.path}: this LazyStateDict is closed; open the file again with open_state_dict")
        return self._file

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._specs:
            raise KeyError(f"{self.path} holds no tensor {key!r}")
        return self._open_file().get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def shape_and_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of the tensor ``key`` from the header (nothing is read).

        Raises:
            KeyError: If the file holds no such tensor.
        """
        if key not in self._specs:
            raise KeyError(f"{self.path} holds no tensor {key!r}")
        return self._specs[key]

    def close(self) -> None:
        """Release the file (later reads raise ``ValueError``; the names and shapes stay available)."""
        self._file = None

    def __enter__(self) -> LazyStateDict:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else "open"
        return f"LazyStateDict({str(self.path)!r}, {len(self)} tensors, {state})"


def open_state_dict(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LazyStateDict:
    """Open a safetensors file as a lazy state dict (see :class:`LazyStateDict`).

    Args:
        path: A safetensors file, e.g. written by ``safetensors.torch.save_file(model.state_dict(), path)``
            or ``save_model``.
        device: Where tensors are placed when read.

    Returns:
        A :class:`LazyStateDict`; use it in a ``with`` block, or call ``close()``, to release the file.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it is not a safetensors file.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> path = tempfile.mkdtemp() + "/ckpt.safetensors"
        >>> save_file({"w": torch.ones(2, 3, dtype=torch.float64)}, path)
        >>> with open_state_dict(path) as sd:
        ...     list(sd), sd.shape_and_dtype("w"), sd["w"].sum().item()
        (['w'], ((2, 3), torch.float64), 6.0)
    """
    return LazyStateDict(path, device=device)
