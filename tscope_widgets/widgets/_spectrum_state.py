"""Checked conversions of the values :class:`~.spectrum.SpectrumWidget` receives, as pure functions.

Values from the browser are untrusted, and so are the objects a user or a tracker hands in: a
``SpectrumHistory`` is read field by field into numpy arrays with every shape checked
(:func:`check_history`), a ``BlockNorms`` likewise (:func:`check_block_norms`); the view state the page
may set (``selected_series``, ``picked_step``, ``selected_block``, ``log_y``) is checked against what the
widget offers (:func:`check_view_state`). Nothing here holds state, draws or computes: the widget keeps the
results and binds them to traits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch

from ..figures.spectrum import SERIES, density_index
from ._values import Check, flag, is_finite, is_int

__all__ = [
    "HISTORY_VECTORS",
    "OPTIONAL_VECTORS",
    "BROWSER_TRAITS",
    "as_array",
    "check_history",
    "series_wire",
    "type_wire",
    "density_wire",
    "check_block_norms",
    "check_block_options",
    "eigen_result",
    "eigen_wire",
    "check_view_state",
    "check_source",
    "block_groups",
    "eigen_record",
    "status_text",
]

HISTORY_VECTORS = (*SERIES, "trace_stderr")
OPTIONAL_VECTORS = ("train_loss",)  # NaN when a history does not record it
BROWSER_TRAITS = ("selected_series", "picked_step", "selected_block", "log_y")
_HISTORY_FIELDS = (
    "steps",
    *HISTORY_VECTORS,
    "grad_norms",
    "grad_norm_labels",
    "block_lambda_max",
    "block_labels",
    "density_steps",
    "density_grid",
    "density",
    "done",
    "total",
)
_PREVIEW = 8  # items of a refused list quoted in a message


def _preview(items: Sequence[Any]) -> str:
    """``items`` as a list in a message, the first few only (a hostile list may be huge)."""
    items = list(items)
    if len(items) <= _PREVIEW:
        return repr(items)
    return f"{items[:_PREVIEW]!r} and {len(items) - _PREVIEW} more"


def _labels(labels: Any, name: str) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Collection):
        raise TypeError(f"{name} must be a list of strings, got {type(labels).__name__}")
    if not all(isinstance(s, str) for s in labels):
        raise TypeError(f"{name} must be a list of strings")
    return list(labels)


def as_array(x: Any, name: str, dtype=np.float64) -> np.ndarray:
    """``x`` (a tensor, an array or nested lists) as a numpy array of ``dtype``.

    Raises:
        TypeError: For something that is not numeric (strings, objects, ragged lists).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64 if dtype == np.float64 else torch.int64).numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}: {e}") from None


def check_history(h: Any) -> dict[str, Any]:
    """The fields of a ``SpectrumHistory`` as numpy arrays, shapes checked.

    Returns:
        ``steps [T]`` int64; the vectors of :data:`HISTORY_VECTORS` ``[T]`` float64 (NaN for an optional one
        that is missing); ``grad_norms [T, L]`` with ``grad_norm_labels``; ``block_lambda_max [T, G]`` with
        ``block_labels``; ``density_steps [D]``, ``density_grid [D, P]``, ``density [D, P]``; ``done`` and
        ``total`` (int or None).

    Raises:
        TypeError: For a missing field, a non-numeric array or labels that are not strings.
        ValueError: For inconsistent shapes or label counts.
    """
    missing = [n for n in _HISTORY_FIELDS if not hasattr(h, n) and n not in OPTIONAL_VECTORS]
    if missing:
        raise TypeError(
            f"expected a SpectrumHistory (from SpectrumTracker.history); {type(h).__name__} lacks {missing}"
        )
    out: dict[str, Any] = {"steps": as_array(h.steps, "steps", np.int64).reshape(-1)}
    T = out["steps"].shape[0]
    for n in HISTORY_VECTORS:
        a = as_array(getattr(h, n), n) if hasattr(h, n) else np.full(T, np.nan)
        if a.shape != (T,):
            raise ValueError(f"history.{n} has shape {a.shape}; expected [{T}] like history.steps")
        out[n] = a
    for n, labels_name in (("grad_norms", "grad_norm_labels"), ("block_lambda_max", "block_labels")):
        labels = _labels(getattr(h, labels_name), f"history.{labels_name}")
        a = as_array(getattr(h, n), n)
        if a.size == 0 and len(labels) == 0:
            a = a.reshape(T, 0)
        if a.shape != (T, len(labels)):
            raise ValueError(
                f"history.{n} has shape {a.shape}; expected [{T}, {len(labels)}] (records × {labels_name})"
            )
        out[n], out[labels_name] = a, labels
    ds = as_array(h.density_steps, "density_steps", np.int64).reshape(-1)
    D = ds.shape[0]
    grid, dens = as_array(h.density_grid, "density_grid"), as_array(h.density, "density")
    if D == 0:
        grid, dens = grid.reshape(0, 0) if grid.size == 0 else grid, dens.reshape(0, 0) if dens.size == 0 else dens
    if grid.ndim != 2 or grid.shape[0] != D or dens.shape != grid.shape:
        raise ValueError(
            f"history.density_grid {grid.shape} and history.density {dens.shape} must both be "
            f"[{D}, P] (one row per density step)"
        )
    out.update(density_steps=ds, density_grid=grid, density=dens)
    done, total = h.done, h.total
    if not is_int(done) or not (total is None or is_int(total)):
        raise TypeError(f"history.done must be an int and history.total an int or None, got {done!r}, {total!r}")
    out.update(done=int(done), total=None if total is None else int(total))
    return out


def type_wire(h: dict[str, Any]) -> dict[str, Any] | None:
    r"""Sharpness by block type over the records of a checked history: ``{types [Ty] (Sharpness Disparity
    order, then the head), values [Ty, T]}`` (the mean :math:`\lambda_{\max}(H_{aa})` of the tracked blocks of
    each type, :func:`~tscope_widgets.kernels.block_type_sharpness`), or None when no block is tracked or a
    block is not one parameter group (``blocks="layers"``: a layer mixes types)."""
    from ..figures.spectrum import type_history

    found = type_history(h)
    if found is None:
        return None
    types, values = found
    return {"types": types, "values": np.ascontiguousarray(values.T)}


def series_wire(h: dict[str, Any]) -> dict[str, Any]:
    """What the page draws of a checked history: vectors ``[T]``, gradient norms ``[L, T]``, block λ_max
    ``[G, T]``, the sharpness by block type ``[Ty, T]`` (:func:`type_wire`)."""
    return {
        "type_sharpness": type_wire(h),
        "steps": h["steps"],
        "values": {n: h[n] for n in HISTORY_VECTORS},
        "grad_norms": np.ascontiguousarray(h["grad_norms"].T),
        "grad_norm_labels": h["grad_norm_labels"],
        "block_lambda_max": np.ascontiguousarray(h["block_lambda_max"].T) if h["block_labels"] else None,
        "block_labels": h["block_labels"],
        "density_steps": h["density_steps"],
        "done": h["done"],
        "total": h["total"],
    }


def density_wire(h: dict[str, Any] | None, picked: int | None) -> dict[str, Any] | None:
    """The density recorded nearest to the ``picked`` step (None: the latest) of a checked history:
    ``{index, step, picked, grid [P], values [P]}``, or None when the history has no density."""
    if h is None or h["density_steps"].size == 0:
        return None
    ds = h["density_steps"]
    index = density_index(ds, picked)
    return {
        "index": index,
        "step": int(ds[index]),
        "picked": picked,
        "grid": h["density_grid"][index],
        "values": h["density"][index],
    }


def check_block_norms(result: Any) -> dict[str, Any]:
    """The fields of a ``BlockNorms`` as numpy arrays, shapes checked.

    Returns:
        ``labels`` (``G`` strings), ``frobenius [G, G]``, ``frobenius_stderr [G, G]`` or None,
        ``spectral [G]`` or None, ``exact`` and ``num_matvecs`` (int or None).

    Raises:
        TypeError: For a missing field, an empty or non-string label list or a non-numeric array.
        ValueError: For arrays whose shapes do not match the labels.
    """
    missing = [n for n in ("labels", "frobenius") if not hasattr(result, n)]
    if missing:
        raise TypeError(f"expected a BlockNorms (from block_norms()); {type(result).__name__} lacks {missing}")
    labels = _labels(result.labels, "block_norms.labels")
    if not labels:
        raise TypeError("block_norms.labels must be a non-empty list of strings")
    G = len(labels)
    fro = as_array(result.frobenius, "frobenius")
    if fro.shape != (G, G):
        raise ValueError(f"block_norms.frobenius has shape {fro.shape}; expected [{G}, {G}] for {G} labels")
    stderr = getattr(result, "frobenius_stderr", None)
    stderr = None if stderr is None else as_array(stderr, "frobenius_stderr")
    if stderr is not None and stderr.shape != (G, G):
        raise ValueError(f"block_norms.frobenius_stderr has shape {stderr.shape}; expected [{G}, {G}]")
    spectral = getattr(result, "spectral", None)
    spectral = None if spectral is None else as_array(spectral, "spectral").reshape(-1)
    if spectral is not None and spectral.shape != (G,):
        raise ValueError(f"block_norms.spectral has shape {spectral.shape}; expected [{G}]")
    matvecs = getattr(result, "num_matvecs", None)
    return {
        "labels": labels,
        "frobenius": fro,
        "frobenius_stderr": stderr,
        "spectral": spectral,
        "exact": bool(getattr(result, "exact", False)),
        "num_matvecs": int(matvecs) if is_int(matvecs) else None,
    }


def check_source(tracker: Any, history: Any) -> None:
    """A tracker (live) or a history (fixed) or neither, never both.

    Raises:
        ValueError: For both.
        TypeError: For a tracker without ``history`` and a callable ``subscribe``.
    """
    if tracker is not None and history is not None:
        raise ValueError("pass either a tracker (live) or a history (fixed), not both")
    if tracker is not None and not (hasattr(tracker, "history") and callable(getattr(tracker, "subscribe", None))):
        raise TypeError(
            f"tracker must be a SpectrumTracker (with .history and .subscribe), got {type(tracker).__name__}"
        )


def check_block_options(top_k: Any, tol: Any) -> tuple[int, float]:
    """``(top_k, tol)`` of the block eigenvalue runs.

    Raises:
        ValueError: For a ``top_k`` that is not a positive int, or a ``tol`` that is not a positive finite number.
    """
    if not is_int(top_k) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if not is_finite(tol) or not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    return int(top_k), float(tol)


def eigen_result(snapshot: Any) -> dict[str, Any]:
    """A Lanczos snapshot of a block as ``{eigenvalues [k] descending, residuals [k], converged}`` (float64)."""
    values = as_array(snapshot.eigenvalues, "eigenvalues").reshape(-1)[::-1].copy()
    residuals = as_array(snapshot.residual_norms, "residual_norms").reshape(-1)[::-1].copy()
    return {"eigenvalues": values, "residuals": residuals, "converged": bool(snapshot.converged)}


def eigen_wire(label: str, step: int | None, result: dict | None, status: str, message: str) -> dict[str, Any]:
    """The ``eigen`` trait: the block, the step, the job's status and message, and its eigenvalues if any."""
    out = {"label": label, "step": step, "status": status, "message": message}
    if result is not None and result.get("eigenvalues") is not None:
        out["eigenvalues"] = [float(v) for v in result["eigenvalues"]]  # plain floats: full precision
        out["residuals"] = [float(v) for v in result["residuals"]]
        out["converged"] = result.get("converged")
    return out


def eigen_record(step: int | None, result: dict | None, status: str, message: str) -> dict[str, Any]:
    """A finished block run as ``SpectrumWidget.block_eigenvalues`` lists it (None where nothing was computed)."""
    return {
        "step": step,
        "eigenvalues": None if result is None else result["eigenvalues"],
        "residuals": None if result is None else result["residuals"],
        "converged": None if result is None else result["converged"],
        "status": status,
        "message": message,
    }


def block_groups(label: str, tracked: Any, param_groups: Collection[str]) -> list[str] | str:
    """The parameter groups of a block: the tracker's definition (``tracked``, its ``blocks`` dict), the
    group itself, or (for a layer label such as ``"block0"``) every group under it."""
    if isinstance(tracked, dict) and label in tracked:
        return list(tracked[label])
    return label if label in param_groups else f"{label}.*"


def status_text(h: dict[str, Any] | None, tracked: bool) -> str:
    """One line on a checked history: where it comes from, how many records, the latest step."""
    if h is None:
        return "no history yet" + (" (tracker attached)" if tracked else "")
    of = f" of {h['total']}" if h["total"] is not None else ""
    where = "tracker" if tracked else "fixed history"
    latest = f" · latest step {int(h['steps'][-1])}" if h["steps"].size else ""
    return f"{where} · {h['done']}{of} records{latest}"


def check_view_state(
    name: str, value: Any, *, series: Sequence[str], steps: Collection[int], blocks: Sequence[str]
) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait of the widget.

    Args:
        name: One of :data:`BROWSER_TRAITS`.
        value: The value proposed (from the browser: anything JSON can hold).
        series: Keys of the series offered (``selected_series`` is a list of them, put in this order).
        steps: The recorded steps (``picked_step`` is one of them, or None for the latest).
        blocks: The blocks offered (``selected_block`` is one of them, or None).
    """
    if name == "selected_series":
        keys = list(series)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            unknown = [v for v in value if v not in keys]
            if not unknown:
                chosen = set(value)
                return True, [k for k in keys if k in chosen], ""
            return False, None, f"unknown series {_preview(unknown)}; choose from {keys}"
        return False, None, "must be a list of series names"
    if name == "picked_step":
        if value is None:
            return True, None, ""
        if is_int(value) and int(value) in steps:
            return True, int(value), ""
        return False, None, "must be null (the latest) or one of the recorded steps"
    if name == "selected_block":
        if value is None:
            return True, None, ""
        options = list(blocks)
        if isinstance(value, str) and value in options:
            return True, value, ""
        return False, None, f"not one of the blocks {options}"
    if name == "log_y":
        return flag(value)
    raise KeyError(f"{name!r} is not a view-state trait of SpectrumWidget; those are {list(BROWSER_TRAITS)}")
