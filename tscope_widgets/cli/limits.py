"""Checks a run passes before it starts: the output folder, and sizes that would not fit in memory.

Each refusal is a :class:`ConfigError` naming the option or key and what to do, raised before the model is
trained or built, so that a bad ``--out`` or a huge ``[data].samples`` is not noticed after the computation.
The memory estimates go through :func:`tscope_widgets.kernels.cost.check_memory` (refuse when the estimate
exceeds 90% of the memory available).
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..kernels.cost import check_memory
from ..kernels.landscape import grid_memory
from .config import ConfigError

ANALYSIS_DTYPE_BYTES = 8  # the analysis copy is float64 by default


def check_output_dir(out: Path, option: str) -> None:
    """Make sure ``out`` is, or can be made, a folder this process can write into.

    Writes and removes one uniquely named empty file in ``out``, or, when ``out`` is missing, in its deepest
    existing parent (where the run will create it). Nothing is created or removed besides that file, so a run
    refused later leaves nothing behind, and several ranks of one ``torchrun`` job may check the same folder at
    once.

    Args:
        out: The output folder.
        option: How the user named it (``"--out"`` or ``"[output].dir"``), for the message.

    Raises:
        ConfigError: When ``out`` is a file, lies below a file, or cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{option} {out} is a file, not a folder: give a folder for the results (it is created if missing)"
        )
    existing = next(folder for folder in (out.absolute(), *out.absolute().parents) if folder.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".tscope-write-test-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"{option} {out}: cannot write results there ({err.strerror or err}); give a folder you can "
            "write to"
        ) from None


def refuse_if_too_big(need: int, what: str, alternatives: list[str]) -> None:
    """:func:`check_memory` on the CPU, its ``MemoryError`` as a :class:`ConfigError`."""
    try:
        check_memory(need, "cpu", what, alternatives)
    except MemoryError as err:
        raise ConfigError(str(err)) from None


def check_grid(resolution: int) -> None:
    """Refuse ``[analysis].resolution`` when its ``resolution x resolution`` landscape grid does not fit."""
    refuse_if_too_big(
        grid_memory(resolution, resolution),
        f"[analysis].resolution = {resolution} (a {resolution} x {resolution} landscape grid)",
        ["lower [analysis].resolution (51 to 201 points per direction resolve a basin)"],
    )


def check_samples(samples: int, seq_len: int, option: str = "[data].samples") -> None:
    """Refuse ``option`` (``[data].samples``, or the demo's ``--samples``) when its token ids and labels (int64
    ``[samples, seq_len]`` each) do not fit."""
    refuse_if_too_big(
        2 * 8 * samples * seq_len,
        f"{option} = {samples} sequences of {seq_len} tokens",
        [f"lower {option} (a few hundred sequences give stable statistics)"],
    )


def build_checked(build: Callable[[], torch.nn.Module], what: str, check: Callable[[Any], None]) -> None:
    """Build the model on the ``meta`` device (no memory), run ``check`` on it, and refuse a model whose
    float32 weights and float64 analysis copy would not fit.

    Args:
        build: Builds the model (called under ``torch.device("meta")``).
        what: The configuration that describes it, for the message (``"[model].config"``).
        check: Called with the meta model before its size is checked (e.g. that an adapter exists).

    Raises:
        ConfigError: From ``check``, or when the weights would not fit.
    """
    with torch.device("meta"):
        model = build()
    check(model)
    params = sum(p.numel() for p in model.parameters())
    refuse_if_too_big(
        params * (4 + ANALYSIS_DTYPE_BYTES),
        f"{what} describes a model of {params:,} parameters; its weights and their float64 analysis copy",
        [f"make the model smaller in {what} (vocab_size, widths, layers)"],
    )


def check_positions(data: Any, max_seq_len: int | None, model: torch.nn.Module) -> None:
    """Refuse token ids longer than the model's learned positions (``n_positions``), naming both keys.

    Args:
        data: The analysis data (``Dataset.data``): ids ``[N, S]``, a dict with ``input_ids``, or texts (not
            checked: the tokenizer cuts them).
        max_seq_len: ``[analysis].max_seq_len``.
        model: The model to analyse.

    Raises:
        ConfigError: When the sequences are longer than the model's positions.
    """
    from collections.abc import Mapping

    from ..models import adapt

    ids = data if isinstance(data, torch.Tensor) else data.get("input_ids") if isinstance(data, Mapping) else None
    limit = adapt(model).max_positions
    if ids is None or limit is None:  # texts are cut by the tokenizer; rotary positions have no limit
        return
    length = min(ids.shape[1], max_seq_len or ids.shape[1])
    if length > limit:
        raise ConfigError(
            f"the data hold sequences of {length} tokens, but the model takes at most {limit} positions "
            f"(n_positions / max_position_embeddings / max_seq_len of [model]); set [analysis].max_seq_len = "
            f"{limit} or less, or give the model more positions"
        )
