"""Adam's preconditioned sharpness in SpectrumTracker against a dense float64 reference, and no side effects."""

from __future__ import annotations

import math

import numpy as np
import torch

from tests import model_zoo as mz
from tests.kernels.test_curvature import Reference, make_data
from tscope_widgets.kernels.stability import adam_stability_threshold
from tscope_widgets.models.registry import adapt
from tscope_widgets.tracking import SpectrumHistory, SpectrumTracker


def train(model, data, opt, steps, tracker=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = adapt(model).loss(data[0])
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.step(model)


def test_preconditioned_sharpness_matches_dense_eigenvalues_of_scaled_hessian():
    model = mz.tiny(n_layer=1)
    data = make_data(adapt(model))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    train(model, data, opt, 3)
    tracker = SpectrumTracker(model, data, every=1, optimizer=opt, tol=1e-10, max_iter=200, trace_matvecs=0,
                              dtype=torch.float64)
    tracker.step()
    h = tracker.history
    # reference: dense Hessian by torch.autograd.functional.hessian, P from the optimiser state by hand
    copy_ = adapt(model).analysis(torch.float64)
    ref = Reference(copy_.model, data)
    H = ref.hessian()
    params = dict(model.named_parameters())
    diag = []
    for n in ref.names:
        st = opt.state[params[n]]
        v_hat = st["exp_avg_sq"].double() / (1 - 0.99 ** float(st["step"]))
        diag.append((v_hat.sqrt() + 1e-6).reshape(-1))
    d = torch.cat(diag).rsqrt()
    top = torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).max().item()
    assert h.precond_lambda_max[0] == np.float64(h.precond_lambda_max[0])
    np.testing.assert_allclose(h.precond_lambda_max[0], top, rtol=1e-8)
    # not the raw sharpness: the preconditioner changes it by orders of magnitude
    assert abs(h.lambda_max[0] - top) > 0.5 * abs(top) or abs(h.lambda_max[0]) < 0.5 * abs(top)
    np.testing.assert_allclose(h.adam_threshold[0], (2 + 2 * 0.8) / (0.2 * 0.01))
    assert h.adam_threshold[0] == adam_stability_threshold(0.01, 0.8)
    assert math.isnan(h.threshold[0])  # no SGD line for Adam


def test_tracker_leaves_adam_training_bitwise_unchanged():
    runs = []
    for track in (False, True):
        model = mz.tiny(n_layer=1)
        data = make_data(adapt(model))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        tracker = SpectrumTracker(model, data, every=2, optimizer=opt, trace_matvecs=0, max_iter=20) if track else None
        train(model, data, opt, 4, tracker)
        runs.append([p.detach().clone() for p in model.parameters()])
        if track:
            h = tracker.history
            assert np.isfinite(h.precond_lambda_max).all() and len(h) == 2
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_sgd_records_no_adam_values_and_old_histories_load():
    model = mz.tiny(n_layer=1)
    data = make_data(adapt(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = SpectrumTracker(model, data, every=1, optimizer=opt, trace_matvecs=0, max_iter=10)
    tracker.step()
    h = tracker.history
    assert math.isnan(h.precond_lambda_max[0]) and math.isnan(h.adam_threshold[0])
    np.testing.assert_allclose(h.threshold[0], 38.0)
    state = h.state_dict()
    del state["precond_lambda_max"], state["adam_threshold"]  # a file written before these fields
    back = SpectrumHistory.from_state(state, h.meta())
    assert math.isnan(back.precond_lambda_max[0]) and back.threshold[0] == h.threshold[0]
