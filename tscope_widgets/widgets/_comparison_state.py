r"""What :class:`~.comparison.ComparisonExplorer` shows of two sensitivity runs, as pure functions.

A run is read into a :class:`RunSide` (its per-layer :class:`~tscope_widgets.kernels.welford.WelfordState`,
its reservoir maps and its progress), from a live snapshot (:func:`side_from_snapshot`) or from a results
folder (:func:`side_from_folder`). :func:`check_comparable` says what differs between two runs that cannot be
compared; :func:`layer_view` runs :func:`~tscope_widgets.kernels.compare.compare_statistics` (Welch's t-test per
cell, Benjamini–Hochberg or Bonferroni) on one layer and returns the arrays the page draws;
:func:`cell_distributions` reads both runs' reservoir values of one cell. The view state the page may set
(``layer``, ``shown``, ``mask``, ``alpha``, ``correction``, ``selected_cell``) is checked by
:func:`check_view_state`. Nothing here holds state, draws or computes statistics itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..kernels.compare import CORRECTIONS, Comparison, compare_statistics
from ._values import Check, choice, flag, is_finite, is_int

__all__ = [
    "ALPHAS",
    "BROWSER_TRAITS",
    "SHOWN",
    "RunSide",
    "side_from_snapshot",
    "side_from_folder",
    "check_comparable",
    "check_alpha",
    "check_correction",
    "check_view_state",
    "layer_view",
    "cell_distributions",
]

SHOWN = ("difference", "log_ratio", "effect_size")  # what the diverging map shows
SHOWN_TITLES = {"difference": "{a} − {b}", "log_ratio": "ln({a} / {b})", "effect_size": "Hedges' g ({a} vs {b})"}
ALPHAS = (0.001, 0.01, 0.05, 0.1, 0.2)  # the page's menu (Python may set any level in (0, 1))
BROWSER_TRAITS = ("layer", "shown", "mask", "alpha", "correction", "selected_cell")


@dataclass(frozen=True, eq=False)
class RunSide:
    """One run as the comparison reads it.

    Attributes:
        stats: ``{layer: WelfordState}`` cells ``[S, S]`` (float64 on the CPU), in the run's layer order.
        maps: ``{layer: [n, S, S]}`` float32 per-sample maps of the reservoir (NaN at padding), possibly empty.
        status: ``"running"``, ``"done"``, … for a live run; ``"saved"`` for a results folder.
        done: Samples processed so far.
        total: Samples in the data set when known, else None.
    """

    stats: dict
    maps: dict = field(default_factory=dict)
    status: str = "done"
    done: int = 0
    total: int | None = None

    @property
    def layers(self) -> list:
        return list(self.stats)


def side_from_snapshot(snap: Any, status: str) -> RunSide:
    """A :class:`RunSide` of a :class:`~tscope_widgets.kernels.sensitivity.SensitivitySnapshot` (shares its
    tensors: a snapshot owns copies, later batches do not change them)."""
    res = snap.reservoir
    n = res.size
    return RunSide(
        stats={layer: snap.stats[layer] for layer in snap.layers},
        maps={layer: res.maps[layer][:n] for layer in snap.layers if layer in res.maps},
        status=status,
        done=int(snap.done),
        total=snap.total,
    )


def side_from_folder(path: str | os.PathLike) -> RunSide:
    """A :class:`RunSide` of a results folder (``SensitivityExplorer.save_statistics``, ``tscope run``).

    Raises:
        FileNotFoundError: When the folder or its files are missing (the message names the file).
        ValueError: For files of another format or damaged ones.
    """
    from ..export.results import load_extra_tensors, load_statistics

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a folder; pass a results folder written by save_statistics or tscope run"
        )
    stats, meta = load_statistics(path)
    extra = load_extra_tensors(path)
    maps = {}
    for layer in stats:
        m = extra.get(f"reservoir.maps.{layer}")
        if m is not None:
            maps[layer] = m.to(torch.float32)
    done = meta.get("samples", meta.get("done", 0))
    return RunSide(stats=dict(stats), maps=maps, status="saved", done=int(done) if is_int(done) else 0,
                   total=meta.get("total") if is_int(meta.get("total")) else None)


def check_comparable(a: RunSide, b: RunSide, names: tuple[str, str] = ("a", "b")) -> None:
    """Both runs hold the same layers, each with the same cell grid.

    Raises:
        ValueError: Naming the layers or the shapes that differ, and what to do.
    """
    if a.layers != b.layers:
        raise ValueError(
            f"the runs hold different layers: {names[0]} has {a.layers}, {names[1]} has {b.layers}; compare runs "
            "made with the same layers= argument"
        )
    for layer in a.layers:
        sa, sb = tuple(a.stats[layer].shape), tuple(b.stats[layer].shape)
        if sa != sb:
            raise ValueError(
                f"layer {layer!r} has cells {list(sa)} in {names[0]} but {list(sb)} in {names[1]}: the sequence "
                "lengths differ; compare runs on data of the same length (or the same max_seq_len)"
            )


def check_alpha(value: Any) -> Check:
    """A significance level: a finite number with ``0 < alpha < 1``."""
    if is_finite(value) and 0 < value < 1:
        return True, float(value), ""
    return False, None, "must be a number between 0 and 1 (exclusive), e.g. 0.05"


def check_correction(value: Any) -> Check:
    """``"fdr_bh"`` (Benjamini–Hochberg), ``"bonferroni"`` or None (no correction)."""
    if value is None or (isinstance(value, str) and value in CORRECTIONS):
        return True, value, ""
    return False, None, f"must be one of {list(CORRECTIONS)} (null: no correction)"


def check_view_state(name: str, value: Any, *, layers: Sequence, seq_len: int) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait of the comparison explorer.

    Args:
        name: One of :data:`BROWSER_TRAITS`.
        value: The value proposed (from the browser: anything JSON can hold).
        layers: The layers both runs hold (``layer`` is one of them, given as its label).
        seq_len: Positions ``S`` (``selected_cell`` is ``[i, j]`` with ``0 <= i, j < S``, or None).
    """
    if name == "layer":
        options = list(layers)
        if (is_int(value) or isinstance(value, str)) and value in options:
            return True, value, ""
        return False, None, f"not one of the compared layers {options}"
    if name == "shown":
        return choice(value, SHOWN)
    if name == "mask":
        return flag(value)
    if name == "alpha":
        return check_alpha(value)
    if name == "correction":
        return check_correction(value)
    if name == "selected_cell":
        if value is None:
            return True, None, ""
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(c) and 0 <= c < seq_len for c in value):
            return True, [int(value[0]), int(value[1])], ""
        return False, None, f"must be null or [i, j] with 0 <= i, j < {seq_len}"
    raise KeyError(f"{name!r} is not a view-state trait of ComparisonExplorer; those are {list(BROWSER_TRAITS)}")


def layer_view(a: RunSide, b: RunSide, layer: Any, *, alpha: float, correction: str | None,
               shown: str = "difference") -> tuple[Comparison, dict[str, np.ndarray]]:
    """Welch's test of one layer, and the arrays the page draws.

    Args:
        a: Run ``a``.
        b: Run ``b`` (the same layers and cells, see :func:`check_comparable`).
        layer: A layer both hold.
        alpha: Level of ``significant``.
        correction: As :func:`~tscope_widgets.kernels.compare.compare_statistics`.
        shown: One of :data:`SHOWN`: the field drawn in diverging colours.

    Returns:
        ``(comparison, arrays)`` with ``arrays``: ``values`` (the ``shown`` field), ``q``, ``mean_a``, ``mean_b``
        ``[S, S]`` float64 (NaN where untested or unknown), ``significant`` bool ``[S, S]`` and ``count_a``,
        ``count_b`` ``[S, S]`` int64.
    """
    c = compare_statistics(a.stats[layer], b.stats[layer], alpha=alpha, correction=correction)
    arrays = {
        "values": getattr(c, shown).numpy(),
        "q": c.q.numpy(),
        "significant": c.significant.numpy(),
        "mean_a": c.mean_a.numpy(),
        "mean_b": c.mean_b.numpy(),
        "count_a": c.count_a.to(torch.int64).numpy(),
        "count_b": c.count_b.to(torch.int64).numpy(),
    }
    return c, arrays


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _cell_samples(maps: dict, layer: Any, i: int, j: int) -> np.ndarray:
    m: Tensor | None = maps.get(layer)
    if m is None or m.shape[0] == 0:
        return np.zeros(0, np.float32)
    values = m[:, i, j]
    return values[torch.isfinite(values)].to(torch.float32).numpy()


def cell_distributions(a: RunSide, b: RunSide, comparison: Comparison, layer: Any,
                       cell: Sequence[int] | None) -> dict[str, Any] | None:
    """Both runs' values of one cell ``[i, j]`` in their reservoirs, with the cell's test.

    Returns:
        None without a cell or for one outside the grid; else ``{"layer", "cell", "samples_a" [n_a] float32,
        "samples_b" [n_b] float32, "mean_a", "mean_b", "count_a", "count_b", "difference", "t", "df", "p",
        "q", "effect_size", "significant"}`` (numbers None where NaN: JSON has no NaN).
    """
    if cell is None:
        return None
    i, j = int(cell[0]), int(cell[1])
    S = comparison.shape
    if not (0 <= i < S[0] and 0 <= j < S[1]):
        return None
    out: dict[str, Any] = {
        "layer": layer,
        "cell": [i, j],
        "samples_a": _cell_samples(a.maps, layer, i, j),
        "samples_b": _cell_samples(b.maps, layer, i, j),
        "significant": bool(comparison.significant[i, j]),
    }
    for name in ("mean_a", "mean_b", "difference", "t", "df", "p", "q", "effect_size", "log_ratio"):
        out[name] = _finite(getattr(comparison, name)[i, j])
    out["count_a"] = int(comparison.count_a[i, j])
    out["count_b"] = int(comparison.count_b[i, j])
    return out
