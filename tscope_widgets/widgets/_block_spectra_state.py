r"""Checked conversions of what :class:`~.block_spectra.BlockSpectraWidget` receives, as pure functions.

Three sources give the same view (:func:`blocks_view`): a :class:`~tscope_widgets.kernels.BlockDensities`
(a Job's snapshot of :func:`~tscope_widgets.kernels.block_density.iter_block_densities`, or a finished result),
a ``{label: SpectralDensity}`` mapping, or a ``tscope run`` results folder of ``kind = "blocks"``
(:func:`load_blocks_folder`, which rebuilds each block's quadrature from ``blocks.safetensors``). From the
densities done so far, the view holds

- each block's density normalised by its 10th-largest Ritz value on the common signed-log grid, and the
  Jensen–Shannon distances between them with their mean :math:`JS^0`
  (:func:`~tscope_widgets.kernels.heterogeneity.spectral_heterogeneity`, Zhang et al. 2024);
- each block's :math:`\lambda_{\max}(H_{aa})` as its largest Ritz value over the probes (a lower bound, exact
  once the Lanczos steps reach the block's size), and their mean by block type with the ratios of neighbours
  in the Sharpness Disparity order (:func:`~tscope_widgets.kernels.block_type_sharpness`, Wang et al. 2025);
  for blocks whose labels are not parameter-group names the type view is None and ``types_note`` says why.

The view state the page may set (``selected_blocks``, ``overlay``, ``log_y``) is checked by
:func:`check_view_state`. Nothing here holds state or draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..kernels.block_density import BlockDensities
from ..kernels.block_types import block_type_sharpness
from ..kernels.density import SpectralDensity
from ..kernels.heterogeneity import spectral_heterogeneity
from ._values import Check, flag, is_int

__all__ = ["BROWSER_TRAITS", "blocks_view", "check_densities", "check_view_state", "load_blocks_folder", "view_wire"]

BROWSER_TRAITS = ("selected_blocks", "overlay", "log_y")
_PREVIEW = 8


def check_densities(densities: Any) -> tuple[dict[str, SpectralDensity], int, int]:
    """``({label: SpectralDensity} done so far, done, total)`` of a ``BlockDensities`` or a mapping.

    Raises:
        TypeError: For something that is neither, a non-string label or a value that is not a
            ``SpectralDensity``.
        ValueError: For a density whose nodes and weights are not both ``[L, m]`` finite arrays.
    """
    if isinstance(densities, BlockDensities):
        dens, done, total = dict(densities.densities), int(densities.done), int(densities.total)
    elif isinstance(densities, Mapping):
        dens = dict(densities)
        done = total = len(dens)
    else:
        raise TypeError(
            "expected BlockDensities (from block_densities / iter_block_densities) or {label: SpectralDensity}, "
            f"got {type(densities).__name__}"
        )
    for label, d in dens.items():
        if not isinstance(label, str):
            raise TypeError(f"block labels must be strings, got {label!r}")
        if not isinstance(d, SpectralDensity):
            raise TypeError(f"block {label!r}: expected a SpectralDensity, got {type(d).__name__}")
        if d.nodes.ndim != 2 or d.nodes.shape != d.weights.shape or d.nodes.numel() == 0:
            raise ValueError(
                f"block {label!r}: nodes {tuple(d.nodes.shape)} and weights {tuple(d.weights.shape)} must both be "
                "[probes, steps] and non-empty"
            )
        if not (torch.isfinite(d.nodes).all() and torch.isfinite(d.weights).all()):
            raise ValueError(f"block {label!r}: its Ritz values or weights are not finite")
    return dens, done, total


def blocks_view(densities: Any, *, floor: float = 1e-4) -> dict[str, Any] | None:
    """Everything the widget shows of the block densities done so far (see the module docstring).

    Args:
        densities: ``BlockDensities`` or ``{label: SpectralDensity}``.
        floor: Floor of the signed log scale (relative to each block's scale).

    Returns:
        None before the first block; else ``labels`` (``G``), ``grid [X]``, ``densities [G, X]`` (probability
        vectors), ``distances [G, G]``, ``js_mean`` (None for one block), ``floor``, ``block_lambda_max [G]``,
        ``scales [G]`` (float64 arrays), ``types`` (None or ``{types, values [Ty], counts, ratios, follows}``),
        ``types_note``, ``done`` and ``total``.

    Raises:
        TypeError, ValueError: As :func:`check_densities`.
    """
    dens, done, total = check_densities(densities)
    if not dens:
        return None
    het = spectral_heterogeneity(dens, floor=floor)
    lam = np.array([d.nodes.amax().item() for d in dens.values()], dtype=np.float64)
    types, note = None, ""
    try:
        t = block_type_sharpness(lam, list(dens))
    except ValueError as err:
        note = f"no sharpness by block type: {err}"
    else:
        types = {
            "types": list(t.types),
            "values": t.values.numpy().copy(),
            "counts": [int(c) for c in t.counts.tolist()],
            "ratios": {k: float(v) for k, v in t.ratios().items()},
            "follows": bool(t.follows_sdp()),
        }
    return {
        "labels": list(het.labels),
        "grid": het.grid.numpy().copy(),
        "densities": het.densities.numpy().copy(),
        "distances": het.distances.numpy().copy(),
        "js_mean": None if math.isnan(het.mean) else float(het.mean),
        "floor": float(het.floor),
        "block_lambda_max": lam,
        "scales": het.scales.numpy().copy(),
        "types": types,
        "types_note": note,
        "done": done,
        "total": total,
    }


def _number(v: float) -> float | None:
    """A float for JSON (which has no NaN or infinity): None where it is not finite."""
    return float(v) if math.isfinite(v) else None


def view_wire(view: dict[str, Any]) -> dict[str, Any]:
    """The page's copy of a view: arrays as buffers (float32 on the wire), numbers and labels as JSON (a
    value that is not finite, e.g. a ratio to a type of zero sharpness, as null)."""
    types = view["types"]
    if types is not None:
        types = {**types, "values": [_number(v) for v in types["values"]],
                 "ratios": {k: _number(v) for k, v in types["ratios"].items()}}
    return {
        "labels": view["labels"],
        "grid": view["grid"],
        "densities": view["densities"],
        "distances": view["distances"],
        "js_mean": view["js_mean"],
        "floor": view["floor"],
        "block_lambda_max": [_number(v) for v in view["block_lambda_max"]],
        "types": types,
        "types_note": view["types_note"],
        "done": view["done"],
        "total": view["total"],
    }


def load_blocks_folder(path: str | Path) -> dict[str, SpectralDensity]:
    """The block quadratures of a ``tscope run`` folder of ``kind = "blocks"`` as ``{label: SpectralDensity}``.

    Args:
        path: The run's output folder (``blocks.safetensors`` and ``meta.json``).

    Raises:
        FileNotFoundError: For a missing folder or file.
        ValueError: For a folder of another kind, or one whose block tensors do not match its labels.
    """
    from ..export.results import load_results

    tensors, meta = load_results(path)
    if meta.get("results") != "blocks":
        raise ValueError(
            f"{path}: a results folder of {meta.get('results')!r}, not of 'blocks'; pass the folder a "
            "`tscope run` with [analysis] kind = \"blocks\" wrote"
        )
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
        raise ValueError(f"{path}/meta.json: 'labels' must be the list of block labels, got {labels!r}")
    out = {}
    for k, label in enumerate(labels):
        keys = [f"density.{k}.{n}" for n in ("grid", "values", "nodes", "weights")]
        missing = [key for key in keys if key not in tensors]
        if missing:
            raise ValueError(f"{path}: block {label!r} lacks the tensors {missing}")
        grid, values, nodes, weights = (tensors[key].to(torch.float64) for key in keys)
        if nodes.ndim != 2 or nodes.shape != weights.shape or grid.shape != values.shape:
            raise ValueError(f"{path}: block {label!r} has nodes {tuple(nodes.shape)}, weights "
                             f"{tuple(weights.shape)}: expected both [probes, steps]")
        L, m = nodes.shape
        out[label] = SpectralDensity(grid, values, nodes, weights, float("nan"), 0, L * m, L * m)
    return out


def _preview(items: list[Any]) -> str:
    return repr(items) if len(items) <= _PREVIEW else f"{items[:_PREVIEW]!r} and {len(items) - _PREVIEW} more"


def check_view_state(name: str, value: Any, *, labels: list[str]) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait.

    ``selected_blocks``: a list of block labels (put in block order, duplicates dropped; labels of blocks not
    computed yet are refused); ``overlay`` and ``log_y``: true or false.

    Raises:
        KeyError: For a name that is not one of :data:`BROWSER_TRAITS` (a programming error).
    """
    if name == "selected_blocks":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return False, None, "must be a list of block labels"
        unknown = [v for v in value if v not in labels]
        if unknown:
            return False, None, f"unknown blocks {_preview(unknown)}; choose from {_preview(list(labels))}"
        chosen = set(value)
        return True, [g for g in labels if g in chosen], ""
    if name in ("overlay", "log_y"):
        return flag(value)
    raise KeyError(f"{name!r} is not a view-state trait of BlockSpectraWidget; those are {list(BROWSER_TRAITS)}")


def check_block_counts(num_probes: Any, num_steps: Any) -> tuple[int, int]:
    """``(num_probes, num_steps)`` of a live run.

    Raises:
        ValueError: For counts that are not positive ints.
    """
    for name, v in (("num_probes", num_probes), ("num_steps", num_steps)):
        if not is_int(v) or v < 1:
            raise ValueError(f"{name} must be a positive int (Zhang et al.: 10 probes, 100 steps), got {v!r}")
    return int(num_probes), int(num_steps)
