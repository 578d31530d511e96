"""Sharpness by block type: group names of every adapter family, aggregation against per-block values."""

import math

import numpy as np
import pytest
import torch

from tests import model_zoo
from tscope_widgets import BlockTypeSharpness, block_type_sharpness
from tscope_widgets.kernels import BLOCK_TYPES, block_type
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.models import adapt
from tscope_widgets.tracking import SpectrumTracker

FAMILIES = ["tiny", "gpt2", "llama", "qwen2", "mistral", "gpt_neox", "bert"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_group_of_every_family_has_its_type(family):
    adapter = adapt(getattr(model_zoo, family)())
    groups = list(adapter.param_groups())
    L = adapter.num_layers
    types = {g: block_type(g) for g in groups}
    counts = {t: sum(v == t for v in types.values()) for t in BLOCK_TYPES}
    # two query-key and two value-output groups, two MLP groups per layer; the per-layer norms and the final one
    assert counts["qk"] == counts["vo"] == counts["mlp"] == 2 * L
    assert counts["embed"] == 1
    norms = sum(g.startswith("block") and g.endswith(("ln1", "ln2")) for g in groups)
    assert counts["norm"] == norms + ("ln_f" in groups)
    assert counts["head"] == ("head" in groups)
    for layer in range(L):
        assert [types[f"block{layer}.attn.{p}"] for p in "qkvo"] == ["qk", "qk", "vo", "vo"]
        assert types[f"block{layer}.mlp.in"] == types[f"block{layer}.mlp.out"] == "mlp"


def test_names_of_head_views_and_bad_names():
    assert block_type("block11.attn.q.head3") == "qk" and block_type("block0.attn.o.head0") == "vo"
    assert block_type("embed.wpe") == "embed" and block_type("ln_f") == "norm" and block_type("head") == "head"
    for bad in ("block0", "block0.attn", "block0.attn.qkv", "block0.mlp.gate", "lm_head", "blockx.ln1", "embedding"):
        with pytest.raises(ValueError, match=f"block type of '{bad}'.*param"):
            block_type(bad)
    with pytest.raises(TypeError, match="string"):
        block_type(3)


def test_aggregation_by_hand_with_nan_mean_max_ratios_and_order():
    groups = ["embed", "block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o", "block0.mlp.in",
              "block0.mlp.out", "block0.ln1", "ln_f", "head"]
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 10.0, size=(3, len(groups)))
    values[1, 1] = np.nan  # block0.attn.q not computed at step 1
    values[2, 0] = np.nan  # the only embed block not computed at step 2
    mean = block_type_sharpness(values, groups)
    biggest = block_type_sharpness(torch.from_numpy(values), groups, reduce="max")
    assert mean.types == list(BLOCK_TYPES) and mean.counts.tolist() == [1, 2, 2, 2, 2, 1]
    assert mean.values.shape == (3, 6) and mean.values.dtype == torch.float64
    members = {t: [i for i, g in enumerate(groups) if block_type(g) == t] for t in BLOCK_TYPES}
    for t, idx in members.items():
        for step in range(3):
            v = values[step, idx]
            v = v[np.isfinite(v)]
            want_mean = v.mean() if v.size else math.nan
            want_max = v.max() if v.size else math.nan
            np.testing.assert_allclose(mean[t][step].item(), want_mean, rtol=1e-15, equal_nan=True)
            np.testing.assert_allclose(biggest[t][step].item(), want_max, rtol=1e-15, equal_nan=True)
    assert math.isnan(mean["embed"][2]) and mean["qk"][1].item() == values[1, 2]
    # Sharpness Disparity ratios of neighbours, in the principle's order
    sdp = block_type_sharpness([0.01, 1.0, 3.0, 20.0, 40.0, 5.0, 7.0, 500.0], groups[:7] + ["block0.ln2"])
    ratios = sdp.ratios()
    assert list(ratios) == ["qk/embed", "mlp/qk", "vo/mlp", "norm/vo"]
    assert [r.item() for r in ratios.values()] == pytest.approx([200.0, 3.0, 5.0, 500.0 / 30.0])
    assert sdp.follows_sdp().item() is True
    flipped = block_type_sharpness([3.0, 1.0], ["block0.attn.q", "block0.attn.v"])
    assert list(flipped.ratios()) == ["vo/qk"] and flipped.follows_sdp().item() is False
    assert mean.follows_sdp().shape == (3,) and not mean.follows_sdp()[2]  # NaN: not shown to hold


def test_blocks_mapping_and_errors():
    s = block_type_sharpness([2.0, 4.0], {"attention QK": ["block0.attn.q", "block0.attn.k"], "ffn": "block0.mlp.in"})
    assert s.block_types == {"attention QK": "qk", "ffn": "mlp"} and s.values.tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="'block0' mixes block types"):
        block_type_sharpness([1.0], {"block0": ["block0.attn.q", "block0.mlp.in"]})
    with pytest.raises(ValueError, match=r"must be \[\.\.\., 2\]"):
        block_type_sharpness([1.0, 2.0, 3.0], ["embed", "head"])
    with pytest.raises(ValueError, match="reduce must be"):
        block_type_sharpness([1.0], ["embed"], reduce="median")
    with pytest.raises(ValueError, match="got none"):
        block_type_sharpness([], [])


def test_tracker_type_view_equals_dense_diagonal_blocks():
    """Every group's λ_max(H_aa) from the tracker against eigvalsh of the dense float64 block, then by type."""
    model = model_zoo.tiny(vocab_size=7, d_model=4, n_head=1, n_layer=2, d_mlp=8, max_seq_len=6)
    adapter = adapt(model)
    batch = model_zoo.random_batch(adapter, 3, 6)
    tracker = SpectrumTracker(model, batch, every=1, tol=1e-10, max_iter=200, trace_matvecs=6, blocks="groups")
    assert tracker.step() is True
    groups = list(adapter.param_groups())
    assert tracker.history.block_labels == groups
    H = dense_hessian(adapter, batch)
    offsets = HessianOperator(adapter, batch).offsets
    dense = torch.tensor([torch.linalg.eigvalsh(H[offsets[g], offsets[g]])[-1].item() for g in groups])
    np.testing.assert_allclose(tracker.history.block_lambda_max[0], dense.numpy(), rtol=1e-7, atol=1e-10)
    view = tracker.type_sharpness()
    assert isinstance(view, BlockTypeSharpness) and view.values.shape == (1, len(view.types))
    for t in view.types:
        want = dense[[block_type(g) == t for g in groups]].mean()
        assert view[t][0].item() == pytest.approx(want.item(), rel=1e-7)
    assert tracker.type_sharpness("max")["qk"][0].item() == pytest.approx(
        max(dense[i].item() for i, g in enumerate(groups) if block_type(g) == "qk"), rel=1e-7)
    with pytest.raises(ValueError, match="mixes block types"):
        SpectrumTracker(model, batch, blocks="layers").type_sharpness()
    with pytest.raises(ValueError, match="no blocks are tracked"):
        SpectrumTracker(model, batch).type_sharpness()
