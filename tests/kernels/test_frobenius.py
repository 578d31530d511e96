"""Hutchinson's estimate of ‖A‖²_F: unbiased, honest standard errors, batched products, exact mode."""

from __future__ import annotations

import math

import pytest
import torch

from tscope_widgets import FrobeniusEstimate, hutchinson_frobenius
from tscope_widgets.kernels import DenseOperator


def matrix(M=9, N=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, N, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, N, dtype=torch.float64)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_unbiased_with_honest_standard_error(distribution):
    A = matrix()
    exact = A.square().sum().item()
    seeds = 60
    ests = [hutchinson_frobenius(A, 13, 40, generator=torch.Generator().manual_seed(s), distribution=distribution)
            for s in range(seeds)]
    values = torch.tensor([e.value for e in ests], dtype=torch.float64)
    se_of_mean = math.sqrt(sum(e.stderr**2 for e in ests)) / seeds
    assert abs(values.mean().item() - exact) < 3 * se_of_mean
    # the reported stderr matches the spread over seeds and the theoretical one-probe variance
    assert 0.7 < values.std().item() / torch.tensor([e.stderr for e in ests]).mean().item() < 1.4
    G = A.T @ A
    var = 2 * (G.square().sum() - (G.diagonal().square().sum() if distribution == "rademacher" else 0))
    pooled = sum(e.stderr**2 * 40 for e in ests) / seeds  # one-probe variance from all 2400 probes
    assert pooled == pytest.approx(var.item(), rel=0.25)


def test_exact_mode_and_small_dim():
    A = matrix(4, 6, 1)
    est = hutchinson_frobenius(A, 6, 1, exact=True, chunk_size=4)  # two chunks of unit vectors
    assert est == FrobeniusEstimate(pytest.approx(A.square().sum().item(), rel=1e-14), 0.0, 6, True)


def test_one_batched_product_per_chunk_for_every_kind_of_operand():
    A = matrix()
    calls = []

    def block_product(V):
        calls.append(V.shape)
        return A @ V

    est = hutchinson_frobenius(block_product, 13, 50, blocks=True, generator=torch.Generator().manual_seed(0))
    assert calls == [(13, 50)]
    # the same probes through a LinearOperator, a matrix and a vmapped per-vector callable give the same numbers
    op = DenseOperator(A)
    for operand, blocks in [(op, False), (A, False), (lambda v: A @ v, False)]:
        other = hutchinson_frobenius(operand, 13, 50, blocks=blocks, generator=torch.Generator().manual_seed(0))
        assert other.value == pytest.approx(est.value, rel=1e-13)
    assert op.num_matvecs == 50
    chunked = hutchinson_frobenius(block_product, 13, 50, blocks=True, chunk_size=16,
                                   generator=torch.Generator().manual_seed(0))
    assert calls[1:] == [(13, 16)] * 3 + [(13, 2)]
    assert chunked.num_matvecs == 50 and chunked.value != est.value  # other probes, same count


def test_hessian_block_norm_of_self_attention():
    """The use it was written for: ‖H_QQ‖²_F of the closed-form attention Hessian from products only."""
    from tscope_widgets import self_attention_hessian

    g = torch.Generator().manual_seed(2)
    X, W_Q, W_K, W_V, Y = (torch.randn(*s, generator=g, dtype=torch.float64) for s in
                           [(5, 4), (4, 3), (4, 3), (4, 2), (5, 2)])
    H = self_attention_hessian(X, W_Q, W_K, W_V, Y)["q", "k"]
    exact = hutchinson_frobenius(H, 12, 1, exact=True).value
    assert exact == pytest.approx(H.square().sum().item(), rel=1e-13)
    est = hutchinson_frobenius(H, 12, 4000, generator=torch.Generator().manual_seed(3))
    assert abs(est.value - exact) < 4 * est.stderr and est.stderr < 0.1 * exact


def test_bad_input_is_named():
    A = matrix()
    with pytest.raises(ValueError, match=r"must have shape \[M, 12\]"):
        hutchinson_frobenius(A, 12, 5)
    with pytest.raises(ValueError, match="dim=12 but the operator has shape"):
        hutchinson_frobenius(DenseOperator(A), 12, 5)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        hutchinson_frobenius(A, 13, 0)
    with pytest.raises(TypeError, match="must be a LinearOperator, a matrix or a callable"):
        hutchinson_frobenius("A", 13, 5)
    with pytest.raises(ValueError, match="distribution must be one of"):
        hutchinson_frobenius(A, 13, 5, distribution="uniform")
    with pytest.raises(ValueError, match=r"returned \(9,\), expected \[M, 5\]"):
        hutchinson_frobenius(lambda V: A @ V[:, 0], 13, 5, blocks=True)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        hutchinson_frobenius(A, 13, 5, dtype=torch.int64)
    assert math.isnan(hutchinson_frobenius(A, 13, 1).stderr)


def test_off_diagonal_block_of_a_model_hessian_operator():
    """‖H_{q,k}‖²_F of a tiny transformer's loss from block-restricted Hessian products only."""
    from tests.model_zoo import tiny
    from tscope_widgets import HessianOperator

    model = tiny(n_layer=1)
    batch = {"input_ids": torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))}
    H = HessianOperator(model, batch, groups="block0.attn.q", col_groups="block0.attn.k", dtype=torch.float64)
    P = H.shape[1]
    dense = H.matmat(torch.eye(P, dtype=torch.float64))
    exact = hutchinson_frobenius(H, P, 1, exact=True)
    assert exact.value == pytest.approx(dense.square().sum().item(), rel=1e-12) and exact.num_matvecs == P
    est = hutchinson_frobenius(H, P, 300, generator=torch.Generator().manual_seed(1))
    assert abs(est.value - exact.value) < 4 * est.stderr and est.stderr < 0.2 * exact.value
