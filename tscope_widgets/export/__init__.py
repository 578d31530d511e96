"""Export: results files (safetensors/npz + JSON), static Bokeh figures and standalone HTML reports."""

from .bokeh import landscape_heatmap, line_figure, matrix_figure, sensitivity_figures, sensitivity_heatmap
from .html import save_report
from .results import load_extra_tensors, load_npz, load_statistics, save_npz, save_statistics

__all__ = [
    # results files
    "save_statistics",
    "load_statistics",
    "load_extra_tensors",
    "save_npz",
    "load_npz",
    # figures and reports
    "sensitivity_heatmap",
    "sensitivity_figures",
    "line_figure",
    "matrix_figure",
    "landscape_heatmap",
    "save_report",
]
