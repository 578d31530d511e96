"""Write a safetensors file under a temporary name, then move it into place with ``os.replace``.

A reader never sees a half-written file, and one that has the old file open (memory-mapped, as
:class:`~tscope_widgets.export.lazy_state_dict.LazyStateDict` does) keeps reading the old contents
instead of a file truncated under it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` with header ``metadata`` to ``path`` (folders created, an old file replaced at once).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
