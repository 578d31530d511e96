"""Closed-form self-attention Hessian blocks against autograd (float64), and their growth with ‖X‖."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from tscope_widgets import self_attention_hessian

NAMES = ("q", "k", "v")
L, d, d_K, d_V = 5, 4, 3, 2


def problem(seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(L, d, generator=g, dtype=dtype) * scale
    W_Q, W_K = (torch.randn(d, d_K, generator=g, dtype=dtype) for _ in range(2))
    W_V = torch.randn(d, d_V, generator=g, dtype=dtype)
    Y = torch.randn(L, d_V, generator=g, dtype=dtype)
    return X, W_Q, W_K, W_V, Y


def forward(X, W_Q, W_K, W_V, attention):
    S = (X @ W_Q) @ (X @ W_K).T / math.sqrt(W_Q.shape[1])
    A = S.softmax(-1) if attention == "softmax" else S
    return A @ X @ W_V


def autograd_reference(X, W_Q, W_K, W_V, Y, attention):
    """Hessian and GGN of ½‖F − Y‖² w.r.t. (vec W_Q, vec W_K, vec W_V) by autograd, split into blocks."""
    sizes = [W_Q.numel(), W_K.numel(), W_V.numel()]
    theta = torch.cat([W_Q.reshape(-1), W_K.reshape(-1), W_V.reshape(-1)])

    def unpack(t):
        q, k, v = t.split(sizes)
        return q.view_as(W_Q), k.view_as(W_K), v.view_as(W_V)

    def F(t):
        return forward(X, *unpack(t), attention).reshape(-1)

    def loss(t):
        return 0.5 * (F(t) - Y.reshape(-1)).square().sum()

    H = hessian(loss, theta)
    J = jacobian(F, theta)
    G = J.T @ J
    offsets = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]

    def split(M):
        return {
            (a, b): M[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            for i, a in enumerate(NAMES)
            for j, b in enumerate(NAMES)
        }

    return {"hessian": split(H), "ggn": split(G), "functional": split(H - G)}


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("seed", [0, 1])
def test_all_blocks_equal_autograd(attention, seed):
    X, W_Q, W_K, W_V, Y = problem(seed, scale=0.7)
    ref = autograd_reference(X, W_Q, W_K, W_V, Y, attention)
    for part in ("hessian", "ggn", "functional"):
        got = self_attention_hessian(X, W_Q, W_K, W_V, Y, attention=attention, part=part)
        assert set(got) == {(a, b) for a in NAMES for b in NAMES}
        for key, want in ref[part].items():
            assert got[key].shape == want.shape, (part, key)
            scale = ref["hessian"][key].norm()  # functional V-V is exactly zero: compare on the Hessian's scale
            err = (got[key] - want).norm() / scale
            assert err < 1e-10, (attention, part, key, err.item())
            if want.norm() > 1e-8 * scale:
                assert (got[key] - want).norm() / want.norm() < 1e-10, (attention, part, key)


def test_value_functional_block_is_exactly_zero_and_ggn_is_kronecker():
    X, W_Q, W_K, W_V, Y = problem(3)
    fun = self_attention_hessian(X, W_Q, W_K, W_V, Y, part="functional")
    assert torch.count_nonzero(fun["v", "v"]) == 0
    ggn = self_attention_hessian(X, W_Q, W_K, W_V, Y, part="ggn")
    A = ((X @ W_Q) @ (X @ W_K).T / math.sqrt(d_K)).softmax(-1)
    AX = A @ X
    assert torch.allclose(ggn["v", "v"], torch.kron(AX.T @ AX, torch.eye(d_V, dtype=X.dtype)), rtol=1e-13, atol=0)
    # and the other functional blocks are far from zero (the zero above is structure, not underflow)
    assert fun["q", "q"].norm() > 1e-3 and fun["q", "v"].norm() > 1e-3


def test_hessian_is_symmetric_and_sum_of_parts():
    X, W_Q, W_K, W_V, Y = problem(4)
    parts = {p: self_attention_hessian(X, W_Q, W_K, W_V, Y, part=p) for p in ("hessian", "ggn", "functional")}
    for a in NAMES:
        for b in NAMES:
            torch.testing.assert_close(parts["hessian"][a, b], parts["hessian"][b, a].T, rtol=0, atol=0)
            torch.testing.assert_close(parts["hessian"][a, b], parts["ggn"][a, b] + parts["functional"][a, b])


def test_float32_inputs_give_float32_blocks():
    args = problem(5, dtype=torch.float32)
    out = self_attention_hessian(*args)
    assert all(b.dtype == torch.float32 for b in out.values())
    ref = self_attention_hessian(*(t.double() for t in args))
    assert (out["q", "q"].double() - ref["q", "q"]).norm() / ref["q", "q"].norm() < 1e-4


def growth_slope(block, part, attention, sigmas=(1e-4, 3e-4, 1e-3, 3e-3)):
    """Least-squares slope of log‖block‖_F against log σ for X → σX (weights and Y fixed)."""
    X, W_Q, W_K, W_V, Y = problem(6)
    logs = torch.tensor([math.log(s) for s in sigmas], dtype=torch.float64)
    norms = []
    for s in sigmas:
        out = self_attention_hessian(s * X, W_Q, W_K, W_V, Y, attention=attention, part=part)
        norms.append(out[block].norm().log())
    y = torch.stack(norms)
    xc = logs - logs.mean()
    return float((xc * (y - y.mean())).sum() / xc.square().sum())


@pytest.mark.parametrize(
    "attention, block, part, slope",
    [
        # softmax (Ormaniec et al. 2025): V ∝ σ², Q-GGN ∝ σ⁶, Q functional (and so Q Hessian) ∝ σ⁵
        ("softmax", ("v", "v"), "hessian", 2),
        ("softmax", ("v", "v"), "ggn", 2),
        ("softmax", ("q", "q"), "ggn", 6),
        ("softmax", ("q", "q"), "functional", 5),
        ("softmax", ("q", "q"), "hessian", 5),
        ("softmax", ("k", "k"), "ggn", 6),
        ("softmax", ("k", "k"), "hessian", 5),
        ("softmax", ("q", "v"), "ggn", 4),
        ("softmax", ("q", "v"), "functional", 3),
        # linear attention, one layer: σ^{2·3} for the outer-product blocks
        ("linear", ("q", "q"), "ggn", 6),
        ("linear", ("v", "v"), "ggn", 6),
        ("linear", ("q", "k"), "functional", 3),
    ],
)
def test_block_growth_with_input_scale(attention, block, part, slope):
    assert growth_slope(block, part, attention) == pytest.approx(slope, abs=0.02)


def test_linear_attention_has_no_functional_qq_kk():
    X, W_Q, W_K, W_V, Y = problem(7)
    fun = self_attention_hessian(X, W_Q, W_K, W_V, Y, attention="linear", part="functional")
    assert torch.count_nonzero(fun["q", "q"]) == 0 and torch.count_nonzero(fun["k", "k"]) == 0


def test_bad_input_is_named():
    X, W_Q, W_K, W_V, Y = problem(8)
    with pytest.raises(ValueError, match=r"W_K must have shape \[4, 3\]"):
        self_attention_hessian(X, W_Q, W_K[:, :2], W_V, Y)
    with pytest.raises(ValueError, match=r"Y must have shape \[5, 2\]"):
        self_attention_hessian(X, W_Q, W_K, W_V, Y.T)
    with pytest.raises(ValueError, match="attention must be one of"):
        self_attention_hessian(X, W_Q, W_K, W_V, Y, attention="relu")
    with pytest.raises(ValueError, match="part must be one of"):
        self_attention_hessian(X, W_Q, W_K, W_V, Y, part="gnn")
    with pytest.raises(TypeError, match="share one dtype"):
        self_attention_hessian(X.float(), W_Q, W_K, W_V, Y)
    with pytest.raises(ValueError, match="X must be a matrix"):
        self_attention_hessian(X[None], W_Q, W_K, W_V, Y)
