"""Finite-difference products against the dense float64 references, and models without a double backward.

The references and cases come from ``test_curvature`` (built without tscope's curvature code).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests import model_zoo as mz
from tests.kernels.test_curvature import BUILDERS, case, probes, rel_err
from tscope_widgets import HessianOperator
from tscope_widgets.models import tiny as tiny_module
from tscope_widgets.models.registry import adapt

# Measured 1e-10 (float64) on these models: central differences with h |v| = eps^(1/3) are accurate to
# about eps^(2/3) ~ 4e-11 relative; 1e-7 leaves room and still catches a wrong step or a missing 1/2h.
FD_TOL = 1e-7


@pytest.mark.parametrize("name", BUILDERS)
def test_finite_difference_products_match_the_dense_hessian_and_ggn(name):
    model, data, ref, H, G = case(name)
    fd = {k: HessianOperator(model, data, kind=k, route="finite_difference") for k in ("hessian", "ggn", "functional")}
    perm = ref.index(fd["hessian"].adapter, fd["hessian"].groups)
    Hp, Gp = H[perm][:, perm], G[perm][:, perm]
    V = probes(Hp.shape[0], 2, seed=7)
    assert rel_err(fd["hessian"] @ V, Hp @ V) < FD_TOL
    assert rel_err(fd["ggn"] @ V, Gp @ V) < FD_TOL
    assert rel_err(fd["functional"] @ V, (Hp - Gp) @ V) < FD_TOL
    assert rel_err(fd["hessian"] @ (1e6 * V[:, 0]), 1e6 * Hp @ V[:, 0]) < FD_TOL  # the step follows |v|
    assert torch.equal(fd["hessian"] @ torch.zeros_like(V), torch.zeros_like(V))


def test_finite_difference_blocks_and_fused_slices():
    model, data, ref, H, _ = case("gpt2")
    op = HessianOperator(model, data, groups="block0.attn.q", col_groups=["block0.attn.k", "ln_f"],
                         route="finite_difference")
    idx = {g: ref.index(op.adapter, [g]) for g in op.adapter.param_groups()}
    cols = torch.cat([idx["block0.attn.k"], idx["ln_f"]])
    V = probes(op.shape[1], 2, seed=8)
    assert rel_err(op @ V, H[idx["block0.attn.q"]][:, cols] @ V) < FD_TOL


def test_finite_difference_error_estimate_bounds_the_error():
    model, data, ref, H, _ = case("tiny-pre")
    for dtype, scale in [(torch.float64, 1e-9), (torch.float32, 1e-3)]:
        op = HessianOperator(model, data, route="finite_difference", dtype=dtype)
        perm = ref.index(op.adapter, op.groups)
        v = probes(op.num_params, 1, seed=9)[:, 0]
        exact = (H[perm][:, perm] @ v)
        hv, err = op.hvp_with_error(v)
        actual = float((hv.double() - exact).norm())
        assert 0 < err < scale * float(exact.norm())  # small, and not zero
        assert actual < 3 * err  # within the stated error (an estimate; measured up to 1.5x)
    with pytest.raises(ValueError, match="kind='hessian'"):
        HessianOperator(model, data, kind="ggn").hvp_with_error(v)


# ----- a model whose attention has no double backward (PyTorch's fused SDPA) ------------------------------
def _sdpa_forward(self, x, key_mask=None):
    B, S, D = x.shape
    q, k, v = (m(x).view(B, S, self.n_head, self.d_head).transpose(1, 2) for m in (self.q, self.k, self.v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, nh, S, dh]
    return self.o(y.transpose(1, 2).reshape(B, S, D))


def test_sdpa_attention_refuses_double_backward_and_works_by_finite_differences(monkeypatch):
    model = mz.tiny()
    data = [{"input_ids": mz.random_batch(adapt(model), 3, 6, pad=False, seed=1)["input_ids"]}]
    eager = {k: HessianOperator(model, data, kind=k) for k in ("hessian", "ggn")}  # the same function, eager
    V = probes(eager["hessian"].num_params, 2, seed=10)
    expected = {k: op @ V for k, op in eager.items()}
    monkeypatch.setattr(tiny_module.SelfAttention, "forward", _sdpa_forward)
    for kind in ("hessian", "ggn"):
        with pytest.raises(RuntimeError, match="route='finite_difference'"):
            HessianOperator(model, data, kind=kind, route="double_backward") @ V
        fd = HessianOperator(model, data, kind=kind, route="finite_difference")
        assert abs(fd.loss_value() - eager[kind].loss_value()) < 1e-12  # SDPA computes the same loss
        assert rel_err(fd @ V, expected[kind]) < FD_TOL
