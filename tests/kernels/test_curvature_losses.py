"""The GGN/functional split for losses other than the LM cross-entropy, against dense float64 references.

The reference writes a flat vector of the attention parameters into the model with ``functional_call`` and
builds the loss with its own rules; the Hessian comes from ``torch.autograd.functional.hessian``, the GGN
from ``J^T (d^2 l / dz^2) J`` with both factors from ``torch.autograd.functional`` (Jacobian of the logits,
Hessian of the loss in the logits).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests import model_zoo as mz
from tscope_widgets.kernels.curvature import HessianOperator, LogitLoss, dense_hessian
from tscope_widgets.models.registry import adapt

GROUPS = ["block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o"]
NAMES = [f"blocks.0.attn.{g}.{w}" for g in "qkvo" for w in ("weight", "bias")]


def setup():
    model = mz.tiny(n_layer=1)
    adapter = adapt(model)
    batches = [mz.random_batch(adapter, 3, 6, pad=False, seed=1), mz.random_batch(adapter, 2, 6, pad=False, seed=2)]
    return model, batches


class Reference:
    """``L(x) = sum_b w_b f_b(z_b(x))`` over the flat attention parameters ``x``."""

    def __init__(self, model, batches, per_batch, weights):
        self.model, self.batches, self.f, self.weights = model, batches, per_batch, weights
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in NAMES]
        self.sizes = [params[n].numel() for n in NAMES]
        self.x0 = torch.cat([params[n].detach().reshape(-1) for n in NAMES])

    def logits(self, x, batch):
        p = {n: c.view(s) for n, c, s in zip(NAMES, x.split(self.sizes), self.shapes, strict=True)}
        return torch.func.functional_call(self.model, p, (batch["input_ids"],))

    def loss(self, x):
        return sum(w * self.f(self.logits(x, b), b) for w, b in zip(self.weights, self.batches, strict=True))

    def hessian(self):
        return torch.autograd.functional.hessian(self.loss, self.x0, vectorize=True)

    def ggn(self):
        G = 0
        for w, b in zip(self.weights, self.batches, strict=True):
            J = torch.autograd.functional.jacobian(lambda x, b=b: self.logits(x, b), self.x0, vectorize=True)
            J = J.reshape(-1, self.x0.numel())  # [B*S*V, P]
            z0 = self.logits(self.x0, b).detach()
            Hz = torch.autograd.functional.hessian(lambda z, b=b, w=w: w * self.f(z, b), z0, vectorize=True)
            Hz = Hz.reshape(J.shape[0], J.shape[0])
            G = G + J.T @ Hz @ J
        return G


def mse_on_positions(positions):
    """Mean over the scored tokens of ||z_t - e_{y_t}||^2; position t is scored on token t + 1."""

    def f(z, batch):
        ids = batch["input_ids"]
        S = ids.shape[1]
        pos = torch.tensor([p % S for p in positions])
        target = F.one_hot(ids[:, pos + 1], z.shape[-1]).to(z.dtype)
        return (z[:, pos] - target).square().sum(-1).mean()

    return f


def ce_on_positions(positions):
    def f(z, batch):
        ids = batch["input_ids"]
        pos = torch.tensor([p % ids.shape[1] for p in positions])
        return F.cross_entropy(z[:, pos].reshape(-1, z.shape[-1]), ids[:, pos + 1].reshape(-1))

    return f


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("route", ["double_backward", "forward_over_reverse"])
@pytest.mark.parametrize("fn", ["mse", "ce"])
def test_builtin_losses_on_a_subset_of_positions(fn, route):
    model, batches = setup()
    positions = (-3, -2)  # logits positions S-3 and S-2 (tokens S-2 and S-1); S-1 has no target
    per_batch = (mse_on_positions if fn == "mse" else ce_on_positions)(positions)
    counts = [b["input_ids"].shape[0] * len(positions) for b in batches]  # token weights
    ref = Reference(model, batches, per_batch, [c / sum(counts) for c in counts])
    H, G = ref.hessian(), ref.ggn()
    loss = LogitLoss(fn, positions=positions)
    V = torch.randn(H.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for kind, want in (("hessian", H), ("ggn", G), ("functional", H - G)):
        op = HessianOperator(model, batches, groups=GROUPS, kind=kind, loss=loss, route=route)
        assert rel(op @ V, want @ V) < 1e-10, kind
    assert op.loss_value() == pytest.approx(float(ref.loss(ref.x0).detach()), rel=1e-12)
    # the split is real: the functional part is not small next to the GGN
    assert (H - G).norm() > 0.05 * G.norm()


def test_mse_string_and_dense_ggn_is_psd_with_the_closed_form_output_hessian():
    model, batches = setup()
    Gd = dense_hessian(model, batches, groups=GROUPS, kind="ggn", loss="mse")
    Hd = dense_hessian(model, batches, groups=GROUPS, kind="hessian", loss="mse")
    counts = [b["input_ids"].shape[0] * 5 for b in batches]  # every position but the last is labelled
    ref = Reference(model, batches, mse_on_positions(range(5)), [c / sum(counts) for c in counts])
    assert rel(Gd, ref.ggn()) < 1e-10 and rel(Hd, ref.hessian()) < 1e-10
    assert torch.linalg.eigvalsh(Gd).min() > -1e-12 * Gd.norm()


@pytest.mark.parametrize("route", ["double_backward", "forward_over_reverse"])
def test_callable_loss_on_the_logits_uses_autodiff_for_its_output_hessian(route):
    model, batches = setup()

    def fn(z, batch):  # couples the vocabulary (logsumexp) and positions (a product): a dense d2l/dz2
        return (z[:, -1].logsumexp(-1) * z[:, 0, 0]).mean() + z[:, 2].square().sum(-1).mean()

    B = [b["input_ids"].shape[0] for b in batches]  # sample weights
    ref = Reference(model, batches, fn, [n / sum(B) for n in B])
    H, G = ref.hessian(), ref.ggn()
    V = torch.randn(H.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = LogitLoss(fn)
    for kind, want in (("hessian", H), ("ggn", G), ("functional", H - G)):
        op = HessianOperator(model, batches, groups=GROUPS, kind=kind, loss=loss, route=route)
        assert rel(op @ V, want @ V) < 1e-10, kind


def test_bad_losses_are_named():
    model, batches = setup()
    with pytest.raises(ValueError, match="loss on the logits"):
        HessianOperator(model, batches, kind="ggn", loss=lambda a, b: a.loss(b))
    with pytest.raises(ValueError, match="expected one of"):
        LogitLoss("l1")
    with pytest.raises(TypeError, match="a callable"):
        LogitLoss(3)
    with pytest.raises(ValueError, match="positions must be a non-empty sequence of ints"):
        LogitLoss("mse", positions=[])
    with pytest.raises(ValueError, match="applies to 'ce' and 'mse'"):
        LogitLoss(lambda z, b: z.sum(), positions=(1,))
    with pytest.raises(ValueError, match=r"positions \[9\] lie outside the 6 logits positions"):
        HessianOperator(model, batches, loss=LogitLoss("mse", positions=(9,)))
    with pytest.raises(ValueError, match="no labelled target at positions"):
        HessianOperator(model, batches, loss=LogitLoss("ce", positions=(-1,)))  # the last position has no target
    with pytest.raises(TypeError, match="loss must be None"):
        HessianOperator(model, batches, loss=3.0)
