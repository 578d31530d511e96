"""Export: results files (safetensors/npz + JSON), lazy checkpoint readers, static Bokeh figures, HTML reports."""

from .attention_history import load_attention_history, save_attention_history
from .bokeh import landscape_heatmap, line_figure, matrix_figure, sensitivity_figures, sensitivity_heatmap
from .directions import load_directions, save_directions
from .html import save_report
from .lazy_state_dict import LazyStateDict, open_state_dict
from .results import (
    load_extra_tensors,
    load_npz,
    load_results,
    load_statistics,
    save_npz,
    save_results,
    save_statistics,
)
from .spectrum_history import load_spectrum_history, save_spectrum_history

__all__ = [
    # results files
    "save_statistics",
    "load_statistics",
    "load_extra_tensors",
    "save_npz",
    "load_npz",
    "save_results",
    "load_results",
    "save_directions",
    "load_directions",
    "save_spectrum_history",
    "load_spectrum_history",
    "save_attention_history",
    "load_attention_history",
    # checkpoints read one tensor at a time
    "open_state_dict",
    "LazyStateDict",
    # figures and reports
    "sensitivity_heatmap",
    "sensitivity_figures",
    "line_figure",
    "matrix_figure",
    "landscape_heatmap",
    "save_report",
]
