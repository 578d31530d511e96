"""Chart descriptions with every decision made: what a view shows, before any renderer draws it.

A description holds the numbers and texts of one chart (values, labels, titles, colour scale, series colours,
axis ranges, contour levels) and nothing about how a renderer lays them out. :mod:`.svg` draws it as the
notebook picture, :mod:`.bokeh` as an interactive export; the live front ends (``js/``) follow the same rules:

- :func:`color_scale`: the colour domain of a heatmap, ``colorDomain`` of ``js/src/lib/scales.js`` (the finite
  values, the positive ones on a log scale, over their full range), or clamped by percentiles or values
  (``colorRange``); NaN grey, values ``<= 0`` on a log scale the background colour.
- :func:`auto_log`: the default scale, ``autoLog``: logarithmic when the positive values span at least
  :data:`AUTO_LOG_DECADES` decades (never for counts).
- :data:`COLORMAPS`: the colour maps on offer, ``viridis`` (perceptually uniform, the default) first;
  ``rdbu`` is diverging (blue below zero, red above, a domain symmetric about zero), for differences.
- :func:`series_color`: the Tableau 10 colour of a series by its index among all series options, as
  ``seriesColor`` in ``js/src/lib/multiline.js``.
- :func:`contour_levels`: nice round levels strictly inside the colour domain, ``contourLevels`` in
  ``js/src/lib/contours.js``.
- :func:`format_value`: short numbers, ``formatValue`` in ``js/src/lib/scales.js``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .palettes import SEQUENTIAL

__all__ = [
    "AUTO_LOG_DECADES",
    "BACKGROUND",
    "COLORMAPS",
    "DIVERGING",
    "FADED_ALPHA",
    "NAN_COLOR",
    "SERIES_PALETTE",
    "Chart",
    "ColorScale",
    "LandscapeChart",
    "LineChart",
    "MatrixChart",
    "Series",
    "as_array",
    "auto_log",
    "check_percentiles",
    "color_domain",
    "color_scale",
    "contour_levels",
    "format_value",
    "joint_range",
    "line_chart",
    "nice_ticks",
    "palette_colors",
    "position_label",
    "resolve_log",
    "rgb_basis_palette",
    "series_color",
    "visible_text",
]

NAN_COLOR = "#c7c7c7"  # no data: the live view's fallback for --jp-layout-color3
BACKGROUND = "#ffffff"  # values <= 0 on a log scale: the live view's background (--jp-layout-color1)
# d3-scale-chromatic's schemeTableau10: the live view's series colours, in the same order.
SERIES_PALETTE = (
    "#4e79a7",
    "#f28e2c",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc949",
    "#af7aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ab",
)
_COLORMAPS = {"Viridis256": "viridis", "Magma256": "magma"}  # Bokeh's names: the live view's tables
COLORMAPS = ("viridis", "magma", "rdbu")  # the maps a view offers; the first is the default
DIVERGING = frozenset({"rdbu"})  # centred on zero: for differences
# ColorBrewer RdBu (11 classes) from blue to red, the control points of d3's interpolateRdBu (reversed)
_RDBU = (
    "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
    "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
)  # fmt: skip
AUTO_LOG_DECADES = 2.0  # "auto": a log scale when the positive values span at least this many decades
CONTOUR_COUNT = 10
FADED_ALPHA = 0.2  # opacity of faded matrix cells (MatrixChart.faded)
MAX_DOTS = 64  # every point of a line chart is marked up to this many (multiLineChart in the live view)


def as_array(values, ndim: int | None = None, what: str = "values") -> np.ndarray:
    """``values`` (a tensor, array or nested list) as a float64 NumPy array, with ``ndim`` dimensions if given."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    arr = np.array(values, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


# ---------------------------------------------------------------------------- colours
@dataclass(frozen=True)
class ColorScale:
    """How values become colours.

    Attributes:
        lo, hi: Domain ``lo < hi`` (both ``> 0`` for ``log``); values outside take the end colours.
        log: Logarithmic scale.
        colormap: ``"viridis"``, ``"magma"``, a Bokeh palette name or a tuple of ``#rrggbb`` colours (low to high).
        nan_color: Colour of NaN (no data).
        low_color: Colour of values below ``lo``; None: the lowest colour of the map. With the shared rule only
            values ``<= 0`` on a log scale fall below ``lo``: they take the background (:data:`BACKGROUND`), as
            in the live view; a clipped scale (explicit limits) gives its small values the lowest colour.
    """

    lo: float
    hi: float
    log: bool = False
    colormap: str | tuple[str, ...] = "viridis"
    nan_color: str = NAN_COLOR
    low_color: str | None = None

    def __post_init__(self):
        if not self.hi > self.lo or (self.log and not self.lo > 0):
            raise ValueError(f"bad colour domain ({self.lo}, {self.hi})" + (" for a log scale" if self.log else ""))


def color_domain(values, log: bool = False) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo < hi`` over the finite values (positive ones for ``log``).

    Same rule as ``colorDomain`` in ``js/src/lib/scales.js``: a constant map gets a domain ending at its
    value, a map without usable values a default one.
    """
    v = as_array(values).ravel()
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return (0.1, 1.0) if log else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if lo < hi:
        return lo, hi
    if log:
        return lo / 10, hi
    return (0.0, 1.0) if lo == 0 else (min(0.0, lo), max(0.0, hi))


def auto_log(values, *, count: bool = False) -> bool:
    """Whether the default (``"auto"``) colour scale of ``values`` is logarithmic.

    Logarithmic when the finite positive values span at least :data:`AUTO_LOG_DECADES` decades
    (``max / min >= 10**AUTO_LOG_DECADES``); never for counts. ``autoLog`` in ``js/src/lib/scales.js``.

    Args:
        values: Any array (NaN = no data; values ``<= 0`` are ignored).
        count: The values are counts (samples per cell): always linear.
    """
    if count:
        return False
    v = as_array(values).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size) and float(v.max()) >= float(v.min()) * 10**AUTO_LOG_DECADES


def resolve_log(log: bool | str, values, *, count: bool = False) -> bool:
    """``log`` as a bool: ``"auto"`` by :func:`auto_log`; counts are never on a log scale.

    Raises:
        ValueError: For anything but True, False or ``"auto"``.
    """
    if isinstance(log, str):
        if log != "auto":
            raise ValueError(f"log must be True, False or 'auto', got {log!r}")
        return auto_log(values, count=count)
    if not isinstance(log, (bool, np.bool_)):
        raise ValueError(f"log must be True, False or 'auto', got {log!r}")
    return bool(log) and not count


def check_percentiles(percentiles) -> tuple[float, float] | None:
    """``(p_lo, p_hi)`` with ``0 <= p_lo < p_hi <= 100``, or None.

    Raises:
        ValueError: For anything else, naming the rule.
    """
    if percentiles is None:
        return None
    try:
        p_lo, p_hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be (low, high) numbers in [0, 100], got {percentiles!r}") from None
    if not 0 <= p_lo < p_hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({p_lo:g}, {p_hi:g})")
    return p_lo, p_hi


def color_scale(
    values,
    log: bool | str = False,
    *,
    lo: float | None = None,
    hi: float | None = None,
    percentiles: tuple[float, float] | None = None,
    log_range: float | None = None,
    colormap: str | Sequence[str] = "viridis",
    count: bool = False,
) -> ColorScale:
    """The colour scale of ``values``: the shared rule (:func:`color_domain`) unless clamped.

    Clamping (``colorRange`` in ``js/src/lib/scales.js``): ``percentiles`` replace the rule's ends by those
    percentiles of the finite values (the positive ones on a log scale; NumPy's default linear
    interpolation, as d3's ``quantileSorted``); ``lo``/``hi`` replace an end outright (they win over
    percentiles). Values beyond a clamped end take the end colours. A diverging ``colormap``
    (:data:`DIVERGING`) gets a linear domain symmetric about zero, ``[-m, m]`` with ``m`` the largest
    ``|value|`` (or percentile of ``|value|``).

    Args:
        values: Any array (NaN = no data).
        log: Logarithmic scale: True, False or ``"auto"`` (:func:`auto_log`).
        lo: Explicit lower limit (replaces the rule's lower end).
        hi: Explicit upper limit (replaces the rule's upper end).
        percentiles: ``(p_lo, p_hi)`` in ``[0, 100]``: limits at these percentiles of the values, or None.
        log_range: For ``log`` without ``lo``: the scale spans at most ``hi / log_range`` .. ``hi`` (values
            below take the lowest colour). None: the full positive range (the live view's rule).
        colormap: See :class:`ColorScale` and :data:`COLORMAPS`.
        count: The values are counts (never a log scale).

    Raises:
        ValueError: For ``lo <= 0`` on a log scale, ``lo >= hi``, bad percentiles or a bad ``log``.
    """
    log = resolve_log(log, values, count=count)
    percentiles = check_percentiles(percentiles)
    cmap = colormap if isinstance(colormap, str) else tuple(colormap)
    if lo is not None and hi is not None and not float(hi) > float(lo):
        raise ValueError(f"colour limits need low < high, got ({lo}, {hi})")
    if isinstance(cmap, str) and cmap in DIVERGING:
        return _diverging_scale(values, cmap, lo=lo, hi=hi, percentiles=percentiles)
    d_lo, d_hi = color_domain(values, log)
    clipped = lo is not None
    if percentiles is not None:
        v = as_array(values).ravel()
        v = v[np.isfinite(v) & ((v > 0) if log else True)]
        if v.size:
            p_lo, p_hi = (float(x) for x in np.percentile(v, percentiles))
            if p_hi > p_lo:
                d_hi = p_hi
                if percentiles[0] > 0:
                    d_lo, clipped = p_lo, True
    top = d_hi if hi is None else float(hi)
    if log and lo is None and log_range is not None and d_lo < top / log_range:
        lo, clipped = top / log_range, True
    lo = d_lo if lo is None else float(lo)
    hi = d_hi if hi is None else float(hi)
    if log and not lo > 0:
        raise ValueError(f"a log colour scale needs vmin > 0, got {lo}")
    if not hi > lo:
        hi = lo * (1 + 1e-9) if log else lo + (abs(lo) if lo else 1.0) * 1e-9 + 1e-300
    # below the shared rule's scale lie only values <= 0 on a log scale: the background; below a clipped
    # scale, the lowest colour (values there are real data, just small)
    low_color = None if clipped else BACKGROUND
    return ColorScale(lo, hi, bool(log), cmap, NAN_COLOR, low_color)


def _diverging_scale(values, cmap: str, *, lo, hi, percentiles) -> ColorScale:
    """A linear scale ``[-m, m]`` about zero (explicit limits win), for :data:`DIVERGING` maps."""
    v = np.abs(as_array(values).ravel())
    v = v[np.isfinite(v)]
    m = float(np.percentile(v, percentiles[1])) if percentiles is not None and v.size else float(v.max(initial=0.0))
    m = m if m > 0 else 1.0
    lo = -m if lo is None else float(lo)
    hi = m if hi is None else float(hi)
    return ColorScale(lo, hi, False, cmap, NAN_COLOR, None)


def palette_colors(colormap: str | Sequence[str]) -> list[str]:
    """The ``#rrggbb`` colours of a colour map, low to high (``"viridis"``, ``"magma"``, ``"rdbu"``, a Bokeh
    palette name, or the colours themselves). Viridis and magma (also under Bokeh's names ``"Viridis256"`` and
    ``"Magma256"``) are the live view's 256 colours (:mod:`.palettes`), rdbu its B-spline."""
    if not isinstance(colormap, str):
        return [str(c) for c in colormap]
    if colormap == "rdbu":
        return rgb_basis_palette(_RDBU, 256)
    name = _COLORMAPS.get(colormap, colormap)
    if name in SEQUENTIAL:
        return list(SEQUENTIAL[name])
    import bokeh.palettes

    colors = getattr(bokeh.palettes, name, None)
    if not isinstance(colors, (list, tuple)) or not colors:
        raise ValueError(f"unknown colour map {colormap!r}")
    return list(colors)


def rgb_basis_palette(colors: Sequence[str], n: int) -> list[str]:
    """``n`` colours of the uniform cubic B-spline through ``colors`` (``#rrggbb``), as d3's
    ``interpolateRgbBasis`` sampled at ``k / (n - 1)`` (what ``colormapLUT`` of the live view reads)."""
    pts = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in colors], dtype=np.float64)  # [m, 3]
    m = len(pts) - 1
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
    i = np.minimum(np.floor(t * m).astype(int), m - 1)  # [n] segment of each sample
    v1, v2 = pts[i], pts[i + 1]
    v0 = np.where((i > 0)[:, None], pts[np.maximum(i - 1, 0)], 2 * v1 - v2)
    v3 = np.where((i < m - 1)[:, None], pts[np.minimum(i + 2, m)], 2 * v2 - v1)
    u = ((t - i / m) * m)[:, None]
    u2, u3 = u * u, u * u * u
    rgb = ((1 - 3 * u + 3 * u2 - u3) * v0 + (4 - 6 * u2 + 3 * u3) * v1 + (1 + 3 * u + 3 * u2 - 3 * u3) * v2
           + u3 * v3) / 6
    rgb = np.clip(np.round(rgb), 0, 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def series_color(index: int) -> str:
    """The colour of the series with option index ``index`` (``seriesColor`` in the live view)."""
    return SERIES_PALETTE[index % len(SERIES_PALETTE)]


# ---------------------------------------------------------------------------- numbers and texts
def format_value(v: float | None) -> str:
    """Short text for a value, as ``formatValue`` in the live view: ``1.23``, ``0.05``, ``1.2e-05``."""
    if v is None or math.isnan(v):
        return "–"
    if v == 0:
        return "0"
    text = f"{v:.2e}" if abs(v) >= 1e4 or abs(v) < 1e-3 else f"{v:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = mantissa.rstrip("0").rstrip(".") + "e" + exponent
    return text


_VISIBLE = {" ": "␣", "\n": "⏎", "\r": "␍", "\t": "⇥"}


def visible_text(token: str, max_chars: int) -> str:
    """Whitespace and control characters made visible (``" the"`` -> ``"␣the"``), cut to ``max_chars`` with
    an ellipsis (``displayToken`` and ``truncate`` in ``js/src/lib/axes.js``)."""
    shown = "".join(_VISIBLE.get(c, "�" if ord(c) < 32 or ord(c) == 127 else c) for c in str(token))
    return shown if len(shown) <= max_chars else shown[: max(1, max_chars - 1)] + "…"


def position_label(i: int, tokens: Sequence[str] | None, max_chars: int = 10) -> str:
    """``"i:token"`` (token made visible and cut), or ``"i"`` without a token (``positionLabel`` in the live
    view)."""
    token = tokens[i] if tokens is not None and i < len(tokens) else ""
    return f"{i}:{visible_text(token, max_chars)}" if token else str(i)


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round values in ``[lo, hi]``, about ``count`` of them, with d3-array's rule (``ticks``).

    Steps are 1, 2, 5 or 10 times a power of ten, so the live view and the renderers agree.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or count <= 0:
        return []
    if lo == hi:
        return [lo]
    if lo > hi:
        return nice_ticks(hi, lo, count)[::-1]
    step = (hi - lo) / max(count, 0.5)
    power = math.floor(math.log10(step))
    error = step / 10**power
    factor = 10 if error >= math.sqrt(50) else 5 if error >= math.sqrt(10) else 2 if error >= math.sqrt(2) else 1
    if power < 0:
        inc = 10 ** (-power) / factor
        i1, i2 = round(lo * inc), round(hi * inc)
        if i1 / inc < lo:
            i1 += 1
        if i2 / inc > hi:
            i2 -= 1
        return [i / inc for i in range(i1, i2 + 1)]
    inc = 10**power * factor
    i1, i2 = round(lo / inc), round(hi / inc)
    if i1 * inc < lo:
        i1 += 1
    if i2 * inc > hi:
        i2 -= 1
    return [i * inc for i in range(i1, i2 + 1)]


def contour_levels(domain: tuple[float, float], count: int = CONTOUR_COUNT, log: bool = False) -> list[float]:
    """Contour levels strictly inside ``domain`` (round values; in log10 for ``log``), at least one
    (``contourLevels`` in ``js/src/lib/contours.js``).

    Raises:
        ValueError: For ``lo >= hi``, or ``lo <= 0`` with ``log``.
    """
    lo, hi = domain
    if not hi > lo or (log and not lo > 0):
        raise ValueError(f"bad contour domain {domain}")
    if log:
        inside = [10**e for e in nice_ticks(math.log10(lo), math.log10(hi), count)]
        inside = [v for v in inside if lo < v < hi]
        return inside or [math.sqrt(lo * hi)]
    inside = [v for v in nice_ticks(lo, hi, count) if lo < v < hi]
    return inside or [(lo + hi) / 2]


def joint_range(arrays: Sequence[np.ndarray], log: bool = False) -> tuple[float, float] | None:
    """``(lo, hi)`` over the finite values of ``arrays`` (positive ones for ``log``), widened when it is a
    single value (by 0.5 either side, or a factor √10 on a log axis); None without a usable value."""
    usable = [a[np.isfinite(a) & (a > 0 if log else True)] for a in (np.asarray(x, np.float64).ravel() for x in arrays)]
    values = np.concatenate(usable) if usable else np.zeros(0)
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return (lo / math.sqrt(10), hi * math.sqrt(10)) if log else (lo - 0.5, hi + 0.5)
    return lo, hi


# ---------------------------------------------------------------------------- descriptions
@dataclass(frozen=True, eq=False)
class Series:
    """One line of a :class:`LineChart`.

    Attributes:
        key: Stable name (decides the colour; ``"lambda_max"``, ``"grad_norm:block0"``, ...).
        label: Legend text.
        y: ``[N]`` values (NaN breaks the line; on a log axis so do values ``<= 0``).
        color: ``#rrggbb``.
        band: ``(lo [N], hi [N])`` shaded around the line (e.g. ± one standard error), or None.
    """

    key: str
    label: str
    y: np.ndarray
    color: str
    band: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class LineChart:
    """Series against a shared x axis.

    Attributes:
        x: ``[N]`` increasing x values.
        series: The lines, in legend order.
        title, x_label, y_label: Texts (``y_label`` without the ``" (log)"`` of :attr:`y_title`).
        log_y: Logarithmic y axis.
        x_range, y_range: Axis ranges (data units); None when nothing can be drawn.
        marker_x: A dashed vertical line here (inside ``x_range``), or None.
        dots: Mark every point (few points), else only a series' lone point.
    """

    x: np.ndarray
    series: tuple[Series, ...]
    title: str
    x_label: str
    y_label: str
    log_y: bool = False
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    marker_x: float | None = None
    dots: bool = False

    @property
    def y_title(self) -> str:
        """The y axis title as shown."""
        return self.y_label + (" (log)" if self.log_y else "")


@dataclass(frozen=True, eq=False)
class MatrixChart:
    """A heatmap ``[R, C]``: row 0 at the top, named rows and columns, a colour bar.

    Attributes:
        values: ``[R, C]`` floats (NaN = no data).
        row_labels, col_labels: Axis labels (``R`` and ``C`` strings), as shown.
        title, x_label, y_label: Texts.
        value_title: Colour-bar title without the ``" (log)"`` of :attr:`bar_title`.
        value_name: Short name of the value (hover).
        scale: The colour scale.
        row_hover, col_hover: Longer names of rows and columns for hover (default: the labels).
        row_name, col_name: What a row and a column are (hover).
        square: Square cells (else fixed-height rows, for long matrices such as blocks × steps).
        nan_note: Text under the colour bar when some value is NaN.
        faded: bool ``[R, C]``, cells drawn faded (e.g. differences that are not significant), or None. The
            Bokeh renderer draws them at :data:`FADED_ALPHA` opacity; the SVG picture does not fade yet.
        separators: Row (and column) indices where a new block starts: lines are drawn before them across the
            whole matrix (for a square matrix of parameter blocks); empty for none.
    """

    values: np.ndarray
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    title: str
    x_label: str
    y_label: str
    value_title: str
    value_name: str
    scale: ColorScale
    row_hover: tuple[str, ...] | None = None
    col_hover: tuple[str, ...] | None = None
    row_name: str = "row"
    col_name: str = "column"
    square: bool = True
    nan_note: str = "grey: no data"
    faded: np.ndarray | None = None
    separators: tuple[int, ...] = ()

    def __post_init__(self):
        R, C = self.values.shape
        if any(not 0 < s < min(R, C) for s in self.separators):
            raise ValueError(f"separators must lie strictly inside the {R} x {C} matrix, got {self.separators}")
        if len(self.row_labels) != R or len(self.col_labels) != C:
            raise ValueError(
                f"need {R} row and {C} column labels, got {len(self.row_labels)} and {len(self.col_labels)}"
            )
        if self.faded is not None and np.shape(self.faded) != (R, C):
            raise ValueError(f"faded must be a bool mask [{R}, {C}], got shape {np.shape(self.faded)}")

    @property
    def bar_title(self) -> str:
        """The colour-bar title as shown."""
        return self.value_title + (" (log)" if self.scale.log else "")


@dataclass(frozen=True, eq=False)
class LandscapeChart:
    r"""A landscape grid ``[A, B]``: :math:`\alpha` across, :math:`\beta` upwards, contours, trajectory, origin.

    Attributes:
        alphas, betas: ``[A]`` and ``[B]`` increasing coordinates.
        values: ``[A, B]`` floats (NaN = not computed yet).
        scale: The colour scale (contours follow it: in log values for a log scale).
        contour_levels: Levels drawn (empty: no contours).
        contour_lines: ``[(level, [line [n, 2] of (alpha, beta)])]`` for those levels.
        trajectory: ``[T, 2]`` finite points ``(alpha, beta)``, or None.
        trajectory_steps: ``[T]`` step numbers of those points, or None.
        origin: ``(0, 0)`` when it lies on the grid's area, else None.
        title, x_label, y_label, value_title, value_name: Texts (``value_title`` without ``" (log)"``).
        nan_note: Text under the colour bar when some value is NaN.
    """

    alphas: np.ndarray
    betas: np.ndarray
    values: np.ndarray
    scale: ColorScale
    title: str
    x_label: str
    y_label: str
    value_title: str
    value_name: str
    contour_levels: tuple[float, ...] = ()
    contour_lines: tuple[tuple[float, tuple[np.ndarray, ...]], ...] = ()
    trajectory: np.ndarray | None = None
    trajectory_steps: np.ndarray | None = None
    origin: tuple[float, float] | None = (0.0, 0.0)
    nan_note: str = "grey: not computed"

    @property
    def bar_title(self) -> str:
        """The colour-bar title as shown."""
        return self.value_title + (" (log)" if self.scale.log else "")


def line_chart(
    x, series: Sequence[Series], title: str, x_label: str, y_label: str, log: bool = False, marker_x=None
) -> LineChart:
    """A :class:`LineChart` with its ranges decided: x from the data (widened by 0.5 for one value), y the
    joint range of the series and their bands (:func:`joint_range`), the marker kept only inside the x range,
    every point marked for at most :data:`MAX_DOTS` points (as the live view)."""
    xs = as_array(x).reshape(-1)
    x_range = None
    if xs.size:
        x0, x1 = float(xs.min()), float(xs.max())
        x_range = (x0 - 0.5, x1 + 0.5) if x0 == x1 else (x0, x1)
    arrays = [a for s in series for a in ((s.y, *s.band) if s.band is not None else (s.y,))]
    marker = None
    if marker_x is not None and x_range is not None and x_range[0] <= marker_x <= x_range[1]:
        marker = float(marker_x)
    return LineChart(
        x=xs,
        series=tuple(series),
        title=title,
        x_label=x_label,
        y_label=y_label,
        log_y=bool(log),
        x_range=x_range,
        y_range=joint_range(arrays, log) if xs.size else None,
        marker_x=marker,
        dots=xs.size <= MAX_DOTS,
    )


Chart = LineChart | MatrixChart | LandscapeChart
