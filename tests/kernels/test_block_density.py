"""Per-block SLQ densities against dense float64 block spectra, and their Jensen–Shannon heterogeneity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from torch.func import functional_call, hessian

from tests import model_zoo as mz
from tests.kernels.test_curvature import Reference, make_data
from tscope_widgets.kernels.block_density import block_densities, iter_block_densities, iter_block_slq
from tscope_widgets.kernels.curvature import HessianOperator
from tscope_widgets.kernels.heterogeneity import (
    js_distance_matrix,
    normalized_block_densities,
    spectral_heterogeneity,
)
from tscope_widgets.models.registry import adapt

F64 = torch.float64
BLOCKS = ["embed", "block0.attn.q", "block0.attn.v", "block0.mlp.in", "block0.ln1", "head"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_case():
    model = mz.tiny(n_layer=1)
    copy_ = adapt(model).analysis(F64)
    data = make_data(copy_)
    ref = Reference(copy_.model, data)
    H = ref.hessian()
    dense = {}
    for g in BLOCKS:
        idx = ref.index(copy_, [g])
        dense[g] = torch.linalg.eigvalsh(H[idx][:, idx])
    return model, data, dense


def quadrature_measure(d):
    """Pooled SLQ nodes and weights (each probe's weights / number of probes): a probability measure."""
    return d.nodes.reshape(-1).numpy(), (d.weights / d.nodes.shape[0]).reshape(-1).numpy()


def test_block_slq_matches_the_dense_spectrum_of_each_block(tiny_case):
    model, data, dense = tiny_case
    steps = 30
    res = block_densities(model, data, BLOCKS, num_probes=10, num_steps=steps, generator=gen(0))
    assert res.labels == BLOCKS and res.done == res.total == len(BLOCKS)
    for g in BLOCKS:
        lam = dense[g].numpy()
        nodes, w = quadrature_measure(res[g])
        spread = lam.max() - lam.min()
        w1 = wasserstein_distance(nodes, lam, w)
        # Zhang et al.'s 10 Gaussian probes: the weights' sampling error dominates (measured W1/spread <= 0.02)
        assert w1 < 0.03 * spread, (g, w1 / spread)
        # the bound catches a wrong spectrum: every eigenvalue off by a tenth of the spread is 0.1 spread away
        assert wasserstein_distance(nodes, lam + 0.1 * spread, w) > 0.06 * spread
        # extreme Ritz values converge first: the largest node of every probe is lambda_max(H_aa)
        if lam.size <= steps:  # a block no longer than the run is resolved exactly
            np.testing.assert_allclose(res[g].nodes[0].numpy(), lam, rtol=1e-8, atol=1e-10 * abs(lam).max())
        else:
            top = res[g].nodes[:, -1].numpy()  # Ritz values interlace: never above lambda_max, close after 30 steps
            assert (top <= lam.max() + 1e-10 * spread).all() and (top >= lam.max() - 0.02 * spread).all(), g


def test_blocks_share_one_gradient_graph_and_match_separate_operators(tiny_case):
    model, data, _ = tiny_case
    groups = ("block0.attn.v", "block0.ln2")
    parent = HessianOperator(model, data, groups=list(groups), dtype=F64, route="double_backward")
    parent.share_gradient_graph()
    shared_ops = {g: parent.restrict(g) for g in groups}
    assert all(op._graph["hessian"] is parent._graph["hessian"] for op in shared_ops.values())
    separate_ops = {g: HessianOperator(model, data, groups=g, dtype=F64) for g in groups}
    shared = list(iter_block_slq(shared_ops, 3, 12, generator=gen(5)))[-1]
    separate = list(iter_block_slq(separate_ops, 3, 12, generator=gen(5)))[-1]
    for g in groups:
        torch.testing.assert_close(shared[g].nodes, separate[g].nodes, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(shared[g].weights, separate[g].weights, rtol=1e-9, atol=1e-12)
    assert shared.num_matvecs == separate.num_matvecs == 3 * 12 + 3 * 12


def test_iter_block_densities_yields_after_every_block_and_groups_blocks(tiny_case):
    model, data, _ = tiny_case
    spec = {"qk": ["block0.attn.q", "block0.attn.k"], "norm": "block0.ln*"}
    snaps = list(iter_block_densities(model, data, spec, num_probes=2, num_steps=5, generator=gen(1)))
    assert [s.done for s in snaps] == [1, 2] and snaps[-1].total == 2
    assert snaps[-1].sizes == {"qk": 144, "norm": 32}
    with pytest.raises(ValueError, match="block 'x'.*unknown parameter group"):
        block_densities(model, data, {"x": "nope"})
    with pytest.raises(ValueError, match="selected twice"):
        block_densities(model, data, {"a": "block0.ln1", "b": "block0.ln1"})


def test_js_distances_match_scipy_on_the_same_discretised_densities(tiny_case):
    model, data, _ = tiny_case
    res = block_densities(model, data, BLOCKS, num_probes=4, num_steps=20, generator=gen(2))
    het = spectral_heterogeneity(res)
    labels, grid, P, scales = normalized_block_densities(res)
    assert labels == BLOCKS and P.shape == (len(BLOCKS), grid.numel())
    torch.testing.assert_close(P.sum(1), torch.ones(len(BLOCKS), dtype=F64))
    expect = np.array([[jensenshannon(p, q) for q in P.numpy()] for p in P.numpy()])
    np.testing.assert_allclose(het.distances.numpy(), expect, rtol=1e-10, atol=1e-12)
    iu = np.triu_indices(len(BLOCKS), 1)
    assert het.mean == pytest.approx(expect[iu].mean(), rel=1e-12)
    # the scale is the mean over probes of the 10th-largest |Ritz value|
    d = res["block0.mlp.in"]
    assert scales[BLOCKS.index("block0.mlp.in")].item() == pytest.approx(
        d.nodes.abs().sort(1, descending=True).values[:, 9].mean().item())


def test_js_distance_matrix_edge_cases():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]], dtype=F64)
    D = js_distance_matrix(p)
    assert D[0, 1].item() == pytest.approx(math.sqrt(math.log(2)))  # disjoint supports: the maximum
    np.testing.assert_allclose(D.numpy(), [[jensenshannon(a, b) for b in p.numpy()] for a in p.numpy()], atol=1e-12)
    tiny = torch.tensor([[1.0, 5e-324], [1.0, 0.0]], dtype=F64)  # subnormal mass: finite, not inf
    assert torch.isfinite(js_distance_matrix(tiny)).all()
    with pytest.raises(ValueError, match="positive mass"):
        js_distance_matrix(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="non-negative"):
        js_distance_matrix(torch.tensor([[1.0, -1.0]], dtype=F64))


def test_identical_blocks_have_zero_heterogeneity_and_scaling_does_not_matter():
    lam = torch.linspace(-0.5, 3.0, 40, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen(0), dtype=F64))
    A = (Q * lam) @ Q.T
    res = list(iter_block_slq({"a": A, "b": 1e-3 * A, "c": torch.diag(lam.exp())}, 10, 40, generator=gen(1)))[-1]
    het = spectral_heterogeneity(res)
    assert het.distances[0, 2].item() > 2 * het.distances[0, 1].item()  # a, 1e-3 a: probe noise only
    d = res["a"]
    same = spectral_heterogeneity({"a": d, "b": dataclasses.replace(d, nodes=1e-3 * d.nodes)})
    assert same.distances[0, 1].item() < 1e-6 and same.scales[1].item() == pytest.approx(1e-3 * same.scales[0].item())
    with pytest.raises(ValueError, match="floor"):
        spectral_heterogeneity(res, floor=2.0)


def mlp_block_densities(num_probes, num_steps):
    """A 3-layer ReLU MLP without biases (16-32-32-16, 2048 parameters, like the tiny transformer's 2000) on a
    synthetic 16-class task; one block per weight matrix, dense float64 blocks by ``torch.func.hessian``.

    The counterpart of the CNNs of Zhang et al. (2024): layers of one kind (their ResNet and VGG blocks are
    ReLU convolutions). Biases would be blocks of another kind (with spectra unlike the weights', as the
    transformer's norms are): with them (and GELU) this MLP's JS⁰ measured 0.60 to 0.62, level with the
    transformer, so the comparison would test the biases rather than the architecture.
    """
    torch.manual_seed(0)
    nn = torch.nn
    mlp = nn.Sequential(nn.Linear(16, 32, bias=False), nn.ReLU(), nn.Linear(32, 32, bias=False), nn.ReLU(),
                        nn.Linear(32, 16, bias=False)).double()
    X = torch.randn(64, 16, dtype=F64)
    y = torch.randint(0, 16, (64,))
    params = {n: p.detach() for n, p in mlp.named_parameters()}
    blocks = {}
    for n, p in params.items():
        def f(t, n=n):
            return torch.nn.functional.cross_entropy(functional_call(mlp, {**params, n: t}, (X,)), y)

        blocks[n] = hessian(f)(p).reshape(p.numel(), p.numel())
    return list(iter_block_slq(blocks, num_probes, num_steps, generator=gen(0)))[-1]


def test_tiny_transformer_is_more_heterogeneous_than_an_mlp_of_similar_size():
    model = mz.tiny()
    batch = {"input_ids": torch.randint(0, 11, (4, 8), generator=gen(1))}
    transformer = block_densities(model, batch, None, num_probes=4, num_steps=30, generator=gen(0))
    mlp = mlp_block_densities(4, 30)
    js_transformer, js_mlp = spectral_heterogeneity(transformer).mean, spectral_heterogeneity(mlp).mean
    # measured 0.611 against 0.459; over other probe seeds, data and initialisations the transformer stayed
    # within 0.600-0.611 and this MLP within 0.428-0.479: a margin of 0.12 at least
    assert js_transformer > js_mlp + 0.1, (js_transformer, js_mlp)
