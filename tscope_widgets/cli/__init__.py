"""Command line: ``tscope demo`` and ``tscope run CONFIG.toml``.

``tscope demo`` trains the tiny induction model (:func:`train_tiny`), measures position-to-position
sensitivity :math:`s_{ij} = \\lVert \\partial h_i / \\partial e_j \\rVert_F^2` of every layer over a few
hundred induction sequences, and writes to ``--out`` (default ``results/demo``):

- ``statistics.safetensors`` + ``meta.json``: per-layer Welford statistics
  (:mod:`tscope_widgets.export.results`);
- ``model.safetensors`` + ``model.json``: the trained model;
- ``report.html``: mean and std heatmaps per layer, self-contained (opens offline);

and, on the first 64 sequences, the 3 largest and smallest Hessian eigenvalues of the loss (Lanczos) and
its trace (Hutch++), printed and shown in the report (``meta["curvature"]``; about 5 s more).

``tscope run CONFIG.toml`` runs the analysis a TOML file describes for a model and data set (see
``examples/``; :data:`CONFIG_SCHEMA` lists every key, :data:`ANALYSIS_KEYS` which apply to which kind):

- ``[analysis] kind = "sensitivity"``: as the demo; ``statistics.safetensors`` + ``meta.json``.
- ``kind = "curvature"``: extreme eigenvalues with residuals, trace, spectral density, block norm map
  and summary (sharpness, λ_min, condition number, negative mass) of the Hessian, its Gauss–Newton or
  its functional part (:func:`run_curvature`); ``curvature.safetensors`` + ``meta.json``.
- ``kind = "landscape"``: the loss on a 2D grid along random (filter-normalized) or Hessian eigenvector
  directions (:func:`run_landscape`); ``landscape.safetensors`` + ``meta.json`` and
  ``directions.safetensors``, from which the slice can be recomputed exactly.
- ``kind = "attention"``: per-cell statistics of attention weights, entropy and rollout over the data, the
  singular values and effective ranks of every head, and (``sensitivity = true``) the Spearman correlation of
  mean attention with exact sensitivity on the first ``correlation_samples`` sequences, with a bootstrap
  interval (:func:`run_attention`); ``attention.safetensors`` + ``meta.json``.
- ``kind = "blocks"``: the SLQ density of each diagonal Hessian block (one per parameter group), their
  Jensen–Shannon heterogeneity (Zhang et al. 2024) and the sharpness by block type against the Sharpness
  Disparity Principle (Wang et al. 2025) (:func:`run_blocks`); ``blocks.safetensors`` + ``meta.json``.

``tscope sweep SWEEP.toml [--out DIR]`` runs a ``tscope run`` configuration over a grid (or a list) of points
(model shape, seeds, training steps, data size, sequence length, learning rate, theory knobs), each point in
its own folder, and collects one row of scalar summaries per point into ``table.csv``/``table.json``, with
power-law fits and a scaling report (:mod:`.sweep`; a killed sweep resumes where it stopped).
- ``kind = "growth_rates"`` (with ``[model] kind = "growth"``): the block-growth experiment of Ormaniec, Dangel
  & Singh (ICLR 2025), fresh models per embedding scale σ and seed, Frobenius norms of the W_Q and W_V blocks
  of the Hessian, GGN and functional part, fitted exponents (:mod:`.growth`); ``growth_rates.safetensors`` +
  ``meta.json``; a checkpoint after every point, ``--resume`` continues.

``tscope compare RUN_A RUN_B [--alpha 0.05] [--paired] [--out DIR]`` tests, cell by cell, where two sensitivity
runs differ (Welch's t-test, or the paired test when both read the same samples; Benjamini–Hochberg q-values):
``comparison.safetensors`` + ``meta.json`` and a ``report.html`` (:mod:`.compare`).

Each run also writes the model (unless ``[output] save_model = false``) and a self-contained ``report.html``.
Several processes (``torchrun``), for every analysis and the demo::

    torchrun --nproc-per-node 2 -m tscope_widgets.cli run examples/tiny_induction.toml
    torchrun --nproc-per-node 2 --no-python tscope run examples/tiny_induction.toml  # the same

- Every process joins torchrun's process group (gloo on the CPU; nccl with CUDA, each process on
  ``cuda:<LOCAL_RANK>``) and analyses its shard of the data, samples ``r, r + W, ...``
  (:func:`distributed.shard`); the Welford states are merged exactly at the end
  (:func:`distributed.all_merge_welford`): counts equal a one-process run's exactly, minima and maxima
  exactly when the per-sample maps are bit-identical, means and standard deviations to rounding (about
  1e-15 relative in float64, more for a std far below its mean). Per-sample maps can differ in their last
  bits with the samples that share a batch (BLAS blocking; e.g. GPT-2 maps change by ~3e-16 relative
  between batch sizes 1 and 8 in one process), and shards make other batches; the tiny models here give
  bit-identical maps. The reservoir of per-sample maps is rank 0's.
- The model is the same on every rank: a tiny model that is trained is trained on rank 0 alone and its
  weights broadcast (seeded training repeats bit for bit only on the same thread count and hardware; a
  broadcast needs neither), a loaded or Hugging Face model is loaded on every rank; then the ranks compare
  SHA-256 digests of the weights, and of the data, and refuse to go on when they differ.
- Curvature and landscapes shard the loss batches instead (batches ``r, r + W, ...``): each product,
  gradient and grid point is reduced over the ranks with the token weights of all ranks
  (``HessianOperator(process_group=)``, ``slice_2d(process_group=)``), so every rank holds the loss and
  products of one process holding all the data, and Lanczos, Hutch++, SLQ and block norms (seeded
  alike) run identically on every rank; results equal a one-process run to rounding (tested: 1e-10 in
  float64). Each rank needs at least one batch.
- Rank 0 alone prints, shows progress bars (of its own shard) and writes the results; the files are those
  of a one-process run, with ``world_size`` in ``meta.json``. The only files other ranks write are their
  checkpoints: with ``checkpoint_every`` each rank saves its own in ``OUT/checkpoint/rank<r>-of-<W>/``, and
  ``--resume`` continues each rank from its own, so a run resumes with the number of processes that
  started it (any other is refused, naming the one to use).
- A failure on one rank stops every rank with a message naming the rank and its error instead of leaving
  the others waiting; a rank that hangs or dies is noticed after ``--dist-timeout`` seconds (default 1800;
  the merge waits for the slowest shard, so keep it above the time a shard takes).

The package, one job per module (data flows down; nothing imports upward):

- :mod:`.config`: the TOML schema (:data:`CONFIG_SCHEMA`), its validation, :class:`ConfigError`, and the
  typed configuration the other modules read (:class:`RunConfig`, :func:`load_run_config`);
- :mod:`.prepare`: the model and data a run analyses (:func:`prepare_model`, :func:`prepare_data`);
- :mod:`.runs`: the analyses, streamed to their end (:func:`run_sensitivity`, :func:`run_curvature`,
  :func:`run_landscape`);
- :mod:`.reports`: results files, ``meta.json``, figures, notes and the lines printed;
- :mod:`.blocks`: the runner and report of ``kind = "blocks"``;
- :mod:`.growth`: ``kind = "growth_rates"``, runner and report (no model preparation);
- :mod:`.compare`: ``tscope compare`` (:mod:`.compare_paired`: the paired test's second run of both models);
- :mod:`.sweep`: ``tscope sweep`` (:mod:`.sweep_config`: sweep files; :mod:`.sweep_rows`: the summaries of a
  point; :mod:`.sweep_report`: fits and the scaling report);
- :mod:`.commands`: the parser, ``demo`` and ``run``, exit codes and the ``torchrun`` plumbing (:func:`main`).

The names below are re-exported from them; ``tscope`` and ``python -m tscope_widgets.cli`` call :func:`main`.
"""

from __future__ import annotations

from ..tasks import describe_induction, induction_reading
from .blocks import BlocksResult, report_blocks, run_blocks
from .commands import DEFAULT_DIST_TIMEOUT_S, DEMO_CURVATURE_SAMPLES, build_parser, cmd_demo, cmd_run, main
from .compare import cmd_compare
from .config import (
    ANALYSES,
    ANALYSIS_CONFIGS,
    ANALYSIS_KEYS,
    CONFIG_SCHEMA,
    STATISTICS_SHOWN,
    AnalysisConfig,
    AttentionConfig,
    BlocksConfig,
    ConfigError,
    CurvatureConfig,
    DataConfig,
    GrowthRatesConfig,
    Key,
    LandscapeConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    SensitivityConfig,
    load_config,
    load_run_config,
    parse_config,
    validate_config,
)
from .prepare import Dataset, Prepared, position_token_labels, prepare_data, prepare_hf, prepare_model, prepare_tiny
from .reports import (
    DENSITY_LOG_RANGE,
    curvature_figures,
    curvature_lines,
    curvature_meta,
    curvature_tensors,
    landscape_figures,
    landscape_meta,
    write_outputs,
)
from .runs import (
    CurvatureResult,
    LandscapeResult,
    Layer,
    curvature_estimate,
    loss_batches,
    parse_layers,
    run_curvature,
    run_landscape,
    run_sensitivity,
    sensitivity_checkpoint_dir,
)
from .sweep import cmd_sweep, collect_rows, iter_sweep_tables, run_points, write_table
from .sweep_config import AXIS_ALIASES, SweepConfig, SweepPoint, load_sweep, validate_sweep
from .sweep_report import sweep_fits, write_scaling_report
from .sweep_rows import SUMMARY_DOCS

__all__ = [
    # commands
    "main",
    "build_parser",
    "cmd_demo",
    "cmd_run",
    "cmd_compare",
    "cmd_sweep",
    "DEFAULT_DIST_TIMEOUT_S",
    "DEMO_CURVATURE_SAMPLES",
    # configuration
    "ConfigError",
    "Key",
    "CONFIG_SCHEMA",
    "ANALYSES",
    "ANALYSIS_KEYS",
    "STATISTICS_SHOWN",
    "validate_config",
    "load_config",
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "AnalysisConfig",
    "SensitivityConfig",
    "AttentionConfig",
    "GrowthRatesConfig",
    "CurvatureConfig",
    "LandscapeConfig",
    "BlocksConfig",
    "ANALYSIS_CONFIGS",
    "OutputConfig",
    "parse_config",
    "load_run_config",
    # models and data
    "Prepared",
    "Dataset",
    "prepare_model",
    "prepare_tiny",
    "prepare_hf",
    "prepare_data",
    "position_token_labels",
    # analyses
    "Layer",
    "parse_layers",
    "run_sensitivity",
    "sensitivity_checkpoint_dir",
    "loss_batches",
    "CurvatureResult",
    "run_curvature",
    "curvature_estimate",
    "LandscapeResult",
    "run_landscape",
    "BlocksResult",
    "run_blocks",
    # reports
    "write_outputs",
    "curvature_tensors",
    "curvature_meta",
    "curvature_lines",
    "curvature_figures",
    "DENSITY_LOG_RANGE",
    "landscape_meta",
    "landscape_figures",
    "report_blocks",
    # sweeps
    "AXIS_ALIASES",
    "SweepConfig",
    "SweepPoint",
    "load_sweep",
    "validate_sweep",
    "run_points",
    "iter_sweep_tables",
    "collect_rows",
    "write_table",
    "SUMMARY_DOCS",
    "sweep_fits",
    "write_scaling_report",
    # the induction reading (lives in tscope_widgets.tasks)
    "induction_reading",
    "describe_induction",
]
