"""iter_attention: mean/std/min/max of attention weights and entropy against Hugging Face's own eager
``output_attentions=True`` with padding, rollout against its formula, streaming, resume and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from tests.model_zoo import bert, gpt2, llama, random_batch, tiny
from tscope_widgets import AttentionSnapshot, iter_attention
from tscope_widgets.jobs import Checkpoint
from tscope_widgets.kernels.attention import attention_entropy, attention_rollout
from tscope_widgets.models import adapt


def _data(model, N=7, S=6, seed=0, left_padding=True):
    batch = random_batch(adapt(model), N, S, pad=True, seed=seed)  # unpadded, right- and left-padded rows
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not left_padding:  # turn the left-padded rows into right-padded ones
        left = mask[:, 0] == 0
        ids[left], mask[left] = ids[left].flip(-1), mask[left].flip(-1)
    return ids, mask


def _reference_stats(per_sample, valid):
    """mean, std (Bessel), min, max, count over samples of ``per_sample [N, *cells]`` where ``valid``."""
    v = valid.expand_as(per_sample)
    n = v.sum(0).double()
    x = torch.where(v, per_sample, torch.nan)
    mean = x.nansum(0) / n
    var = torch.where(v, (per_sample - mean) ** 2, 0.0).sum(0) / (n - 1)
    lo = torch.where(v, per_sample, math.inf).amin(0)
    hi = torch.where(v, per_sample, -math.inf).amax(0)
    return mean, var.sqrt(), lo, hi, n


# transformers' eager Llama takes the softmax in float32 even in a float64 model: weights agree to ~1e-7,
# and a left-padded query (no key to attend) gives NaN that spreads to the whole row in the next layer, so
# its reference uses right padding only (our analysis copy keeps float64 and stays finite).
@pytest.mark.parametrize("builder,tol,left", [(gpt2, 1e-12, True), (bert, 1e-12, True), (llama, 1e-6, False)])
def test_weights_and_entropy_match_eager_output_attentions(builder, tol, left):
    model = builder()
    ids, mask = _data(model, left_padding=left)
    snaps = list(iter_attention(model, (ids, mask), batch_size=3, dtype=torch.float64))
    assert [s.done for s in snaps] == [3, 6, 7] and [s.batches for s in snaps] == [1, 2, 3]
    assert all(s.total == 7 for s in snaps) and isinstance(snaps[-1], AttentionSnapshot)
    final = snaps[-1]
    # the reference: the user's model itself, switched to transformers' eager attention
    assert model.config._attn_implementation == "sdpa"  # the user's model is left as it is
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    cells = (real[:, :, None] & real[:, None, :])[:, None]  # [N, 1, S, S]
    for lay, att in enumerate(out.attentions):  # [N, nh, S, S]
        mean, std, lo, hi, n = _reference_stats(att, cells)
        st = final.weights[lay]
        seen = n > 0
        assert torch.equal(st.count, n.expand(st.shape))
        for got, want in ((st.mean, mean), (st.std, std), (st.min, lo), (st.max, hi)):
            assert_close(got[seen.expand(st.shape)], want.expand(st.shape)[seen.expand(st.shape)], rtol=tol, atol=tol)
        ent = -torch.special.xlogy(att, att).sum(-1)  # [N, nh, S]
        mean_e, std_e, _, _, n_e = _reference_stats(ent, real[:, None])
        assert_close(final.entropy[lay].mean, mean_e, rtol=tol, atol=tol)
        assert_close(final.entropy[lay].std, std_e, rtol=tol, atol=tol)
        assert torch.equal(final.entropy[lay].count, n_e.expand(final.entropy[lay].shape))
    assert final.weights[0].count.min() < 7 and final.weights[0].count.max() == 7  # padding excluded


def _rollout_reference(att_layers, real):
    """Per-sample rollout on the real positions only, by the formula, with Python loops: [L, N, S, S] (NaN off)."""
    L, (N, S) = len(att_layers), real.shape
    out = torch.full((L, N, S, S), math.nan, dtype=torch.float64)
    for b in range(N):
        r = real[b].nonzero().flatten()
        R = torch.eye(len(r), dtype=torch.float64)
        for lay in range(L):
            A = att_layers[lay][b].mean(0)[r][:, r]
            Ah = 0.5 * A + 0.5 * torch.eye(len(r), dtype=torch.float64)
            Ah = Ah / Ah.sum(-1, keepdim=True)
            R = Ah @ R
            out[lay, b, r[:, None], r[None, :]] = R
    return out


def test_rollout_matches_its_formula_on_a_tiny_model():
    model = tiny(n_layer=3)
    ids, mask = _data(model, N=5, S=6, seed=3)
    final = list(iter_attention(model, (ids, mask), batch_size=2))[-1]
    att = adapt(model).analysis().attention_weights(ids, mask)  # {block: [N, nh, S, S]}
    ref = _rollout_reference([att[b] for b in range(3)], mask.bool())
    for lay in range(3):
        valid = ~torch.isnan(ref[lay])
        want = ref[lay].nansum(0) / valid.sum(0)
        seen = valid.any(0)
        assert torch.equal(final.rollout[lay].count, valid.sum(0).double())
        assert_close(final.rollout[lay].mean[seen], want[seen], rtol=1e-12, atol=1e-14)
        assert_close(final.rollout[lay].max[seen], torch.where(valid, ref[lay], -math.inf).amax(0)[seen])
    # rollout rows stay distributions; one layer of rollout is 0.5 A + 0.5 I
    R = attention_rollout([att[0], att[1]], mask)
    real_rows = mask.bool()
    assert_close(R[:, real_rows].sum(-1), torch.ones(2, int(real_rows.sum()), dtype=torch.float64))
    unpadded = torch.ones_like(mask)
    R0 = attention_rollout([att[0]], unpadded)[0, 0]
    assert_close(R0, 0.5 * att[0][0].mean(0) + 0.5 * torch.eye(6, dtype=torch.float64))


def test_tiny_attention_weights_from_its_head_weights():
    """The weights read by the hook are softmax(x q (x k)ᵀ/√d_h) of block 0's normalised input."""
    model = tiny()
    a = adapt(model)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    att = a.attention_weights(ids, layers=[0])[0][0]  # [nh, S, S]
    x = model.blocks[0].ln1(model.wte(ids) + model.wpe.weight[:5])[0]
    attn = model.blocks[0].attn
    for h in range(2):
        w = a.head_weights(0, h)
        sl = slice(4 * h, 4 * h + 4)
        s = (x @ w.q + attn.q.bias[sl]) @ (x @ w.k + attn.k.bias[sl]).T / 2.0
        s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), -math.inf)
        assert_close(att[h], torch.softmax(s, -1), rtol=1e-12, atol=1e-14)
    assert_close(attention_entropy(att)[:, 0], torch.zeros(2, dtype=torch.float64))  # first query: one key


def test_resume_is_bit_identical():
    model = gpt2()
    ids, mask = _data(model, N=7)
    kw = dict(batch_size=2, layers=[0, 1])
    full = list(iter_attention(model, (ids, mask), **kw))
    first = full[1]
    checkpoint = Checkpoint(tensors=first.state_dict(), meta=first.meta())
    resumed = list(iter_attention(model, (ids, mask), resume=checkpoint, **kw))
    assert [s.done for s in resumed] == [6, 7] and resumed[-1].batches == 4
    a, b = full[-1].state_dict(), resumed[-1].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed[-1].data_sha256 == full[-1].data_sha256
    with pytest.raises(ValueError, match="batch_size=2; this run has 3"):
        list(iter_attention(model, (ids, mask), resume=checkpoint, batch_size=3, layers=[0, 1]))
    with pytest.raises(ValueError, match=r"layers=\[0, 1\]; this run has \[1\]"):
        iter_attention(model, (ids, mask), resume=checkpoint, batch_size=2, layers=[1])
    with pytest.raises(ValueError, match="other data"):
        iter_attention(model, (ids.flip(0), mask.flip(0)), resume=checkpoint, **kw)
    other = gpt2()
    with torch.no_grad():
        other.transformer.h[0].attn.c_attn.weight.add_(1e-3)
    with pytest.raises(ValueError, match="another model"):
        iter_attention(other, (ids, mask), resume=checkpoint, **kw)
    with pytest.raises(ValueError, match="not 'attention'"):
        iter_attention(model, (ids, mask), resume=Checkpoint(tensors={}, meta={"kernel": "sensitivity"}), **kw)


def test_bad_input_errors():
    model = tiny()
    ids = torch.randint(0, 11, (3, 5))
    with pytest.raises(ValueError, match="'linear'.*not distributions"):
        iter_attention(tiny(attention="linear"), ids)
    with pytest.raises(ValueError, match="'final' is the final norm"):
        iter_attention(model, ids, layers="final")
    with pytest.raises(ValueError, match="out of range"):
        iter_attention(model, ids, layers=[2])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        iter_attention(model, ids, batch_size=0)
    with pytest.raises(ValueError, match="max_seq_len must be an int >= 1 or None"):
        iter_attention(model, ids, max_seq_len=0)
    with pytest.raises(ValueError, match="token ids must lie in"):
        list(iter_attention(model, ids + 20))
    # the user's sdpa model returns no weights: a clear error, and the kernel itself uses the copy
    user = adapt(gpt2())
    with pytest.raises(RuntimeError, match="returned no weights.*'sdpa'.*analysis"):
        user.attention_weights(torch.tensor([[1, 2, 3]]))
    snap = list(iter_attention(model, ids, layers=-1, max_seq_len=4))[-1]
    assert snap.layers == [1] and snap.seq_len == 4 and snap.weights[-1].shape == (2, 4, 4)
