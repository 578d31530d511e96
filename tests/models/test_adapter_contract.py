"""The ModelAdapter contract, checked on every adapter: TinyTransformer and each Hugging Face family.

Parameter groups partition the parameters by views; restarting the forward at any source block
reproduces the full forward; causal models are causal, padding is invisible to real tokens; the LM
loss is the shifted cross-entropy over real tokens; ``analysis()`` copies cheaply.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.model_zoo import HF_BUILDERS, assert_groups_partition, bert, random_batch, tiny
from tscope_widgets.models import ModelAdapter, adapt
from tscope_widgets.models.adapter import IGNORE_INDEX

BUILDERS = {"tiny": tiny, "tiny_post": lambda: tiny(norm="post", tie_weights=True), **HF_BUILDERS}


def _batch(adapter: ModelAdapter, seed: int = 0) -> dict:
    batch = random_batch(adapter, B=3, S=5, seed=seed)
    if not adapter.causal:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        labels[:, ::2] = IGNORE_INDEX
        batch["labels"] = labels
    return batch


def _final(adapter: ModelAdapter, input_ids, mask):
    return adapter.forward_from_embeddings(adapter.embed(input_ids), mask, layers=["final"])["final"]


@pytest.fixture(params=list(BUILDERS))
def adapter(request) -> ModelAdapter:
    return adapt(BUILDERS[request.param]()).analysis(torch.float64)


def test_param_groups_partition_parameters(adapter):
    assert_groups_partition(adapter)
    total = sum(
        s.view(dict(adapter.model.named_parameters())).numel()
        for g in adapter.param_groups().values()
        for s in g
    )
    assert total == sum(p.numel() for p in adapter.model.parameters())


def test_every_parameter_that_moves_the_loss_is_grouped(adapter):
    for p in adapter.model.parameters():
        p.requires_grad_(True)
    adapter.loss(_batch(adapter)).backward()
    grouped = {s.name for g in adapter.param_groups().values() for s in g}
    moving = {n for n, p in adapter.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moving <= grouped and moving


def test_bert_pooler_is_excluded():
    """BertModel carries a pooler that no LM loss uses: it is the only part left out of the groups."""
    assert_groups_partition(adapt(adapt(bert()).base), excluded=("pooler.",))


def test_restart_from_any_source_reproduces_full_forward(adapter):
    batch = _batch(adapter)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    L = adapter.num_layers
    with torch.no_grad():
        full = adapter.forward_from_embeddings(adapter.embed(ids), mask, layers="all")
        full_final = _final(adapter, ids, mask)
        for source in range(L):
            x = adapter.source_activations(ids, mask, source)
            assert x.shape == (3, 5, adapter.d_model)
            out = adapter.forward_from_embeddings(
                x, mask, layers=list(range(source, L)) + ["final"], source=source
            )
            assert list(out) == list(range(source, L)) + ["final"]
            for layer in range(source, L):
                assert_close(out[layer], full[layer], rtol=0, atol=1e-13)
            assert_close(out["final"], full_final, rtol=0, atol=1e-13)


def test_layers_are_canonical_and_ordered(adapter):
    batch = _batch(adapter)
    x = adapter.embed(batch["input_ids"])
    out = adapter.forward_from_embeddings(x, batch["attention_mask"], layers=["final", -1, 0, 1])
    assert list(out) == ["final", adapter.num_layers - 1, 0]  # -1 and 1 are the same block here
    assert all(h.shape == (3, 5, adapter.d_model) and h.dtype == torch.float64 for h in out.values())
    assert adapter.resolve_layers("all") == list(range(adapter.num_layers))


def test_causality_and_padding(adapter):
    """Causal: outputs before j ignore inputs from j on. All: padded tokens change no real output."""
    batch = _batch(adapter)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        base = _final(adapter, ids, mask)
        changed = ids.clone()
        changed[:, 3:] = (changed[:, 3:] + 1) % adapter.vocab_size
        after = _final(adapter, changed, mask)
        early = mask[:, :3] == 1  # a padded query sees no real key; its output is not a model output
        if adapter.causal:
            assert_close(after[:, :3][early], base[:, :3][early], rtol=0, atol=1e-14)
        assert not torch.allclose(after[:, 3:], base[:, 3:])
        if not adapter.causal:  # bidirectional: later tokens do reach earlier positions
            assert not torch.allclose(after[:, :3][early], base[:, :3][early])

        padded = ids.masked_fill(mask == 0, 0) + (mask == 0) * 5  # other tokens at every padded position
        assert (padded != ids).any()
        after = _final(adapter, padded, mask)
        real = mask.bool()
        assert_close(after[real], base[real], rtol=0, atol=1e-13)


def test_loss_is_shifted_cross_entropy_over_real_tokens(adapter):
    batch = _batch(adapter)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = adapter.logits(ids, mask)
        assert logits.shape == (3, 5, adapter.vocab_size)
        if adapter.causal:
            keep = (mask[:, :-1] == 1) & (mask[:, 1:] == 1)  # predicting and predicted positions are real
            want = F.cross_entropy(logits[:, :-1][keep], ids[:, 1:][keep])
        else:
            keep = batch["labels"] != IGNORE_INDEX
            want = F.cross_entropy(logits[keep], batch["labels"][keep])
        assert_close(adapter.loss(batch), want, rtol=0, atol=1e-14)
        if adapter.causal:  # explicit labels take precedence; -100 is ignored
            labels = ids.clone()
            labels[:, :3] = IGNORE_INDEX
            keep = (labels[:, 1:] != IGNORE_INDEX) & (mask[:, :-1] == 1)
            want = F.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
            assert_close(adapter.loss({**batch, "labels": labels}), want, rtol=0, atol=1e-14)


def test_analysis_copy_is_cheap_and_idempotent(adapter):
    assert adapter.is_analysis_copy and adapter.analysis(torch.float64) is adapter
    again = adapter.analysis(torch.float32)
    assert again is not adapter and again.dtype == torch.float32 and adapter.dtype == torch.float64
    assert {p.dtype for p in again.model.parameters()} == {torch.float32}
    assert "analysis copy" in repr(adapter)
    user = adapt(adapter.model)  # an adapter over a float64 model, not marked as a copy
    copy = user.analysis()
    for (name, p), q in zip(user.model.named_parameters(), copy.model.parameters(), strict=True):
        assert p.data_ptr() == q.data_ptr() and not q.requires_grad, name
    with pytest.raises(TypeError, match="floating point"):
        user.analysis(torch.int64)
