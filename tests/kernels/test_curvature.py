"""HessianOperator and dense_hessian against dense float64 references built without tscope's curvature code.

The reference writes a flat vector of whole parameters into the model with ``torch.func.functional_call``,
computes the token-weighted LM loss with its own label rules, and differentiates it with
``torch.autograd.functional.hessian`` / ``jacobian``. The operator's flat order (group order, fused
slices) is mapped onto it through ``ParamSlice.view`` of an index tensor.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh

from tests import model_zoo as mz
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.models.adapter import IGNORE_INDEX
from tscope_widgets.models.registry import adapt

ROUTES = ("double_backward", "forward_over_reverse")
BUILDERS = {
    "tiny-pre": mz.tiny,  # LayerNorm, pre-norm, 2 layers
    "tiny-post": lambda: mz.tiny(norm="post", n_layer=1),
    "gpt2": mz.gpt2,  # LayerNorm, fused c_attn, tied head
    "llama": mz.llama,  # RMSNorm, GQA, untied head
    "neox": mz.gpt_neox,  # interleaved query_key_value, partial rotary, parallel residual
}


# ----- independent reference ----------------------------------------------------------------------
def make_data(adapter):
    """Two padded batches with different numbers of labelled tokens (11 and 7)."""
    return [mz.random_batch(adapter, 3, 6, seed=1), mz.random_batch(adapter, 2, 5, seed=2)]


def valid_targets(batch):
    """``[B, S-1]`` bool: position t predicts token t+1, both real tokens."""
    mask = batch["attention_mask"]
    return (mask[:, 1:] == 1) & (mask[:, :-1] == 1)


class Reference:
    """The combined loss as a function of a flat vector of the named (whole) parameters."""

    def __init__(self, model, batches, names=None, weighting="tokens"):
        self.model, self.batches = model, batches
        params = dict(model.named_parameters())
        self.names = list(params) if names is None else names
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.x0 = torch.cat([params[n].detach().reshape(-1) for n in self.names])
        counts = [int(valid_targets(b).sum()) if weighting == "tokens" else b["input_ids"].shape[0] for b in batches]
        self.weights = [c / sum(counts) for c in counts]
        if weighting == "plain":
            self.weights = [1 / len(batches)] * len(batches)

    def params(self, x):
        return {n: c.view(s) for n, c, s in zip(self.names, x.split(self.sizes), self.shapes, strict=True)}

    def logits(self, x, batch):
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        out = torch.func.functional_call(self.model, self.params(x), (), kwargs)
        return getattr(out, "logits", out)

    def batch_loss(self, x, batch):
        z = self.logits(x, batch)[:, :-1]
        ce = F.cross_entropy(z.reshape(-1, z.shape[-1]), batch["input_ids"][:, 1:].reshape(-1), reduction="none")
        valid = valid_targets(batch).reshape(-1)
        return (ce * valid).sum() / valid.sum()

    def loss(self, x):
        return sum(w * self.batch_loss(x, b) for w, b in zip(self.weights, self.batches, strict=True))

    def hessian(self):
        return torch.autograd.functional.hessian(self.loss, self.x0, vectorize=True)

    def ggn(self):
        """``sum_b J_b^T H_z J_b`` with ``J`` from ``jacobian`` of the logits and ``H_z`` written out."""
        N = sum(int(valid_targets(b).sum()) for b in self.batches)
        G = 0
        for batch in self.batches:
            J = torch.autograd.functional.jacobian(lambda x, b=batch: self.logits(x, b), self.x0, vectorize=True)
            p = torch.softmax(self.logits(self.x0, batch).detach(), -1)  # [B, S, V]
            m = F.pad(valid_targets(batch), (0, 1)).to(p.dtype)[..., None, None] / N  # [B, S, 1, 1]
            Hz = (torch.diag_embed(p) - p[..., :, None] * p[..., None, :]) * m  # [B, S, V, V]
            G = G + torch.einsum("bsvp,bsvw,bswq->pq", J, Hz, J)
        return G

    def index(self, adapter, groups):
        """Positions in ``x`` of the operator's flat vector over ``groups`` (through ``ParamSlice.view``)."""
        idx = self.params(torch.arange(self.x0.numel()))
        slices = adapter.param_groups()
        return torch.cat([s.view(idx).reshape(-1) for g in groups for s in slices[g]])


@functools.cache
def case(name):
    """(user model, data, reference over all parameters, dense Hessian, GGN) for a zoo model; cached."""
    model = BUILDERS[name]()
    copy_ = adapt(model).analysis(torch.float64)
    data = make_data(copy_)
    ref = Reference(copy_.model, data)
    return model, data, ref, ref.hessian(), ref.ggn()


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def probes(n, k, seed=0):
    return torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ----- products against the dense reference ---------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("route", ROUTES + ("auto",))
def test_hessian_products_match_the_dense_hessian(name, route):
    model, data, ref, H, _ = case(name)
    op = HessianOperator(model, data, route=route)
    perm = ref.index(op.adapter, op.groups)
    assert op.shape == (perm.numel(), perm.numel()) == (op.num_params, op.num_params)
    assert sorted(perm.tolist()) == list(range(ref.x0.numel()))  # groups partition, tied weights once
    Hp = H[perm][:, perm]
    V = probes(op.num_params, 3)
    assert rel_err(op @ V, Hp @ V) < 1e-10
    assert rel_err(op @ V[:, 0], Hp @ V[:, 0]) < 1e-10
    assert rel_err(op @ V[:, 1:2], Hp @ V[:, 1:2]) < 1e-10


@pytest.mark.parametrize("kind", ["hessian", "ggn", "functional"])
@pytest.mark.parametrize("route", ROUTES)
def test_groups_the_loss_does_not_use_have_zero_curvature(kind, route):
    model = mz.tiny(d_mlp=0)  # attention-only: the MLP norms ln2 feed nothing
    data = make_data(adapt(model).analysis(torch.float64))
    op = HessianOperator(model, data, groups="block*.ln2", kind=kind, route=route)
    assert op.num_params > 0
    V = probes(op.num_params, 2)
    assert torch.equal(op @ V, torch.zeros_like(V)) and torch.equal(op.gradient(), torch.zeros(op.num_params))
    mixed = op.restrict("block0.ln2", col_groups="block0.attn.q")  # rows unused, columns used
    assert torch.equal(mixed @ probes(mixed.shape[1], 2), torch.zeros(mixed.shape[0], 2, dtype=torch.float64))


def test_double_backward_without_graph_reuse():
    model, data, ref, H, _ = case("gpt2")
    G = case("gpt2")[4]
    op = HessianOperator(model, data, route="double_backward", reuse_graph=False, kind="functional")
    perm = ref.index(op.adapter, op.groups)
    Hp, Gp = H[perm][:, perm], G[perm][:, perm]
    V = probes(op.num_params, 3, seed=1)
    for _ in range(2):
        assert rel_err(op @ V, (Hp - Gp) @ V) < 1e-10
        assert not op._graph


@pytest.mark.parametrize("name", ["tiny-pre", "gpt2", "llama"])
@pytest.mark.parametrize("route", ROUTES)
def test_ggn_and_functional_parts_match_the_reference(name, route):
    model, data, ref, H, G = case(name)
    assert rel_err(G, G.T) < 1e-13
    assert torch.linalg.eigvalsh(G).min() > -1e-12 * G.norm()
    ggn = HessianOperator(model, data, kind="ggn", route=route)
    functional = HessianOperator(model, data, kind="functional", route=route)
    perm = ref.index(ggn.adapter, ggn.groups)
    V = probes(ggn.num_params, 3, seed=2)
    Gp, Hp = G[perm][:, perm], H[perm][:, perm]
    assert rel_err(ggn @ V, Gp @ V) < 1e-10
    assert rel_err(ggn @ V[:, 0], Gp @ V[:, 0]) < 1e-10
    assert rel_err(functional @ V, (Hp - Gp) @ V) < 1e-10
    assert rel_err(Hp - Gp, Hp) > 1e-2  # the functional part is not negligible, so the test has teeth


def test_dense_ggn_is_symmetric_psd_and_parts_add_up():
    model, data, ref, H, _ = case("gpt2")
    groups = ["block0.attn.*", "ln_f"]
    Hd, Gd, Fd = (dense_hessian(model, data, groups=groups, kind=k) for k in ("hessian", "ggn", "functional"))
    perm = ref.index(adapt(model), HessianOperator(model, data, groups=groups).groups)
    assert rel_err(Hd, H[perm][:, perm]) < 1e-10
    assert rel_err(Gd + Fd, Hd) < 1e-12
    assert rel_err(Gd, Gd.T) < 1e-12
    assert torch.linalg.eigvalsh((Gd + Gd.T) / 2).min() > -1e-10 * Gd.norm()
    assert torch.linalg.eigvalsh((Hd + Hd.T) / 2).min() < -1e-3 * Hd.norm()  # the Hessian itself is indefinite


# ----- groups and blocks -----------------------------------------------------------------------------
def test_fused_gpt2_blocks_off_diagonal_blocks_and_globs():
    model, data, ref, H, _ = case("gpt2")
    op = HessianOperator(model, data, groups=["block0.attn.q", "block0.attn.k"])
    adapter = op.adapter
    idx = {g: ref.index(adapter, [g]) for g in adapter.param_groups()}
    assert op.group_sizes == {"block0.attn.q": 72, "block0.attn.k": 72}  # 8x8 weight columns + 8 bias
    assert op.offsets == {"block0.attn.q": slice(0, 72), "block0.attn.k": slice(72, 144)}
    qk = torch.cat([idx["block0.attn.q"], idx["block0.attn.k"]])
    assert rel_err(dense_hessian(model, data, groups=op.groups), H[qk][:, qk]) < 1e-10

    for route in ROUTES:  # off-diagonal: rows q, columns k
        block = HessianOperator(model, data, groups="block0.attn.q", col_groups="block0.attn.k", route=route)
        assert block.shape == (72, 72) and not block.symmetric
        V = probes(72, 3, seed=3)
        assert rel_err(block @ V, H[idx["block0.attn.q"]][:, idx["block0.attn.k"]] @ V) < 1e-10
    # columns partly outside the rows (k is a row group, ln_f is not), via restrict
    sub = op.restrict(["block0.attn.v", "block0.attn.q"], ["block0.attn.k", "ln_f"])
    assert sub.adapter is op.adapter and sub.data is op.data
    rows = torch.cat([idx["block0.attn.v"], idx["block0.attn.q"]])
    cols = torch.cat([idx["block0.attn.k"], idx["ln_f"]])
    assert sub.col_offsets == {"block0.attn.k": slice(0, 72), "ln_f": slice(72, 88)}
    V = probes(88, 2, seed=4)
    assert rel_err(sub @ V, H[rows][:, cols] @ V) < 1e-10

    glob = op.restrict("block1.attn.*")
    assert glob.groups == [f"block1.attn.{p}" for p in "qkvo"] and glob.symmetric
    g = torch.cat([idx[n] for n in glob.groups])
    assert rel_err(dense_hessian(model, data, groups="block1.attn.*"), H[g][:, g]) < 1e-10
    v = probes(glob.num_params, 1, seed=5)[:, 0]
    assert {k: t.shape[0] for k, t in glob.split(v).items()} == glob.group_sizes
    assert torch.equal(glob.split(v)["block1.attn.v"], v[glob.offsets["block1.attn.v"]])


def test_neox_interleaved_qkv_slices():
    model = mz.gpt_neox()
    copy_ = adapt(model).analysis(torch.float64)
    data = make_data(copy_)
    names = ["gpt_neox.layers.0.attention.query_key_value.weight", "gpt_neox.layers.0.attention.query_key_value.bias"]
    ref = Reference(copy_.model, data, names=names)
    H = ref.hessian()
    groups = ["block0.attn.k", "block0.attn.q", "block0.attn.v"]
    perm = ref.index(copy_, groups)
    assert sorted(perm.tolist()) == list(range(ref.x0.numel()))
    for route in ROUTES:
        op = HessianOperator(model, data, groups=groups, route=route)
        V = probes(op.num_params, 3, seed=6)
        assert rel_err(op @ V, H[perm][:, perm] @ V) < 1e-10


# ----- the loss: token weighting, value, gradient, custom losses ------------------------------------------
def test_batches_are_weighted_by_their_labelled_tokens():
    model, data, ref, H, _ = case("tiny-pre")
    op = HessianOperator(model, data)
    assert [op.adapter.num_targets(b) for b in data] == [int(valid_targets(b).sum()) for b in data] == [11, 7]
    perm = ref.index(op.adapter, op.groups)
    plain = Reference(ref.model, data, weighting="plain")
    assert abs(op.loss_value() - float(ref.loss(ref.x0))) < 1e-13
    assert abs(float(plain.loss(ref.x0)) - float(ref.loss(ref.x0))) > 1e-5  # caught by the line above
    x = ref.x0.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(ref.loss(x), x)
    assert rel_err(op.gradient(), g_ref[perm]) < 1e-12
    v = probes(op.num_params, 1, seed=7)[:, 0]
    w = torch.zeros_like(ref.x0).index_copy_(0, perm, v)
    plain_hv = torch.autograd.functional.hvp(plain.loss, ref.x0, w)[1][perm]
    assert rel_err(op @ v, H[perm][:, perm] @ v) < 1e-10
    assert rel_err(plain_hv, H[perm][:, perm] @ v) > 1e-2  # a mean of batch means would fail the line above


def test_custom_loss_weights_batches_by_samples():
    model, data, _, _, _ = case("tiny-pre")
    copy_ = adapt(model).analysis(torch.float64)
    names = [f"blocks.0.attn.{p}.{s}" for p in "qkvo" for s in ("weight", "bias")]
    ref = Reference(copy_.model, data, names=names, weighting="samples")
    op = HessianOperator(model, data, groups="block0.attn.*", loss=lambda a, b: a.loss(b))
    perm = ref.index(copy_, op.groups)
    assert abs(op.loss_value() - float(ref.loss(ref.x0))) < 1e-13
    V = probes(op.num_params, 3, seed=8)
    assert rel_err(op @ V, ref.hessian()[perm][:, perm] @ V) < 1e-10


def test_scipy_eigsh_agrees_with_dense_eigvalsh():
    model, data, ref, H, _ = case("tiny-pre")
    op = HessianOperator(model, data, groups="block1.mlp.*")
    perm = ref.index(op.adapter, op.groups)
    want = torch.linalg.eigvalsh(H[perm][:, perm]).numpy()
    top = eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False, tol=1e-12)
    bottom = eigsh(op.to_scipy(), k=2, which="SA", return_eigenvectors=False, tol=1e-12)
    np.testing.assert_allclose(np.sort(top), want[-2:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.sort(bottom), want[:2], rtol=1e-9, atol=1e-12)


# ----- the user's model stays untouched --------------------------------------------------------------
def test_user_model_is_never_modified():
    model = mz.tiny(tie_weights=True)
    model.train()
    model.blocks[0].attn.q.weight.requires_grad_(False)
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    data = make_data(adapt(model))
    for route in ROUTES:
        op = HessianOperator(model, data, kind="functional", route=route)
        assert not op.adapter.model.training and op.adapter.model is not model
        op @ probes(op.num_params, 2)
        op.gradient()
        op.restrict("block0.attn.q", "embed") @ probes(op.group_sizes["embed"], 1)
    assert "head" not in op.groups  # tied to embed: counted once
    dense_hessian(model, data, groups="block0.ln1")
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and p.dtype == torch.float64
        assert p.requires_grad == before[n][1] and p.grad is None
    assert model.head.weight is model.wte.weight


# ----- errors ------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_clear_message():
    model, data, _, _, _ = case("tiny-post")
    with pytest.raises(ValueError, match=r"unknown parameter group 'block9.attn.q'.*block0.attn.q"):
        HessianOperator(model, data, groups=["block0.attn.q", "block9.attn.q"])
    with pytest.raises(ValueError, match="unknown parameter group 'nothing.*'"):
        HessianOperator(model, data, groups="nothing.*")
    with pytest.raises(ValueError, match="selected twice"):
        HessianOperator(model, data, groups=["block0.attn.*", "block0.attn.q"])
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, [])
    with pytest.raises(ValueError, match="needs a loss on the logits"):
        HessianOperator(model, data, kind="ggn", loss=lambda a, b: a.loss(b))
    with pytest.raises(ValueError, match="kind='hess'"):
        HessianOperator(model, data, kind="hess")
    with pytest.raises(ValueError, match="route='reverse'"):
        HessianOperator(model, data, route="reverse")
    unlabelled = {**data[1], "labels": torch.full_like(data[1]["input_ids"], IGNORE_INDEX)}
    with pytest.raises(ValueError, match=r"batches \[1\] have no labelled target"):
        HessianOperator(model, [data[0], unlabelled])


def test_non_finite_loss_names_the_batch():
    model, data, _, _, _ = case("tiny-post")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.wpe.weight[5] = float("nan")  # position 5 exists only in the 6-token batch
    with pytest.raises(FloatingPointError, match=r"batch 1 is nan.*dtype=torch.float64"):
        HessianOperator(broken, [data[1], data[0]])


def test_dense_guard_states_sizes_and_alternatives():
    model, data, _, _, _ = case("tiny-post")
    with pytest.raises(MemoryError) as err:
        dense_hessian(model, data, groups="block0.attn.q", max_bytes=10_000)
    msg = str(err.value)
    for part in ("72 x 72", "41,472 bytes", "max_bytes=10,000", "groups=", "lanczos", "hutchpp_trace", "slq_density"):
        assert part in msg, (part, msg)
    assert dense_hessian(model, data, groups="block0.attn.q", max_bytes=72 * 72 * 8).shape == (72, 72)
