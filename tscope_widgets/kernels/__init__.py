"""Pure torch math over tensors and adapters: no widgets, no threads, no file I/O (that is in ``export``).

Long computations are generators yielding partial results (``done``/``total``) so a Job can stream them.
Observers of a training loop (``SpectrumTracker``) are in :mod:`tscope_widgets.tracking`.
"""

from .attention import (
    AttentionSensitivityCorrelation,
    AttentionSnapshot,
    HeadSpectra,
    HeadWeights,
    attention_sensitivity_correlation,
    attention_sensitivity_samples,
    condition_number,
    entropy_rank,
    head_spectra,
    head_weights,
    iter_attention,
    participation_ratio,
    stable_rank,
)
from .block_density import BlockDensities, block_densities, iter_block_densities, iter_block_slq
from .block_types import BLOCK_TYPES, BlockTypeSharpness, block_type, block_type_sharpness
from .blocks import BlockNorms, block_eigen_kernel, block_norms, iter_block_norms
from .compare import Comparison, compare_statistics, paired_statistics
from .cost import CostEstimate, available_memory, product_memory
from .curvature import DENSE_HESSIAN_MAX_BYTES, HessianOperator, LogitLoss, dense_hessian, resolve_groups
from .density import SpectralDensity, iter_slq, slq_density
from .frobenius import FrobeniusEstimate, hutchinson_frobenius
from .heterogeneity import SpectralHeterogeneity, js_distance_matrix, spectral_heterogeneity
from .lanczos import CurvatureSummary, LanczosResult, curvature_summary, iter_lanczos, lanczos
from .landscape import (
    Direction,
    DirectionSet,
    LandscapeSlice,
    checkpoint_direction,
    eigen_directions,
    eigen_span,
    landscape_grid,
    make_directions,
    pca_directions,
    probe_span,
    project_trajectory,
    quadratic_model,
    random_direction,
    rise_span,
    slice_1d,
    slice_2d,
)
from .operator import DenseOperator, LinearOperator, as_operator
from .power_law import PowerLawFit, fit_power_law
from .reservoir import SampleReservoir
from .sensitivity import (
    PairedSnapshot,
    SensitivitySnapshot,
    iter_paired_sensitivity,
    iter_sensitivity,
    position_sensitivity,
)
from .stability import sgd_stability_threshold
from .summaries import (
    block_norm_ratio,
    bulk_outlier_mass_ratio,
    diagonal_mass_fraction,
    diagonal_offdiagonal_ratio,
    receptive_field,
    sharpness_ratio,
    slice_curvature,
    top_eigengap,
)
from .theory import (
    GrowthRates,
    GrowthSetting,
    HessianHeatmap,
    crossing_sigma,
    entry_histograms,
    growth_exponent,
    hessian_heatmap,
    iter_growth_rates,
    iter_model_growth_rates,
    layernorm_hessian,
    layernorm_jacobian,
    rmsnorm_hessian,
    rmsnorm_jacobian,
    self_attention_hessian,
)
from .trace import DiagonalEstimate, TraceEstimate, diagonal, hutchinson_trace, hutchpp_trace
from .welford import WelfordState

__all__ = [
    # streaming statistics
    "WelfordState",
    "SampleReservoir",
    # comparisons of two runs
    "Comparison",
    "compare_statistics",
    "paired_statistics",
    # position-to-position sensitivity
    "position_sensitivity",
    "iter_sensitivity",
    "SensitivitySnapshot",
    # attention geometry
    "HeadWeights",
    "head_weights",
    "HeadSpectra",
    "head_spectra",
    "participation_ratio",
    "entropy_rank",
    "stable_rank",
    "condition_number",
    "iter_attention",
    "AttentionSnapshot",
    "attention_sensitivity_correlation",
    "attention_sensitivity_samples",
    "AttentionSensitivityCorrelation",
    "iter_paired_sensitivity",
    "PairedSnapshot",
    # linear operators and curvature
    "LinearOperator",
    "DenseOperator",
    "as_operator",
    "HessianOperator",
    "LogitLoss",
    "dense_hessian",
    "resolve_groups",
    "DENSE_HESSIAN_MAX_BYTES",
    # what an analysis will cost
    "CostEstimate",
    "available_memory",
    "product_memory",
    # eigenvalues, traces, diagonals, densities
    "LanczosResult",
    "lanczos",
    "iter_lanczos",
    "CurvatureSummary",
    "curvature_summary",
    "TraceEstimate",
    "DiagonalEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "diagonal",
    "FrobeniusEstimate",
    "hutchinson_frobenius",
    "SpectralDensity",
    "slq_density",
    "BlockDensities",
    "block_densities",
    "iter_block_densities",
    "iter_block_slq",
    "SpectralHeterogeneity",
    "spectral_heterogeneity",
    "js_distance_matrix",
    "iter_slq",
    # block structure and stability (the training-loop tracker is tscope_widgets.tracking)
    "BlockNorms",
    "block_norms",
    "iter_block_norms",
    "block_eigen_kernel",
    "BLOCK_TYPES",
    "BlockTypeSharpness",
    "block_type",
    "block_type_sharpness",
    "sgd_stability_threshold",
    # loss landscapes
    "Direction",
    "LandscapeSlice",
    "random_direction",
    "make_directions",
    "DirectionSet",
    "landscape_grid",
    "eigen_directions",
    "checkpoint_direction",
    "pca_directions",
    "project_trajectory",
    "slice_1d",
    "slice_2d",
    "quadratic_model",
    "eigen_span",
    "rise_span",
    "probe_span",
    # scaling: summaries of one run, power laws across runs
    "sharpness_ratio",
    "top_eigengap",
    "bulk_outlier_mass_ratio",
    "block_norm_ratio",
    "diagonal_mass_fraction",
    "diagonal_offdiagonal_ratio",
    "receptive_field",
    "slice_curvature",
    "PowerLawFit",
    "fit_power_law",
    # transformer theory (closed forms)
    "layernorm_jacobian",
    "layernorm_hessian",
    "rmsnorm_jacobian",
    "rmsnorm_hessian",
    "self_attention_hessian",
    # growth of Hessian blocks with the embedding scale (Ormaniec, Dangel & Singh 2025)
    "GrowthSetting",
    "GrowthRates",
    "iter_growth_rates",
    "iter_model_growth_rates",
    "growth_exponent",
    "crossing_sigma",
    "HessianHeatmap",
    "hessian_heatmap",
    "entry_histograms",
]
