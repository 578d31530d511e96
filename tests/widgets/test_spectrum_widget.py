"""SpectrumWidget: traits and wire messages, throttled updates from a training loop's thread, untrusted
browser input, the block eigenvalue job (against a dense Hessian), the static picture and the exports.
No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import copy
import logging
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bokeh.models import Column
from IPython.utils.capture import capture_output

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_command, browser_update, put_back
from tests.widgets.pictures import heatmaps, picture_svgs
from tscope_widgets.figures.charts import color_domain, format_value
from tscope_widgets.figures.svg import color_indices
from tscope_widgets.kernels.blocks import block_norms
from tscope_widgets.tracking import SpectrumHistory, SpectrumTracker
from tscope_widgets.widgets import spectrum as spectrum_module
from tscope_widgets.widgets._static import stand_in_style
from tscope_widgets.widgets._throttle import Throttle
from tscope_widgets.widgets.spectrum import WIDGET_TEXT, SpectrumWidget

WAIT = 60.0  # upper bound for waits; never reached unless something is broken
LOGGER = "tscope_widgets.widgets.spectrum"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
GRAD_LABELS = ["embed", "block0", "final"]
BLOCK_LABELS = ["block0.attn.q", "block0.attn.k", "head"]


# ---------------------------------------------------------------------------- helpers
def make_history(T: int, *, total: int | None = None, density_every: int = 2, P: int = 7) -> SpectrumHistory:
    """A synthetic history with T records at steps 0, 10, ...; every value distinct and known."""
    h = SpectrumHistory.empty(GRAD_LABELS, BLOCK_LABELS)
    h.total = total
    for t in range(T):
        record = dict(
            steps=10 * t,
            loss=2.0 / (t + 1),
            train_loss=2.1 / (t + 1),
            lambda_max=1.0 + t,
            lambda_min=-0.1 * t,
            trace=5.0 + t,
            trace_stderr=0.5,
            grad_norms=np.array([1.0, 2.0, 3.0]) * (t + 1),
            block_lambda_max=np.array([0.5 + t, np.nan if t == 0 else 0.25 * t, 3.0]),
            threshold=20.0,
            lr=0.1,
            matvecs=40 + t,
            converged=True,
        )
        if t % density_every == 0:
            record["density_grid"] = np.linspace(-1.0, 1.0 + t, P)
            record["density"] = np.exp(-np.linspace(-2, 2, P) ** 2) * (t + 1)
        h.append(record)
    return h


class FakeTracker:
    """The surface of SpectrumTracker the widget uses: history, subscribe, adapter, data, blocks."""

    def __init__(self, history: SpectrumHistory, adapter=None, data=None):
        self._history = history
        self._subscribers = []
        self.adapter, self.data = adapter, data
        self.blocks = {}

    @property
    def history(self) -> SpectrumHistory:
        return self._history.copy()

    def subscribe(self, callback):
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def push(self, history: SpectrumHistory) -> None:
        self._history = history
        for cb in list(self._subscribers):
            cb(history.copy() if isinstance(history, SpectrumHistory) else history)


def wire_state(widget, key: str):
    """What the page receives for ``key`` now (encoded like a sync, then decoded)."""
    from ipywidgets.widgets.widget import _remove_buffers

    state, buffer_paths, buffers = _remove_buffers(widget.get_state(key))
    return put_back({"state": state, "buffer_paths": buffer_paths}, buffers)[key]


def wait_until(predicate, timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def lm_loss(model, params: dict, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a TinyTransformer with ``params`` swapped in (no padding)."""
    logits = torch.func.functional_call(model, params, (ids,))
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def dense_block_eigenvalues(model, ids: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Eigenvalues (descending) of the Hessian block of the named parameters, by torch.func.hessian."""
    base = {k: v.detach() for k, v in model.named_parameters()}
    shapes = [base[n].shape for n in names]
    theta = torch.cat([base[n].reshape(-1) for n in names])

    def f(flat):
        params, offset = dict(base), 0
        for n, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[n] = flat[offset : offset + size].view(shape)
            offset += size
        return lm_loss(model, params, ids)

    H = torch.func.hessian(f)(theta)
    return torch.linalg.eigvalsh(H).flip(0)


@pytest.fixture(scope="module")
def history():
    return make_history(5)


@pytest.fixture()
def fixed(history):
    w = SpectrumWidget(history=history, throttle=0.05)
    yield w
    w.close()


# ---------------------------------------------------------------------------- the throttle
def test_throttle_leading_edge_coalescing_and_trailing_delivery():
    got, threads = [], []

    def deliver(v):
        got.append(v)
        threads.append(threading.current_thread().name)

    t = Throttle(deliver, 0.2, name="t")
    t(1)  # leading edge: at once, in this thread
    assert got == [1] and threads == [threading.current_thread().name]
    for v in (2, 3, 4):
        t(v)  # coalesced
    assert got == [1] and t.pending
    time.sleep(0.1)  # this thread is busy: the trailing value must still arrive
    assert wait_until(lambda: len(got) == 2, 5.0)
    assert got == [1, 4] and threads[1] == "t-trailing" and not t.pending
    time.sleep(0.25)
    t(5)  # the interval has passed: at once again
    assert got[-1] == 5
    t(6)
    t.flush()  # the pending value, now
    assert got[-1] == 6 and not t.pending
    t.flush(7)
    assert got[-1] == 7
    t(8)
    t.close()
    time.sleep(0.3)
    t(9)
    assert got[-1] == 7 and t.deliveries == 5  # dropped after close
    with pytest.raises(ValueError, match="finite"):
        Throttle(deliver, float("nan"))
    with pytest.raises(ValueError, match=">= 0"):
        Throttle(deliver, -1)


def test_throttle_logs_errors_of_the_receiver(caplog):
    def broken(_):
        raise RuntimeError("boom")

    t = Throttle(broken, 0.0, name="broken")
    with caplog.at_level(logging.ERROR, logger="tscope_widgets.widgets._throttle"):
        t(1)
        t(2)
    assert t.deliveries == 2 and "raised; ignored" in caplog.text


# ---------------------------------------------------------------------------- traits
def test_fixed_history_traits_and_buffers(fixed, history):
    w = fixed
    assert w.source == "fixed" and w.history is history
    series = wire_state(w, "series")
    np.testing.assert_array_equal(series["steps"], [0, 10, 20, 30, 40])
    assert series["steps"].dtype == np.int32 and series["values"]["loss"].dtype == np.float32
    vectors = ("loss", "train_loss", "lambda_max", "lambda_min", "trace", "trace_stderr", "threshold", "lr", "matvecs",
               "precond_lambda_max", "adam_threshold")
    for key in vectors:
        np.testing.assert_array_equal(series["values"][key], getattr(history, key).astype(np.float32))
    np.testing.assert_array_equal(series["grad_norms"], history.grad_norms.T.astype(np.float32))  # [L, T]
    np.testing.assert_array_equal(series["block_lambda_max"], history.block_lambda_max.T.astype(np.float32))
    assert np.isnan(series["block_lambda_max"][1, 0])  # NaN = not computed, kept in the buffer
    assert series["grad_norm_labels"] == GRAD_LABELS and series["block_labels"] == BLOCK_LABELS
    np.testing.assert_array_equal(series["density_steps"], [0, 20, 40])
    assert series["done"] == 5 and series["total"] is None
    keys = [o["key"] for o in w.series_options]
    assert keys[:8] == ["loss", "train_loss", "lambda_max", "lambda_min", "threshold", "trace", "lr", "matvecs"]
    assert keys[8:10] == ["precond_lambda_max", "adam_threshold"]  # Adam's, appended: older colours stay
    assert keys[10:] == [f"grad_norm:{g}" for g in GRAD_LABELS]
    assert w.selected_series == ["loss", "train_loss", "lambda_max", "lambda_min", "threshold", "trace",
                                 "precond_lambda_max", "adam_threshold"] + keys[10:]
    assert [p["key"] for p in w.panels][:2] == ["loss", "curvature"] and all(p["y_label"] for p in w.panels)
    assert w.block_options == BLOCK_LABELS and not w.can_compute_blocks
    density = wire_state(w, "density")  # the latest density by default
    assert density["step"] == 40 and density["index"] == 2 and density["picked"] is None
    np.testing.assert_array_equal(density["grid"], history.density_grid[2].astype(np.float32))
    np.testing.assert_array_equal(density["values"], history.density[2].astype(np.float32))
    assert w.norms is None and w.eigen is None and w.job_status == "idle"


def test_pick_step_shows_the_nearest_density_and_validates(fixed, history):
    w = fixed
    wire = Wire(w)
    w.pick_step(10)  # densities at 0, 20, 40: 10 is as near to 0 as to 20, the earlier wins
    assert w.picked_step == 10 and w.density["step"] == 0 and w.density["picked"] == 10
    w.pick_step(30)
    assert w.density["step"] == 20
    w.pick_step(None)
    assert w.density["step"] == 40
    assert [d["step"] for d in wire.updates("density")] == [0, 20, 40]
    with pytest.raises(ValueError, match="recorded steps"):
        w.pick_step(15)
    browser_update(w, picked_step=30)  # from the page
    assert w.picked_step == 30 and w.density["step"] == 20
    np.testing.assert_array_equal(wire.updates("density")[-1]["values"], history.density[1].astype(np.float32))


def test_selected_series_from_the_browser_survive_new_options(history):
    tracker = FakeTracker(make_history(2))
    w = SpectrumWidget(tracker, throttle=0.05)
    browser_update(w, selected_series=["trace", "loss", "lr"])
    assert w.selected_series == ["loss", "trace", "lr"]  # canonical: option order
    bigger = make_history(3)
    bigger.grad_norm_labels = ["embed", "block0", "block1", "final"]  # a new group appears
    bigger.grad_norms = np.ones((3, 4))
    tracker.push(bigger)
    time.sleep(0.15)
    assert "grad_norm:block1" in [o["key"] for o in w.series_options]
    assert w.selected_series == ["loss", "trace", "lr"]  # the user's choice is kept
    w.close()


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("selected_series", "loss"),
        ("selected_series", ["loss", "nope"]),
        ("selected_series", [1]),
        ("picked_step", 15),
        ("picked_step", "10"),
        ("picked_step", True),
        ("picked_step", 10.5),
        ("selected_block", "nope"),
        ("selected_block", 3),
        ("log_y", "yes"),
        ("log_y", 1),
    ],
)
def test_invalid_browser_values_are_ignored_with_a_warning_and_reverted(fixed, caplog, name, bad):
    w = fixed
    before = getattr(w, name)
    sent = []
    w.send_state = lambda key=None: sent.append(key)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, **{name: bad})
    assert getattr(w, name) == before
    assert f"ignored {name}=" in caplog.text
    assert sent == [[name]]  # the page is told the value it must show again


def test_writes_to_python_owned_traits_and_bad_messages_are_ignored(fixed, caplog):
    w = fixed
    series_before = w.series
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, series=None, eigen={"label": "x"}, job_status="done", log_y=False)
        browser_command(w, {"type": "command", "command": "format_disk"})
        browser_command(w, "stop")
        browser_command(w, {"type": "other"})
    assert w.series is series_before and w.eigen is None and w.job_status == "idle"
    assert w.log_y is False  # the valid part of the message was applied
    assert "read-only traits ['eigen', 'job_status', 'series']" in caplog.text
    assert caplog.text.count("ignored front-end message") == 3


def test_python_side_nonsense_is_reverted_with_a_warning(fixed, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fixed.log_y = "no"
        fixed.selected_block = "nope"
    assert fixed.log_y is True and fixed.selected_block is None
    with pytest.raises(ValueError, match="not one of the blocks"):
        fixed.select_block("nope")


# ---------------------------------------------------------------------------- live updates
def test_updates_from_a_training_thread_are_throttled_coalesced_and_the_last_arrives():
    tracker = FakeTracker(make_history(1))
    w = SpectrumWidget(tracker, throttle=0.1)
    wire = Wire(w)
    histories = [make_history(T) for T in range(2, 42)]

    def train():
        for h in histories:  # 40 records as fast as possible
            tracker.push(h)

    start = time.monotonic()
    loop = threading.Thread(target=train, name="training-loop")
    loop.start()
    loop.join()
    elapsed = time.monotonic() - start
    assert wait_until(lambda: not w._throttle.pending and w._throttle.deliveries >= 2)
    time.sleep(0.25)
    steps = [len(s["steps"]) for s in wire.updates("series")]
    assert steps[-1] == 41  # the newest record is always delivered
    assert steps == sorted(steps)  # in order
    assert len(steps) <= 2 + elapsed / 0.1  # coalesced: at most ~10 per second
    assert len(steps) < len(histories)
    assert set(wire.threads("series")) <= {"training-loop", "tscope-spectrum-trailing"}
    w.close()


def test_updates_reach_the_page_while_the_loop_cell_keeps_the_main_thread_busy():
    tracker = FakeTracker(make_history(1))
    w = SpectrumWidget(tracker, throttle=0.1)
    wire = Wire(w)
    tracker.push(make_history(2))  # leading edge: sent at once, from this (the cell's) thread
    tracker.push(make_history(3))  # coalesced
    sent_at = time.monotonic()
    time.sleep(1.0)  # the loop is busy computing: no further call into the widget
    steps = [len(s["steps"]) for s in wire.updates("series")]
    assert steps == [2, 3]
    trailing = wire.times("series")[-1]
    assert trailing - sent_at < 0.9 and wire.threads("series")[-1] == "tscope-spectrum-trailing"
    w.close()


def test_the_final_record_is_delivered_at_once_and_bad_updates_are_dropped(caplog):
    tracker = FakeTracker(make_history(1, total=3))
    w = SpectrumWidget(tracker, throttle=5.0)  # a long throttle: only the final flush can beat it
    tracker.push(make_history(2, total=3))
    tracker.push(make_history(3, total=3))  # done == total
    assert len(w.series["steps"]) == 3
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        tracker.push(object())  # not a history: logged, never raised into the training loop
        broken = make_history(3)
        broken.loss = np.zeros(2)
        tracker.push(broken)
    assert caplog.text.count("ignored a tracker update") == 2
    assert len(w.series["steps"]) == 3
    w.close()
    tracker.push(make_history(4, total=3))  # closed: unsubscribed, nothing happens
    assert len(tracker._subscribers) == 0


# ---------------------------------------------------------------------------- block norms and eigenvalues
@pytest.fixture(scope="module")
def small():
    """A one-layer tiny model, a batch, its adapter and the exact block norms of three groups."""
    model = tiny(n_layer=1)
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(3))
    data = [{"input_ids": ids}]
    norms = block_norms(model, data, ["block0.attn.v", "block0.ln1", "head"], exact=True)
    return model, ids, data, norms


def test_block_norms_traits_and_a_click_runs_lanczos_on_that_block(small, history):
    model, ids, data, norms = small
    w = SpectrumWidget(history=history, block_norms=norms, adapter=model, data=data, throttle=0.05, top_k=4)
    wire = Wire(w)
    assert w.can_compute_blocks and w.block_norms is norms
    got = wire_state(w, "norms")
    assert got["labels"] == ["block0.attn.v", "block0.ln1", "head"] and got["exact"] is True
    np.testing.assert_array_equal(got["frobenius"], norms.frobenius.numpy().astype(np.float32))
    np.testing.assert_array_equal(got["spectral"], norms.spectral.numpy().astype(np.float32))
    assert w.block_options == BLOCK_LABELS + ["block0.attn.v", "block0.ln1"]

    browser_update(w, selected_block="block0.attn.v")  # a click on the map
    assert w.eigen_job is not None and w.eigen["status"] in ("running", "done")
    assert w.wait_block(WAIT)
    assert wait_until(lambda: w.job_status == "done")
    eigen = w.eigen
    assert eigen["label"] == "block0.attn.v" and eigen["step"] == 40 and eigen["status"] == "done"
    reference = dense_block_eigenvalues(model, ids, ["blocks.0.attn.v.weight", "blocks.0.attn.v.bias"])
    np.testing.assert_allclose(eigen["eigenvalues"], reference[:4].numpy(), rtol=1e-6, atol=1e-9)
    assert eigen["converged"] is True and max(eigen["residuals"]) <= 1e-5 * abs(reference[0])
    assert abs(eigen["eigenvalues"][0] - float(norms.spectral[0])) <= 1e-6 * abs(eigen["eigenvalues"][0])
    statuses = [e["status"] for e in wire.updates("eigen")]
    assert statuses[0] == "running" and statuses[-1] == "done"  # progress, then the result
    assert w.job_done > 0 and w.job_total is not None
    result = w.block_eigenvalues["block0.attn.v"]
    assert result["eigenvalues"].dtype == np.float64 and result["step"] == 40

    # Selecting it again shows the cached result at once; "recompute" runs again.
    browser_update(w, selected_block=None)
    browser_update(w, selected_block="block0.attn.v")
    assert w.eigen["status"] == "done" and w.job_status == "idle"
    browser_command(w, {"type": "command", "command": "recompute"})
    assert w.wait_block(WAIT) and wait_until(lambda: w.job_status == "done")
    w.close()


def test_stop_command_cancels_the_block_job(small, history, monkeypatch):
    model, _, data, norms = small
    started = threading.Event()
    real_kernel = spectrum_module.block_eigen_kernel

    def slow_kernel(*args, **kwargs):
        for snapshot in real_kernel(*args, **kwargs):
            started.set()
            time.sleep(0.05)
            yield snapshot

    monkeypatch.setattr(spectrum_module, "block_eigen_kernel", slow_kernel)
    w = SpectrumWidget(history=history, block_norms=norms, adapter=model, data=data, throttle=0.05)
    w.select_block("head")
    assert started.wait(WAIT)
    browser_command(w, {"type": "command", "command": "stop"})
    assert w.wait_block(WAIT) and wait_until(lambda: w.job_status == "cancelled")
    assert w.eigen["status"] == "cancelled" and len(w.eigen["eigenvalues"]) > 0  # the partial result stays
    w.close()


def test_a_flood_of_recompute_clicks_runs_one_job_and_queues_one(small, history, monkeypatch):
    """Recompute requests coalesce: one job runs, the latest request waits; never a job (and a model copy) per
    click."""
    model, _, data, norms = small
    started = threading.Event()
    real_kernel = spectrum_module.block_eigen_kernel
    jobs = []

    def slow_kernel(*args, **kwargs):
        jobs.append(1)
        for snapshot in real_kernel(*args, **kwargs):
            started.set()
            time.sleep(0.05)
            yield snapshot

    monkeypatch.setattr(spectrum_module, "block_eigen_kernel", slow_kernel)
    w = SpectrumWidget(history=history, block_norms=norms, adapter=model, data=data, throttle=0.05)
    w.select_block("head")
    assert started.wait(WAIT)
    first = w.eigen_job
    for _ in range(50):
        browser_command(w, {"type": "command", "command": "recompute"})
    assert w.eigen_job is first  # still the first job: the clicks were queued, not started
    assert wait_until(lambda: w.eigen_job is not first and w.eigen_job.status == "done", timeout=WAIT)
    assert w.wait_block(WAIT) and w.eigen["status"] == "done"
    assert len(jobs) == 2  # the running job, then one for all 50 clicks
    w.close()


def test_a_block_without_model_or_data_says_so(history):
    w = SpectrumWidget(history=history)
    w.select_block("head")
    assert w.eigen["status"] == "unavailable" and "adapter=" in w.eigen["message"]
    assert w.eigen_job is None and w.wait_block(1)
    w.close()


def test_attached_to_a_real_tracker_in_a_training_loop(small):
    """The training loop runs in this thread; a block clicked mid-training is computed on the weights of
    that moment while training goes on."""
    _, ids, data, _ = small
    model = tiny(n_layer=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = SpectrumTracker(model, data, every=1, blocks="layers", trace_matvecs=0, optimizer=optimizer)
    w = SpectrumWidget(tracker, throttle=0.05)
    wire = Wire(w)
    assert w.source == "tracker" and w.can_compute_blocks and w.series["steps"].size == 0
    reference = None
    for step in range(3):
        tracker.step(step=step)
        assert wait_until(lambda s=step: len(w.series["steps"]) == s + 1)  # shown while the loop runs
        if step == 1:
            w.select_block("block0")  # as a click between two steps
            frozen = copy.deepcopy(model)
            names = [n for n, _ in model.named_parameters() if n.startswith("blocks.0.")]
            reference = dense_block_eigenvalues(frozen, ids, names)
        optimizer.zero_grad()
        F.cross_entropy(model(ids)[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1)).backward()
        optimizer.step()
    assert w.wait_block(WAIT) and wait_until(lambda: w.job_status == "done")
    eigen = w.eigen
    assert eigen["label"] == "block0" and eigen["step"] == 1
    np.testing.assert_allclose(eigen["eigenvalues"], reference[:5].numpy(), rtol=1e-6, atol=1e-9)
    now = dense_block_eigenvalues(model, ids, names)
    assert abs(now[0] - reference[0]) > 1e-6 * abs(reference[0])  # training moved on; the result did not
    series = wire.updates("series")[-1]
    np.testing.assert_array_equal(series["steps"], [0, 1, 2])
    assert series["block_labels"] == ["block0"] and series["block_lambda_max"].shape == (1, 3)
    np.testing.assert_allclose(series["values"]["threshold"], 2 / 0.1, rtol=1e-6)
    w.close()


# ---------------------------------------------------------------------------- static picture and exports
def test_the_picture_is_an_output_of_its_own_after_the_view(small, history, kernel_shell):
    _, _, _, norms = small
    w = SpectrumWidget(history=history, block_norms=norms, log_y=False)
    assert w.picture_id == w.model_id
    with capture_output() as captured:
        w._ipython_display_()
    view, picture = captured.outputs
    assert set(view.data) == {WIDGET_VIEW, "text/plain"} and view.data["text/plain"] == WIDGET_TEXT
    assert view.data[WIDGET_VIEW]["model_id"] == w.model_id and not view.transient
    assert picture.transient["display_id"] and set(picture.data) == {"text/html", "text/plain"}
    assert picture.data["text/plain"] == (
        "SpectrumWidget · Hessian spectrum during training (fixed history · 5 records · latest step 40)"
    )
    html = picture.data["text/html"]
    style = stand_in_style(w.model_id, ".tscope-spectrum")
    assert html.startswith(style)
    html = html[len(style) :]
    assert f'<div class="tscope-static" data-picture-id="{w.model_id}" data-status="done" data-records="5"' in html
    assert "fixed history · 5 records · latest step 40" in html
    (svg,) = picture_svgs(html)  # one <img> of one SVG document, nothing a sanitizer strips
    # loss, curvature, trace, gradient norms, density, and the sharpness by type of the blocks q, k, head
    assert svg.count('class="tscope-static-lines"') == 6 and "sharpness by block type" in svg
    assert "λ_max" in svg and "2/η (edge of stability)" in svg and "spectral density at step 40" in svg
    assert "training step" in svg and "eigenvalue of ∇²L" in svg  # axis titles with units
    maps = heatmaps(svg)
    assert [(r, c) for r, c, _ in maps] == [(3, 3), (3, 5)]  # block norms, then blocks × steps
    fro = norms.frobenius.numpy()
    np.testing.assert_array_equal(maps[0][2], color_indices(fro, color_domain(fro)))
    lam = history.block_lambda_max.T  # [G, T]
    np.testing.assert_array_equal(maps[1][2], color_indices(lam, color_domain(lam)))

    empty = SpectrumWidget(FakeTracker(make_history(0)))._picture_bundle()["text/html"]
    assert 'data-status="pending"' in empty and "waiting for the first record" in empty and "<img" not in empty
    w.close()
    with capture_output() as captured:
        w._ipython_display_()  # closed: the picture alone, without the pairing style
    (alone,) = captured.outputs
    assert "<style>" not in alone.data["text/html"] and 'data-status="done"' in alone.data["text/html"]


def test_pictures_are_refreshed_after_a_cell_that_changed_the_charts(kernel_shell):
    tracker = FakeTracker(make_history(1))
    w = SpectrumWidget(tracker, throttle=0.05)
    with capture_output() as captured:
        w._ipython_display_()
    display_id = captured.outputs[1].transient["display_id"]
    assert w._after_cell in kernel_shell.events.callbacks["post_run_cell"]
    with capture_output() as captured:
        w._after_cell()
    assert captured.outputs == []  # nothing changed since the picture was drawn
    tracker.push(make_history(2))
    tracker.push(make_history(3))  # held back by the throttle: flushed before the picture is drawn
    with capture_output() as captured:
        w._after_cell()
    (update,) = captured.outputs
    assert update.update and update.transient["display_id"] == display_id and WIDGET_VIEW not in update.data
    assert 'data-records="3"' in update.data["text/html"] and 'data-status="done"' in update.data["text/html"]
    with capture_output() as captured:
        w._after_cell()
    assert captured.outputs == []
    w.close()
    assert w._after_cell not in kernel_shell.events.callbacks["post_run_cell"]


def test_the_picture_shows_a_block_job_and_its_result(small, history, kernel_shell):
    model, _, data, norms = small
    w = SpectrumWidget(history=history, block_norms=norms, adapter=model, data=data, top_k=2, num_threads=1)
    with capture_output() as captured:
        w._ipython_display_()
    display_id = captured.outputs[1].transient["display_id"]
    with capture_output() as captured:
        w.select_block("head")
        assert w.wait_block(WAIT)
    updates = [o for o in captured.outputs if o.update]
    assert updates and {o.transient["display_id"] for o in updates} == {display_id}
    html = updates[-1].data["text/html"]  # the last one, from wait_block()
    assert 'data-status="done"' in html and 'data-block-job="done"' in html
    values = w.block_eigenvalues["head"]["eigenvalues"]
    assert '<table class="tscope-static-eigen"' in html and "<td>head</td>" in html
    assert format_value(values[0]) in html and len(picture_svgs(html)) == 1
    w.close()


def test_to_bokeh_and_save_html(small, history, tmp_path):
    _, _, _, norms = small
    w = SpectrumWidget(history=history, block_norms=norms)
    w.pick_step(20)
    layout = w.to_bokeh()
    assert isinstance(layout, Column)
    titles = [getattr(f, "title", None) and f.title.text for row in layout.children for f in row.children]
    assert "extreme Hessian eigenvalues" in titles and "spectral density at step 20 (SLQ)" in titles
    assert "λ_max of each Hessian block H_aa" in titles
    path = w.save_html(tmp_path / "spectrum.html")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 100_000 and "Bokeh" in text and "fixed history" in text  # BokehJS inlined
    with pytest.raises(RuntimeError, match="nothing to export"):
        SpectrumWidget(history=make_history(0)).to_bokeh()
    w.close()


def test_constructor_refuses_bad_arguments(history):
    with pytest.raises(ValueError, match="not both"):
        SpectrumWidget(FakeTracker(history), history=history)
    with pytest.raises(TypeError, match="SpectrumTracker"):
        SpectrumWidget(object())
    with pytest.raises(ValueError, match="throttle"):
        SpectrumWidget(history=history, throttle=0.01)
    with pytest.raises(ValueError, match="top_k"):
        SpectrumWidget(history=history, top_k=0)
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        SpectrumWidget(history=history, num_threads=0)
    with pytest.raises(TypeError, match="num_threads must be a positive int"):
        SpectrumWidget(history=history, num_threads=1.5)
    with pytest.raises(TypeError, match="lacks"):
        SpectrumWidget(history=object())
    bad = make_history(3)
    bad.grad_norms = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"grad_norms has shape \(3, 2\); expected \[3, 3\]"):
        SpectrumWidget(history=bad)
    with pytest.raises(TypeError, match="BlockNorms"):
        SpectrumWidget(history=history, block_norms=object())
    w = SpectrumWidget(history=history)
    with pytest.raises(ValueError, match=r"expected \[2, 2\]"):
        w.set_block_norms(type("N", (), {"labels": ["a", "b"], "frobenius": np.zeros((3, 3))})())
    w.close()
