"""Per-head parameter groups ``block{l}.attn.{q,k,v,o}.head{h}``: manual slicing of every storage layout
(fused GPT-2 ``c_attn``, interleaved NeoX ``query_key_value``, grouped-query Llama/Mistral), exact cover of
their projection's group, views not copies, selection rules, and a Hessian block of one head's queries
against a dense float64 Hessian built without tscope's curvature code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.model_zoo import bert, gpt2, gpt_neox, llama, mistral, qwen2, random_batch, tiny
from tests.models.test_heads import _manual
from tscope_widgets import HessianOperator, block_norms
from tscope_widgets.kernels.curvature import resolve_groups
from tscope_widgets.models import adapt

BUILDERS = {"tiny": tiny, "gpt2": gpt2, "gpt_neox": gpt_neox, "llama": llama, "qwen2": qwen2,
            "mistral": mistral, "bert": bert}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_head_groups_match_manual_slicing_and_cover_their_projection(kind):
    model = BUILDERS[kind]()
    adapter = adapt(model)
    params = dict(model.named_parameters())
    plain = adapter.param_groups()
    groups = adapter.param_groups(heads=True)
    assert list(groups)[: len(plain)] == list(plain)  # the plain groups first, unchanged
    for lay in range(adapter.num_layers):
        heads = adapter.layer_heads(lay)
        manual = _manual(model, kind, lay)  # {head: (q [D, dh], k, v, o [dh, D])}, sliced by hand
        for p, part in enumerate("qkvo"):
            n = heads.n_kv_heads if part in "kv" else heads.n_heads
            names = [g for g in groups if g.startswith(f"block{lay}.attn.{part}.head")]
            assert names == [f"block{lay}.attn.{part}.head{h}" for h in range(n)]
            for h in range(n):
                weight = groups[names[h]][0].view(params)
                want = manual[h * (heads.group if part in "kv" else 1)][p]
                if kind != "gpt2":  # Linear stores [out, in]: the head's rows (q, k, v) or columns (o)
                    want = want.T
                assert torch.equal(weight, want)
                storage = params[groups[names[h]][0].name].untyped_storage().data_ptr()
                assert weight.untyped_storage().data_ptr() == storage  # a view, not a copy
            # the heads of a projection cover its group exactly once, but the output bias (no head owns it)
            got = {s.name: torch.zeros_like(params[s.name]) for s in plain[f"block{lay}.attn.{part}"]}
            want = {name: torch.zeros_like(t) for name, t in got.items()}
            for name in names:
                for s in groups[name]:
                    s.view(got).add_(1)
            for s in plain[f"block{lay}.attn.{part}"]:
                if not (part == "o" and s.name.endswith("bias")):
                    s.view(want).add_(1)
            for name in got:
                assert torch.equal(got[name], want[name]), (kind, lay, part, name)

def test_fused_biases_by_hand():
    model = gpt2()
    g = adapt(model).param_groups(heads=True)
    p = dict(model.named_parameters())
    D, dh = 8, 4
    b = p["transformer.h.1.attn.c_attn.bias"]
    for part_i, part in enumerate("qkv"):
        for h in range(2):
            (_, bias) = g[f"block1.attn.{part}.head{h}"]
            assert torch.equal(bias.view(p), b[part_i * D + h * dh : part_i * D + (h + 1) * dh])
    model = gpt_neox()
    g = adapt(model).param_groups(heads=True)
    p = dict(model.named_parameters())
    b = p["gpt_neox.layers.0.attention.query_key_value.bias"]
    for part_i, part in enumerate("qkv"):
        for h in range(2):
            (_, bias) = g[f"block0.attn.{part}.head{h}"]
            start = 3 * dh * h + part_i * dh
            assert torch.equal(bias.view(p), b[start : start + dh])
    model = qwen2()
    g = adapt(model).param_groups(heads=True)
    p = dict(model.named_parameters())
    (_, bias) = g["block0.attn.k.head1"]
    assert torch.equal(bias.view(p), p["model.layers.0.self_attn.k_proj.bias"][4:8])


def test_selection_patterns_and_errors():
    adapter = adapt(llama())  # 2 query heads, 1 key/value head
    only_q = adapter.param_groups(heads="block*.attn.q.head*")
    assert [g for g in only_q if ".head" in g] == ["block0.attn.q.head0", "block0.attn.q.head1",
                                                  "block1.attn.q.head0", "block1.attn.q.head1"]
    assert "block0.attn.k.head1" not in adapter.param_groups(heads=True)  # one key/value head
    with pytest.raises(ValueError, match="matches no head group"):
        adapter.param_groups(heads="block9.attn.q.head*")
    with pytest.raises(TypeError, match="heads must be"):
        adapter.param_groups(heads=1)
    groups = adapter.param_groups(heads=True)
    assert resolve_groups(groups, None) == list(adapter.param_groups())  # None: no head groups
    assert resolve_groups(groups, "block0.attn.*") == [f"block0.attn.{p}" for p in "qkvo"]
    assert resolve_groups(groups, "block1.attn.v.head*") == ["block1.attn.v.head0"]
    assert resolve_groups(groups, ["block0.attn.q.head1"]) == ["block0.attn.q.head1"]


def _c_attn_reference():
    """GPT-2, one batch, and ``torch.autograd.functional.hessian`` of the LM loss over block 0's whole
    ``c_attn`` (weight then bias, flattened), built without tscope's curvature code."""
    model = gpt2()
    copy_ = adapt(model).analysis(torch.float64)
    batch = random_batch(copy_, 3, 6, seed=1)
    wname, bname = "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias"
    params = dict(copy_.model.named_parameters())
    W, b = params[wname].detach(), params[bname].detach()

    def loss(x):
        w, bias = x[: W.numel()].view(W.shape), x[W.numel():]
        out = torch.func.functional_call(copy_.model, {wname: w, bname: bias}, (),
                                         {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        z = out.logits[:, :-1]
        valid = ((batch["attention_mask"][:, 1:] == 1) & (batch["attention_mask"][:, :-1] == 1)).reshape(-1)
        ce = F.cross_entropy(z.reshape(-1, z.shape[-1]), batch["input_ids"][:, 1:].reshape(-1), reduction="none")
        return (ce * valid).sum() / valid.sum()

    H = torch.autograd.functional.hessian(loss, torch.cat([W.reshape(-1), b]), vectorize=True)
    D, dh = 8, 4

    def index(part: int, h: int) -> torch.Tensor:
        """Flat positions of head ``h``'s columns of part ``part`` (0 q, 1 k, 2 v): weight [D, dh], then bias."""
        cols = torch.arange(part * D + h * dh, part * D + (h + 1) * dh)
        return torch.cat([(torch.arange(D)[:, None] * 3 * D + cols[None]).reshape(-1), W.numel() + cols])

    return model, batch, H, index


def test_hessian_of_one_heads_queries_matches_the_dense_block():
    """``HessianOperator(groups="block0.attn.q.head1")`` on GPT-2 (fused ``c_attn``) against the dense
    reference, and an off-diagonal block (head 1's queries against head 0's keys)."""
    model, batch, H, index = _c_attn_reference()
    idx, kidx = index(0, 1), index(1, 0)
    op = HessianOperator(model, [batch], groups="block0.attn.q.head1", dtype=torch.float64)
    assert op.shape == (idx.numel(), idx.numel()) == (36, 36)
    dense = op @ torch.eye(op.shape[0], dtype=torch.float64)
    ref = H[idx][:, idx]
    assert float((dense - ref).norm() / ref.norm()) < 1e-10
    off = HessianOperator(model, [batch], groups="block0.attn.q.head1", col_groups="block0.attn.k.head0",
                          dtype=torch.float64)
    got = off @ torch.eye(off.shape[1], dtype=torch.float64)
    assert float((got - H[idx][:, kidx]).norm() / H[idx][:, kidx].norm()) < 1e-10


def test_block_norms_per_head_match_the_dense_blocks():
    model, batch, H, index = _c_attn_reference()
    res = block_norms(model, [batch], "block0.attn.*.head*", exact=True, dtype=torch.float64)
    heads = [(p, h) for p in range(3) for h in range(2)]  # q, k, v heads of block 0 (o is another tensor)
    names = [f"block0.attn.{'qkv'[p]}.head{h}" for p, h in heads]
    assert res.labels == names + ["block0.attn.o.head0", "block0.attn.o.head1"]
    for a, (pa, ha) in enumerate(heads):
        for c, (pc, hc) in enumerate(heads):
            want = H[index(pa, ha)][:, index(pc, hc)].norm()
            assert abs(float(res.frobenius[a, c]) - float(want)) <= 1e-9 * float(want) + 1e-14
        block = H[index(pa, ha)][:, index(pa, ha)]
        assert float(res.spectral[a]) == pytest.approx(float(torch.linalg.eigvalsh(block).abs().max()), rel=1e-9)
