"""What a run leaves behind: results files, ``meta.json``, the report's figures and notes, and the lines printed.

For each analysis: the meta dict (``*_meta``), the tensors saved (``*_tensors``), plain sentences
(``curvature_lines``), the Bokeh figures of ``report.html`` (``*_figures``), and ``report_*``, which writes all
of a finished run on rank 0 and prints what it wrote. Nothing here computes an analysis (:mod:`.runs` does),
and nothing here draws: the report views are :mod:`tscope_widgets.figures.reports`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..figures.reports import DENSITY_LOG_RANGE
from ..models import ModelAdapter, adapt
from ..tasks import describe_induction, induction_reading
from .config import AnalysisConfig, OutputConfig, RunConfig, SensitivityConfig
from .prepare import Dataset, Prepared, position_token_labels
from .runs import CurvatureResult, LandscapeResult


def write_outputs(
    out: Path,
    snapshot,
    layers,
    meta: dict,
    token_labels: list[str],
    prepared: Prepared,
    output: OutputConfig,
    title: str,
    notes: list[str],
    extra_tensors: Mapping[str, Tensor],
) -> dict[str, Path]:
    """Write statistics, meta, model and report; return their paths."""
    from ..export import save_report, save_statistics, sensitivity_figures

    stats = snapshot.stats
    meta = {**meta, "token_labels": token_labels}
    save_statistics(out, stats, meta, extra_tensors=extra_tensors)
    paths = {"statistics": out / "statistics.safetensors", "meta": out / "meta.json"}
    if output.save_model and prepared.save is not None:
        written = prepared.save(out)
        paths["model"] = written[0]
    if output.report:
        grid = sensitivity_figures(stats, token_labels, statistics=output.statistics, log=output.log)
        paths["report"] = save_report(out / "report.html", grid, title=title, notes=notes)
    return paths


def _analysis_meta(
    snapshot, layers, seconds: float, analysis: AnalysisConfig, adapter: ModelAdapter
) -> dict:
    return {
        **snapshot.meta(),
        "layers": layers,
        "samples": snapshot.done,
        "num_layers": adapter.num_layers,
        "d_model": adapter.d_model,
        "vocab_size": adapter.vocab_size,
        "dtype": analysis.dtype,
        "quantity": "s_ij = ||d h_i / d e_j||_F^2 (i: output/target position, j: input/source position)",
        "seconds": round(seconds, 3),
    }


def _model_summary(prepared: Prepared, adapter: ModelAdapter) -> str:
    desc = prepared.description
    what = desc.get("name") or desc["class"]
    how = {
        "tiny": f"trained on {desc.get('training', {}).get('task', '?')}",
        "hf": "pretrained" if "name" in desc else "random weights from a config",
    }[desc["kind"]]
    sizes = f"{adapter.num_layers} blocks, d_model {adapter.d_model}, vocabulary {adapter.vocab_size}"
    return f"{what} ({how}; {sizes})"


def _print_paths(paths: Mapping[str, Path], stream=None) -> None:
    stream = stream or sys.stdout
    print("wrote:", file=stream)
    for what, path in paths.items():
        print(f"  {what:<11} {path}", file=stream)


def _data_tensors(batches: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """``{"data.input_ids": [N, S], ...}``: the batches joined, when they share one length (else ``{}``)."""
    if len({b["input_ids"].shape[1] for b in batches}) != 1:
        return {}
    return {f"data.{k}": torch.cat([b[k] for b in batches]) for k in batches[0]}


def curvature_tensors(result: CurvatureResult) -> dict[str, Tensor]:
    """The arrays of a curvature run, keyed as in ``curvature.safetensors`` (all float64)."""
    tensors = {"eigenvalues": result.lanczos.eigenvalues, "residual_norms": result.lanczos.residual_norms,
               "error_estimates": result.lanczos.error_estimates}
    if result.density is not None:
        d = result.density
        tensors |= {
            "density.grid": d.grid,
            "density.values": d.density,
            "density.nodes": d.nodes,
            "density.weights": d.weights,
        }
    if result.blocks is not None:
        b = result.blocks
        tensors |= {
            "blocks.frobenius": b.frobenius,
            "blocks.frobenius_stderr": b.frobenius_stderr,
            "blocks.spectral": b.spectral,
        }
    return tensors


def curvature_meta(result: CurvatureResult) -> dict[str, Any]:
    """The numbers of a curvature run for ``meta.json`` (eigenvalues repeated as lists for JSON readers)."""
    lz, s = result.lanczos, result.summary
    meta: dict[str, Any] = {
        "operator": {
            "kind": result.kind,
            "num_params": result.num_params,
            "group_sizes": result.group_sizes,
            "loss": result.loss,
        },
        "lanczos": {
            "which": lz.which,
            "k": lz.k,
            "eigenvalues": lz.eigenvalues.tolist(),
            "residual_norms": lz.residual_norms.tolist(),
            "error_estimates": lz.error_estimates.tolist(),
            "num_matvecs": lz.num_matvecs,
            "num_iterations": lz.num_iterations,
            "converged": lz.converged,
        },
        "summary": {
            "sharpness": s.sharpness,
            "lambda_min": s.lambda_min,
            "condition_number": s.condition_number,
            "negative_fraction": s.negative_fraction,
        },
        "trace": None,
        "density": None,
        "block_norms": None,
        "seconds": result.seconds,
        "warnings": result.warnings,
    }
    if result.estimate is not None:
        e = result.estimate
        meta["estimate"] = {"products_at_most": e.units, "seconds_per_product": e.seconds_per_unit,
                            "setup_seconds": e.setup_seconds, "seconds_at_most": e.seconds, "peak_bytes": e.peak_bytes}
    if result.trace is not None:
        t = result.trace
        meta["trace"] = {"value": t.value, "stderr": t.stderr, "num_matvecs": t.num_matvecs, "method": t.method}
    if result.density is not None:
        d = result.density
        meta["density"] = {
            "num_probes": d.nodes.shape[0],
            "num_steps": d.nodes.shape[1],
            "sigma": d.sigma,
            "num_matvecs": d.num_matvecs,
            "grid_points": d.grid.numel(),
        }
    if result.blocks is not None:
        b = result.blocks
        meta["block_norms"] = {
            "labels": b.labels,
            "exact": b.exact,
            "num_probes": None if b.exact else b.num_probes,
            "num_matvecs": b.num_matvecs,
        }
    return meta


MATRIX_NAMES = {"hessian": "Hessian", "ggn": "Gauss–Newton part", "functional": "functional part"}


def curvature_figures(result: CurvatureResult, log: bool | str) -> list:
    """Bokeh figures of :func:`~tscope_widgets.figures.reports.curvature_figures` for a curvature run."""
    from ..figures.reports import curvature_figures as figures

    density = blocks = None
    if result.density is not None:
        d = result.density
        density = (d.grid.numpy(), d.density.numpy(), d.sigma)
    if result.blocks is not None:
        b = result.blocks
        blocks = (b.labels, b.frobenius, b.exact, b.num_probes)
    return figures(MATRIX_NAMES[result.kind], result.lanczos.eigenvalues, result.lanczos.residual_norms,
                   density=density, blocks=blocks, log=log)


def curvature_lines(result: CurvatureResult) -> list[str]:
    """Plain sentences with the run's numbers, for the terminal and the report."""
    name = MATRIX_NAMES[result.kind]
    lz, s = result.lanczos, result.summary
    state = "converged" if lz.converged else "NOT converged"
    lines = [
        f"{name} of the loss {result.loss:.6g} over {result.num_params:,} parameters: Lanczos ({lz.num_iterations} "
        f"steps, {state}, residuals <= {lz.residual_norms.max().item():.2g}) gives eigenvalues "
        f"{', '.join(f'{v:.6g}' for v in lz.eigenvalues.tolist())}.",
        f"Sharpness λ_max = {s.sharpness:.6g}, λ_min = {s.lambda_min:.6g}, condition number |λ_max/λ_min| = "
        f"{s.condition_number:.4g}"
        + ("" if s.negative_fraction is None else f", negative spectral mass {s.negative_fraction:.3f} (SLQ)")
        + ".",
    ]
    if result.trace is not None:
        t = result.trace
        lines.append(
            f"Trace ≈ {t.value:.6g} ± {t.stderr:.2g} (Hutch++, {t.num_matvecs} products); mean eigenvalue "
            f"{t.value / result.num_params:.3g}."
        )
    if result.blocks is not None:
        b = result.blocks
        F = b.frobenius.nan_to_num(0.0)
        i, j = divmod(int(F.argmax()), F.shape[1])
        lines.append(
            f"Largest block norm ‖H_ab‖_F = {F[i, j].item():.4g} at ({b.labels[i]}, {b.labels[j]}) of "
            f"{len(b.labels)} groups ({'exact' if b.exact else f'{b.num_probes} probes per group'})."
        )
    return lines


def landscape_meta(result: LandscapeResult) -> dict[str, Any]:
    """The numbers of a landscape run for ``meta.json``."""
    s = result.slice
    finite = s.loss[torch.isfinite(s.loss)]
    return {
        "directions": result.how,
        "grid": {"alphas": s.alphas.tolist(), "betas": s.betas.tolist()},
        "origin_loss": s.origin_loss,
        "origin_accuracy": s.origin_accuracy,
        "loss_min": finite.min().item() if finite.numel() else None,
        "loss_max": finite.max().item() if finite.numel() else None,
        "nonfinite_points": int((~torch.isfinite(s.loss)).sum()),
        "seconds": result.seconds,
        "warnings": result.warnings,
    }


def landscape_figures(result: LandscapeResult, log: bool | str) -> list:
    """Bokeh figures of :func:`~tscope_widgets.figures.reports.landscape_figures` for a landscape run."""
    from ..figures.reports import landscape_figures as figures

    s = result.slice
    eigen = result.how["kind"] == "eigen"
    names = ("top eigenvector v1", "second eigenvector v2") if eigen else ("random d1", "random d2")
    return figures(s.alphas, s.betas, s.loss, s.accuracy, direction_names=names, origin_loss=s.origin_loss,
                   eigenvalues=result.how["eigenvalues"] if eigen else None, log=log)


def run_header(config: str, cfg: RunConfig, prepared: Prepared, dataset: Dataset, start: float) -> dict:
    """The part of ``meta.json`` every ``tscope run`` writes: command, config, model, data and the time so far."""
    return {
        "command": f"tscope run {config}",
        "config": cfg.to_dict(),
        "model": prepared.description,
        "data": dataset.description,
        "total_seconds": round(time.perf_counter() - start, 3),
    }


def _save_model(paths: dict[str, Path], out: Path, prepared: Prepared, output: OutputConfig) -> None:
    if output.save_model and prepared.save is not None:
        paths["model"] = prepared.save(out)[0]


def report_sensitivity(
    config: str,
    cfg: RunConfig,
    out: Path,
    prepared: Prepared,
    dataset: Dataset,
    snapshot,
    seconds: float,
    layers,
    start: float,
) -> None:
    """Write and print what a ``tscope run`` sensitivity analysis found (``config``: the TOML file as given)."""
    adapter = adapt(prepared.model)
    token_labels = position_token_labels(dataset, snapshot.seq_len)
    meta = {
        **_analysis_meta(snapshot, layers, seconds, cfg.analysis, adapter),
        **run_header(config, cfg, prepared, dataset, start),
    }
    notes = [
        f"Model: {_model_summary(prepared, adapter)}.",
        f"Data: {json.dumps(dataset.description, default=str, ensure_ascii=False)}.",
        f"Cells show s_ij = ||∂h_i/∂e_j||²_F over {snapshot.done} samples ({snapshot.method}, "
        f"{cfg.analysis.dtype}): row i = output position, column j = input position. Grey = no data.",
    ]
    extra = {"input_ids": dataset.extra["input_ids"]} if "input_ids" in dataset.extra else {}
    paths = write_outputs(
        out,
        snapshot,
        layers,
        meta,
        token_labels,
        prepared,
        cfg.output,
        title=f"tscope run: {Path(config).name}",
        notes=notes,
        extra_tensors=extra,
    )
    _print_paths(paths)
    print(f"sensitivity over {snapshot.done} samples took {seconds:.1f} s.")


def _loss_run_meta(kind: str, numbers: dict, quantity: str, batches: list[dict[str, Tensor]], config: str,
                   cfg: RunConfig, prepared: Prepared, dataset: Dataset, start: float) -> dict[str, Any]:
    """``meta.json`` of a curvature or landscape run: its numbers, the loss batches and the run header."""
    return {
        "analysis": kind,
        **numbers,
        "samples": sum(len(b["input_ids"]) for b in batches),
        "batches": len(batches),
        "dtype": cfg.analysis.dtype,
        "quantity": quantity,
        **run_header(config, cfg, prepared, dataset, start),
    }


def _model_and_data_notes(prepared: Prepared, adapter: ModelAdapter, dataset: Dataset, meta: dict) -> list[str]:
    """The report's first two notes: the model, and the data with its samples, batches and dtype."""
    data = json.dumps(dataset.description, default=str, ensure_ascii=False)
    return [
        f"Model: {_model_summary(prepared, adapter)}.",
        f"Data: {data}; {meta['samples']} samples in {meta['batches']} batches, {meta['dtype']}.",
    ]


def report_curvature(
    config: str,
    cfg: RunConfig,
    out: Path,
    prepared: Prepared,
    dataset: Dataset,
    batches: list[dict[str, Tensor]],
    result: CurvatureResult,
    start: float,
) -> None:
    """Write and print what a ``tscope run`` curvature analysis over ``batches`` (all ranks') found."""
    from ..export.html import save_report
    from ..export.results import save_results

    output = cfg.output
    adapter = adapt(prepared.model)
    lines = curvature_lines(result)
    meta = _loss_run_meta(
        "curvature", curvature_meta(result),
        "curvature of the token-weighted mean LM loss over the data (HessianOperator)",
        batches, config, cfg, prepared, dataset, start,
    )
    paths = {"results": save_results(out, "curvature", curvature_tensors(result) | _data_tensors(batches), meta)}
    paths["meta"] = out / "meta.json"
    _save_model(paths, out, prepared, output)
    if output.report:
        notes = [
            *_model_and_data_notes(prepared, adapter, dataset, meta),
            *lines,
            *(f"Warning: {w}" for w in result.warnings),
        ]
        if result.density is not None:
            notes.append(
                f"The density is drawn on a log axis, clipped at {DENSITY_LOG_RANGE:g} × its peak; red triangles "
                "and dotted lines mark the extreme eigenvalues from Lanczos (hover: value and residual)."
            )
        figures = curvature_figures(result, log=output.log)
        paths["report"] = save_report(out / "report.html", figures, title=f"tscope run: {Path(config).name}",
                                      notes=notes)
    _print_paths(paths)
    for line in lines:
        print(line)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"curvature took {sum(result.seconds.values()):.1f} s ({parts}).")


def report_landscape(
    config: str,
    cfg: RunConfig,
    out: Path,
    prepared: Prepared,
    dataset: Dataset,
    batches: list[dict[str, Tensor]],
    result: LandscapeResult,
    start: float,
) -> None:
    """Write and print what a ``tscope run`` landscape over ``batches`` (all ranks') found, with its directions."""
    from ..export.directions import save_directions
    from ..export.html import save_report
    from ..export.results import save_results

    analysis, output = cfg.analysis, cfg.output
    adapter = adapt(prepared.model)
    s = result.slice
    meta = _loss_run_meta(
        "landscape", landscape_meta(result),
        "L(θ + α d1 + β d2): token-weighted mean LM loss over the data; accuracy of the argmax",
        batches, config, cfg, prepared, dataset, start,
    )
    tensors = s.state_dict() | _data_tensors(batches)
    paths = {"results": save_results(out, "landscape", tensors, meta), "meta": out / "meta.json"}
    paths["directions"] = save_directions(
        out / "directions.safetensors", result.directions, {**result.how, "dtype": analysis.dtype}
    )
    _save_model(paths, out, prepared, output)
    how = result.how
    if how["kind"] == "eigen":
        lam1, lam2 = how["eigenvalues"]
        made = f"d1, d2 = the two top Hessian eigenvectors (unit norm; λ = {lam1:.5g}, {lam2:.5g})"
    else:
        made = f"d1, d2 = Gaussian directions with filter normalization (Li et al. 2018), seed {how['seed']}"
    summary = (
        f"Loss at θ: {s.origin_loss:.6g} (token accuracy {s.origin_accuracy:.4f}); over the "
        f"{s.loss.shape[0]}×{s.loss.shape[1]} grid α, β ∈ [−{analysis.span:g}, {analysis.span:g}] the loss "
        f"runs from {meta['loss_min']:.6g} to {meta['loss_max']:.6g}."
    )
    if output.report:
        notes = [
            *_model_and_data_notes(prepared, adapter, dataset, meta),
            f"{made}. directions.safetensors holds them, so the slice can be recomputed exactly.",
            summary,
            *(f"Warning: {w}" for w in result.warnings),
        ]
        paths["report"] = save_report(
            out / "report.html",
            landscape_figures(result, log=output.log),
            title=f"tscope run: {Path(config).name}",
            notes=notes,
        )
    _print_paths(paths)
    print(summary)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"landscape took {sum(result.seconds.values()):.1f} s.")


def report_demo(
    out: Path,
    prepared: Prepared,
    dataset: Dataset,
    snapshot,
    seconds: float,
    layers,
    analysis: SensitivityConfig,
    output: OutputConfig,
    curvature: CurvatureResult,
    n_curv: int,
    start: float,
) -> None:
    """Write and print what ``tscope demo`` found: the sensitivity maps, their induction reading
    (:func:`~tscope_widgets.tasks.induction_reading`) and the curvature of the first ``n_curv`` sequences."""
    result, task = prepared.training, prepared.task
    curvature_text = [f"Curvature of the loss over the first {n_curv} sequences:", *curvature_lines(curvature)]
    adapter = adapt(prepared.model)
    roles = task.role_labels(task.k_max)
    reading = induction_reading(snapshot.stats, task.k_max)
    paragraph = describe_induction(reading, task.k_max, roles)
    meta = {
        **_analysis_meta(snapshot, layers, seconds, analysis, adapter),
        "command": "tscope demo",
        "model": prepared.description,
        "data": dataset.description,
        "induction_reading": {str(k): v for k, v in reading.items()},
        "curvature": {"samples": n_curv, **curvature_meta(curvature)},
        "total_seconds": round(time.perf_counter() - start, 3),
    }
    notes = [
        f"TinyTransformer (attention-only, {adapter.num_layers} layers, d_model {adapter.d_model}) trained "
        f"for {len(result.losses)} steps on induction sequences with segments of {task.k_min}–{task.k_max} "
        f"tokens; held-out accuracy {result.accuracy:.3f}.",
        f"Cells show s_ij = ||∂h_i/∂e_j||²_F over {snapshot.done} sequences [BOS, r1 … r{task.k_max}, "
        f"r1 … r{task.k_max}] ({snapshot.method}, {analysis.dtype}): row i = output position, column j = "
        "input position, labelled by role. Colours are logarithmic (four decades); exact zeros, as above "
        "the diagonal of this causal model, take the lowest colour; grey = no data.",
        paragraph,
        " ".join(curvature_text),
    ]
    paths = write_outputs(
        out,
        snapshot,
        layers,
        meta,
        roles,
        prepared,
        output,
        title="tscope demo: sensitivity of an induction model",
        notes=notes,
        extra_tensors={"input_ids": dataset.data},
    )
    _print_paths(paths)
    print(
        f"sensitivity over {snapshot.done} samples took {seconds:.1f} s; total "
        f"{time.perf_counter() - start:.1f} s."
    )
    print(paragraph)
    print(" ".join(curvature_text), f"({sum(curvature.seconds.values()):.1f} s)")
