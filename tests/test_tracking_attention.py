"""AttentionTracker and AttentionHistory: records equal head_spectra and a hand-computed entropy, training is
bitwise unchanged, the history round-trips through safetensors, and bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import model_zoo
from tscope_widgets import (
    AttentionHistory,
    AttentionTracker,
    head_spectra,
    load_attention_history,
    save_attention_history,
)
from tscope_widgets.kernels.attention import KINDS
from tscope_widgets.models import adapt


def _probe(adapter):
    return model_zoo.random_batch(adapter, 3, 6, pad=True, seed=4)


def test_record_equals_head_spectra_and_entropy_by_hand():
    model = model_zoo.gpt2()
    adapter = adapt(model)
    probe = _probe(adapter)
    tracker = AttentionTracker(model, probe, every=1, dtype=torch.float64)
    assert tracker.step(step=7)
    h = tracker.history
    spec = head_spectra(model, dtype=torch.float64)
    assert h.steps.tolist() == [7] and h.layers == [0, 1] and h.n_heads == 2
    for kind in KINDS:
        np.testing.assert_array_equal(h.singular_values[kind][0], spec.singular_values[kind].numpy())
        np.testing.assert_array_equal(h.condition_number[kind][0], spec.condition_number[kind].numpy())
        np.testing.assert_array_equal(h.stable_rank[kind][0], spec.stable_rank[kind].numpy())
    # entropy by hand from transformers' own eager attention of the user's model
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = model(**probe, output_attentions=True).attentions  # per layer [B, n, S, S]
    real = probe["attention_mask"].bool()
    for lay in range(2):
        a = att[lay]
        ent = -(torch.where(a > 0, a * a.log(), 0.0)).sum(-1)  # [B, n, S]
        want = torch.where(real[:, None], ent, 0.0).sum((0, 2)) / real.sum()
        np.testing.assert_allclose(h.entropy[0, lay], want.numpy(), rtol=1e-10, atol=1e-12)


def test_training_is_bitwise_unchanged_and_history_round_trips(tmp_path):
    def train(with_tracker: bool):
        model = model_zoo.tiny(n_layer=2, n_head=2)
        model.train()
        adapter = adapt(model)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        tracker = AttentionTracker(model, _probe(adapter), every=2) if with_tracker else None
        g = torch.Generator().manual_seed(1)
        for step in range(5):
            batch = {"input_ids": torch.randint(0, 11, (2, 6), generator=g)}
            opt.zero_grad()
            loss = adapter.loss(batch)
            loss.backward()
            if tracker is not None:
                grads = [p.grad.clone() for p in model.parameters()]
                rng = torch.get_rng_state()
                tracker.step(step=step)
                assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True))
                assert torch.equal(rng, torch.get_rng_state()) and model.training
            opt.step()
        return model, tracker

    plain, _ = train(False)
    tracked, tracker = train(True)
    for (name, a), b in zip(plain.named_parameters(), tracked.parameters(), strict=True):
        assert torch.equal(a, b), name
    h = tracker.history
    assert h.steps.tolist() == [0, 2, 4]
    assert h.singular_values["qk"].shape == (3, 2, 2, 4) and h.entropy.shape == (3, 2, 2)
    assert np.isfinite(h.entropy).all() and (h.entropy >= 0).all() and (h.entropy <= np.log(6)).all()
    assert not np.array_equal(h.singular_values["q"][0], h.singular_values["q"][2])  # it does move

    path = save_attention_history(tmp_path / "attn.safetensors", tracker)
    back = load_attention_history(path)
    assert isinstance(back, AttentionHistory) and back.meta() == h.meta()
    for k, v in h.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
        assert back.state_dict()[k].dtype == v.dtype
    from tscope_widgets._atomic import write_safetensors

    other = write_safetensors(tmp_path / "o.safetensors", {"x": torch.zeros(2)}, {"format": "something else"})
    with pytest.raises(ValueError, match="not an attention history"):
        load_attention_history(other)
    damaged = h.state_dict()
    del damaged["entropy"]
    with pytest.raises(ValueError, match="lacks the array 'entropy'"):
        AttentionHistory.from_state(damaged, h.meta())


def test_subscribers_every_and_bad_arguments():
    model = model_zoo.llama()  # grouped-query attention: k, v of a query head are its key/value head's
    adapter = adapt(model)
    seen = []
    tracker = AttentionTracker(model, _probe(adapter)["input_ids"], every=3, layers=[1])
    tracker.subscribe(lambda h: seen.append(len(h)))
    assert [tracker.step() for _ in range(7)] == [True, False, False, True, False, False, True]
    assert seen == [1, 2, 3] and tracker.history.steps.tolist() == [0, 3, 6] and tracker.history.layers == [1]
    with pytest.raises(ValueError, match="every must be"):
        AttentionTracker(model, _probe(adapter), every=0)
    with pytest.raises(ValueError, match="'input_ids'"):
        AttentionTracker(model, [{"ids": 1}])
    with pytest.raises(ValueError, match="linear"):
        AttentionTracker(model_zoo.tiny(attention="linear"), {"input_ids": torch.zeros(1, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="out of range"):
        AttentionTracker(model, _probe(adapter), layers=[5])


def test_trainer_callback_records_at_global_steps(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = model_zoo.gpt2()
    tracker = AttentionTracker(model, _probe(adapt(model)), every=2)
    ids = torch.randint(3, 16, (8, 6), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             learning_rate=0.05, optim="sgd")
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[tracker.trainer_callback()]).train()
    h = tracker.history
    assert h.steps.tolist() == [1, 3] and np.isfinite(h.entropy).all()
    spec = head_spectra(model, dtype=torch.float64)  # the weights after the last step (4) differ from step 3's
    assert not np.array_equal(h.singular_values["q"][-1], spec.singular_values["q"].numpy())
