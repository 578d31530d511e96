"""iter_paired_sensitivity: both models' maps on the same batches, differences streamed, the paired test."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.stats
import torch

from tests.model_zoo import random_batch, tiny
from tscope_widgets.kernels.compare import compare_statistics, paired_statistics
from tscope_widgets.kernels.sensitivity import iter_paired_sensitivity, iter_sensitivity, position_sensitivity
from tscope_widgets.models import adapt

LAYERS = [0, "final"]


@pytest.fixture(scope="module")
def models():
    a = tiny()
    b = copy.deepcopy(a)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a small change of every weight: the two models' maps differ a little
        for p in b.parameters():
            p.add_(1e-4 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return a, b


@pytest.fixture(scope="module")
def data(models):
    batch = random_batch(adapt(models[0]), B=24, S=6, seed=3)
    return batch["input_ids"], batch["attention_mask"]


def test_differences_are_the_per_sample_maps_differences(models, data):
    a, b = models
    snaps = list(iter_paired_sensitivity(a, b, data, layers=LAYERS, batch_size=10))
    last = snaps[-1]
    assert [s.done for s in snaps] == [10, 20, 24] and last.total == 24 and last.batches == 3
    ids, mask = data
    ma = position_sensitivity(a, ids, mask, layers=LAYERS)
    mb = position_sensitivity(b, ids, mask, layers=LAYERS)
    single = list(iter_sensitivity(a, data, layers=LAYERS, batch_size=10))[-1]
    assert last.data_sha256 == single.data_sha256  # the same fingerprint of the data as a run of one model
    for lay in LAYERS:
        d = (ma[lay] - mb[lay]).numpy()  # NaN where padded
        st = last.differences[lay]
        np.testing.assert_array_equal(st.count.numpy(), np.isfinite(d).sum(0))
        np.testing.assert_allclose(st.mean.numpy(), np.nanmean(d, 0), rtol=1e-10, atol=1e-15, equal_nan=True)
        np.testing.assert_allclose(st.std.numpy(), np.nanstd(d, 0, ddof=1), rtol=1e-8, atol=1e-15, equal_nan=True)
        for key, value in single.stats[lay].state_dict().items():  # a's states equal a one-model run's
            assert torch.equal(last.a[lay].state_dict()[key], value), key
        # the paired test on these states is scipy's ttest_rel on the per-sample maps
        c = paired_statistics(st, a=last.a[lay], b=last.b[lay], correction=None)
        full = np.isfinite(d).all(0)  # cells no sample pads
        res = scipy.stats.ttest_rel(ma[lay].numpy()[:, full], mb[lay].numpy()[:, full], axis=0)
        keep = np.isfinite(res.statistic) & (d[:, full].std(0) > 0)
        np.testing.assert_allclose(c.t.numpy()[full][keep], res.statistic[keep], rtol=1e-8)
        np.testing.assert_allclose(c.p.numpy()[full][keep], res.pvalue[keep], rtol=1e-7)


def test_pairing_finds_a_small_change_that_welch_misses(models, data):
    a, b = models
    last = list(iter_paired_sensitivity(a, b, data, layers=["final"], batch_size=24))[-1]
    paired = paired_statistics(last.differences["final"], a=last.a["final"], b=last.b["final"])
    welch = compare_statistics(last.a["final"], last.b["final"])
    assert paired.num_significant >= 5 and welch.num_significant == 0


def test_the_same_model_twice_differs_nowhere(models, data):
    a = models[0]
    last = list(iter_paired_sensitivity(a, a, data, layers=LAYERS, method="hutchinson", probes=2, batch_size=12))[-1]
    for lay in LAYERS:  # the same probes for both: the estimates agree sample by sample
        c = paired_statistics(last.differences[lay])
        assert c.num_significant == 0 and (c.difference[c.valid] == 0).all() and (c.p[c.valid] == 1).all()


def test_models_whose_layers_differ_are_refused(models, data):
    deeper = tiny(n_layer=3)
    with pytest.raises(ValueError, match=r"resolves to \[1\] for model_a but \[2\] for model_b"):
        iter_paired_sensitivity(models[0], deeper, data, layers=-1)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        iter_paired_sensitivity(models[0], models[1], data, batch_size=0)
