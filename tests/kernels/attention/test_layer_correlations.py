"""layer_correlations: every head, the head mean and the rollout of a layer against its sensitivity, checked
against transformers' eager ``output_attentions`` with padding and against ``scipy.stats.spearmanr``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.testing import assert_close

from tests.model_zoo import gpt2, random_batch
from tscope_widgets.kernels.attention import correlation_maps, layer_correlations
from tscope_widgets.models import adapt

N, S = 6, 9


def test_maps_are_eager_attention_means_and_rho_is_scipy_spearman():
    model = gpt2()
    batch = random_batch(adapt(model), N, S, pad=True, seed=3)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    left = mask[:, 0] == 0  # right padding only: the cells compared are token pairs in every sample
    ids[left], mask[left] = ids[left].flip(-1), mask[left].flip(-1)
    corr = layer_correlations(model, ids, mask, num_bootstrap=200, seed=1)
    assert sorted(corr) == [0, 1]
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    pairs = real[:, :, None] & real[:, None, :]  # [N, S, S]
    count = pairs.sum(0)
    i, j = torch.tril_indices(S, S, offset=-1)
    every = pairs.all(0)[i, j]
    for layer, att in enumerate(out.attentions):  # [N, n, S, S]
        c = corr[layer]
        n = att.shape[1]
        assert c.labels == [f"head{h}" for h in range(n)] + ["head mean", "rollout"]
        want = torch.where(pairs[:, None], att, 0.0).sum(0) / count.clamp(min=1)  # [n, S, S]
        seen = count > 0
        assert_close(c.mean_attention[:n][:, seen], want[:, seen], rtol=1e-12, atol=1e-12)
        assert_close(c.mean_attention[n][seen], want.mean(0)[seen], rtol=1e-12, atol=1e-12)
        assert torch.isnan(c.mean_attention[:, ~seen]).all()
        sens = c.mean_sensitivity[i, j][every].numpy()
        for m in range(n + 1):
            rho = stats.spearmanr(c.mean_attention[m][i, j][every].numpy(), sens)[0]
            assert c.rho[m].item() == pytest.approx(rho, abs=1e-12)
            assert c.low[m] <= c.high[m]
        assert c.num_samples == N and c.cells.shape[0] == int(every.sum())


def test_correlation_maps_stack_heads_mean_and_rollout_and_refuse_bad_shapes():
    g = torch.Generator().manual_seed(0)
    att = torch.rand(3, 2, 4, 4, generator=g, dtype=torch.float64)
    roll = torch.rand(3, 4, 4, generator=g, dtype=torch.float64)
    maps, labels = correlation_maps(att, roll)
    assert labels == ["head0", "head1", "head mean", "rollout"] and maps.shape == (3, 4, 4, 4)
    assert torch.equal(maps[:, 2], att.mean(1)) and torch.equal(maps[:, 3], roll)
    for a, r in ((att[0], roll), (att, roll[:2]), (att, roll[:, None])):
        with pytest.raises(ValueError, match=r"attention must be \[N, n_heads, S, S\] and rollout \[N, S, S\]"):
            correlation_maps(a, r)
    assert np.isfinite(maps.numpy()).all()
