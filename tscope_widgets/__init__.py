"""tscope_widgets: look inside transformers through their derivatives.

Position-to-position Jacobian sensitivity with streaming population statistics, Hessian operators and
spectra, loss-landscape slices, background jobs with checkpoints, and the models and synthetic tasks to
try them on. See ``DESIGN.md`` for the quantities.
"""

from ._version import __version__ as __version__
from .jobs import Checkpoint, Job, JobError, Progress, load_checkpoint, save_checkpoint
from .kernels import (
    AttentionSensitivityCorrelation,
    AttentionSnapshot,
    BlockTypeSharpness,
    Comparison,
    CostEstimate,
    FrobeniusEstimate,
    GrowthRates,
    GrowthSetting,
    HeadSpectra,
    HeadWeights,
    HessianHeatmap,
    HessianOperator,
    LogitLoss,
    PowerLawFit,
    SampleReservoir,
    SensitivitySnapshot,
    WelfordState,
    attention_sensitivity_correlation,
    attention_sensitivity_samples,
    block_densities,
    block_norms,
    block_type_sharpness,
    compare_statistics,
    crossing_sigma,
    dense_hessian,
    eigen_span,
    entry_histograms,
    fit_power_law,
    growth_exponent,
    head_spectra,
    head_weights,
    hessian_heatmap,
    hutchinson_frobenius,
    hutchpp_trace,
    iter_attention,
    iter_growth_rates,
    iter_model_growth_rates,
    iter_paired_sensitivity,
    iter_sensitivity,
    lanczos,
    landscape_grid,
    layernorm_hessian,
    layernorm_jacobian,
    make_directions,
    paired_statistics,
    position_sensitivity,
    probe_span,
    random_direction,
    rise_span,
    rmsnorm_hessian,
    rmsnorm_jacobian,
    self_attention_hessian,
    slice_1d,
    slice_2d,
    slq_density,
    spectral_heterogeneity,
)
from .models import ModelAdapter, ParamSlice, TinyConfig, TinyTransformer, adapt
from .tasks import get_task
from .tracking import AttentionHistory, AttentionTracker, SpectrumHistory, SpectrumTracker
from .training import TrainResult, load_model, save_model, train_model, train_tiny

__all__ = [
    # models
    "adapt",
    "ModelAdapter",
    "ParamSlice",
    "TinyTransformer",
    "TinyConfig",
    # kernels
    "WelfordState",
    "SampleReservoir",
    "position_sensitivity",
    "iter_sensitivity",
    "SensitivitySnapshot",
    "HeadWeights",
    "head_weights",
    "HeadSpectra",
    "head_spectra",
    "iter_attention",
    "AttentionSnapshot",
    "attention_sensitivity_correlation",
    "attention_sensitivity_samples",
    "AttentionSensitivityCorrelation",
    "compare_statistics",
    "paired_statistics",
    "iter_paired_sensitivity",
    "Comparison",
    "HessianOperator",
    "LogitLoss",
    "CostEstimate",
    "dense_hessian",
    "lanczos",
    "hutchpp_trace",
    "hutchinson_frobenius",
    "FrobeniusEstimate",
    "slq_density",
    "block_densities",
    "spectral_heterogeneity",
    "block_type_sharpness",
    "BlockTypeSharpness",
    "block_norms",
    "SpectrumTracker",
    "SpectrumHistory",
    "AttentionTracker",
    "AttentionHistory",
    "random_direction",
    "make_directions",
    "landscape_grid",
    "slice_1d",
    "slice_2d",
    "eigen_span",
    "rise_span",
    "probe_span",
    # scaling studies (`tscope sweep`)
    "fit_power_law",
    "PowerLawFit",
    # transformer theory
    "layernorm_jacobian",
    "layernorm_hessian",
    "rmsnorm_jacobian",
    "rmsnorm_hessian",
    "self_attention_hessian",
    "GrowthSetting",
    "GrowthRates",
    "iter_growth_rates",
    "iter_model_growth_rates",
    "growth_exponent",
    "crossing_sigma",
    "HessianHeatmap",
    "hessian_heatmap",
    "entry_histograms",
    # jobs
    "Job",
    "JobError",
    "Progress",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    # embedded default
    "get_task",
    "train_tiny",
    "train_model",
    "TrainResult",
    "save_model",
    "load_model",
    # results files (imported on first use: ``export`` brings in Bokeh)
    "save_directions",
    "load_directions",
    "save_spectrum_history",
    "load_spectrum_history",
    "save_attention_history",
    "load_attention_history",
    "open_state_dict",
    "LazyStateDict",
    # widgets (imported on first use: they need the front-end bundle and Jupyter packages)
    "SensitivityExplorer",
    "ComparisonExplorer",
    "SpectrumWidget",
    "LandscapeWidget",
    "AttentionExplorer",
    "SweepWidget",
    "BlockSpectraWidget",
]


_EXPORT_NAMES = (
    "save_directions",
    "load_directions",
    "save_spectrum_history",
    "load_spectrum_history",
    "save_attention_history",
    "load_attention_history",
    "open_state_dict",
    "LazyStateDict",
)


def __getattr__(name: str):
    if name in ("SensitivityExplorer", "ComparisonExplorer", "SpectrumWidget", "LandscapeWidget", "AttentionExplorer",
                "SweepWidget", "BlockSpectraWidget"):
        from . import widgets

        return getattr(widgets, name)
    if name in _EXPORT_NAMES:
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'tscope_widgets' has no attribute {name!r}")
