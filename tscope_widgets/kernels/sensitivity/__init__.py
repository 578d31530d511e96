"""Position-to-position sensitivity :math:`s_{ij} = \\lVert \\partial h_i / \\partial e_j \\rVert_F^2`.

Modules, data flowing down the list:

- :mod:`.passes`: the function differentiated and its vmapped VJP/JVP passes in bounded memory;
- :mod:`.maps`: :func:`position_sensitivity`, per-sample maps of one batch (the quantities and methods
  are described there);
- :mod:`.stream`: :func:`iter_sensitivity`, population statistics over a data set, resumable;
- :mod:`.paired`: :func:`iter_paired_sensitivity`, two models on the same batches and the statistics of
  their per-sample differences (for the paired test of :mod:`tscope_widgets.kernels.compare`).

What data can be (tensors, tuples, dicts, strings with a tokenizer, DataLoaders) is
:mod:`tscope_widgets.data`.
"""

from .maps import (
    CAUSAL_PREFIX_SHARE,
    FORWARD_COST_RATIO,
    METHODS,
    MODES,
    Layer,
    analysis_adapter,
    choose_mode,
    position_sensitivity,
)
from .paired import PairedSnapshot, iter_paired_sensitivity
from .passes import (
    CHUNK_MEMORY_BUDGET,
    FULL_JACOBIAN_MAX_BYTES,
    MAX_PREFIX_GROUPS,
    MIN_PASS_WORK,
    MIN_VECTORS_PER_PASS,
)
from .stream import SensitivitySnapshot, iter_sensitivity

__all__ = [
    "position_sensitivity",
    "iter_sensitivity",
    "SensitivitySnapshot",
    "iter_paired_sensitivity",
    "PairedSnapshot",
    "CHUNK_MEMORY_BUDGET",
    "FULL_JACOBIAN_MAX_BYTES",
    # helpers and settings, importable as before the split
    "analysis_adapter",
    "choose_mode",
    "Layer",
    "METHODS",
    "MODES",
    "FORWARD_COST_RATIO",
    "CAUSAL_PREFIX_SHARE",
    "MIN_PASS_WORK",
    "MAX_PREFIX_GROUPS",
    "MIN_VECTORS_PER_PASS",
]
