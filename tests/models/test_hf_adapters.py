"""Hugging Face adapters: float64 faithfulness, layer semantics, fused-weight views, the user's model
left untouched, and clear errors on bad input. Models are tiny and built from configs (tests/model_zoo.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from tests.model_zoo import HF_BUILDERS, bert, gpt2, gpt_neox, llama, mistral, qwen2, random_batch
from tscope_widgets.models import adapt
from tscope_widgets.models.adapter import IGNORE_INDEX
from tscope_widgets.models.hf import ATTN_IMPLEMENTATION, SUPPORTED

LLAMA_FAMILY = {"llama": llama, "qwen2": qwen2, "mistral": mistral}


def _mlm_labels(batch: dict[str, Tensor]) -> Tensor:
    labels = batch["input_ids"].clone()
    labels[:, ::2] = IGNORE_INDEX
    return labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)


# ----- an independent float64 Llama forward -----------------------------------------------------
def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def llama_reference(model: nn.Module, input_ids: Tensor, mask: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
    """Pure-torch float64 forward of a Llama/Qwen2/Mistral model: (block outputs, final norm output, logits).

    RMSNorm, rotary embeddings (Su et al., 2021) on positions 0..S-1, grouped-query softmax attention
    with causal and key-padding masks, SwiGLU MLP. Only the weights and the rotary ``inv_freq``
    buffer are taken from ``model``.
    """
    cfg = model.config
    P = {k: v.detach().double() for k, v in model.named_parameters()}
    eps = cfg.rms_norm_eps
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // nh
    B, S = input_ids.shape
    x = P["model.embed_tokens.weight"][input_ids]  # [B, S, D]
    inv_freq = model.model.rotary_emb.inv_freq.double()  # [dh/2]
    angles = torch.arange(S, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [S, dh/2]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)  # [S, dh]

    def rotate(t: Tensor) -> Tensor:  # [B, h, S, dh]
        t1, t2 = t[..., : dh // 2], t[..., dh // 2 :]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    def proj(h: Tensor, name: str) -> Tensor:
        y = h @ P[f"{name}.weight"].T
        return y + P[f"{name}.bias"] if f"{name}.bias" in P else y

    allowed = torch.ones(S, S, dtype=torch.bool).tril() & mask.bool()[:, None, None, :]  # [B, 1, S, S]
    outputs = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        h = _rms(x, P[f"{p}.input_layernorm.weight"], eps)
        q = proj(h, f"{p}.self_attn.q_proj").view(B, S, nh, dh).transpose(1, 2)  # [B, nh, S, dh]
        k = proj(h, f"{p}.self_attn.k_proj").view(B, S, nkv, dh).transpose(1, 2)  # [B, nkv, S, dh]
        v = proj(h, f"{p}.self_attn.v_proj").view(B, S, nkv, dh).transpose(1, 2)  # [B, nkv, S, dh]
        q, k = rotate(q), rotate(k)
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)  # [B, nh, S, dh]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)  # [B, nh, S, S]
        weights = scores.masked_fill(~allowed, torch.finfo(torch.float64).min).softmax(-1)
        attn = (weights @ v).transpose(1, 2).reshape(B, S, nh * dh)  # [B, S, nh*dh]
        x = x + proj(attn, f"{p}.self_attn.o_proj")
        h = _rms(x, P[f"{p}.post_attention_layernorm.weight"], eps)
        gated = F.silu(proj(h, f"{p}.mlp.gate_proj")) * proj(h, f"{p}.mlp.up_proj")
        x = x + proj(gated, f"{p}.mlp.down_proj")
        outputs.append(x)
    final = _rms(x, P["model.norm.weight"], eps)
    head = P.get("lm_head.weight", P["model.embed_tokens.weight"])  # tied head: only the embedding is listed
    return outputs, final, final @ head.T


def reference_loss(logits: Tensor, input_ids: Tensor, mask: Tensor) -> Tensor:
    """Next-token cross-entropy over pairs whose predicting and predicted positions are both tokens."""
    valid = (mask[:, :-1] == 1) & (mask[:, 1:] == 1)
    return F.cross_entropy(logits[:, :-1][valid], input_ids[:, 1:][valid])


@pytest.mark.parametrize("name", list(LLAMA_FAMILY))
def test_llama_family_float64_matches_independent_reference(name):
    model = LLAMA_FAMILY[name]()
    adapter = adapt(model)
    copy = adapter.analysis(torch.float64)
    batch = random_batch(adapter, B=3, S=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    valid = mask.bool()
    ref_blocks, ref_final, ref_logits = llama_reference(model, ids, mask)

    with torch.no_grad():
        out = copy.forward_from_embeddings(copy.embed(ids), mask, layers=[0, 1, "final"])
        for layer, ref in [(0, ref_blocks[0]), (1, ref_blocks[1]), ("final", ref_final)]:
            assert_close(out[layer][valid], ref[valid], rtol=0, atol=1e-12)
        assert_close(copy.logits(ids, mask)[valid], ref_logits[valid], rtol=0, atol=1e-12)
        assert_close(copy.loss(batch), reference_loss(ref_logits, ids, mask), rtol=0, atol=1e-12)

        # Why the analysis copy is patched: transformers' own float64 forward runs RMSNorm and the rotary
        # angles (and eager softmax) in float32, so it misses the float64 reference by ~1e-7. Worse, eager
        # casts scores + finfo(float64).min to float32, i.e. -inf: the all-masked query row of left
        # padding (row 2) turns NaN, and 0 * NaN in the next layer's masked keys spreads it to the row.
        hf_logits = {}
        for impl in ("sdpa", "eager"):
            model.set_attn_implementation(impl)
            hf_logits[impl] = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            hf_error = (hf_logits[impl] - ref_logits)[:2][valid[:2]].abs().max()  # rows 0-1: no left padding
            assert 1e-9 < hf_error < 1e-5, (
                f"{impl}: transformers now matches float64; is the patch still needed?"
            )
        assert hf_logits["eager"][2].isnan().all() and hf_logits["sdpa"].isfinite().all()
        assert model.config._attn_implementation == "eager"  # the user's setting, not touched by analysis()
    assert copy.precision_note is not None and "float64" in copy.precision_note
    assert adapter.precision_note is not None and "analysis" in adapter.precision_note


@pytest.mark.parametrize("name", list(HF_BUILDERS))
def test_analysis_copy_is_smooth_in_float64(name):
    """Forward-mode AD, reverse mode and double backward on the copy agree with finite differences.

    Central differences with Richardson extrapolation (error O(h^4)) at h = 1e-4: a float32 operation
    inside the forward adds ~1e-7 relative noise, which the quotient turns into ~1e-3 relative error;
    float64 throughout leaves ~1e-11."""
    user = adapt(HF_BUILDERS[name]())
    adapter = user.analysis(torch.float64)
    batch = random_batch(adapter, B=2, S=5, seed=1)
    mask = batch["attention_mask"]
    x0 = adapter.embed(batch["input_ids"]).detach()
    g = torch.Generator().manual_seed(2)
    v = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    w = torch.randn(x0.shape[:2] + (adapter.d_model,), generator=g, dtype=torch.float64) * mask[..., None]

    def f(x: Tensor) -> Tensor:
        return (adapter.forward_from_embeddings(x, mask, ["final"])["final"] * w).sum()

    def grad_f(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x)[0]

    def richardson(fn, h: float = 1e-4) -> Tensor:
        def central(step):
            return (fn(x0 + step * v) - fn(x0 - step * v)) / (2 * step)

        return (4 * central(h / 2) - central(h)) / 3

    with torch.no_grad():
        fd = richardson(f)
    _, jvp = torch.func.jvp(f, (x0,), (v,))
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x, create_graph=True)
    assert_close(jvp, fd, rtol=1e-9, atol=1e-10)
    assert_close((grad * v).sum(), fd, rtol=1e-9, atol=1e-10)
    (hvp,) = torch.autograd.grad((grad * v).sum(), x)  # double backward
    assert_close(hvp, richardson(grad_f), rtol=1e-7, atol=1e-9)

    if (
        name in LLAMA_FAMILY
    ):  # the check has teeth: transformers' own float64 forward (RMSNorm in float32) fails it
        adapter = user  # f and grad_f now run the user's model (sdpa: reverse mode only)
        with torch.no_grad():
            fd = richardson(f)
        assert ((grad_f(x0) * v).sum() - fd).abs() > 1e-7 * fd.abs()


# ----- the user's model is never modified ---------------------------------------------------------
def _snapshot(model: nn.Module) -> dict:
    return {
        "modules": {n: (type(m), m.training) for n, m in model.named_modules()},
        "params": {
            n: (p.dtype, p.device, p.requires_grad, p.grad, p.detach().clone())
            for n, p in model.named_parameters()
        },
        "buffers": {n: (b.dtype, b.device, b.detach().clone()) for n, b in model.named_buffers()},
        "attn": model.config._attn_implementation,
        "config": model.config.to_dict(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"]
    assert after["attn"] == before["attn"]
    assert after["config"] == before["config"]
    assert before["params"].keys() == after["params"].keys()
    for n, (dtype, device, req, grad, value) in before["params"].items():
        dtype2, device2, req2, grad2, value2 = after["params"][n]
        assert (dtype2, device2, req2, grad2) == (dtype, device, req, grad), n
        assert torch.equal(value2, value), n
    for n, (dtype, device, value) in before["buffers"].items():
        assert after["buffers"][n][:2] == (dtype, device) and torch.equal(after["buffers"][n][2], value), n


def _exercise(copy, batch) -> None:
    """Forward, backward, double backward and a parameter gradient on the analysis copy."""
    x = copy.embed(batch["input_ids"]).detach().requires_grad_(True)
    out = copy.forward_from_embeddings(x, batch["attention_mask"], ["final"])["final"]
    (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    g.sum().backward()
    for p in copy.model.parameters():
        p.requires_grad_(True)
    copy.loss(batch).backward()


@pytest.mark.parametrize("name", list(HF_BUILDERS))
def test_analysis_leaves_user_model_untouched(name):
    model = HF_BUILDERS[name]()
    model.train()
    next(iter(model.parameters())).requires_grad_(False)
    before = _snapshot(model)
    adapter = adapt(model)
    copy = adapter.analysis(torch.float64)
    batch = random_batch(adapter, B=3, S=5)
    if not adapter.causal:
        batch["labels"] = _mlm_labels(batch)
    _exercise(copy, batch)
    _assert_same(before, _snapshot(model))
    assert model.config._attn_implementation == "sdpa" and copy.attn_implementation == ATTN_IMPLEMENTATION
    assert copy.model.config is not model.config
    assert not any(m.training for m in copy.model.modules())
    # Same dtype and device: the copy's parameters share the user's storage (no memory cost).
    assert copy.embedding.weight.data_ptr() == adapter.embedding.weight.data_ptr()


def test_bf16_model_analysed_in_float64():
    model = llama().to(torch.bfloat16)
    before = _snapshot(model)
    adapter = adapt(model)
    copy = adapter.analysis(torch.float64)
    assert {p.dtype for p in copy.model.parameters()} == {torch.float64}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for (n, p), (n2, p2) in zip(model.named_parameters(), copy.model.named_parameters(), strict=True):
        assert n == n2 and torch.equal(p.double(), p2), n
    batch = random_batch(adapter, B=2, S=5)
    out = copy.forward_from_embeddings(copy.embed(batch["input_ids"]), batch["attention_mask"], [0, "final"])
    assert out["final"].dtype == torch.float64 and copy.logits(**batch).dtype == torch.float64
    _exercise(copy, batch)
    _assert_same(before, _snapshot(model))
    assert adapter.precision_note is None  # bf16: transformers' float32 upcasts are what one wants


def test_bf16_analysis_copy_keeps_transformers_float32_upcasts():
    """Below float32 the dtype-faithful functions compute in float32, like transformers."""
    model = llama()
    model.set_attn_implementation("eager")
    adapter = adapt(model.to(torch.bfloat16))
    copy = adapter.analysis()
    assert copy.dtype == torch.bfloat16 and copy.attn_implementation == ATTN_IMPLEMENTATION
    batch = random_batch(adapter, B=2, S=5)
    with torch.no_grad():
        assert_close(copy.logits(**batch), adapter.logits(**batch), rtol=0, atol=0)


# ----- layer semantics --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(HF_BUILDERS))
def test_layers_match_hf_hidden_states(name):
    """Layer l = block l's raw output; "final" = after the final norm (BERT: last block). HF's last
    ``hidden_states`` entry is after the final norm, so layer L-1 is checked against the norm's input."""
    adapter = adapt(HF_BUILDERS[name]()).analysis()
    L = adapter.num_layers
    batch = random_batch(adapter, B=3, S=5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    captured = {}
    norm = adapter.final_norm
    handle = (
        norm.register_forward_pre_hook(lambda m, a: captured.update(x=a[0])) if norm is not None else None
    )
    with torch.no_grad():
        hs = adapter.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
        ).hidden_states
        out = adapter.forward_from_embeddings(adapter.embed(ids), mask, layers="all")
        final = adapter.forward_from_embeddings(adapter.embed(ids), mask, layers=["final", -1])
    if handle is not None:
        handle.remove()
    assert len(hs) == L + 1
    for layer in range(L - 1):
        assert_close(out[layer], hs[layer + 1], rtol=0, atol=0)
    assert_close(final["final"], hs[L], rtol=0, atol=0)
    if norm is None:  # post-norm BERT: the last block's output is final
        assert name == "bert"
        assert_close(out[L - 1], hs[L], rtol=0, atol=0)
    else:
        assert_close(out[L - 1], captured["x"], rtol=0, atol=0)
        assert_close(norm(out[L - 1]), final["final"], rtol=0, atol=0)
    assert_close(final[L - 1], out[L - 1], rtol=0, atol=0)
    # Source l = the residual stream entering block l, HF's hidden_states[l] (restarting from it is
    # checked for every adapter in test_adapter_contract.py).
    with torch.no_grad():
        for source in range(L):
            assert_close(adapter.source_activations(ids, mask, source), hs[source], rtol=0, atol=0)


# ----- fused weights ----------------------------------------------------------------------------
def test_gpt2_fused_qkv_slices_are_the_projections():
    adapter = adapt(gpt2())
    groups = adapter.param_groups()
    params = dict(adapter.model.named_parameters())
    attn = adapter.blocks[1].attn
    x = torch.randn(2, 4, adapter.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q, k, v = attn.c_attn(x).split(adapter.d_model, dim=-1)
    for part, expected in zip("qkv", (q, k, v), strict=True):
        w, b = (s.view(params) for s in groups[f"block1.attn.{part}"])
        assert w.shape == (adapter.d_model, adapter.d_model) and b.shape == (adapter.d_model,)
        assert w.untyped_storage().data_ptr() == attn.c_attn.weight.untyped_storage().data_ptr()
        assert_close(x @ w + b, expected, rtol=0, atol=1e-14)  # Conv1D: y = x W + b


def test_gpt_neox_interleaved_qkv_views_are_the_projections():
    adapter = adapt(gpt_neox())
    groups = adapter.param_groups()
    params = dict(adapter.model.named_parameters())
    attn = adapter.blocks[0].attention
    nh = adapter.config.num_attention_heads
    dh = adapter.d_model // nh
    x = torch.randn(2, 4, adapter.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    qkv = attn.query_key_value(x).view(2, 4, nh, 3 * dh)  # as GPTNeoXAttention.forward splits it
    expected = qkv.chunk(3, dim=-1)  # each [B, S, nh, dh]
    for part, exp in zip("qkv", expected, strict=True):
        w, b = (s.view(params) for s in groups[f"block0.attn.{part}"])
        assert w.shape == (nh, dh, adapter.d_model) and b.shape == (nh, dh)
        assert w.untyped_storage().data_ptr() == attn.query_key_value.weight.untyped_storage().data_ptr()
        assert_close(torch.einsum("bsd,hed->bshe", x, w) + b, exp, rtol=0, atol=1e-14)


def test_group_names_and_head_presence():
    expected_head = {
        "gpt2": False,
        "llama": True,
        "qwen2": False,
        "mistral": True,
        "gpt_neox": True,
        "bert": True,
    }
    for name, build in HF_BUILDERS.items():
        adapter = adapt(build())
        groups = adapter.param_groups()
        per_block = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.in", "mlp.out", "ln1", "ln2"]
        names = ["embed"] + [f"block{i}.{g}" for i in range(adapter.num_layers) for g in per_block]
        names += [] if name == "bert" else ["ln_f"]
        names += ["head"] if expected_head[name] else []
        assert list(groups) == names, name
    llama_groups = adapt(llama()).param_groups()
    assert [s.name for s in llama_groups["block0.mlp.in"]] == [
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
    ]
    bert_head = [s.name for s in adapt(bert()).param_groups()["head"]]
    assert "bert.embeddings.word_embeddings.weight" not in bert_head and "cls.predictions.bias" in bert_head
    bert_embed = [s.name for s in adapt(bert()).param_groups()["embed"]]
    assert bert_embed[-2:] == ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]


# ----- bare models, unsupported models, bad input -------------------------------------------------
@pytest.mark.parametrize("name", list(HF_BUILDERS))
def test_bare_model_without_head(name):
    lm = HF_BUILDERS[name]()
    full = adapt(lm)
    bare = adapt(full.base)
    assert type(bare) is type(full) and not bare.has_lm_head and "head" not in bare.param_groups()
    batch = random_batch(full, B=2, S=5)
    with torch.no_grad():
        x = bare.embed(batch["input_ids"])
        got = bare.forward_from_embeddings(x, batch["attention_mask"], layers=[0, "final"])
        want = full.forward_from_embeddings(x, batch["attention_mask"], layers=[0, "final"])
    assert_close(got[0], want[0], rtol=0, atol=0)
    assert_close(got["final"], want["final"], rtol=0, atol=0)
    for call in (lambda: bare.logits(**batch), lambda: bare.loss({**batch, "labels": batch["input_ids"]})):
        with pytest.raises(TypeError, match="no language-modelling head"):
            call()


def test_unsupported_model_names_supported_families():
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    cfg = Qwen2Config(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    for model in (Qwen2ForSequenceClassification(cfg), nn.Linear(2, 2)):
        with pytest.raises(TypeError, match=type(model).__name__) as err:
            adapt(model)
        for family in ("GPT-2", "Llama", "Qwen2", "Mistral", "GPT-NeoX", "BERT"):
            assert family in str(err.value)
    assert len(SUPPORTED) == 6


def test_bad_inputs_raise_clear_errors():
    adapter = adapt(gpt2())
    batch = random_batch(adapter, B=2, S=5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    x = adapter.embed(ids)
    with pytest.raises(ValueError, match="unknown layer"):
        adapter.forward_from_embeddings(x, mask, layers=["middle"])
    with pytest.raises(ValueError, match="out of range"):
        adapter.forward_from_embeddings(x, mask, layers=[2])
    with pytest.raises(ValueError, match="before source"):
        adapter.forward_from_embeddings(x, mask, layers=[0], source=1)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 16\)"):
        adapter.loss({"input_ids": ids + 16, "attention_mask": mask})
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 16\)"):
        adapter.logits(ids - 1)
    with pytest.raises(TypeError, match="integer token ids"):
        adapter.loss({"input_ids": ids.double()})
    with pytest.raises(ValueError, match="does not match input_ids"):
        adapter.loss({"input_ids": ids, "attention_mask": mask[:, :4]})
    with pytest.raises(ValueError, match="does not match the embeddings"):
        adapter.forward_from_embeddings(x, mask[:, :4], layers=[0])
    with pytest.raises(ValueError, match=r"shape \[batch, seq, 8\]"):
        adapter.forward_from_embeddings(x[..., :4], mask, layers=[0])
    with pytest.raises(TypeError, match="analysis"):
        adapter.forward_from_embeddings(x.float(), mask, layers=[0])
    with pytest.raises(ValueError, match="exceeds the model's n_positions=16"):
        adapter.logits(torch.zeros(1, 17, dtype=torch.long))
    mlm = adapt(bert())
    with pytest.raises(ValueError, match="masked LM needs batch\\['labels'\\]"):
        mlm.loss({"input_ids": ids, "attention_mask": mask})


def test_masked_lm_loss_matches_manual_cross_entropy():
    adapter = adapt(bert()).analysis()
    batch = random_batch(adapter, B=3, S=5)
    batch["labels"] = _mlm_labels(batch)
    with torch.no_grad():
        logits = adapter.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        keep = batch["labels"] != IGNORE_INDEX
        assert_close(
            adapter.loss(batch), F.cross_entropy(logits[keep], batch["labels"][keep]), rtol=0, atol=1e-14
        )
    assert adapter.causal is False


@pytest.mark.parametrize("name", list(HF_BUILDERS))
def test_analysis_copy_returns_attention_weights(name):
    """sdpa returns no attention weights; the copy's attention does, rows summing to 1 over allowed keys."""
    adapter = adapt(HF_BUILDERS[name]()).analysis()
    batch = random_batch(adapter, B=3, S=5)
    mask = batch["attention_mask"]
    with torch.no_grad():
        attentions = adapter.model(**batch, output_attentions=True).attentions
    assert len(attentions) == adapter.num_layers
    real_q = mask.bool()[:, None, :, None]  # [B, 1, S, 1]: real query positions
    blocked = (mask == 0)[:, None, None, :]  # [B, 1, 1, S]: padded keys
    if adapter.causal:
        blocked = blocked | torch.ones(5, 5, dtype=torch.bool).triu(1)  # and future keys
    for weights in attentions:  # [B, nh, S, S]
        row_sums = weights.sum(-1, keepdim=True)[real_q.expand(weights.shape[:3] + (1,))]
        assert_close(row_sums, torch.ones_like(row_sums), rtol=0, atol=1e-14)
        assert (weights.masked_select(blocked & real_q) == 0).all()


def test_gpt2_reorder_and_upcast_attn_is_float64_on_the_copy():
    """GPT-2's ``reorder_and_upcast_attn`` computes scores in float32 under eager attention (and then
    refuses a float64 model: float32 scores + float64 mask fail its dtype check); the copy stays float64."""
    plain, upcast = gpt2(), gpt2()
    upcast.config.reorder_and_upcast_attn = True
    for block in upcast.transformer.h:
        block.attn.reorder_and_upcast_attn = True
    batch = random_batch(adapt(plain), B=3, S=5)
    valid = batch["attention_mask"].bool()
    with torch.no_grad():
        want = adapt(plain).analysis().logits(**batch)
        assert_close(adapt(upcast).analysis().logits(**batch)[valid], want[valid], rtol=0, atol=1e-14)
        upcast.set_attn_implementation("eager")
        with pytest.raises(RuntimeError, match="upcasting"):
            adapt(upcast).logits(**batch)
