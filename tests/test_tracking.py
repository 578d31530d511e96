"""SpectrumTracker and SpectrumHistory: records against dense float64 Hessians, training untouched."""

import json
import logging
import math
import re

import numpy as np
import pytest
import torch

from tests import model_zoo
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.models import adapt
from tscope_widgets.tracking import SpectrumHistory, SpectrumTracker, layer_of_group, sgd_stability_threshold

CHEAP = dict(tol=1e-3, max_iter=20, trace_matvecs=6)


def _tiny(n_layer=2):
    return model_zoo.tiny(vocab_size=7, d_model=4, n_head=1, n_layer=n_layer, d_mlp=8, max_seq_len=6)


@pytest.fixture(scope="module")
def recorded():
    """One accurate record of a two-layer tiny model (432 parameters) and its dense Hessian."""
    model = _tiny()
    adapter = adapt(model)
    batch = model_zoo.random_batch(adapter, 3, 6)
    tracker = SpectrumTracker(model, batch, every=1, tol=1e-9, max_iter=432, trace_matvecs=90, blocks="layers",
                              density_every=1, density_steps=10)
    assert tracker.step() is True
    H = dense_hessian(adapter, batch)
    return model, adapter, batch, tracker.history, H


def test_record_matches_dense_spectrum_and_trace(recorded):
    _, _, _, h, H = recorded
    eig = torch.linalg.eigvalsh(H)
    assert len(h) == 1 and h.steps.tolist() == [0] and h.converged.tolist() == [True]
    scale = eig.abs().max().item()
    assert abs(h.lambda_max[0] - eig[-1].item()) <= 1e-7 * scale
    assert abs(h.lambda_min[0] - eig[0].item()) <= 1e-7 * scale
    assert h.trace_stderr[0] > 0
    assert abs(h.trace[0] - H.trace().item()) <= 4 * h.trace_stderr[0]
    assert h.matvecs[0] > 90
    assert h.loss[0] == pytest.approx(adapt(recorded[0]).loss(recorded[2]).item(), abs=1e-12)
    assert h.density.shape == (1, 512) and h.density_steps.tolist() == [0]
    assert h.density_grid[0, 0] < eig[0].item() and h.density_grid[0, -1] > eig[-1].item()


def test_block_lambda_max_equals_dense_layer_blocks(recorded):
    _, adapter, batch, h, H = recorded
    offsets = HessianOperator(adapter, batch).offsets
    assert h.block_labels == ["block0", "block1"]
    for i, layer in enumerate(h.block_labels):
        idx = torch.cat([torch.arange(s.start, s.stop) for g, s in offsets.items() if g.startswith(layer + ".")])
        want = torch.linalg.eigvalsh(H[idx][:, idx])[-1].item()
        assert h.block_lambda_max[0, i] == pytest.approx(want, rel=1e-7)


def test_grad_norms_equal_per_layer_autograd_norms(recorded):
    model, adapter, batch, h, _ = recorded
    model.zero_grad()
    adapter.loss(batch).backward()
    sq = {}
    for name, p in model.named_parameters():
        block = re.match(r"blocks\.(\d+)\.", name)
        layer = "embed" if name.startswith(("wte.", "wpe.")) else f"block{block[1]}" if block else "final"
        sq[layer] = sq.get(layer, 0.0) + p.grad.square().sum().item()
    model.zero_grad(set_to_none=True)
    assert h.grad_norm_labels == ["embed", "block0", "block1", "final"]
    want = np.sqrt([sq[k] for k in h.grad_norm_labels])
    np.testing.assert_allclose(h.grad_norms[0], want, rtol=1e-10)


def test_layer_of_group():
    names = ["embed", "block0.attn.q", "block12.mlp.out", "ln_f", "head"]
    assert [layer_of_group(g) for g in names] == ["embed", "block0", "block12", "final", "final"]


def test_warm_start_saves_products_on_a_slowly_changing_model():
    model = _tiny()
    batch = model_zoo.random_batch(adapt(model), 3, 6)
    warm = SpectrumTracker(model, batch, every=1, tol=1e-6, max_iter=400, trace_matvecs=0)
    warm.step()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-6 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    warm.step()
    cold = []
    for seed in range(2):
        tracker = SpectrumTracker(model, batch, every=1, tol=1e-6, max_iter=400, trace_matvecs=0, seed=seed)
        tracker.step()
        cold.append(tracker.history)
    w = warm.history
    assert w.lambda_max[1] == pytest.approx(cold[0].lambda_max[0], rel=1e-8)
    assert w.lambda_min[1] == pytest.approx(cold[0].lambda_min[0], rel=1e-8)
    assert w.matvecs[1] <= 0.8 * min(c.matvecs[0] for c in cold)


def test_history_state_round_trip_bit_for_bit():
    model = _tiny(1)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = SpectrumTracker(model, batch, every=1, blocks=["block0.attn.q", "head"], density_every=2,
                              density_probes=2, density_steps=5, optimizer=opt, **CHEAP)
    for step in range(3):
        tracker.step(step=10 * step, loss=0.5 if step != 1 else None)
    h = tracker.history
    tensors = h.state_dict()
    assert all(isinstance(t, torch.Tensor) and t.is_contiguous() for t in tensors.values())
    meta = json.loads(json.dumps(h.meta(), allow_nan=False))  # what a Job checkpoint stores
    assert meta["done"] == 3 and meta["total"] is None
    back = SpectrumHistory.from_state(tensors, meta)
    tensors["lambda_max"][0] = 123.0  # the rebuilt history does not share memory with the tensors
    assert len(back) == 3 and back.density_steps.tolist() == [0, 20] and back.total is None
    for name, value in h.to_dict().items():
        other = back.to_dict()[name]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape, name
            np.testing.assert_array_equal(value, other)  # NaN == NaN here
        else:
            assert value == other, name
    assert np.isnan(back.train_loss[1]) and back.train_loss[0] == 0.5
    assert back.block_labels == ["block0.attn.q", "head"] and back.grad_norm_labels == ["embed", "block0", "final"]
    np.testing.assert_allclose(back.threshold, 76.0)  # (2 + 2 * 0.9) / 0.05


def test_from_state_refuses_other_states():
    h = SpectrumHistory.empty(["embed", "final"], ["b"])
    h.append(dict(steps=0, loss=1.0, train_loss=1.0, lambda_max=2.0, lambda_min=-1.0, trace=1.0, trace_stderr=0.1,
                  grad_norms=[1.0, 2.0], block_lambda_max=[0.5], threshold=4.0, lr=0.5, matvecs=10, converged=True))
    tensors, meta = h.state_dict(), h.meta()
    with pytest.raises(ValueError, match="not a spectrum history"):
        SpectrumHistory.from_state(tensors, {**meta, "kind": "landscape_slice"})
    with pytest.raises(ValueError, match=r"lacks arrays \['lambda_min'\]"):
        SpectrumHistory.from_state({k: v for k, v in tensors.items() if k != "lambda_min"}, meta)
    with pytest.raises(ValueError, match=r"'steps' is float64.*expected int64"):
        SpectrumHistory.from_state({**tensors, "steps": tensors["steps"].double()}, meta)
    with pytest.raises(ValueError, match=r"'grad_norms'.*one per label"):
        SpectrumHistory.from_state(tensors, {**meta, "grad_norm_labels": ["embed", "block0", "final"]})
    with pytest.raises(ValueError, match=r"'lambda_max' has shape \(2,\); expected 1 records"):
        SpectrumHistory.from_state({**tensors, "lambda_max": torch.zeros(2, dtype=torch.float64)}, meta)
    with pytest.raises(ValueError, match="total"):
        SpectrumHistory.from_state(tensors, {**meta, "total": "3"})


def test_every_is_respected_and_steps_label_records():
    model = _tiny(1)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    tracker = SpectrumTracker(model, batch, every=3, trace_matvecs=0, tol=1e-3, max_iter=10)
    recorded = [tracker.step() for _ in range(7)]
    assert recorded == [True, False, False, True, False, False, True]
    assert tracker.history.steps.tolist() == [0, 3, 6]
    tracker2 = SpectrumTracker(model, batch, every=2, trace_matvecs=0, tol=1e-3, max_iter=10)
    for step in range(100, 105):
        tracker2.step(step=step)
    assert tracker2.history.steps.tolist() == [100, 102, 104]
    assert tracker2.history.to_dict()["done"] == 3


def test_sgd_loop_is_bitwise_identical_with_and_without_tracker():
    def train(with_tracker: bool):
        model = _tiny(1)
        model.train()
        adapter = adapt(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        tracker = SpectrumTracker(model, every=2, optimizer=opt, blocks="layers", density_every=1,
                                  density_probes=2, density_steps=4, **CHEAP) if with_tracker else None
        g = torch.Generator().manual_seed(1)
        for step in range(5):
            batch = {"input_ids": torch.randint(0, 7, (2, 5), generator=g)}
            opt.zero_grad()
            loss = adapter.loss(batch)
            loss.backward()
            if tracker is not None:
                grads = [p.grad.clone() for p in model.parameters()]
                rng = torch.get_rng_state()
                tracker.step(batch=batch, step=step, loss=loss)
                assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True))
                assert torch.equal(rng, torch.get_rng_state())
                assert model.training
            opt.step()
        return model, tracker

    plain, _ = train(False)
    tracked, tracker = train(True)
    for (name, a), b in zip(plain.named_parameters(), tracked.parameters(), strict=True):
        assert torch.equal(a, b), name
    h = tracker.history
    assert h.steps.tolist() == [0, 2, 4] and np.isfinite(h.lambda_max).all()
    np.testing.assert_allclose(h.threshold, (2 + 2 * 0.9) / 0.1)
    np.testing.assert_allclose(h.lr, 0.1)


@pytest.mark.parametrize(
    "kw",
    [{}, {"momentum": 0.9}, {"momentum": 0.5, "dampening": 0.3}, {"momentum": 0.9, "nesterov": True},
     {"momentum": 0.7, "nesterov": True, "weight_decay": 0.5}, {"weight_decay": 2.0}],
)
def test_sgd_threshold_is_where_torch_sgd_diverges_on_a_quadratic(kw):
    lr = 0.1
    threshold = sgd_stability_threshold(lr, kw.get("momentum", 0.0), dampening=kw.get("dampening", 0.0),
                                        nesterov=kw.get("nesterov", False), weight_decay=kw.get("weight_decay", 0.0))

    # two independent coordinates: curvature 3% below and 3% above the threshold
    curvature = torch.tensor([0.97, 1.03], dtype=torch.float64) * threshold
    theta = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=lr, **kw)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * curvature * theta.square()).sum().backward()
        opt.step()
    below, above = theta.detach().abs().tolist()
    assert below < 1e-3 and above > 1e3


def test_threshold_for_plain_lr_and_nan_for_adam():
    assert sgd_stability_threshold(0.5) == 4.0 and math.isnan(sgd_stability_threshold(0.0))
    model = _tiny(1)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    plain = SpectrumTracker(model, batch, every=1, lr=0.25, trace_matvecs=0, tol=1e-3, max_iter=10)
    plain.step()
    assert plain.history.threshold.tolist() == [8.0] and plain.history.lr.tolist() == [0.25]
    adam = SpectrumTracker(model, batch, every=1, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                           trace_matvecs=0, tol=1e-3, max_iter=10)
    adam.step()
    assert math.isnan(adam.history.threshold[0]) and adam.history.lr[0] == 1e-3
    none = SpectrumTracker(model, batch, every=1, trace_matvecs=0, tol=1e-3, max_iter=10)
    none.step()
    assert math.isnan(none.history.threshold[0]) and math.isnan(none.history.lr[0])


def test_trainer_callback_drives_a_tiny_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = model_zoo.gpt2()
    adapter = adapt(model)
    eval_batch = model_zoo.random_batch(adapter, 2, 5, pad=False)
    ids = torch.randint(3, 16, (8, 6), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    tracker = SpectrumTracker(model, eval_batch, every=2, tol=1e-4, max_iter=30, trace_matvecs=0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             learning_rate=0.05, optim="sgd")
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[tracker.trainer_callback()]).train()
    h = tracker.history
    assert h.steps.tolist() == [1, 3]  # Trainer's global_step after the first and third update
    assert np.isfinite(h.lambda_max).all() and np.all(h.lambda_max >= h.lambda_min)
    np.testing.assert_allclose(h.lr, [0.05 * 3 / 4, 0.05 * 1 / 4])  # linear decay, read after each step
    np.testing.assert_allclose(h.threshold, 2 / h.lr)
    assert h.grad_norm_labels == ["embed", "block0", "block1", "final"]
    with pytest.raises(ValueError, match="needs fixed evaluation batches"):
        SpectrumTracker(model).trainer_callback()


def test_non_finite_loss_records_nans_and_training_continues(caplog):
    model = _tiny(1)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    tracker = SpectrumTracker(model, batch, every=1, blocks="layers", **CHEAP)
    with caplog.at_level(logging.WARNING, logger="tscope_widgets.tracking"):
        tracker.step(loss=float("nan"))
        saved = model.head.weight[0, 0].item()
        with torch.no_grad():
            model.head.weight[0, 0] = math.inf
        assert tracker.step() is True
        with torch.no_grad():
            model.head.weight[0, 0] = saved
        tracker.step()
    h = tracker.history
    assert len(h) == 3 and "recording NaNs" in caplog.text
    for row in (0, 1):
        assert math.isnan(h.lambda_max[row]) and math.isnan(h.trace[row]) and np.isnan(h.grad_norms[row]).all()
        assert np.isnan(h.block_lambda_max[row]).all() and h.matvecs[row] == 0
    assert np.isfinite(h.lambda_max[2]) and np.isfinite(h.grad_norms[2]).all()


def test_subscribers_get_copies_and_their_errors_are_logged(caplog):
    model = _tiny(1)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    tracker = SpectrumTracker(model, every=1, trace_matvecs=0, tol=1e-3, max_iter=10)
    seen = []
    unsubscribe = tracker.subscribe(lambda h: seen.append(h))

    def broken(_):
        raise RuntimeError("boom")

    tracker.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="tscope_widgets.tracking"):
        tracker.step(batch=batch)
    assert "boom" in caplog.text
    unsubscribe()
    tracker.step(batch=batch)
    assert [len(h) for h in seen] == [1]
    seen[0].lambda_max[0] = 123.0
    assert tracker.history.lambda_max[0] != 123.0
    assert tracker.adapter.model is model and tracker.data is None


def test_blocks_argument_forms():
    model = _tiny(2)
    assert SpectrumTracker(model, blocks="layers").blocks["block1"][0] == "block1.attn.q"
    assert SpectrumTracker(model, blocks=["head", "block0.attn.*"]).blocks == {
        "head": ["head"], "block0.attn.*": ["block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o"]}
    assert SpectrumTracker(model, blocks={"qk": ["block0.attn.q", "block0.attn.k"]}).blocks == {
        "qk": ["block0.attn.q", "block0.attn.k"]}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"every": 0}, "every"),
        ({"blocks": ["nope"]}, "unknown parameter group 'nope'"),
        ({"blocks": "heads"}, "blocks must be"),
        ({"trace_matvecs": 2}, "trace_matvecs"),
        ({"k": 0}, "k must be"),
        ({"tol": -1.0}, "tol"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_arguments_fail_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        SpectrumTracker(_tiny(1), **kw)


def test_recording_without_data_or_batch_is_an_error():
    tracker = SpectrumTracker(_tiny(1), every=2, trace_matvecs=0)
    with pytest.raises(ValueError, match="no evaluation data"):
        tracker.step()
    assert tracker.step() is False  # the second call does not record, so needs no data


def test_kernels_hold_the_formula_and_never_import_the_tracker():
    """The threshold is pure maths (kernels/stability.py); the tracker lives above the kernels."""
    import ast
    from pathlib import Path

    import tscope_widgets
    from tscope_widgets import kernels

    assert kernels.sgd_stability_threshold is sgd_stability_threshold
    assert tscope_widgets.SpectrumTracker is SpectrumTracker and tscope_widgets.SpectrumHistory is SpectrumHistory
    above = ("tracking", "widgets", "jobs", "cli", "distributed", "export")
    for path in Path(kernels.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module.removeprefix("tscope_widgets.")
                assert not name.startswith(above), f"{path.name} imports {node.module}"
