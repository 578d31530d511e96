"""Checked conversions of the values :class:`~.attention.AttentionExplorer` receives and sends, as pure functions.

Values from the browser are untrusted: the view state the page may set (``layer``, ``attention_map``,
``selected_cell``, ``measure``, ``kind``, ``selected_head``) is checked against what the explorer offers
(:func:`check_view_state`). The rest reads results into what the page draws, without computing anything:

- :func:`pane_data`: one layer's mean attention map (a head, the head mean or the rollout) beside its mean
  sensitivity, with the Spearman correlation of the two and its bootstrap interval;
- :func:`cell_values`: one cell ``(i, j)`` of every map of a layer;
- :class:`Geometry` (from :func:`geometry_from_spectra` or :func:`geometry_from_history`),
  :func:`rank_grid` (a layer × head grid of one effective rank) and :func:`head_detail` (one head's
  singular values, ranks and, with a training history, their trajectory).

Nothing here holds state, draws or computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..kernels.attention import KINDS
from ._values import Check, choice, is_int

__all__ = [
    "BROWSER_TRAITS",
    "MEASURES",
    "KINDS",
    "Geometry",
    "geometry_from_spectra",
    "geometry_from_history",
    "check_view_state",
    "check_cell",
    "check_head",
    "pane_data",
    "correlation_table",
    "cell_values",
    "rank_grid",
    "head_detail",
]

BROWSER_TRAITS = ("layer", "attention_map", "selected_cell", "measure", "kind", "selected_head")
MEASURES = ("participation_ratio", "entropy_rank", "stable_rank", "condition_number")


@dataclass(frozen=True)
class Geometry:
    """Per-head spectra and ranks over ``T`` records (one record: the model as it is).

    Attributes:
        layers: The ``L`` block indices.
        n_heads: Query heads per layer ``n``.
        steps: Training step of each record ``[T]`` (``[0]`` for a single model), int64.
        singular_values: ``{kind: [T, L, n, r]}`` float64, descending.
        ranks: ``{measure: {kind: [T, L, n]}}`` float64 (:data:`MEASURES`).
        entropy: Mean attention entropy ``[T, L, n]`` (nats) from a tracker, else None.
    """

    layers: list[int]
    n_heads: int
    steps: np.ndarray
    singular_values: dict[str, np.ndarray]
    ranks: dict[str, dict[str, np.ndarray]]
    entropy: np.ndarray | None = None

    @property
    def records(self) -> int:
        return int(self.steps.shape[0])


def geometry_from_spectra(spectra: Any) -> Geometry:
    """One record of a :class:`~tscope_widgets.kernels.attention.HeadSpectra` (grids ``[L, n]`` -> ``[1, L, n]``)."""

    def one(t) -> np.ndarray:
        return t.detach().to("cpu").double().numpy()[None]

    return Geometry(
        layers=list(spectra.layers),
        n_heads=int(spectra.n_heads),
        steps=np.zeros(1, dtype=np.int64),
        singular_values={k: one(v) for k, v in spectra.singular_values.items()},
        ranks={m: {k: one(v) for k, v in getattr(spectra, m).items()} for m in MEASURES},
    )


def geometry_from_history(history: Any) -> Geometry | None:
    """The records of an :class:`~tscope_widgets.tracking.AttentionHistory`; None while it has none."""
    if len(history) == 0:
        return None
    return Geometry(
        layers=list(history.layers),
        n_heads=int(history.n_heads),
        steps=np.asarray(history.steps, dtype=np.int64),
        singular_values={k: np.asarray(v, dtype=np.float64) for k, v in history.singular_values.items()},
        ranks={m: {k: np.asarray(v, dtype=np.float64) for k, v in getattr(history, m).items()} for m in MEASURES},
        entropy=np.asarray(history.entropy, dtype=np.float64),
    )


# ----- browser values ------------------------------------------------------------------------------
def check_cell(value: Any, seq_len: int) -> Check:
    """None or ``[i, j]`` with ``0 <= i, j < seq_len``."""
    if value is None:
        return True, None, ""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(c) and 0 <= c < seq_len for c in value):
        return True, [int(value[0]), int(value[1])], ""
    return False, None, f"must be null or [i, j] with 0 <= i, j < {seq_len}"


def check_head(value: Any, layers: Sequence[int], n_heads: int) -> Check:
    """None or ``[layer, head]`` with ``layer`` one of ``layers`` and ``0 <= head < n_heads``."""
    if value is None:
        return True, None, ""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_int(c) for c in value)
        and value[0] in list(layers)
        and 0 <= value[1] < n_heads
    ):
        return True, [int(value[0]), int(value[1])], ""
    return False, None, f"must be null or [layer, head] with layer in {list(layers)} and 0 <= head < {n_heads}"


def check_view_state(
    name: str,
    value: Any,
    *,
    layers: Sequence[int],
    maps: Sequence[str],
    seq_len: int,
    head_layers: Sequence[int],
    n_heads: int,
) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait of the explorer.

    Args:
        name: One of :data:`BROWSER_TRAITS`.
        value: The value proposed (from the browser: anything JSON can hold).
        layers: Layers of the attention pane (``layer`` is one of them).
        maps: Names of a layer's attention maps (``attention_map`` is one of them).
        seq_len: Positions ``S`` of the maps (``selected_cell``).
        head_layers: Layers of the geometry view (``selected_head``'s layer).
        n_heads: Heads per layer (``selected_head``'s head).
    """
    if name == "layer":
        if is_int(value) and int(value) in list(layers):
            return True, int(value), ""
        return False, None, f"not one of the analysed layers {list(layers)}"
    if name == "attention_map":
        return choice(value, maps)
    if name == "measure":
        return choice(value, MEASURES)
    if name == "kind":
        return choice(value, KINDS)
    if name == "selected_cell":
        return check_cell(value, seq_len)
    if name == "selected_head":
        return check_head(value, head_layers, n_heads)
    raise KeyError(f"{name!r} is not a view-state trait of AttentionExplorer; those are {list(BROWSER_TRAITS)}")


# ----- what the page draws -------------------------------------------------------------------------
def pane_data(corr: Any, layer: int, label: str) -> dict[str, Any]:
    """One map of a layer's :class:`~tscope_widgets.kernels.AttentionSensitivityCorrelation` beside the sensitivity.

    Returns:
        ``{"layer", "map", "attention": [S, S] float32 mean attention (NaN: no token pair),
        "sensitivity": [S, S] float32 mean s_ij, "rho", "low", "high", "confidence", "samples", "cells",
        "attention_high": [[i, j], ...], "sensitivity_high": [[i, j], ...]}``.

    Raises:
        KeyError: For a map the correlation does not hold.
    """
    if label not in corr.labels:
        raise KeyError(f"map {label!r}: choose one of {corr.labels}")
    m = corr.labels.index(label)
    return {
        "layer": int(layer),
        "map": label,
        "attention": corr.mean_attention[m].to(torch.float32).numpy(),
        "sensitivity": corr.mean_sensitivity.to(torch.float32).numpy(),
        "rho": float(corr.rho[m]),
        "low": float(corr.low[m]),
        "high": float(corr.high[m]),
        "confidence": float(corr.confidence),
        "samples": int(corr.num_samples),
        "cells": int(corr.cells.shape[0]),
        "attention_high": corr.attention_high[m].tolist(),
        "sensitivity_high": corr.sensitivity_high[m].tolist(),
    }


def correlation_table(corr: Any) -> list[dict[str, Any]]:
    """Every map of a layer: ``{"map", "rho", "low", "high"}`` (for the table beside the pane)."""
    return [
        {"map": lab, "rho": float(corr.rho[m]), "low": float(corr.low[m]), "high": float(corr.high[m])}
        for m, lab in enumerate(corr.labels)
    ]


def cell_values(corr: Any, layer: int, cell: Sequence[int] | None) -> dict[str, Any] | None:
    """One cell ``[i, j]`` of every mean map of a layer and of the mean sensitivity; None without a cell or
    for one outside the maps. Non-finite values (no token pair) become None."""
    if cell is None:
        return None
    S = int(corr.mean_sensitivity.shape[-1])
    i, j = (int(c) for c in cell)
    if not (0 <= i < S and 0 <= j < S):
        return None

    def num(x) -> float | None:
        x = float(x)
        return x if np.isfinite(x) else None

    return {
        "layer": int(layer),
        "cell": [i, j],
        "maps": list(corr.labels),
        "attention": [num(v) for v in corr.mean_attention[:, i, j].tolist()],
        "sensitivity": num(corr.mean_sensitivity[i, j]),
    }


def rank_grid(geometry: Geometry, measure: str, kind: str, record: int = -1) -> np.ndarray:
    """``[L, n]`` float32: one effective rank (or condition number) of every head at one record (default: the latest).

    Raises:
        KeyError: For an unknown measure or kind.
        IndexError: For a record outside ``[-T, T)``.
    """
    if measure not in MEASURES or kind not in KINDS:
        raise KeyError(
            f"measure {measure!r}, kind {kind!r}: choose a measure from {list(MEASURES)} and a kind from {list(KINDS)}"
        )
    return geometry.ranks[measure][kind][record].astype(np.float32)


def head_detail(geometry: Geometry, layer: int, head: int, measure: str, kind: str) -> dict[str, Any]:
    """One head: its singular values per kind at the latest record, its ranks, and the trajectory of
    ``measure`` of ``kind`` (and of the attention entropy, from a tracker) over the records.

    Returns:
        ``{"layer", "head", "kinds": [...], "singular_values": {kind: [r] float32}, "ranks": {measure: {kind:
        float}}, "steps": [T] int, "trajectory": [T] float32, "entropy": [T] float32 or None}``.

    Raises:
        KeyError: For a layer, head, measure or kind the geometry does not hold.
    """
    if layer not in geometry.layers or not 0 <= head < geometry.n_heads:
        raise KeyError(f"head ({layer}, {head}): layers are {geometry.layers}, heads 0..{geometry.n_heads - 1}")
    if measure not in MEASURES or kind not in KINDS:
        raise KeyError(f"measure {measure!r}, kind {kind!r}: choose from {list(MEASURES)} and {list(KINDS)}")
    li = geometry.layers.index(layer)
    ranks = {
        m: {k: (float(v[-1, li, head]) if np.isfinite(v[-1, li, head]) else None) for k, v in by_kind.items()}
        for m, by_kind in geometry.ranks.items()
    }
    return {
        "layer": int(layer),
        "head": int(head),
        "kinds": list(KINDS),
        "singular_values": {k: geometry.singular_values[k][-1, li, head].astype(np.float32) for k in KINDS},
        "ranks": ranks,
        "steps": [int(s) for s in geometry.steps],
        "trajectory": geometry.ranks[measure][kind][:, li, head].astype(np.float32),
        "entropy": None if geometry.entropy is None else geometry.entropy[:, li, head].astype(np.float32),
    }

