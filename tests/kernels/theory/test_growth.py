"""The growth-rate kernel: its models, its points against dense Hessians, its fits, its resume, its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tscope_widgets.jobs import load_checkpoint, save_checkpoint
from tscope_widgets.kernels.curvature import LogitLoss, dense_hessian
from tscope_widgets.kernels.theory import (
    GrowthSetting,
    crossing_sigma,
    growth_exponent,
    growth_model,
    growth_sigmas,
    iter_growth_rates,
)
from tscope_widgets.tasks import get_task

SMALL = dict(d_model=8, d_mlp=16, batch_size=4)


def test_growth_model_draws_scaled_embeddings_and_gpt2_weights_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    s = GrowthSetting("L=2", n_layer=2)
    a = growth_model(s, 0.3, seed=5, sigma_index=2, d_model=64, d_mlp=128)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = growth_model(s, 0.3, seed=5, sigma_index=2, d_model=64, d_mlp=128)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.wte.weight.dtype == torch.float64 and a.wte.weight.shape == (12, 64) and a.wpe.weight.shape == (18, 64)
    emb = torch.cat([a.wte.weight.reshape(-1), a.wpe.weight.reshape(-1)])
    assert emb.std().item() == pytest.approx(0.3, rel=0.05)
    w = a.blocks[1].mlp.fc_in.weight
    assert w.std().item() == pytest.approx(0.8 / 8, rel=0.05)
    assert not any("bias" in n for n, _ in a.named_parameters())
    # per_sigma: another sigma index redraws the embeddings, the weights stay
    c = growth_model(s, 0.3, seed=5, sigma_index=3, d_model=64, d_mlp=128)
    assert not torch.equal(a.wte.weight, c.wte.weight) and torch.equal(a.head.weight, c.head.weight)
    d = growth_model(s, 0.6, seed=5, sigma_index=3, d_model=64, d_mlp=128, embedding_draw="shared")
    e = growth_model(s, 0.3, seed=5, sigma_index=0, d_model=64, d_mlp=128, embedding_draw="shared")
    torch.testing.assert_close(d.wte.weight, 2 * e.wte.weight, rtol=1e-15, atol=0)


def test_one_point_equals_dense_block_norms_and_the_value_functional_part_vanishes():
    setting = GrowthSetting("L=1", sigmas=(0.5,))
    snap = list(iter_growth_rates(setting, seeds=[3], exact_max=10_000, **SMALL))[-1]
    assert snap.done == snap.total == 1
    model = growth_model(setting, 0.5, 3, d_model=8, d_mlp=16)
    batch = get_task("addition").sample(4, torch.Generator().manual_seed(3))
    for b, block in enumerate(("q", "v")):
        for p, kind in enumerate(("hessian", "ggn", "functional")):
            H = dense_hessian(model, batch, groups=f"block0.attn.{block}", kind=kind, loss=LogitLoss("ce"))
            assert snap.norms[0, 0, 0, b, p].item() == pytest.approx(H.norm().item(), rel=1e-10, abs=1e-300)
    assert snap.probe_stderr[0, 0, 0].abs().max() == 0  # exact
    # V: the output is piecewise linear in W_V (ReLU, no LayerNorm, one layer), so H_VV = GGN_VV
    v = snap.norms[0, 0, 0, 1]
    assert v[2] < 1e-12 * v[0] and v[0] > 0
    # Q: the functional part is most of the Hessian
    assert snap.norms[0, 0, 0, 0, 2] > 0.5 * snap.norms[0, 0, 0, 0, 0]


def test_probe_estimates_agree_with_exact_norms_within_their_error():
    setting = GrowthSetting("L=1", sigmas=(1.0,))
    exact = list(iter_growth_rates(setting, seeds=[0], exact_max=10_000, **SMALL))[-1]
    est = list(iter_growth_rates(setting, seeds=[0], num_samples=200, exact_max=0, **SMALL))[-1]
    z = (est.norms - exact.norms)[0, 0, 0, :, :2] / est.probe_stderr[0, 0, 0, :, :2]
    assert z.abs().max() < 4 and (est.probe_stderr[0, 0, 0, :, :2] > 0).all()


def test_linear_attention_without_skip_grows_exactly_like_sigma_to_2_times_3_to_the_L():
    for L in (1, 2):
        setting = GrowthSetting(f"linear L={L}", n_layer=L, attention="linear", residual_scale=0.0, loss="mse",
                                sigmas=growth_sigmas(-1, 0, 4))
        snap = list(iter_growth_rates(setting, seeds=2, exact_max=10_000, embedding_draw="shared", **SMALL))[-1]
        slopes, errs = snap.exponents(max_sigma=1.0)
        # the last layer's Q and V blocks: Hessian = GGN (the output is linear in them), homogeneous of degree 3^L
        for b in range(2):
            for p in range(2):
                assert slopes[0, b, p].item() == pytest.approx(2 * 3**L, rel=1e-6)
                assert errs[0, b, p].item() < 1e-6
        assert (snap.norms[0, :, :, :, 2] < 1e-10 * snap.norms[0, :, :, :, 0]).all()


def test_growth_exponent_matches_scipy_linregress_on_the_low_sigma_range():
    sigmas = torch.tensor(growth_sigmas(-2, 1, 20), dtype=torch.float64)
    rng = np.random.default_rng(0)
    noise = 10 ** rng.normal(0, 0.05, (20, 3))
    s = sigmas.numpy()
    norms = torch.tensor(np.stack([3 * s**5, 0.1 * s**2, s**6], 1) * noise)
    slope, err = growth_exponent(sigmas, norms, max_sigma=0.26)
    use = sigmas <= 0.26
    assert int(use.sum()) == 9  # 10^(-2 + 27/19) = 0.2637 lies outside
    for m in range(3):
        ref = stats.linregress(np.log10(sigmas[use].numpy()), np.log10(norms[use, m].numpy()))
        assert slope[m].item() == pytest.approx(ref.slope, rel=1e-12)
        assert err[m].item() == pytest.approx(ref.stderr, rel=1e-10)
    assert slope.tolist() == pytest.approx([5, 2, 6], abs=0.2)
    one, _ = growth_exponent(sigmas, norms[:, 0])
    assert one.ndim == 0 and one.item() == pytest.approx(slope[0].item())
    assert math.isnan(growth_exponent(sigmas, torch.zeros(20))[0].item())  # zero norms have no slope


def test_crossing_sigma_is_exact_for_power_laws():
    sigmas = torch.tensor(growth_sigmas(-2, 1, 20), dtype=torch.float64)
    assert crossing_sigma(sigmas, sigmas**5, 10 * sigmas**2) == pytest.approx(10 ** (1 / 3), rel=1e-12)
    assert math.isnan(crossing_sigma(sigmas, sigmas**5, 1e9 * sigmas**2))


def test_resume_continues_bit_for_bit(tmp_path):
    setting = [GrowthSetting("a", sigmas=(0.1, 0.3)), GrowthSetting("b", n_layer=2, sigmas=(0.2,))]
    kwargs = dict(seeds=2, num_samples=3, exact_max=0, **SMALL)
    full = list(iter_growth_rates(setting, **kwargs))
    assert [s.done for s in full] == [1, 2, 3, 4, 5, 6] and full[-1].total == 6
    save_checkpoint(tmp_path, full[2])
    resumed = list(iter_growth_rates(setting, resume=load_checkpoint(tmp_path), **kwargs))
    assert [s.done for s in resumed] == [4, 5, 6]
    last = resumed[-1]
    same = dict(rtol=0, atol=0, equal_nan=True)  # bit for bit; NaN pads the shorter sigma grid
    torch.testing.assert_close(last.norms, full[-1].norms, **same)
    torch.testing.assert_close(last.probe_stderr, full[-1].probe_stderr, **same)
    assert last.num_matvecs == full[-1].num_matvecs
    assert torch.isnan(last.sigmas[1, 1]) and not torch.isnan(last.norms[0]).any()
    with pytest.raises(ValueError, match="other seeds"):
        list(iter_growth_rates(setting, resume=load_checkpoint(tmp_path), **{**kwargs, "seeds": 3}))


def test_statistics_over_seeds():
    setting = GrowthSetting("a", sigmas=(0.1,))
    snap = list(iter_growth_rates(setting, seeds=3, num_samples=2, exact_max=0, **SMALL))[-1]
    x = snap.norms[0, 0]  # [J, 2, 3]
    torch.testing.assert_close(snap.mean()[0, 0], x.mean(0), rtol=1e-14, atol=0)
    torch.testing.assert_close(snap.stderr()[0, 0], x.std(0) / math.sqrt(3), rtol=1e-12, atol=0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sigmas must be positive, finite and increasing"):
        GrowthSetting("a", sigmas=(0.2, 0.1))
    with pytest.raises(ValueError, match="attention='soft'"):
        GrowthSetting("a", attention="soft")
    with pytest.raises(ValueError, match=r"layer must be None \(the last\) or in \[0, 2\)"):
        GrowthSetting("a", n_layer=2, layer=2)
    with pytest.raises(ValueError, match="labels must differ"):
        next(iter_growth_rates([GrowthSetting("a"), GrowthSetting("a")]))
    with pytest.raises(ValueError, match="seeds must be distinct ints"):
        next(iter_growth_rates(GrowthSetting("a"), seeds=[1, 1]))
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        next(iter_growth_rates(GrowthSetting("a"), num_samples=0))
    with pytest.raises(ValueError, match="embedding_draw='fixed'"):
        next(iter_growth_rates(GrowthSetting("a"), embedding_draw="fixed"))
