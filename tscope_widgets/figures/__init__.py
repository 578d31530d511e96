"""Figures: what each view shows, decided once, as chart descriptions (:mod:`.charts`), built from a widget's
state or a results file (:mod:`.sensitivity`, :mod:`.spectrum`, :mod:`.landscape`, :mod:`.growth`,
:mod:`.heterogeneity`) and rendered as the notebook
picture (:mod:`.svg`; heatmap cells are palette PNGs from :mod:`.png`) and as Bokeh (:mod:`.bokeh`, imported on
its own: it brings in Bokeh's plotting). :mod:`.raster` turns a picture into figure files for papers (print-size
SVG; PNG through CairoSVG, imported only when a PNG is asked for).

Imports numpy, torch, contourpy, Bokeh (and CairoSVG lazily) and the kernels (power-law fits) only; never widgets,
jobs or the command line.
"""

from .block_spectra import block_density_chart, heterogeneity_chart
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
from .overlays import block_norm_overlay, landscape_difference_charts, overlay_series_chart
from .scaling import ScalingChart, ScalingSeries, scaling_charts
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
    "ScalingChart",
    "ScalingSeries",
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
    "block_density_chart",
    "heterogeneity_chart",
    "scaling_charts",
    "growth_charts",
    "hessian_heatmap_chart",
    "entry_histogram_chart",
    # several runs in one view
    "overlay_series_chart",
    "block_norm_overlay",
    "landscape_difference_charts",
    # renderers
    "render_svg",
]
