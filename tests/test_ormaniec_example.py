"""``examples/ormaniec2025_heterogeneity.py`` (figures A and B of Ormaniec et al. 2025) end to end at a small size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "ormaniec2025_heterogeneity.py"


def test_heterogeneity_example_writes_heatmaps_histograms_and_report(tmp_path):
    spec = importlib.util.spec_from_file_location("ormaniec2025_heterogeneity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path), "--d-model", "8", "--d-mlp", "16", "--batch", "4", "--sigma", "0.5"])
    for name in ("heatmap_all.svg", "heatmap_attention.svg", "histograms.svg"):
        assert (tmp_path / name).read_text(encoding="utf-8").startswith("<svg")
    full = (tmp_path / "heatmap_all.svg").read_text(encoding="utf-8")
    # all groups of the d = 8 model: embed, q, k, v, o, mlp.in, mlp.out, head -> 7 separators
    assert full.count("tscope-static-separator") == 7 and "parameters)" in full
    assert "|H_QQ| linear" in (tmp_path / "histograms.svg").read_text(encoding="utf-8")
    assert "Bokeh.embed" in (tmp_path / "heterogeneity.html").read_text(encoding="utf-8")
