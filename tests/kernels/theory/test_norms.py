"""LayerNorm/RMSNorm Jacobians and Hessians in closed form against autograd (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import hessian, jacrev, vmap

from tscope_widgets import layernorm_hessian, layernorm_jacobian, rmsnorm_hessian, rmsnorm_jacobian

D = 7
EPS = 1e-5


def layernorm(x, weight, bias, eps=EPS):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rmsnorm(x, weight, bias, eps=EPS):
    y = x / torch.sqrt(x.square().mean(-1, keepdim=True) + eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


CASES = {
    "layernorm": (layernorm, layernorm_jacobian, layernorm_hessian),
    "rmsnorm": (rmsnorm, rmsnorm_jacobian, rmsnorm_hessian),
}


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def inputs(seed=0, shape=(3, 2, D)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5
    weight = torch.randn(shape[-1], generator=g, dtype=torch.float64)
    bias = torch.randn(shape[-1], generator=g, dtype=torch.float64)
    return x, weight, bias


@pytest.mark.parametrize("kind", CASES)
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("eps", [EPS, 0.3])
def test_jacobian_and_hessian_equal_autograd(kind, with_weight, eps):
    f, jac, hes = CASES[kind]
    x, weight, bias = inputs()
    w = weight if with_weight else None

    def one(v):
        return f(v, w, bias, eps)

    lead = x.shape[:-1]
    flat = x.reshape(-1, D)
    J_ref = vmap(jacrev(one))(flat).reshape(*lead, D, D)
    H_ref = vmap(hessian(one))(flat).reshape(*lead, D, D, D)
    J = jac(x, w, eps)
    H = hes(x, w, eps)
    assert J.shape == (*lead, D, D) and H.shape == (*lead, D, D, D)
    assert J.dtype == H.dtype == torch.float64
    assert rel_err(J, J_ref) < 1e-10
    assert rel_err(H, H_ref) < 1e-10
    # per sample too (a batch-wide norm could hide a wrong small sample)
    for j, jr in zip(J.reshape(-1, D, D), J_ref.reshape(-1, D, D), strict=True):
        assert rel_err(j, jr) < 1e-10


@pytest.mark.parametrize("kind", CASES)
def test_no_batch_dims_and_float32(kind):
    f, jac, hes = CASES[kind]
    x, weight, bias = inputs(1, shape=(D,))
    J_ref = jacrev(lambda v: f(v, weight, bias))(x)
    assert rel_err(jac(x, weight), J_ref) < 1e-12
    x32, w32 = x.float(), weight.float()
    J32, H32 = jac(x32, w32), hes(x32, w32)
    assert J32.dtype == H32.dtype == torch.float32
    assert rel_err(J32.double(), J_ref) < 1e-5
    assert rel_err(H32.double(), hessian(lambda v: f(v, weight, bias))(x)) < 1e-5


def test_layernorm_matches_torch_module():
    ln = torch.nn.LayerNorm(D, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = inputs(2, shape=(D,))[0]
    J_ref = torch.autograd.functional.jacobian(ln, x)
    assert rel_err(layernorm_jacobian(x, ln.weight.detach(), ln.eps), J_ref) < 1e-10


def test_the_common_sketch_is_not_the_jacobian():
    """(1/σ)(I − 11ᵀ/D) drops the x̂x̂ᵀ/D term and the weight: it is off by O(1), not by rounding."""
    x, weight, _ = inputs(3, shape=(D,))
    J = layernorm_jacobian(x, weight)
    sigma = torch.sqrt(x.var(unbiased=False) + EPS)
    sketch = (torch.eye(D, dtype=x.dtype) - 1.0 / D) / sigma
    assert rel_err(sketch, J) > 0.3
    # without the weight the missing term is exactly -(x̂x̂ᵀ/D)/σ, a rank-one matrix of norm 1/σ ...
    xh = (x - x.mean()) / sigma
    J1 = layernorm_jacobian(x)
    assert rel_err(sketch - xh[:, None] * xh[None, :] / D / sigma, J1) < 1e-12
    assert torch.linalg.matrix_rank(sketch - J1).item() == 1
    # the true J kills both 1 and x̂ (shift and scale invariance), the sketch only 1
    ones = torch.ones(D, dtype=x.dtype)
    J0 = layernorm_jacobian(x, eps=0.0)
    xh0 = (x - x.mean()) / x.std(unbiased=False)
    assert (J0 @ ones).abs().max() < 1e-12 and (J0 @ xh0).abs().max() < 1e-12
    assert (sketch @ xh).norm() > 0.5 * xh.norm() / sigma


@pytest.mark.parametrize("fn", [layernorm_jacobian, layernorm_hessian, rmsnorm_jacobian, rmsnorm_hessian])
def test_bad_input_is_named(fn):
    with pytest.raises(TypeError, match="floating point"):
        fn(torch.arange(4))
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \[4\]"):
        fn(torch.ones(4, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps must be a float >= 0"):
        fn(torch.ones(4, dtype=torch.float64), eps=-1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([1.0, 2.0])
