"""Per-head weights through the adapters: manual slicing of every storage layout, views not copies,
the row-vector convention against the model's own attention, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.model_zoo import bert, gpt2, gpt_neox, llama, mistral, qwen2, tiny
from tscope_widgets import head_weights
from tscope_widgets.models import ModelAdapter, adapt


def _manual(model, kind: str, layer: int) -> dict[int, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``{head: (q, k, v, o)}`` sliced by hand from the raw parameters of one block."""
    out = {}
    if kind == "tiny":
        a = model.blocks[layer].attn
        n, W = a.n_head, (a.q.weight, a.k.weight, a.v.weight, a.o.weight)
        n_kv, Wo = n, a.o.weight
    elif kind == "bert":
        a = model.bert.encoder.layer[layer].attention
        n = model.config.num_attention_heads
        W, n_kv, Wo = (a.self.query.weight, a.self.key.weight, a.self.value.weight), n, a.output.dense.weight
    elif kind in ("llama", "qwen2", "mistral"):
        a = model.model.layers[layer].self_attn
        n, n_kv = model.config.num_attention_heads, model.config.num_key_value_heads
        W, Wo = (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight), a.o_proj.weight
    if kind in ("tiny", "bert", "llama", "qwen2", "mistral"):
        dh = W[0].shape[0] // n
        rep = n // n_kv
        for h in range(n):
            g = h // rep
            out[h] = (
                W[0][h * dh : (h + 1) * dh].T,
                W[1][g * dh : (g + 1) * dh].T,
                W[2][g * dh : (g + 1) * dh].T,
                Wo[:, h * dh : (h + 1) * dh].T,
            )
    elif kind == "gpt2":
        a = model.transformer.h[layer].attn
        n, D = model.config.n_head, model.config.n_embd
        dh, W = D // n, a.c_attn.weight  # Conv1D [D, 3D]: columns q | k | v
        for h in range(n):
            c = slice(h * dh, (h + 1) * dh)
            out[h] = (W[:, c], W[:, D + h * dh : D + (h + 1) * dh], W[:, 2 * D + h * dh : 2 * D + (h + 1) * dh],
                      a.c_proj.weight[c, :])
    elif kind == "gpt_neox":
        a = model.gpt_neox.layers[layer].attention
        n, D = model.config.num_attention_heads, model.config.hidden_size
        dh, W = D // n, a.query_key_value.weight  # [3D, D]: rows [n, 3, dh]
        for h in range(n):
            rows = W[3 * dh * h : 3 * dh * (h + 1)]
            out[h] = (rows[:dh].T, rows[dh : 2 * dh].T, rows[2 * dh :].T, a.dense.weight[:, h * dh : (h + 1) * dh].T)
    return out


BUILDERS = {"tiny": tiny, "gpt2": gpt2, "gpt_neox": gpt_neox, "llama": llama, "qwen2": qwen2,
            "mistral": mistral, "bert": bert}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_head_weights_match_manual_slicing_and_share_storage(kind):
    model = BUILDERS[kind]()
    hw = head_weights(model)
    adapter = adapt(model)
    n = adapter.layer_heads(0).n_heads
    assert list(hw) == [(lay, h) for lay in range(adapter.num_layers) for h in range(n)]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for lay in range(adapter.num_layers):
        manual = _manual(model, kind, lay)
        assert len(manual) == n
        for h, (q, k, v, o) in manual.items():
            w = hw[(lay, h)]
            D, dh = q.shape
            assert w.q.shape == w.k.shape == w.v.shape == (D, dh) and w.o.shape == (dh, D)
            for got, want in zip((w.q, w.k, w.v, w.o), (q, k, v, o), strict=True):
                assert torch.equal(got, want)
                assert got.untyped_storage().data_ptr() in params  # a view of a parameter, not a copy
                assert got.untyped_storage().data_ptr() == want.untyped_storage().data_ptr()
    # Writes through a view land in the model.
    w = hw[(1, n - 1)]
    with torch.no_grad():
        w.q[0, -1] += 1.0
        w.o[-1, 0] += 2.0
    q, _, _, o = _manual(model, kind, 1)[n - 1]
    assert q[0, -1] == w.q[0, -1] and o[-1, 0] == w.o[-1, 0]


def test_grouped_query_heads_share_key_value_views():
    hw = head_weights(mistral())  # 4 query heads over 2 key/value heads
    for lay in range(2):
        assert hw[(lay, 0)].k.data_ptr() == hw[(lay, 1)].k.data_ptr()
        assert hw[(lay, 2)].v.data_ptr() == hw[(lay, 3)].v.data_ptr()
        assert hw[(lay, 1)].k.data_ptr() != hw[(lay, 2)].k.data_ptr()
        assert hw[(lay, 0)].q.data_ptr() != hw[(lay, 1)].q.data_ptr()


@pytest.mark.parametrize("kind", ["tiny", "gpt2", "bert"])
def test_convention_reproduces_the_models_attention(kind):
    """Recombining the head weights (with the biases) as ``softmax(x q (x k)ᵀ/√d_h) x v o`` gives the
    attention module's output: the row-vector convention is the model's."""
    torch.manual_seed(1)
    model = BUILDERS[kind]()
    adapter = adapt(model).analysis(torch.float64)
    B, S, D = 2, 5, adapter.d_model
    x = torch.randn(B, S, D, dtype=torch.float64)
    heads = adapter.layer_heads(1)
    if kind == "tiny":
        a = adapter.blocks[1].attn
        bq, bk, bv, bo = a.q.bias, a.k.bias, a.v.bias, a.o.bias
        want = a(x)
        causal = True
    elif kind == "gpt2":
        a = adapter.blocks[1].attn
        bq, bk, bv = a.c_attn.bias.view(3, -1)
        bo = a.c_proj.bias
        causal_mask = torch.zeros(S, S, dtype=torch.float64).masked_fill(
            ~torch.ones(S, S, dtype=torch.bool).tril(), torch.finfo(torch.float64).min
        )  # additive [S, S]: the block gets its causal mask from the model
        want = a(x, attention_mask=causal_mask.expand(B, 1, S, S))[0]
        causal = True
    else:
        a = adapter.blocks[1].attention
        s = a.self
        bq, bk, bv, bo = s.query.bias, s.key.bias, s.value.bias, a.output.dense.bias
        want = a.output.dense(s(x)[0].reshape(B, S, D))
        causal = False
    dh = heads.d_head
    out = bo.expand(B, S, D).clone()
    for h in range(heads.n_heads):
        w = heads.head(h)
        sl = slice(h * dh, (h + 1) * dh)
        q, k, v = x @ w.q + bq[sl], x @ w.k + bk[sl], x @ w.v + bv[sl]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if causal:
            scores = scores.masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), -math.inf)
        out = out + F.softmax(scores, -1) @ v @ w.o
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def test_unknown_layer_head_and_model_without_attention():
    model = gpt2()
    adapter = adapt(model)
    with pytest.raises(ValueError, match=r"layer 2 out of range.*\[-2, 2\)"):
        adapter.head_weights(2, 0)
    with pytest.raises(ValueError, match=r"layer 0: head 2 out of range.*heads 0\.\.1"):
        adapter.head_weights(0, 2)
    with pytest.raises(ValueError, match="'final' is the final norm"):
        head_weights(model, layers="final")
    with pytest.raises(TypeError, match="layer must be an int"):
        head_weights(model, layers=[1.5])
    assert adapter.head_weights(-1, 1).q.shape == (8, 4)

    class NoAttention(ModelAdapter):
        blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
        embedding = torch.nn.Embedding(3, 2)

        def _run(self, inputs_embeds, attention_mask):
            return inputs_embeds

        def _param_groups(self):
            return {}

    with pytest.raises(TypeError, match="does not expose attention modules"):
        head_weights(NoAttention(torch.nn.Module()))
    assert NoAttention(torch.nn.Module()).param_groups() == {}
    with pytest.raises(TypeError, match="no per-head parameter groups"):
        NoAttention(torch.nn.Module()).param_groups(heads=True)

    del model.transformer.h[1].attn.c_attn  # a modified model: clear error, not an AttributeError
    with pytest.raises(TypeError, match="lacks the attention projections"):
        head_weights(model)
    with pytest.raises(TypeError, match="no adapter for Linear"):
        head_weights(torch.nn.Linear(2, 2))
