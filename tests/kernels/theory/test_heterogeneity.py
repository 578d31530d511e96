"""The dense Hessian by blocks and the entry histograms (Ormaniec, Dangel & Singh 2025, Figs. 1 and 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tscope_widgets.kernels.curvature import dense_hessian
from tscope_widgets.kernels.theory import GrowthSetting, entry_histograms, growth_model, hessian_heatmap
from tscope_widgets.models.registry import adapt
from tscope_widgets.tasks import get_task


def test_the_papers_model_has_3836_parameters_1024_in_attention():
    model = growth_model(GrowthSetting("A"), 1.0, 0, d_model=16, d_mlp=64, biases=True)
    groups = adapt(model).param_groups()
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == 3836
    attention = [s.name for g in ("q", "k", "v", "o") for s in groups[f"block0.attn.{g}"]]
    assert sum(params[n].numel() for n in attention) == 1024
    assert all(float(params[n].detach().abs().sum()) == 0 for n in params if n.endswith(".bias"))


def test_heatmap_blocks_equal_the_dense_hessian_and_the_layout_is_kept():
    model = growth_model(GrowthSetting("A"), 0.7, 1, d_model=8, d_mlp=16, biases=True)
    batch = get_task("addition").sample(4, torch.Generator().manual_seed(0))
    hm = hessian_heatmap(model, batch, ["block0.attn.*", "head"])
    assert hm.groups == ["block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o", "head"]
    assert hm.sizes == [64, 64, 64, 64, 8 * 12 + 12] and hm.offsets == [0, 64, 128, 192, 256]
    ref = dense_hessian(model, batch, groups=["block0.attn.v"], col_groups=["block0.attn.q"])
    torch.testing.assert_close(hm.block("block0.attn.v", "block0.attn.q"), ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(hm.hessian, hm.hessian.T, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(hm.log_abs(), torch.log10(hm.hessian.abs() + 1e-6), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown group 'mlp'"):
        hm.block("mlp")
    with pytest.raises(ValueError, match="eps must be a positive number"):
        hessian_heatmap(model, batch, "head", eps=0)


def test_entry_histograms_match_numpy_on_shared_bins():
    g = torch.Generator().manual_seed(0)
    blocks = {"a": torch.randn(30, 30, generator=g, dtype=torch.float64) * 1e-3,
              "b": torch.randn(10, 40, generator=g, dtype=torch.float64)}
    blocks["a"][0, 0] = 0.0  # an exact zero is counted at the floor
    edges, counts = entry_histograms(blocks, bins=25, floor=1e-12)
    logs = {k: np.log10(np.maximum(np.abs(v.numpy()), 1e-12)).ravel() for k, v in blocks.items()}
    assert edges[0].item() == pytest.approx(min(v.min() for v in logs.values()))
    assert edges[-1].item() == pytest.approx(max(v.max() for v in logs.values()))
    for k, v in logs.items():
        ref, _ = np.histogram(v, bins=edges.numpy())
        np.testing.assert_allclose(counts[k].numpy(), ref / v.size, rtol=0, atol=1e-15)
        assert counts[k].sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="bins must be a positive int"):
        entry_histograms(blocks, bins=0)


def test_query_entries_are_orders_of_magnitude_below_value_entries_under_softmax_not_linear_attention():
    """At sigma = 0.1 the softmax query block scales as sigma^5 against the value block's sigma^2; with linear
    attention (and its skip) both blocks come from a cubic output and are of one size (measured at d = 8:
    median ratios 0.004 and 0.8)."""
    batch = get_task("addition").sample(8, torch.Generator().manual_seed(0))
    ratio = {}
    for attention in ("softmax", "linear"):
        model = growth_model(GrowthSetting("B", attention=attention), 0.1, 0, d_model=8, d_mlp=16)
        hm = hessian_heatmap(model, batch, ["block0.attn.q", "block0.attn.v"])
        q, v = hm.block("block0.attn.q").abs(), hm.block("block0.attn.v").abs()
        ratio[attention] = float(q.median() / v.median())
    assert ratio["softmax"] < 1e-2 and ratio["linear"] > 0.1
