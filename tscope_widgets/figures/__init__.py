"""Figures: what each view shows, decided once, as chart descriptions (:mod:`.charts`), built from a widget's
state or a results file (:mod:`.sensitivity`, :mod:`.spectrum`, :mod:`.landscape`, :mod:`.growth`,
:mod:`.heterogeneity`) and rendered as the notebook
picture (:mod:`.svg`; heatmap cells are palette PNGs from :mod:`.png`) and as Bokeh (:mod:`.bokeh`, imported on
its own: it brings in Bokeh's plotting).

Imports numpy, torch, contourpy and Bokeh only; never widgets, jobs or the command line.
"""

from .charts import (
    ColorScale,
    LandscapeChart,
    LineChart,
    MatrixChart,
    Series,
    color_domain,
    color_scale,
    contour_levels,
    format_value,
    series_color,
)
from .growth import growth_charts
from .heterogeneity import entry_histogram_chart, hessian_heatmap_chart
from .landscape import landscape_chart
from .sensitivity import sensitivity_chart, sensitivity_grid
from .spectrum import series_options, spectrum_charts
from .svg import render_svg

__all__ = [
    # descriptions and shared rules
    "ColorScale",
    "Series",
    "LineChart",
    "MatrixChart",
    "LandscapeChart",
    "color_domain",
    "color_scale",
    "contour_levels",
    "format_value",
    "series_color",
    # builders
    "sensitivity_chart",
    "sensitivity_grid",
    "series_options",
    "spectrum_charts",
    "landscape_chart",
    "growth_charts",
    "hessian_heatmap_chart",
    "entry_histogram_chart",
    # renderers
    "render_svg",
]
