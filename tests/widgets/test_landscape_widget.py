"""LandscapeWidget: numbers against direct evaluation, traits and wire messages, throttled rows from the job
thread, untrusted browser input, pause/stop, errors with partial rows, directions of every kind, the static
picture and the Bokeh export. No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import base64
import copy
import io
import logging
import math
import re
import threading
import time

import numpy as np
import pytest
import torch
from bokeh.models import GlyphRenderer, MultiLine, Rect
from IPython.utils.capture import capture_output
from PIL import Image

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_command, browser_update
from tests.widgets.pictures import heatmaps, picture_svgs
from tscope_widgets.figures.charts import color_domain, contour_levels, nice_ticks, resolve_log
from tscope_widgets.figures.landscape import contour_lines
from tscope_widgets.figures.svg import PALETTE, color_indices
from tscope_widgets.jobs import JobError, default_num_threads
from tscope_widgets.kernels.landscape import LandscapeSlice, quadratic_model, random_direction
from tscope_widgets.models.registry import adapt
from tscope_widgets.widgets import landscape as landscape_module
from tscope_widgets.widgets._static import stand_in_style
from tscope_widgets.widgets.landscape import WIDGET_TEXT, LandscapeWidget

WAIT = 60.0  # upper bound for waits; never reached unless something is broken
LOGGER = "tscope_widgets.widgets.landscape"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
RES = 5


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 11, (6, 6), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def finished(model, ids):
    """A widget that ran its 5 x 5 grid of random directions to the end."""
    w = LandscapeWidget(model, ids, resolution=RES, span=0.5)
    assert w.wait(WAIT)
    return w


def loss_at(model, ids, d1, d2, alpha: float, beta: float) -> float:
    """The reference: a perturbed deep copy of the model, through the adapter's ordinary loss."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p += alpha * d1[name].to(p.dtype) + beta * d2[name].to(p.dtype)
    with torch.no_grad():
        return float(adapt(m).loss({"input_ids": ids}))


def synthetic_kernel(delay: float = 0.0, fail_after: int | None = None, started: threading.Event | None = None):
    """A slice_2d stand-in: the bowl alpha^2 + beta^2 + 1, one row per ``delay`` seconds; raises after
    ``fail_after`` rows when given."""

    def kernel(_adapter, _data, _d1, _d2, alphas, betas, **_kwargs):
        A, B = alphas.numel(), betas.numel()
        bowl = alphas[:, None] ** 2 + betas[None, :] ** 2 + 1.0  # [A, B]

        def rows():
            if started is not None:
                started.set()
            loss = torch.full((A, B), math.nan, dtype=torch.float64)
            acc = torch.full((A, B), math.nan, dtype=torch.float64)
            for i in range(A):
                if fail_after is not None and i == fail_after:
                    raise RuntimeError("boom")
                if delay:
                    time.sleep(delay)
                loss[i], acc[i] = bowl[i], 1.0 / bowl[i]
                yield LandscapeSlice(alphas.clone(), betas.clone(), loss.clone(), acc.clone(), i + 1, 1.0, 1.0)

        return rows()

    return kernel


# ---------------------------------------------------------------------------- numbers and traits
def test_grid_values_match_the_loss_of_perturbed_copies(finished, model, ids):
    w = finished
    d1, d2 = w.directions
    np.testing.assert_array_equal(w.alphas, [-0.5, -0.25, 0.0, 0.25, 0.5])  # origin exactly on the grid
    np.testing.assert_array_equal(w.betas, w.alphas)
    for i, j in [(0, 0), (1, 3), (4, 2), (2, 2)]:
        ref = loss_at(model, ids, d1, d2, float(w.alphas[i]), float(w.betas[j]))
        assert w.loss[i, j] == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert w.origin_loss == pytest.approx(loss_at(model, ids, d1, d2, 0.0, 0.0), rel=1e-12)
    assert w.loss[2, 2] == pytest.approx(w.origin_loss, rel=1e-12)
    assert w.loss.shape == w.accuracy.shape == (RES, RES) and w.loss.dtype == np.float64
    assert np.isfinite(w.loss).all() and ((w.accuracy >= 0) & (w.accuracy <= 1)).all()
    # the directions are the seeded filter-normalised random ones
    gen = torch.Generator().manual_seed(0)
    ref1, ref2 = random_direction(model, generator=gen), random_direction(model, generator=gen)
    assert all(torch.equal(d1[n], ref1[n]) and torch.equal(d2[n], ref2[n]) for n in ref1)


def test_traits_after_a_run(finished):
    w, snap = finished, finished.snapshot
    assert (w.status, w.done, w.total, w.rows_done) == ("done", RES, RES, RES)
    assert w.message == f"done: {RES} of {RES} units" and w.eta == 0.0
    np.testing.assert_array_equal(w._loss, snap.loss.numpy())
    np.testing.assert_array_equal(w._accuracy, snap.accuracy.numpy())
    assert w.direction_kind == "random" and len(w.direction_labels) == 2
    assert w.direction_labels[0].startswith("random direction 1 (filter-normalised, seed 0, ‖d1‖ = ")
    assert w._quadratic is None and w._trajectory is None and w.eigenvalues is None
    assert w.quantity_options == ["loss", "accuracy"] and "nats" in w.quantity_titles["loss"]


def test_rows_arrive_from_the_job_thread_as_float32_buffers(model, ids):
    w = LandscapeWidget(model, ids, resolution=4, start=False)
    wire = Wire(w)
    seen_in = set()
    w.observe(lambda change: seen_in.add(threading.current_thread().name), names="_loss")
    w.start()
    deadline = time.monotonic() + WAIT
    while w.status != "done" and time.monotonic() < deadline:  # the main thread only watches
        time.sleep(0.01)
    assert w.status == "done" and w.rows_done == 4
    assert seen_in and all(name.startswith("tscope-job-") for name in seen_in)
    losses = wire.updates("_loss")
    assert losses and all(a.dtype == np.float32 and a.shape == (4, 4) for a in losses)
    np.testing.assert_array_equal(losses[-1], w.loss.astype(np.float32))
    for a in losses[:-1]:  # partial grids: finished rows first, NaN after
        done = np.isfinite(a).all(axis=1)
        assert (done == (np.arange(4) < done.sum())).all()
    data, buffers = next(m for m in wire.messages if "_loss" in m[0]["state"])
    k = data["buffer_paths"].index(["_loss", "view"])
    assert memoryview(buffers[k]).nbytes == 4 * 4 * 4  # the raw float32 grid, nothing more
    assert [r for r in wire.updates("rows_done")] == sorted(wire.updates("rows_done"))


def test_updates_are_throttled_and_coalesced(model, ids, monkeypatch):
    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel(delay=0.004))
    w = LandscapeWidget(model, ids, resolution=150, start=False, throttle=0.1)
    wire = Wire(w)
    t0 = time.monotonic()
    w.start()
    assert w.wait(WAIT)
    elapsed = time.monotonic() - t0
    updates = wire.updates("_loss")
    assert elapsed > 0.6  # 150 rows at >= 4 ms each
    assert 2 <= len(updates) <= elapsed / 0.1 + 2, (len(updates), elapsed)
    assert np.isfinite(updates[-1]).all() and wire.updates("status")[-1] == "done"
    expected = (w.alphas[:, None] ** 2 + w.betas[None, :] ** 2 + 1).astype(np.float32)
    np.testing.assert_array_equal(updates[-1], expected)


def test_an_error_shows_its_message_and_keeps_the_partial_rows(model, ids, monkeypatch):
    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel(fail_after=2))
    w = LandscapeWidget(model, ids, resolution=5)
    with pytest.raises(JobError, match="the landscape job failed: RuntimeError: boom"):
        w.wait(WAIT)
    assert w.status == "error" and w.message == "RuntimeError: boom"
    assert w.rows_done == 2 and w.done == 2 and w.total == 5
    assert np.isfinite(w.loss[:2]).all() and np.isnan(w.loss[2:]).all()
    assert np.isfinite(w._loss[:2]).all() and np.isnan(w._loss[2:]).all()
    html = w._picture_bundle()["text/html"]
    assert 'data-status="error"' in html and "RuntimeError: boom" in html
    (svg,) = picture_svgs(html.split("</style>", 1)[1])
    assert "grey: not computed" in svg


def test_pause_resume_stop_from_python_and_from_the_browser(model, ids, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel(delay=0.01, started=started))
    w = LandscapeWidget(model, ids, alphas=np.linspace(-1, 1, 3000), betas=[0.0, 1.0], throttle=0.05)
    assert started.wait(WAIT)
    browser_command(w, {"type": "command", "command": "pause"})
    assert w.status == "paused"
    time.sleep(0.1)  # the row in flight finishes, then the job parks
    parked = w.job.progress.done
    time.sleep(0.1)
    assert w.job.progress.done == parked and w.rows_done == parked and w.status == "paused"
    browser_command(w, {"type": "command", "command": "resume"})
    assert w.status == "running"
    deadline = time.monotonic() + WAIT
    while w.job.progress.done < parked + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    browser_command(w, {"type": "command", "command": "stop"})
    assert w.job.wait(WAIT) and w.status == "cancelled"
    rows = w.rows_done
    assert parked + 3 <= rows < 3000 and w.message.startswith(f"cancelled after {rows} of 3000")
    assert np.isfinite(w.loss[:rows]).all() and np.isnan(w.loss[rows:]).all()
    stopped = w.job
    w.start()  # a fresh run from scratch
    assert w.job is not stopped and w.status == "running"
    with pytest.raises(RuntimeError, match="stop\\(\\) it before starting again"):
        w.start()
    w.stop()
    assert w.wait(WAIT) and w.status == "cancelled"


# ---------------------------------------------------------------------------- browser input
def test_selected_point_is_snapped_to_the_grid_and_sent_back(finished):
    w = finished
    wire = Wire(w)
    browser_update(w, selected_point=[0.26, -0.49])
    try:
        assert w.selected_point == [0.25, -0.5] and w.selected_index == (3, 0)
        assert wire.updates("selected_point")[-1] == [0.25, -0.5]  # the canonical value goes back
        browser_update(w, selected_point=[np.float32(0.25), -0.5])
        assert w.selected_point == [0.25, -0.5]
        browser_update(w, selected_point=[0.6, 0.0])  # within half a step of the last point
        assert w.selected_point == [0.5, 0.0]
    finally:
        browser_update(w, selected_point=None)
    assert w.selected_point is None and w.selected_index is None


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("selected_point", [0.0]),
        ("selected_point", [0.0, 0.9]),  # outside the grid
        ("selected_point", [float("nan"), 0.0]),
        ("selected_point", [True, 0.0]),
        ("selected_point", "0,0"),
        ("log_scale", "yes"),
        ("show_contours", 1),
        ("view", "4d"),
        ("quantity", "perplexity"),
    ],
)
def test_invalid_browser_values_are_ignored_with_a_warning_and_reverted(finished, caplog, name, bad):
    w = finished
    before = getattr(w, name)
    wire = Wire(w)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, **{name: bad})
    assert getattr(w, name) == before
    assert any(r.name == LOGGER and f"ignored {name}=" in r.getMessage() for r in caplog.records)
    assert wire.updates(name)[-1] == before  # the page is told the value to show instead


def test_writes_to_python_owned_traits_and_bad_messages_are_ignored(finished, caplog):
    w = finished
    loss = w._loss.copy()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, rows_done=0, _surface_esm="alert(1)", origin_loss=0.0)
        browser_command(w, {"type": "command", "command": "explode"})
        browser_command(w, "pause")
        browser_command(w, {"type": "command"})
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 4, messages
    assert "read-only traits ['_surface_esm', 'origin_loss', 'rows_done']" in messages[0]
    assert w.rows_done == RES and w._surface_esm == "" and w.origin_loss != 0.0 and w.status == "done"
    np.testing.assert_array_equal(w._loss, loss)


def test_the_3d_view_gets_its_code_on_demand(model, ids, monkeypatch, caplog, tmp_path):
    w = LandscapeWidget(model, ids, resolution=3, start=False)
    assert w._surface_esm == "" and w.view == "2d"
    browser_update(w, view="3d")
    assert w.view == "3d" and w._surface_esm == landscape_module.SURFACE_BUNDLE.read_text(encoding="utf-8")
    assert "createSurfaceView" in w._surface_esm and w._surface_error == ""
    other = LandscapeWidget(model, ids, resolution=3, start=False)
    monkeypatch.setattr(landscape_module, "SURFACE_BUNDLE", tmp_path / "missing.js")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        other.view = "3d"
    assert other._surface_esm == "" and "missing.js could not be read" in other._surface_error
    assert any("3D view unavailable" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- directions
def test_checkpoint_plane_passes_through_both_checkpoints(model, ids):
    gen = torch.Generator().manual_seed(5)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    step_a, step_b = random_direction(model, generator=gen), random_direction(model, generator=gen)
    a = {n: theta[n] + 0.3 * step_a[n] for n in theta}
    b = {n: theta[n] - 0.2 * step_b[n] for n in theta}
    w = LandscapeWidget(model, ids, directions="checkpoints", checkpoints=(a, b), resolution=5, trajectory=[a, b])
    assert w.wait(WAIT) and w.status == "done"
    np.testing.assert_allclose(w.alphas, [-0.5, 0.0, 0.5, 1.0, 1.5])  # both checkpoints inside by default
    assert w.span_rule == "default"
    zero = {n: torch.zeros_like(t) for n, t in theta.items()}
    loss_a = loss_at(model, ids, {n: a[n] - theta[n] for n in theta}, zero, 1.0, 0.0)
    assert w.loss[3, 1] == pytest.approx(loss_a, rel=1e-10)  # (alpha, beta) = (1, 0) is checkpoint a
    loss_b = loss_at(model, ids, {n: b[n] - theta[n] for n in theta}, zero, 1.0, 0.0)
    assert w.loss[1, 3] == pytest.approx(loss_b, rel=1e-10)  # (0, 1) is checkpoint b
    np.testing.assert_allclose(w.trajectory_points, [[1.0, 0.0], [0.0, 1.0]], atol=1e-10)
    assert w.direction_labels[0].startswith("toward checkpoint a")
    with pytest.raises(ValueError, match="equals the model's parameters"):
        LandscapeWidget(model, ids, directions="checkpoints", checkpoints=(theta, b), start=False)
    with pytest.raises(ValueError, match="checkpoints=\\(a, b\\)"):
        LandscapeWidget(model, ids, directions="checkpoints", start=False)


def test_trajectory_in_the_plane_projects_onto_its_coefficients(model, ids):
    gen = torch.Generator().manual_seed(2)
    d1, d2 = random_direction(model, generator=gen), random_direction(model, generator=gen)
    coefficients = torch.tensor([[0.8, -0.6], [0.5, -0.2], [0.1, 0.3], [0.0, 0.0]], dtype=torch.float64)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    trajectory = [{n: theta[n] + float(a) * d1[n] + float(b) * d2[n] for n in theta} for a, b in coefficients]
    w = LandscapeWidget(
        model, ids, directions=(d1, d2), trajectory=trajectory, trajectory_steps=[0, 100, 200, 300], start=False
    )
    wire = Wire(w)
    np.testing.assert_allclose(w.trajectory_points, coefficients.numpy(), atol=1e-10)
    assert w._trajectory["label"] == "trajectory"
    np.testing.assert_array_equal(w._trajectory["steps"], [0, 100, 200, 300])
    w.send_state("_trajectory")
    sent = wire.updates("_trajectory")[-1]
    assert sent["points"].dtype == np.float32 and sent["points"].shape == (4, 2)
    assert sent["steps"].dtype == np.int32
    assert w.direction_labels[1].startswith("direction 2 (‖d2‖ = ")
    with pytest.raises(ValueError, match="trajectory_steps must be 4 ints"):
        LandscapeWidget(model, ids, directions=(d1, d2), trajectory=trajectory, trajectory_steps=[1, 2], start=False)
    with pytest.raises(ValueError, match="needs trajectory"):
        LandscapeWidget(model, ids, directions="pca", start=False)
    pca = LandscapeWidget(model, ids, directions="pca", trajectory=trajectory, start=False)
    assert "of the trajectory's variance" in pca.direction_labels[0]
    # the trajectory lies in the PCA plane around the model: projected exactly, residual-free
    p = pca.trajectory_points
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), [_plane_norm(d1, d2, a, b) for a, b in coefficients])


def _plane_norm(d1, d2, a, b) -> float:
    return math.sqrt(sum(float(((a * d1[n] + b * d2[n]).double() ** 2).sum()) for n in d1))


def test_eigen_directions_curvature_matches_the_slice_and_the_quadratic_overlay(model, ids):
    h = 1e-4  # the slice's fourth derivative makes the O(h^2) error 3.5e-4 relative at h = 1e-3
    w = LandscapeWidget(model, ids, directions="eigen", alphas=[-h, 0.0, h], betas=[-h, 0.0, h])
    assert w.wait(WAIT) and w.status == "done"
    lam = w.eigenvalues
    assert lam.shape == (2,) and lam[0] >= lam[1]
    assert w.direction_labels[0] == f"Hessian eigenvector 1 (λ1 = {lam[0]:.4g})"
    L = w.loss
    # second differences along each unit-norm eigenvector through the origin give its eigenvalue
    assert (L[0, 1] - 2 * L[1, 1] + L[2, 1]) / h**2 == pytest.approx(lam[0], rel=1e-4, abs=1e-6)
    assert (L[1, 0] - 2 * L[1, 1] + L[1, 2]) / h**2 == pytest.approx(lam[1], rel=1e-4, abs=1e-6)
    q = w._quadratic
    assert q["eigenvalues"] == pytest.approx(list(lam))
    np.testing.assert_allclose(q["alpha"], quadratic_model(w.alphas, lam[0], w.origin_loss).numpy(), rtol=1e-6)
    np.testing.assert_allclose(q["beta"], quadratic_model(w.betas, lam[1], w.origin_loss).numpy(), rtol=1e-6)


def test_eigen_planes_get_their_span_from_the_curvature(model, ids):
    from tscope_widgets.kernels.landscape import eigen_span

    w = LandscapeWidget(model, ids, directions="eigen", resolution=5, start=False)
    lam = w.eigenvalues
    span = math.sqrt(2 * 1.0 / float(max(lam)))  # 1/2 lambda_max alpha^2 = 1 nat at the edge
    assert span == pytest.approx(eigen_span(lam))
    np.testing.assert_allclose(w.alphas, np.linspace(-span, span, 5), rtol=1e-12)
    np.testing.assert_allclose(w.betas, np.linspace(-span, span, 5), rtol=1e-12)
    assert w.span_rule == "curvature"
    fixed = LandscapeWidget(model, ids, directions="eigen", span=0.5, resolution=3, start=False)
    np.testing.assert_allclose(fixed.alphas, [-0.5, 0.0, 0.5])


def test_other_planes_get_their_span_from_the_loss_rise_along_the_sharper_direction(model, ids, monkeypatch):
    from tscope_widgets.kernels.landscape import probe_span

    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel())
    gen = torch.Generator().manual_seed(3)
    d1 = random_direction(model, generator=gen)
    d2 = {k: 400.0 * v for k, v in random_direction(model, generator=gen).items()}  # sharp: rises early
    w = LandscapeWidget(model, ids, directions=(d1, d2), resolution=5, start=False)
    span = probe_span(model, {"input_ids": ids}, [d1, d2])
    assert w.span_rule == "loss rise" and span < 0.25
    np.testing.assert_allclose(w.alphas, np.linspace(-span, span, 5), rtol=1e-12)
    np.testing.assert_allclose(w.betas, w.alphas, rtol=0)
    random = LandscapeWidget(model, ids, resolution=3, start=False)  # seeded random directions
    assert random.span_rule == "loss rise"
    assert random.alphas[-1] == pytest.approx(probe_span(model, {"input_ids": ids}, random.directions), rel=1e-12)
    fixed = LandscapeWidget(model, ids, directions=(d1, d2), span=0.5, resolution=3, start=False)
    assert fixed.span_rule == "given" and list(fixed.alphas) == [-0.5, 0.0, 0.5]


def test_given_eigenvalues_scale_the_quadratic_model_with_the_direction_norm(model, ids, monkeypatch):
    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel())
    gen = torch.Generator().manual_seed(3)
    d1, d2 = random_direction(model, generator=gen), random_direction(model, generator=gen)
    w = LandscapeWidget(model, ids, directions=(d1, d2), eigenvalues=[2.0, None], resolution=5)
    assert w.wait(WAIT)
    norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in d1.values()))
    expected = w.origin_loss + 0.5 * 2.0 * (norm * w.alphas) ** 2
    np.testing.assert_allclose(w._quadratic["alpha"], expected, rtol=1e-12)
    assert w._quadratic["beta"] is None and math.isnan(w._quadratic["eigenvalues"][1])
    assert "λ1 = 2" in w.direction_labels[0] and "λ" not in w.direction_labels[1]


def test_constructor_refuses_bad_arguments(model, ids):
    bad = [
        (dict(directions="hessian"), ValueError, "use one of"),
        (dict(directions=[1, 2, 3]), TypeError, "pair \\(d1, d2\\)"),
        (dict(eigenvalues=[1.0, 2.0]), ValueError, "eigenvalues describe Hessian eigenvector"),
        (dict(resolution=1), ValueError, "resolution must be an int >= 2"),
        (dict(span=-1.0), ValueError, "span must be a positive number"),
        (dict(throttle=0.01), ValueError, "throttle must be"),
        (dict(alphas=[0.0, -1.0]), ValueError, "strictly increasing"),
        (dict(log_scale="yes"), ValueError, "log_scale"),
        (dict(log_scale=[True]), TypeError, "log_scale"),
        (dict(trajectory_steps=[1]), ValueError, "needs a trajectory"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            LandscapeWidget(model, ids, start=False, **kwargs)
    d1 = random_direction(model, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="lacks parameter"):  # the kernel's own check, before the comm opens
        LandscapeWidget(model, ids, directions=({"x": torch.ones(2)}, d1), start=False)
    with pytest.raises(ValueError, match="eigenvalues must be two finite numbers"):
        LandscapeWidget(model, ids, directions=(d1, d1), eigenvalues=[1.0, float("inf")], start=False)


# ---------------------------------------------------------------------------- static picture and export
def test_the_picture_is_an_output_of_its_own_after_the_view(model, ids, kernel_shell, monkeypatch):
    pending = LandscapeWidget(model, ids, resolution=3, start=False)
    assert pending.picture_id == pending.model_id
    with capture_output() as captured:
        pending._ipython_display_()
    view, picture = captured.outputs
    assert set(view.data) == {WIDGET_VIEW, "text/plain"} and view.data["text/plain"] == WIDGET_TEXT
    assert view.data[WIDGET_VIEW]["model_id"] == pending.model_id and not view.transient
    html = picture.data["text/html"]
    assert html.startswith(stand_in_style(pending.model_id, ".tscope-landscape"))
    assert f'class="tscope-static" data-picture-id="{pending.model_id}" data-status="pending"' in html
    assert "waiting for the first row" in html and "<img" not in html
    assert picture.data["text/plain"] == (
        "LandscapeWidget · loss (token cross-entropy, nats) · random directions (job pending)"
    )
    pending.close()

    monkeypatch.setattr(landscape_module, "slice_2d", synthetic_kernel())
    w = LandscapeWidget(model, ids, resolution=RES, start=False)
    with capture_output() as captured:
        w._ipython_display_()
        w._ipython_display_()  # shown twice: two pairs of outputs, both pictures updated
    ids_shown = [captured.outputs[k].transient["display_id"] for k in (1, 3)]
    with capture_output() as captured:
        w.start()
        assert w.wait(WAIT)
    updates = [o for o in captured.outputs if o.update]
    assert not any(WIDGET_VIEW in o.data for o in captured.outputs)
    last = {o.transient["display_id"]: o for o in updates}  # wait()'s refresh comes last
    assert sorted(last) == sorted(ids_shown)
    for o in last.values():
        assert o.data["text/plain"].endswith(f"({RES} of {RES} rows · job done)")
        html = o.data["text/html"]
        assert 'data-status="done"' in html and f'data-rows="{RES}"' in html
        (svg,) = picture_svgs(html.split("</style>", 1)[1])
        ((rows, cols, pixels),) = heatmaps(svg)
        loss = w.loss  # [A, B]; the picture puts the largest beta in the top row
        assert (rows, cols) == (RES, RES) and "α · random direction 1" in svg
        np.testing.assert_array_equal(pixels, color_indices(loss.T[::-1], color_domain(loss)))
        assert svg.count('class="tscope-static-contour"') > 0

    w.quantity = "accuracy"  # the picture shows the view as selected, refreshed at the end of the cell
    w.log_scale = True
    with capture_output() as captured:
        w._after_cell()
    assert sorted(o.transient["display_id"] for o in captured.outputs) == sorted(ids_shown)
    (svg,) = picture_svgs(captured.outputs[-1].data["text/html"].split("</style>", 1)[1])
    acc = w.accuracy
    expected = color_indices(acc.T[::-1], color_domain(acc, log=True), log=True)
    np.testing.assert_array_equal(heatmaps(svg)[0][2], expected)
    assert "accuracy (fraction of targets right) (log)" in svg
    w.close()


def test_the_picture_of_a_real_grid_uses_the_palette(finished):
    html = finished._picture_bundle()["text/html"]
    (svg,) = picture_svgs(html.split("</style>", 1)[1])
    png = re.search(r'class="tscope-static-heatmap"[^>]*href="data:image/png;base64,([^"]+)"', svg).group(1)
    image = Image.open(io.BytesIO(base64.b64decode(png)))
    loss = finished.loss
    np.testing.assert_array_equal(np.array(image), color_indices(loss.T[::-1], color_domain(loss)))
    assert np.array_equal(np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256], PALETTE)
    assert "loss (token cross-entropy, nats)" in html and "α · random direction 1" in svg


def test_num_threads_applies_to_the_job_thread(model, ids, monkeypatch):
    seen: list[int] = []
    inner = synthetic_kernel()

    def counting_kernel(*args, **kwargs):
        for snapshot in inner(*args, **kwargs):
            seen.append(torch.get_num_threads())
            yield snapshot

    monkeypatch.setattr(landscape_module, "slice_2d", counting_kernel)
    w = LandscapeWidget(model, ids, resolution=3, num_threads=2)
    assert w.wait(WAIT) and w.status == "done"
    assert seen == [2, 2, 2] and torch.get_num_threads() == 1 and default_num_threads() == 1
    for bad, error in ((0, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="num_threads must be a positive int"):
            LandscapeWidget(model, ids, resolution=3, num_threads=bad, start=False)


def test_to_bokeh_and_save_html(finished, model, ids, tmp_path):
    with pytest.raises(RuntimeError, match="no rows yet"):
        LandscapeWidget(model, ids, resolution=3, start=False).to_bokeh()
    fig = finished.to_bokeh()
    rects = [r for r in fig.renderers if isinstance(r, GlyphRenderer) and isinstance(r.glyph, Rect)]
    (cells,) = rects
    np.testing.assert_array_equal(np.asarray(cells.data_source.data["value"]), finished.loss.ravel())
    np.testing.assert_array_equal(np.asarray(cells.data_source.data["alpha"]), np.repeat(finished.alphas, RES))
    assert any(isinstance(r.glyph, MultiLine) for r in fig.renderers)  # contour lines
    assert fig.xaxis[0].axis_label.startswith("α · random direction 1")
    acc = finished.to_bokeh(quantity="accuracy", contours=False)
    assert not any(isinstance(r.glyph, MultiLine) for r in acc.renderers)
    with pytest.raises(ValueError, match="unknown quantity"):
        finished.to_bokeh(quantity="perplexity")
    path = finished.save_html(tmp_path / "landscape.html")
    text = path.read_text(encoding="utf-8")
    assert "<title>Loss landscape</title>" in text and "Bokeh" in text
    assert "on a 5 \\u00d7 5 grid" in text and "job done" in text  # the notes, JSON-escaped in the document


def test_static_contour_levels_follow_the_live_view():
    # Same cases as contourLevels in js/test/landscape.test.js.
    assert contour_levels((0.05, 0.95), count=5) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert contour_levels((0.0, 1.0), count=4) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert contour_levels((1.0, 1.0001), count=2) == pytest.approx([1.00005])
    assert contour_levels((0.5, 2000.0), count=4, log=True) == pytest.approx([1, 10, 100, 1000])
    assert nice_ticks(-1.0, 1.0, 6) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert nice_ticks(-0.5, 0.5, 4) == pytest.approx([-0.4, -0.2, 0.0, 0.2, 0.4])
    assert nice_ticks(0.0, 100.0, 5) == pytest.approx([0, 20, 40, 60, 80, 100])
    with pytest.raises(ValueError, match="bad contour domain"):
        contour_levels((0.0, 1.0), log=True)
    # a bowl's contour is a circle of the right radius; missing rows cut it open
    x = np.linspace(-2, 2, 41)
    bowl = x[:, None] ** 2 + x[None, :] ** 2  # [A, B]
    ((level, lines),) = contour_lines(x, x, bowl, [1.0])
    assert level == 1.0 and len(lines) == 1
    np.testing.assert_allclose(np.hypot(lines[0][:, 0], lines[0][:, 1]), 1.0, atol=0.01)
    bowl[25:] = np.nan  # rows alpha > 0.5 not computed yet
    ((_, lines),) = contour_lines(x, x, bowl, [1.0])
    assert all((line[:, 0] <= 0.5 + 1e-9).all() for line in lines) and lines


def test_log_scale_defaults_to_auto_and_follows_the_values_spread(model, ids):
    w = LandscapeWidget(model, ids, resolution=4, span=0.5, num_threads=1)
    assert w.wait(60.0)
    assert w.log_scale == "auto"
    loss = w.loss
    expected = resolve_log("auto", loss)
    assert f'data-log="{str(expected).lower()}"' in w._picture_svg()
    browser_update(w, log_scale=True)
    assert w.log_scale is True and 'data-log="true"' in w._picture_svg()
    browser_update(w, log_scale="auto")
    assert w.log_scale == "auto"
    for bad in ("yes", 1):
        browser_update(w, log_scale=bad)  # refused, the last valid value stays
        assert w.log_scale == "auto"
