r"""The growth-rate view (Ormaniec, Dangel & Singh, ICLR 2025): block norms against the embedding scale.

One log-log panel per block (``W_Q``, ``W_V``) and part (Hessian, Gauss–Newton, functional): the x axis is
:math:`\log_{10} \sigma` (so equal steps are equal factors), the y axis :math:`\lVert H_{bb} \rVert_F` on a log
scale, one line per setting with a band of ± one standard error over seeds, grey guide lines
:math:`\propto \sigma^k` through each setting's first point for the exponents the paper derives, and a
dashed marker at :math:`\sigma = 1` (:math:`\log_{10} \sigma = 0`). Settings on different ``σ`` grids get
panels of their own (a line needs one shared x axis). Built from plain arrays; :mod:`.svg` and
:mod:`.bokeh` render the descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .charts import LineChart, Series, as_array, line_chart, series_color

__all__ = ["GUIDE_COLOR", "PART_NAMES", "growth_charts", "paper_exponent"]

PART_NAMES = {"hessian": "Hessian", "ggn": "Gauss–Newton part", "functional": "functional part"}
BLOCK_NAMES = {"q": "W_Q", "v": "W_V"}
GUIDE_COLOR = "#9e9e9e"


def paper_exponent(block: str, part: str, setting: Mapping) -> float | None:
    """The small-``σ`` exponent the paper derives for ``block``/``part`` of a setting, or None (none stated).

    Softmax, one layer without LayerNorm: Q Hessian 5, Q GGN 6, Q functional 5, V Hessian and GGN 2.
    Linear attention without the attention skip and the MSE loss, last of ``L`` layers: ``2·3^L``.
    """
    if setting.get("attention") == "linear":
        if float(setting.get("residual_scale", 1.0)) == 0.0 and setting.get("loss") == "mse" and part != "functional":
            return 2.0 * 3 ** int(setting.get("n_layer", 1))
        return None
    if int(setting.get("n_layer", 1)) != 1 or setting.get("norm", "none") != "none":
        return None
    table = {("q", "hessian"): 5.0, ("q", "ggn"): 6.0, ("q", "functional"): 5.0, ("v", "hessian"): 2.0,
             ("v", "ggn"): 2.0}
    return table.get((block, part))


def growth_charts(
    sigmas,
    mean,
    stderr,
    settings: Sequence[Mapping],
    *,
    blocks: Sequence[str] = ("q", "v"),
    parts: Sequence[str] = ("hessian", "ggn", "functional"),
) -> list[LineChart]:
    """Log-log panels of block norms against ``σ``, one per ``σ`` grid, block and part (see the module doc).

    Args:
        sigmas: ``[G, I]`` embedding scales per setting (NaN past a setting's grid).
        mean: ``[G, I, len(blocks), len(parts)]`` mean norms over seeds.
        stderr: Same shape, their standard errors (NaN: no band).
        settings: ``G`` setting descriptions with ``label`` (and ``attention``, ``n_layer``, ``norm``,
            ``residual_scale``, ``loss`` for the guide lines).
        blocks: Block names (``"q"``, ``"v"``).
        parts: Part names (``"hessian"``, ``"ggn"``, ``"functional"``).

    Returns:
        Line charts, grid by grid, then block by block and part by part.
    """
    sig, m, se = as_array(sigmas, 2), as_array(mean, 4), as_array(stderr, 4)
    G = sig.shape[0]
    if m.shape[0] != G or se.shape != m.shape or len(settings) != G:
        raise ValueError(f"growth_charts: sigmas [G, I], mean and stderr [G, I, B, P] and G settings must agree, "
                         f"got {sig.shape}, {m.shape}, {se.shape} and {len(settings)}")
    grids: dict[tuple, list[int]] = {}
    for g in range(G):
        grid = tuple(float(s) for s in sig[g] if np.isfinite(s))
        grids.setdefault(grid, []).append(g)
    charts = []
    for grid, members in grids.items():
        x = np.log10(np.array(grid))
        n = len(grid)
        for b, block in enumerate(blocks):
            for p, part in enumerate(parts):
                lines, guides = [], []
                for g in members:
                    y = m[g, :n, b, p]
                    e = se[g, :n, b, p]
                    band = (np.where(np.isfinite(e), y - e, np.nan), np.where(np.isfinite(e), y + e, np.nan))
                    label = str(settings[g]["label"])
                    lines.append(Series(f"setting:{label}", label, y, series_color(g), band=band))
                    k = paper_exponent(block, part, settings[g])
                    first = np.flatnonzero(np.isfinite(y) & (y > 0))
                    if k is not None and first.size:
                        i0 = first[0]
                        guide = y[i0] * 10 ** (k * (x - x[i0]))
                        guides.append(Series(f"guide:{label}:{k:g}", f"σ^{k:g} ({label})", guide, GUIDE_COLOR))
                data = np.concatenate([s.y[np.isfinite(s.y) & (s.y > 0)] for s in lines])
                if data.size:  # guides stay within a decade of the data, so they do not stretch the y axis
                    lo, hi = data.min() / 10, data.max() * 10
                    guides = [Series(s.key, s.label, np.where((s.y >= lo) & (s.y <= hi), s.y, np.nan), s.color)
                              for s in guides]
                title = f"‖{PART_NAMES[part]} block {BLOCK_NAMES.get(block, block)}‖_F against σ"
                charts.append(line_chart(x, [*lines, *guides], title, "log10 σ (dashed: σ = 1)", "‖·‖_F", log=True,
                                         marker_x=0.0))
    return charts
