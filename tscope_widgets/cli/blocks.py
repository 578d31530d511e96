r"""``tscope run`` with ``[analysis] kind = "blocks"``: the block spectra of the loss Hessian.

:func:`run_blocks` computes, on one process, the SLQ density of each diagonal Hessian block (one block per
parameter group; Zhang et al., NeurIPS 2024: 100 Lanczos steps, 10 Gaussian probes, float64), their
Jensen–Shannon heterogeneity :math:`JS^0`, and the sharpness by block type (Wang et al., ICML 2025): each
block's :math:`\lambda_{\max}(H_{aa})` is its largest Ritz value over the SLQ probes (Lanczos' extreme Ritz
values converge first; a lower bound, exact once the steps reach the block's size), averaged by type.
:func:`report_blocks` writes ``blocks.safetensors``, ``meta.json`` and an offline Bokeh ``report.html``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models import adapt
from .config import BlocksConfig, ConfigError, RunConfig
from .prepare import Dataset, Prepared
from .reports import _data_tensors, _loss_run_meta, _model_and_data_notes, _print_paths, _save_model
from .runs import _kernel_errors, _last_snapshot

__all__ = ["BlocksResult", "blocks_lines", "report_blocks", "run_blocks"]


@dataclass
class BlocksResult:
    """What :func:`run_blocks` computed (float64 on the CPU)."""

    densities: Any  # BlockDensities
    heterogeneity: Any  # SpectralHeterogeneity
    block_lambda_max: Tensor  # [G], largest Ritz value of each block
    types: Any  # BlockTypeSharpness
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_blocks(model: torch.nn.Module, batches: list[dict[str, Tensor]], analysis: BlocksConfig,
               progress: bool) -> BlocksResult:
    """Block densities, their heterogeneity and the sharpness by block type (see the module docstring).

    Raises:
        ConfigError: For groups the model does not have, a block whose name has no type, or other arguments
            the kernels refuse, with the kernel's message.
    """
    from ..kernels.block_density import iter_block_densities
    from ..kernels.block_types import block_type_sharpness
    from ..kernels.heterogeneity import spectral_heterogeneity

    caught: list[str] = []
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    groups = None if analysis.blocks is True else list(analysis.blocks)
    with _kernel_errors("[analysis].blocks", caught):
        generator = torch.Generator().manual_seed(analysis.seed)
        stream = iter_block_densities(model, batches, groups, analysis.block_probes, analysis.block_steps,
                                      dtype=analysis.torch_dtype, generator=generator)
        densities = _last_snapshot(stream, "block densities (SLQ)", "block", progress)
        seconds["densities"] = round(time.perf_counter() - start, 3)
        clock = time.perf_counter()
        heterogeneity = spectral_heterogeneity(densities)
        lam = torch.stack([densities[g].nodes.amax() for g in densities.labels]).to(torch.float64)
        types = block_type_sharpness(lam, densities.labels)
        seconds["heterogeneity"] = round(time.perf_counter() - clock, 3)
    return BlocksResult(densities, heterogeneity, lam, types, seconds, caught)


def blocks_tensors(result: BlocksResult) -> dict[str, Tensor]:
    """The arrays of a blocks run, keyed as in ``blocks.safetensors`` (float64, block order of ``labels``)."""
    h = result.heterogeneity
    d = result.densities
    out = {
        "block_lambda_max": result.block_lambda_max,
        "js.distances": h.distances,
        "js.grid": h.grid,
        "js.densities": h.densities,
        "js.scales": h.scales,
        "types.values": result.types.values,
        "types.counts": result.types.counts,
    }
    for k, g in enumerate(d.labels):
        out[f"density.{k}.grid"] = d[g].grid
        out[f"density.{k}.values"] = d[g].density
        out[f"density.{k}.nodes"] = d[g].nodes
        out[f"density.{k}.weights"] = d[g].weights
    return out


def blocks_meta(result: BlocksResult) -> dict[str, Any]:
    """The numbers of a blocks run for ``meta.json``."""
    t = result.types
    return {
        "labels": list(result.densities.labels),
        "sizes": dict(result.densities.sizes),
        "num_matvecs": int(result.densities.num_matvecs),
        "js_mean": result.heterogeneity.mean,
        "block_lambda_max": result.block_lambda_max.tolist(),
        "block_types": dict(t.block_types),
        "type_sharpness": {name: float(v) for name, v in zip(t.types, t.values.tolist(), strict=True)},
        "sdp_ratios": {k: float(v) for k, v in t.ratios().items()},
        "sdp_order_holds": bool(t.follows_sdp()),
        "seconds": result.seconds,
        "warnings": result.warnings,
    }


def blocks_lines(result: BlocksResult) -> list[str]:
    """Plain sentences of a blocks run (printed and in the report's notes)."""
    from ..figures.block_types import TYPE_NAMES, TYPE_ORDER
    from ..figures.charts import format_value

    t = result.types
    G = len(result.densities.labels)
    order = [n for n in TYPE_ORDER if n in t.types]
    per_type = ", ".join(f"S({TYPE_NAMES[n]}) = {format_value(t[n].item())}" for n in order)
    verdict = "holds" if bool(t.follows_sdp()) else "does not hold"
    return [
        f"{G} Hessian blocks, {result.densities.num_matvecs} block products; Jensen–Shannon heterogeneity "
        f"JS⁰ = {format_value(result.heterogeneity.mean)} (Zhang et al. 2024).",
        f"Sharpness by block type (mean λ_max of the blocks): {per_type}; the Sharpness Disparity order "
        f"S(Emb) < S(QK) < S(FFN) < S(VO) < S(Norm) {verdict} (Wang et al. 2025).",
    ]


def blocks_figures(result: BlocksResult, log: bool | str):
    """Bokeh figures of the report: block spectra, JS distances, type strip, kind × layer map, type table."""
    from bokeh.models import Div

    from ..figures.block_spectra import block_density_chart, heterogeneity_chart
    from ..figures.block_types import block_kind_chart, type_sharpness_chart, type_table_html
    from ..figures.bokeh import chart_figure

    h, t = result.heterogeneity, result.types
    use_log = log is not False
    charts = [
        block_density_chart(h.labels, h.grid.numpy(), h.densities.numpy(), floor=h.floor),
        heterogeneity_chart(h.labels, h.distances.numpy(), h.mean),
        type_sharpness_chart(t.types, t.values.numpy(), log=use_log),
        block_kind_chart(result.densities.labels, result.block_lambda_max.numpy(), log=use_log),
    ]
    table = type_table_html(t.types, t.values.numpy(), t.counts.tolist(),
                            {k: float(v) for k, v in t.ratios().items()}, bool(t.follows_sdp()))
    return [Div(text=table), *(chart_figure(c) for c in charts)]


def report_blocks(config: str, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset,
                  batches: list[dict[str, Tensor]], result: BlocksResult, start: float) -> None:
    """Write and print what a ``tscope run`` blocks analysis over ``batches`` found."""
    from ..export.html import save_report
    from ..export.results import save_results

    output = cfg.output
    lines = blocks_lines(result)
    meta = _loss_run_meta("blocks", blocks_meta(result),
                          "diagonal blocks of the Hessian of the token-weighted mean LM loss over the data",
                          batches, config, cfg, prepared, dataset, start)
    paths = {"results": save_results(out, "blocks", blocks_tensors(result) | _data_tensors(batches), meta)}
    paths["meta"] = out / "meta.json"
    _save_model(paths, out, prepared, output)
    if output.report:
        notes = [*_model_and_data_notes(prepared, adapt(prepared.model), dataset, meta), *lines,
                 *(f"Warning: {w}" for w in result.warnings),
                 "λ_max of a block is its largest Ritz value over the SLQ probes (a lower bound of the true value)."]
        paths["report"] = save_report(out / "report.html", blocks_figures(result, output.log),
                                      title=f"tscope run: {Path(config).name}", notes=notes)
    _print_paths(paths)
    for line in lines:
        print(line)
    print(f"blocks took {sum(result.seconds.values()):.1f} s.")


def check_single_process(world_size: int, kind: str = "blocks") -> None:
    """Block densities (and growth rates on a model) run on one process; refuse ``torchrun`` with several."""
    if world_size > 1:
        raise ConfigError(
            f"kind = {kind!r} runs on one process (it is not sharded yet), got {world_size} processes; run it "
            "without torchrun"
        )
