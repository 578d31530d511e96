"""One row of a sweep's table: the scalar summaries of one point's model and analyses.

The definitions are those of :mod:`tscope_widgets.kernels.summaries`; :data:`SUMMARY_DOCS` says in one line
what each column holds (the table's JSON repeats it, so a table explains itself). Values that do not apply
(no MLP, no trace, a data set that is not the induction task) are ``nan``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..kernels.summaries import (
    block_norm_ratio,
    bulk_outlier_mass_ratio,
    diagonal_mass_fraction,
    diagonal_offdiagonal_ratio,
    receptive_field,
    sharpness_ratio,
    slice_curvature,
    top_eigengap,
)

BULK_EDGE = 0.1  # the bulk of the spectrum: |t| <= BULK_EDGE * |lambda_max|
ERF_MASS = 0.9  # the effective receptive field holds this fraction of a row's sensitivity

SUMMARY_DOCS: dict[str, str] = {
    "num_params": "parameters of the model",
    "train_accuracy": "held-out accuracy at the end of training (tiny models trained here)",
    "train_loss": "training loss of the last step",
    "loss": "token-weighted mean loss over the analysis data (curvature run)",
    "lambda_max": "largest Hessian eigenvalue (Lanczos)",
    "lambda_min": "smallest Hessian eigenvalue (Lanczos)",
    "trace": "Hessian trace (Hutch++)",
    "lambda_max_over_trace": "lambda_max / trace: share of the curvature in the top direction",
    "eigengap_1": "(lambda_1 - lambda_2) / |lambda_1| of the top Lanczos eigenvalues",
    "negative_mass": "spectral mass below zero (SLQ density)",
    "bulk_outlier_ratio": "SLQ density mass with |t| <= 0.1 |lambda_max| over the mass beyond (bulk / outliers)",
    "qv_ratio": "||H_QQ||_F / ||H_VV||_F over all query and value groups (block norms)",
    "attn_mlp_ratio": "||H_AA||_F / ||H_MM||_F, A = all attention groups, M = all MLP groups",
    "sens_diag_fraction": "sum_i s_ii / sum_ij s_ij of the mean sensitivity map (last layer analysed)",
    "sens_diag_offdiag_ratio": "mean diagonal cell / mean causal off-diagonal cell of that map",
    "sens_erf90": "mean over rows of the smallest offset |i - j| holding 90% of the row's sensitivity",
    "sens_induction_ratio": "induction cells / other causal cells of that map (induction task)",
    "attn_qk_rank": "mean over layers and heads of the entropy effective rank of W_QK = W_Q W_K^T / sqrt(d_h)",
    "attn_ov_rank": "mean over layers and heads of the entropy effective rank of W_OV = W_V W_O",
    "attn_entropy": "mean per-query attention entropy (nats) over heads, positions and sequences",
    "attn_sens_rho": "mean over layers of the Spearman correlation of the head-mean attention with sensitivity",
    "landscape_loss": "loss at the model (landscape run)",
    "landscape_accuracy": "token accuracy at the model (landscape run)",
    "landscape_curvature_d1": "(L(h) - 2L(0) + L(-h)) / h^2 along the first direction of the slice",
}


def _number(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def model_summaries(model: torch.nn.Module, description: dict) -> dict[str, float]:
    """``num_params``, ``train_accuracy`` and ``train_loss`` of a prepared model."""
    training = description.get("training") or {}
    return {
        "num_params": float(sum(p.numel() for p in model.parameters())),
        "train_accuracy": _number(training.get("accuracy")),
        "train_loss": _number(training.get("final_loss")),
    }


def curvature_summaries(result, k: int) -> dict[str, float]:
    """Spectrum and block-norm summaries of a :class:`~tscope_widgets.cli.runs.CurvatureResult`.

    ``k`` is ``[analysis].k``: the top ``k`` Ritz values (the last ``k`` of the ascending ``which="both"``
    eigenvalues) give the eigengap.
    """
    s = result.summary
    trace = result.trace.value if result.trace is not None else math.nan
    top = result.lanczos.eigenvalues.reshape(-1)[-k:]
    row = {
        "loss": _number(result.loss),
        "lambda_max": _number(s.sharpness),
        "lambda_min": _number(s.lambda_min),
        "trace": _number(trace),
        "lambda_max_over_trace": sharpness_ratio(float(s.sharpness), float(trace)),
        "eigengap_1": top_eigengap(top, 1),
        "negative_mass": _number(s.negative_fraction),
        "bulk_outlier_ratio": math.nan,
        "qv_ratio": math.nan,
        "attn_mlp_ratio": math.nan,
    }
    edge = BULK_EDGE * abs(row["lambda_max"])
    if result.density is not None and math.isfinite(edge) and edge > 0:
        row["bulk_outlier_ratio"] = bulk_outlier_mass_ratio(result.density.grid, result.density.density, edge)
    if result.blocks is not None:
        b = result.blocks
        row["qv_ratio"] = block_norm_ratio(b.labels, b.frobenius, "*.attn.q", "*.attn.v")
        row["attn_mlp_ratio"] = block_norm_ratio(b.labels, b.frobenius, "*.attn.*", "*.mlp.*")
    return row


def sensitivity_summaries(stats: dict, layers: list, dataset_description: dict) -> dict[str, float]:
    """Summaries of the mean map of the last layer analysed (``"final"`` when it was)."""
    from ..tasks import induction_reading

    layer = "final" if "final" in stats else layers[-1]
    mean = stats[layer].mean
    field = receptive_field(mean, ERF_MASS)
    row = {
        "sens_diag_fraction": diagonal_mass_fraction(mean),
        "sens_diag_offdiag_ratio": diagonal_offdiagonal_ratio(mean, causal=bool(torch.all(mean.triu(1) == 0))),
        "sens_erf90": float(field.nanmean()) if not field.isnan().all() else math.nan,
        "sens_induction_ratio": math.nan,
    }
    if dataset_description.get("task") == "induction":
        k = dataset_description["task_kwargs"]["k_max"]
        reading = induction_reading({layer: stats[layer]}, k).get(layer)
        if reading is not None:
            row["sens_induction_ratio"] = _number(reading["ratio"])
    return row


def attention_summaries(result) -> dict[str, float]:
    """Effective ranks of the QK and OV circuits, the attention entropy and (with the correlation) the head-mean
    attention's correlation with sensitivity, from an attention run (see :data:`SUMMARY_DOCS`)."""
    ranks = result.spectra.entropy_rank
    entropy = [state.mean[state.count > 0] for state in result.snapshot.entropy.values()]
    cells = torch.cat([e.flatten() for e in entropy]) if entropy else torch.empty(0)
    rho = [c.rho[c.labels.index("head mean")] for c in (result.correlation or {}).values()]
    return {
        "attn_qk_rank": _number(ranks["qk"].double().mean()),
        "attn_ov_rank": _number(ranks["ov"].double().mean()),
        "attn_entropy": _number(cells.double().mean()) if cells.numel() else math.nan,
        "attn_sens_rho": _number(torch.tensor([float(r) for r in rho]).mean()) if rho else math.nan,
    }


def landscape_summaries(result) -> dict[str, float]:
    """Loss, accuracy and curvature along the first direction at the model, from a landscape slice."""
    s = result.slice
    centre = int((s.betas == 0).nonzero()[0, 0]) if (s.betas == 0).any() else None
    along = s.loss[:, centre] if centre is not None else None
    return {
        "landscape_loss": _number(s.origin_loss),
        "landscape_accuracy": _number(s.origin_accuracy),
        "landscape_curvature_d1": slice_curvature(s.alphas, along) if along is not None else math.nan,
    }
