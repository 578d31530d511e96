"""Checked conversions of the values :class:`~.sweep.SweepWidget` receives, as pure functions.

A sweep source yields snapshots: a :class:`~tscope_widgets.figures.sweep.SweepTable`, a growth-rate snapshot
(:class:`~tscope_widgets.kernels.theory.growth.GrowthRates`, turned into a table by
:func:`~tscope_widgets.figures.sweep.growth_table`) or a mapping ``{"rows", "axes", "seed_axes", "done",
"total"}`` (:func:`as_table` checks each). The view state the page may set (``x_axis``, ``summary``,
``fit_range``) is checked against what the table offers (:func:`check_view_state`); :func:`chart_wire` is what
the page draws. Nothing here holds state or computes a fit: :func:`~tscope_widgets.figures.sweep.sweep_chart`
describes the view, the widget binds it to traits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..figures.sweep import SweepChart, SweepTable, growth_table
from ._values import Check, choice, is_finite, is_int

__all__ = [
    "BROWSER_TRAITS",
    "MAX_GUIDES",
    "as_table",
    "axis_options",
    "chart_wire",
    "check_fit_range",
    "check_guides",
    "check_view_state",
    "status_text",
    "summary_options",
]

BROWSER_TRAITS = ("x_axis", "summary", "fit_range")
MAX_GUIDES = 8


def _names(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a list of column names, got {type(values).__name__}")
    if not all(isinstance(v, str) and v for v in values):
        raise TypeError(f"{what} must be a list of non-empty strings, got {list(values)!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} has repeated names: {list(values)!r}")
    return tuple(values)


def as_table(snapshot: Any) -> SweepTable:
    """A source's snapshot as a checked :class:`SweepTable`.

    Raises:
        TypeError: For something that is none of the three kinds, rows that are not mappings, or names that
            are not strings.
        ValueError: For seed axes that are not axes, or a row without a value for an axis.
    """
    if isinstance(snapshot, SweepTable):
        rows, axes, seed_axes, done, total = (snapshot.rows, snapshot.axes, snapshot.seed_axes, snapshot.done,
                                              snapshot.total)
    elif hasattr(snapshot, "norms") and hasattr(snapshot, "point_done"):
        return growth_table(snapshot)
    elif isinstance(snapshot, Mapping) and "rows" in snapshot and "axes" in snapshot:
        rows, axes = snapshot["rows"], snapshot["axes"]
        seed_axes = snapshot.get("seed_axes", ())
        done, total = snapshot.get("done", None), snapshot.get("total", None)
    else:
        raise TypeError(
            f"a sweep snapshot must be a SweepTable, a GrowthRates (from iter_growth_rates) or a dict with 'rows' "
            f"and 'axes', got {type(snapshot).__name__}"
        )
    axes, seed_axes = _names(axes, "axes"), _names(seed_axes, "seed_axes")
    if not axes:
        raise ValueError("axes must name at least one swept column")
    stray = [s for s in seed_axes if s not in axes]
    if stray:
        raise ValueError(f"seed_axes {stray} are not among the axes {list(axes)}")
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of dicts (one per run), got {type(rows).__name__}")
    for k, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{k}] must be a dict of column values, got {type(row).__name__}")
        missing = [a for a in axes if a not in row]
        if missing:
            raise ValueError(f"rows[{k}] has no value for the axes {missing}; every row needs every axis")
    done = len(rows) if done is None else done
    if not is_int(done) or done < 0 or not (total is None or (is_int(total) and total >= 0)):
        raise TypeError(f"done must be an int >= 0 and total an int >= 0 or None, got {done!r}, {total!r}")
    return SweepTable(tuple(dict(r) for r in rows), axes, seed_axes, int(done), None if total is None else int(total))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def axis_options(table: SweepTable) -> list[str]:
    """Axes that can go on the log x axis: not seed axes, every value a positive number."""
    out = []
    for a in table.axes:
        if a in table.seed_axes:
            continue
        values = [r[a] for r in table.rows]
        if all(_is_number(v) and math.isfinite(v) and v > 0 for v in values):
            out.append(a)
    return out


def summary_options(table: SweepTable) -> list[str]:
    """Columns that are not axes with a positive finite number in at least one row, in order of first sight."""
    seen: dict[str, None] = {}
    for r in table.rows:
        for k, v in r.items():
            if k not in table.axes and k != "point" and _is_number(v) and math.isfinite(v) and v > 0:
                seen.setdefault(k, None)
    return list(seen)


def check_fit_range(value: Any) -> tuple[float, float] | None:
    """``None`` or a pair ``(lo, hi)`` of positive finite numbers with ``lo < hi``.

    Raises:
        ValueError: Naming what is wrong.
    """
    ok, canonical, why = _fit_range(value)
    if not ok:
        raise ValueError(f"fit_range={value!r}: {why}")
    return canonical


def _fit_range(value: Any) -> Check:
    if value is None:
        return True, None, ""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        return False, None, "must be null (fit every run) or a pair [lo, hi] of positive numbers"
    lo, hi = value
    if not (is_finite(lo) and is_finite(hi)) or not 0 < lo < hi:
        return False, None, "needs 0 < lo < hi, both finite numbers (x values of the swept axis)"
    return True, (float(lo), float(hi)), ""


def check_guides(guides: Any) -> tuple[float, ...]:
    """Exponents of guide lines: finite numbers, at most :data:`MAX_GUIDES`.

    Raises:
        TypeError: For something that is not a list of numbers.
        ValueError: For non-finite exponents or too many.
    """
    if isinstance(guides, (str, bytes)) or not isinstance(guides, Sequence):
        raise TypeError(f"guides must be a list of exponents (numbers), got {type(guides).__name__}")
    if not all(is_finite(k) for k in guides):
        raise ValueError(f"guides must be finite numbers (exponents k of lines ∝ x^k), got {list(guides)!r}")
    if len(guides) > MAX_GUIDES:
        raise ValueError(f"at most {MAX_GUIDES} guide lines, got {len(guides)}")
    return tuple(float(k) for k in guides)


def check_view_state(name: str, value: Any, *, axes: Sequence[str], summaries: Sequence[str]) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait (see :data:`BROWSER_TRAITS`).

    Args:
        name: The trait.
        value: The value proposed (from the browser: anything JSON can hold).
        axes: The x axes offered (``x_axis`` is one of them, or None before there is one).
        summaries: The summaries offered (``summary`` is one of them, or None before there is one).
    """
    if name == "x_axis":
        return (True, None, "") if value is None and not axes else choice(value, axes)
    if name == "summary":
        return (True, None, "") if value is None and not summaries else choice(value, summaries)
    if name == "fit_range":
        return _fit_range(value)
    raise KeyError(f"{name!r} is not a view-state trait of SweepWidget; those are {list(BROWSER_TRAITS)}")


def _floats(a) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64)]


def chart_wire(chart: SweepChart | None) -> dict[str, Any] | None:
    """What the page draws of a chart: texts, ranges and per group plain lists (``None`` for NaN)."""
    if chart is None:
        return None
    groups = []
    for g in chart.groups:
        fit = None
        if g.fit is not None:
            fit = {"exponent": g.fit.exponent, "ci_low": _floats([g.fit.ci_low])[0],
                   "ci_high": _floats([g.fit.ci_high])[0], "prefactor": g.fit.prefactor,
                   "r_squared": g.fit.r_squared, "x": _floats(g.fit_x), "y": _floats(g.fit_y)}
        groups.append({"key": g.key, "label": g.label, "color": g.color, "x": _floats(g.x), "mean": _floats(g.mean),
                       "stderr": _floats(g.stderr), "err_lo": _floats(g.err_lo), "err_hi": _floats(g.err_hi),
                       "count": [int(c) for c in g.count], "points_x": _floats(g.points_x),
                       "points_y": _floats(g.points_y), "seeds": list(g.seeds), "fit": fit})
    return {
        "title": chart.title, "x_label": chart.x_label, "y_label": chart.y_label,
        "x_range": None if chart.x_range is None else list(chart.x_range),
        "y_range": None if chart.y_range is None else list(chart.y_range),
        "fit_range": None if chart.fit_range is None else list(chart.fit_range),
        "marker_x": chart.marker_x, "dropped": chart.dropped, "confidence": chart.confidence,
        "guides": [{"exponent": g.exponent, "label": g.label, "x": list(g.x), "y": list(g.y), "color": g.color}
                   for g in chart.guides],
        "groups": groups,
    }


def status_text(table: SweepTable | None, live: bool) -> str:
    """One line: where the rows come from and how many there are."""
    if table is None:
        return "no runs yet" + (" (sweep running)" if live else "")
    of = f" of {table.total}" if table.total is not None else ""
    return f"{'live sweep' if live else 'sweep table'} · {table.done}{of} runs · {len(table.rows)} rows"
