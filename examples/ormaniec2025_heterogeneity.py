"""Figures 1 and 2 of Ormaniec, Dangel & Singh (ICLR 2025) at the paper's size (A: block heatmaps, B: histograms).

Run: python examples/ormaniec2025_heterogeneity.py OUT

A. The dense float64 Hessian of one layer, one head, d = 16, d_mlp = 64, ReLU, no LayerNorm, over a batch of 64
   five-digit additions: all 3,836 parameters and the 1,024 attention weights, as log10(|H| + 1e-6) with a line
   between parameter groups (OUT/heatmap_all.svg, OUT/heatmap_attention.svg, OUT/heterogeneity.html).
B. Histograms of |H_VV| and |H_QQ| entries, softmax against linear attention (OUT/histograms.svg).

Weights are GPT-2 style, N(0, (0.8/sqrt(d))^2); the embeddings N(0, sigma^2) with --sigma (default 1).
About a minute on one core (3,836 Hessian-vector products).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tscope_widgets.export.html import save_report
from tscope_widgets.figures.bokeh import line_chart_figure, matrix_chart_figure
from tscope_widgets.figures.heterogeneity import entry_histogram_chart, hessian_heatmap_chart
from tscope_widgets.figures.svg import render_svg
from tscope_widgets.kernels.theory import GrowthSetting, entry_histograms, growth_model, hessian_heatmap
from tscope_widgets.tasks import get_task


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sigma", type=float, default=1.0, help="embedding scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--d-model", type=int, default=16, help="width (the paper: 16)")
    parser.add_argument("--d-mlp", type=int, default=64, help="MLP width (the paper: 64)")
    parser.add_argument("--batch", type=int, default=64, help="five-digit additions (the paper: 64)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    batch = get_task("addition").sample(args.batch, torch.Generator().manual_seed(args.seed))
    charts, histograms = [], {}
    for attention in ("softmax", "linear"):
        model = growth_model(GrowthSetting(attention, attention=attention), args.sigma, args.seed,
                             d_model=args.d_model, d_mlp=args.d_mlp, biases=True)
        if attention == "softmax":
            full = hessian_heatmap(model, batch)  # 3,836 parameters at the paper's size
            attn = hessian_heatmap(model, batch, "block0.attn.*")  # 1,024
            charts = [hessian_heatmap_chart(h.log_abs(), h.groups, h.sizes,
                                            title=f"log10(|H| + 1e-6), {name} ({sum(h.sizes):,} parameters)")
                      for h, name in ((full, "all parameters"), (attn, "attention"))]
        else:
            attn = hessian_heatmap(model, batch, "block0.attn.*")
        histograms[f"|H_VV| {attention}"] = attn.block("block0.attn.v")
        histograms[f"|H_QQ| {attention}"] = attn.block("block0.attn.q")
    edges, counts = entry_histograms(histograms)
    hist = entry_histogram_chart(edges, {k: v.numpy() for k, v in counts.items()})
    (args.out / "heatmap_all.svg").write_text(render_svg([charts[0]]), encoding="utf-8")
    (args.out / "heatmap_attention.svg").write_text(render_svg([charts[1]]), encoding="utf-8")
    (args.out / "histograms.svg").write_text(render_svg([hist]), encoding="utf-8")
    figures = [matrix_chart_figure(c, width=640) for c in charts] + [line_chart_figure(hist, width=640)]
    save_report(args.out / "heterogeneity.html", figures, title="Hessian heterogeneity (Ormaniec et al. 2025)",
                notes=[f"sigma = {args.sigma:g}, seed {args.seed}, batch of {args.batch} five-digit additions, "
                       f"d = {args.d_model}, d_mlp = {args.d_mlp}."])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
