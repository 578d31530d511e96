"""``tscope run`` with ``[analysis] kind = "growth_rates"``: the block-growth experiment of Ormaniec et al. (2025).

:func:`run_growth_rates` streams :func:`~tscope_widgets.kernels.theory.iter_growth_rates` (the paper's models,
``[model] kind = "growth"``) and :func:`run_model_growth_rates` streams
:func:`~tscope_widgets.kernels.theory.iter_model_growth_rates` (the configured tiny or Hugging Face model, its
embeddings redrawn at each scale, on the first batch of the configured data), under a progress bar, saving a
checkpoint (``OUT/checkpoint``) after every ``checkpoint_every`` points (default: every point) from which
``--resume`` continues; :func:`report_growth_rates` writes ``growth_rates.safetensors`` + ``meta.json``
(norms, standard errors, fitted exponents against the paper's, the ``σ`` where the Q and V Hessian curves
cross) and ``report.html`` (one log-log panel per block and part, :mod:`tscope_widgets.figures.growth`).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import ConfigError, GrowthRatesConfig, RunConfig

GROWTH_MODEL_DEFAULTS = {"d_model": 128, "n_head": 1, "d_mlp": 512, "activation": "relu"}


def growth_checkpoint_dir(out: Path) -> Path:
    """Where a growth-rate run in ``out`` keeps its checkpoint."""
    return out / "checkpoint"


def run_growth_rates(cfg: RunConfig, progress: bool, checkpoint_dir: Path | None, resume: bool):
    """Run the growth-rate kernel of ``cfg`` to its last snapshot; returns ``(snapshot, seconds)``.

    Raises:
        ConfigError: for settings the kernel refuses or a checkpoint of another run (``--resume``).
    """
    from ..kernels.theory import iter_growth_rates

    analysis: GrowthRatesConfig = cfg.analysis
    model = {**GROWTH_MODEL_DEFAULTS, **(cfg.model.tiny_config or {})}
    checkpoint = _checkpoint(checkpoint_dir, resume)

    def stream():
        return iter_growth_rates(
            analysis.growth_settings(), seeds=analysis.seeds, batch_size=analysis.batch_size,
            num_samples=analysis.num_samples, exact_max=analysis.exact_max,
            embedding_draw=analysis.embedding_draw, resume=checkpoint, **model,
        )

    return _run_to_end(stream, analysis, progress, checkpoint_dir, checkpoint)


def run_model_growth_rates(cfg: RunConfig, model, batch, progress: bool, checkpoint_dir: Path | None, resume: bool):
    """Run the growth-rate experiment on ``model`` (the configured tiny or Hugging Face model) and ``batch`` (one
    loss batch) to its last snapshot; returns ``(snapshot, seconds)``.

    Raises:
        ConfigError: for settings the kernel refuses (e.g. a layer the model does not have) or a checkpoint of
            another run (``--resume``).
    """
    from ..kernels.theory import iter_model_growth_rates

    analysis: GrowthRatesConfig = cfg.analysis
    checkpoint = _checkpoint(checkpoint_dir, resume)

    def stream():
        return iter_model_growth_rates(
            model, batch, seeds=analysis.seeds, num_samples=analysis.num_samples, exact_max=analysis.exact_max,
            resume=checkpoint, **analysis.model_growth_arguments(),
        )

    return _run_to_end(stream, analysis, progress, checkpoint_dir, checkpoint)


def _checkpoint(checkpoint_dir: Path | None, resume: bool):
    """The checkpoint ``--resume`` continues from, or None without ``--resume``."""
    from ..jobs import load_checkpoint

    if not resume:
        return None
    if checkpoint_dir is None or not (checkpoint_dir / "meta.json").is_file():
        raise ConfigError(f"--resume: no checkpoint in {checkpoint_dir}")
    try:
        return load_checkpoint(checkpoint_dir)
    except ValueError as err:
        raise ConfigError(f"--resume: {err}") from None


def _run_to_end(stream, analysis: GrowthRatesConfig, progress: bool, checkpoint_dir: Path | None, checkpoint):
    """Iterate the generator ``stream()`` makes under a progress bar, checkpointing; ``(last snapshot, seconds)``."""
    from ..jobs import save_checkpoint

    try:
        snapshots = stream()
        start = time.perf_counter()
        snapshot = None
        every = analysis.checkpoint_every or 1
        with tqdm(desc="growth rates", unit="point", disable=not progress) as bar:
            for snapshot in snapshots:
                bar.total = snapshot.total
                bar.update(snapshot.done - bar.n)
                if checkpoint_dir is not None and (snapshot.done % every == 0 or snapshot.done == snapshot.total):
                    save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run growth_rates")
    except (TypeError, ValueError) as err:
        where = "--resume" if checkpoint is not None and "checkpoint" in str(err) else "[analysis]"
        raise ConfigError(f"{where}: {err}") from None
    return snapshot, time.perf_counter() - start


def growth_summary(snapshot, max_sigma: float) -> dict[str, Any]:
    """Fitted exponents (ours and the paper's) per setting, block and part, and the Q/V Hessian crossing."""
    from ..figures.growth import paper_exponent
    from ..kernels.theory import GROWTH_BLOCKS, GROWTH_PARTS, crossing_sigma

    slopes, errors = snapshot.exponents(max_sigma)
    mean = snapshot.mean()
    rows = []
    for g, setting in enumerate(snapshot.settings):
        s = setting.to_dict()
        n = len(setting.sigmas)
        for b, block in enumerate(GROWTH_BLOCKS):
            for p, part in enumerate(GROWTH_PARTS):
                hess = mean[g, :n, b, 0]
                ratio = float((mean[g, :n, b, p] / hess).abs().nanmean()) if part == "functional" else None
                rows.append({"setting": setting.label, "block": block, "part": part,
                             "slope": _num(slopes[g, b, p]), "slope_stderr": _num(errors[g, b, p]),
                             "paper": paper_exponent(block, part, s), "functional_over_hessian": ratio})
    crossings = {}
    for g, setting in enumerate(snapshot.settings):
        n = len(setting.sigmas)
        crossings[setting.label] = _num(crossing_sigma(snapshot.sigmas[g, :n], mean[g, :n, 0, 0], mean[g, :n, 1, 0]))
    return {"max_sigma": max_sigma, "exponents": rows, "q_v_hessian_crossing": crossings}


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def growth_lines(summary: dict[str, Any]) -> list[str]:
    """The exponent table and crossings as text lines."""
    lines = [f"Fitted exponents of ‖block‖_F ∝ σ^k on σ ≤ {summary['max_sigma']:g} (paper's in brackets):"]
    for r in summary["exponents"]:
        slope = "n/a" if r["slope"] is None else f"{r['slope']:.3f} ± {r['slope_stderr']:.3f}"
        paper = "" if r["paper"] is None else f" [{r['paper']:g}]"
        extra = ""
        if r["functional_over_hessian"] is not None:
            extra = f" (‖functional‖/‖Hessian‖ = {r['functional_over_hessian']:.3g})"
        lines.append(f"  {r['setting']}: {r['block'].upper()} {r['part']}: {slope}{paper}{extra}")
    for label, sigma in summary["q_v_hessian_crossing"].items():
        lines.append(f"  {label}: Q and V Hessian norms cross at σ ≈ {'none' if sigma is None else f'{sigma:.3g}'}")
    return lines


def report_growth_rates(config: str, cfg: RunConfig, out: Path, snapshot, seconds: float, start: float) -> None:
    """Write ``growth_rates.safetensors``, ``meta.json`` and ``report.html``; print the paths and the exponents."""
    from ..export.html import save_report
    from ..export.results import save_results
    from ..figures.bokeh import line_chart_figure
    from ..figures.growth import growth_charts
    from ..kernels.theory import GROWTH_BLOCKS, GROWTH_PARTS

    analysis: GrowthRatesConfig = cfg.analysis
    summary = growth_summary(snapshot, analysis.max_sigma)
    lines = growth_lines(summary)
    mean, stderr = snapshot.mean(), snapshot.stderr()
    meta = {
        "analysis": "growth_rates", "config_file": str(config), "config": cfg.to_dict(),
        "quantity": "Frobenius norms of the W_Q and W_V diagonal blocks of the Hessian, its Gauss-Newton part and "
                    "the functional part (Hutchinson, exact for small blocks) against the embedding scale sigma",
        **{k: v for k, v in snapshot.meta().items() if k != "config"}, "kernel_config": dict(snapshot.config),
        **summary, "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - start, 3),
    }
    tensors = {"sigmas": snapshot.sigmas, "norms": snapshot.norms, "probe_stderr": snapshot.probe_stderr,
               "mean": mean, "stderr": stderr, "point_done": snapshot.point_done.to(torch.uint8)}
    paths = {"results": save_results(out, "growth_rates", tensors, meta), "meta": out / "meta.json"}
    if cfg.output.report:
        charts = growth_charts(snapshot.sigmas, mean, stderr, [s.to_dict() for s in snapshot.settings],
                               blocks=GROWTH_BLOCKS, parts=GROWTH_PARTS)
        notes = [
            f"{len(snapshot.seeds)} seeds per point; bands: ± one standard error over seeds; grey: σ^k through the "
            "first point for the exponents of Ormaniec, Dangel & Singh (ICLR 2025).",
            *lines,
        ]
        figures = [line_chart_figure(c, width=520, height=300) for c in charts]
        paths["report"] = save_report(out / "report.html", figures, title=f"tscope run: {Path(config).name}",
                                      notes=notes)
    for name, path in paths.items():
        print(f"{name}: {path}")
    for line in lines:
        print(line)
    print(f"growth rates took {seconds:.1f} s ({snapshot.num_matvecs} products).", file=sys.stderr)
