"""SensitivityExplorer: traits and wire messages, throttling, background updates, untrusted input,
errors, pause/resume/stop, export. No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np
import pytest
import torch
from bokeh.models import GridPlot, LinearColorMapper, LogColorMapper
from bokeh.plotting import figure

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_command, browser_update
from tscope_widgets.export import load_extra_tensors, load_statistics
from tscope_widgets.jobs import JobError, default_num_threads
from tscope_widgets.widgets import SensitivityExplorer
from tscope_widgets.widgets import sensitivity as explorer_module

N, S = 16, 5
LABELS = ["<s>", "a", "b", "a", "b"]
WAIT = 60.0  # upper bound for waits; never reached unless something is broken
LOGGER = "tscope_widgets.widgets.sensitivity"


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def finished(model, ids):
    """An explorer that ran to the end, and its final snapshot."""
    w = SensitivityExplorer(model, ids, batch_size=8, token_labels=LABELS, reservoir_size=8)
    assert w.wait(WAIT)
    return w


@pytest.fixture(scope="module")
def real_snapshot(finished):
    return finished.snapshot


def f32(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float32).numpy()


def fake_kernel(snapshot, n: int, delay: float, started: threading.Event | None = None):
    """An iter_sensitivity stand-in yielding ``n`` copies of a real snapshot with ``done`` = 1..n."""

    def kernel(*_args, **_kwargs):
        def run():
            if started is not None:
                started.set()
            for k in range(1, n + 1):
                if delay:
                    time.sleep(delay)
                yield dataclasses.replace(snapshot, done=k, total=n, batches=k)

        return run()

    return kernel


# ---------------------------------------------------------------------------- a finished run
def test_traits_after_a_run_match_the_snapshot(finished, ids):
    w, snap = finished, finished.snapshot
    assert (w.status, w.done, w.total, w.batches) == ("done", N, N, 2)
    assert w.message == f"done: {N} of {N} units" and w.eta == 0.0 and w.rate > 0
    assert w.layer_options == [0, 1] and w.layer == 1 and w.seq_len == S
    assert w.token_labels == LABELS and w.label_note == ""
    assert w.stats is snap.stats and w.job.snapshot is snap
    np.testing.assert_array_equal(w.heat, snap.stats[1].mean.numpy())
    np.testing.assert_array_equal(w.counts, np.full((S, S), N))
    assert w.snapshot.done == N and torch.equal(
        w.snapshot.reservoir.input_ids[: w.snapshot.reservoir.size],
        ids[w.snapshot.reservoir.sample_index[:8]],
    )


def test_browser_switches_layer_and_statistic_and_gets_float32_buffers(model, ids):
    w = SensitivityExplorer(model, ids, batch_size=8, start=False)
    wire = Wire(w)
    w.start()
    assert w.wait(WAIT)
    snap = w.snapshot
    wire.messages.clear()
    browser_update(w, statistic="std")
    browser_update(w, layer=0)
    browser_update(w, statistic="count")
    heats = wire.updates("heat")
    assert len(heats) == 3 and all(h.dtype == np.float32 and h.shape == (S, S) for h in heats)
    np.testing.assert_array_equal(heats[0], f32(snap.stats[1].std))
    np.testing.assert_array_equal(heats[1], f32(snap.stats[0].std))
    np.testing.assert_array_equal(heats[2], np.full((S, S), N, np.float32))
    counts = wire.updates("counts")[-1]
    assert counts.dtype == np.uint8 and (counts == N).all()  # the narrowest unsigned ints that hold them
    # bytes on the wire are the raw float32 map, nothing more
    data, buffers = next(m for m in wire.messages if "heat" in m[0]["state"])
    assert [p for p in data["buffer_paths"] if p[0] == "heat"] == [["heat", "view"]]
    heat_buffer = buffers[data["buffer_paths"].index(["heat", "view"])]
    assert memoryview(heat_buffer).nbytes == S * S * 4
    # the browser's own values are not echoed back
    assert not any("statistic" in d["state"] or "layer" in d["state"] for d, _ in wire.messages)


def test_selected_cell_sends_its_reservoir_samples(finished):
    w, snap = finished, finished.snapshot
    wire = Wire(w)
    browser_update(w, selected_cell=[3, 1])
    try:
        assert w.selected_cell == [3, 1]
        detail = wire.updates("detail")[-1]
        state = snap.stats[w.layer]
        assert detail["cell"] == [3, 1] and detail["layer"] == w.layer
        assert detail["count"] == N and isinstance(w.detail["count"], int)
        for stat in ("mean", "std", "cv", "min", "max"):
            assert detail[stat] == pytest.approx(float(getattr(state, stat)[3, 1]), rel=1e-12)
        res = snap.reservoir
        expected = res.maps[w.layer][: res.size, 3, 1]
        np.testing.assert_array_equal(detail["samples"], expected.numpy())
        np.testing.assert_array_equal(detail["sample_index"], res.sample_index[: res.size].numpy())
        assert detail["reservoir_size"] == 8 and detail["seen"] == N
        assert detail["samples"].dtype == np.float32 and detail["sample_index"].dtype == np.int32
        # the reservoir values lie within the population's range
        assert np.float32(detail["min"]) <= detail["samples"].min()
        assert detail["samples"].max() <= np.float32(detail["max"])
    finally:
        browser_update(w, selected_cell=None)
    assert w.detail is None


def test_python_side_values_are_canonicalised(finished):
    w = finished
    w.layer = -2
    assert w.layer == 0
    np.testing.assert_array_equal(w.heat, w.snapshot.stats[0].mean.numpy())
    w.selected_cell = (np.int64(2), 0)
    assert w.selected_cell == [2, 0] and type(w.selected_cell[0]) is int
    w.log_scale = np.bool_(True)
    assert w.log_scale is True
    w.layer, w.selected_cell, w.log_scale = 1, None, "auto"


# ---------------------------------------------------------------------------- untrusted input
@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("layer", "nonsense"),
        ("layer", 7),
        ("layer", True),
        ("layer", [1]),
        ("statistic", "median"),
        ("statistic", 3),
        ("selected_cell", [9, 0]),
        ("selected_cell", [1]),
        ("selected_cell", [1.5, 2]),
        ("selected_cell", [True, 0]),
        ("selected_cell", "1,2"),
        ("view", "3d"),
        ("log_scale", "yes"),
        ("log_scale", 1),
    ],
)
def test_invalid_browser_values_are_ignored_with_a_warning_and_reverted(finished, caplog, name, bad):
    w = finished
    before = getattr(w, name)
    heat_before = w.heat
    wire = Wire(w)
    with caplog.at_level(logging.WARNING):
        browser_update(w, **{name: bad})
    assert getattr(w, name) == before
    assert w.heat is heat_before
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == LOGGER and name in warnings[0].getMessage()
    # the page is told the value it must show again
    assert wire.updates(name) == [before]


def test_writes_to_python_owned_traits_and_bad_messages_are_ignored(finished, caplog):
    w = finished
    heat, status = w.heat, w.status
    with caplog.at_level(logging.WARNING):
        browser_update(w, heat={"view": b"\x00" * 4, "dtype": "float32", "shape": [1]}, status="running", done=-5)
        for content in ({"type": "command", "command": "explode"}, "garbage", {"type": "other"}, None):
            browser_command(w, content)
    assert w.heat is heat and w.status == status and w.done == N
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and all(r.name == LOGGER for r in caplog.records), messages
    assert "read-only traits ['done', 'heat', 'status']" in messages[0]
    assert all("expected {'type': 'command'" in m for m in messages[1:])


# ---------------------------------------------------------------------------- streaming
def test_updates_are_throttled_and_coalesced(model, ids, real_snapshot, monkeypatch):
    n = 300
    monkeypatch.setattr(explorer_module, "iter_sensitivity", fake_kernel(real_snapshot, n, 0.002))
    w = SensitivityExplorer(model, ids, start=False, throttle=0.1)
    wire = Wire(w)
    t0 = time.monotonic()
    w.start()
    assert w.wait(WAIT)
    elapsed = time.monotonic() - t0
    heat_updates = wire.updates("heat")
    dones = wire.updates("done")
    assert elapsed > 0.6  # 300 snapshots at >= 2 ms each
    # one update per 0.1 s at most, plus the final one (and the first)
    assert 2 <= len(heat_updates) <= elapsed / 0.1 + 2, (len(heat_updates), elapsed)
    assert dones == sorted(dones) and dones[-1] == n and w.done == n
    assert wire.updates("status")[-1] == "done"


def test_updates_come_from_the_job_thread_and_need_no_main_thread(model, ids):
    w = SensitivityExplorer(model, ids, batch_size=4, start=False)
    wire = Wire(w)
    seen_in = set()
    w.observe(lambda change: seen_in.add(threading.current_thread().name), names="heat")
    main = threading.current_thread().name
    w.start()
    deadline = time.monotonic() + WAIT
    while w.status != "done" and time.monotonic() < deadline:  # the main thread only watches
        time.sleep(0.01)
    assert w.status == "done" and w.done == N
    assert seen_in and main not in seen_in and all(name.startswith("tscope-job-") for name in seen_in)
    job_sent = wire.threads("heat")
    assert job_sent and all(t.startswith("tscope-job-") for t in job_sent)


class FailingBatches:
    """Two good batches, then an error (re-iterable, like a DataLoader)."""

    def __init__(self, ids):
        self.ids = ids

    def __iter__(self):
        yield self.ids[:8]
        yield self.ids[8:16]
        raise RuntimeError("disk on fire")


def test_an_error_shows_its_message_and_keeps_the_partial_heatmap(model, ids, caplog):
    w = SensitivityExplorer(model, FailingBatches(ids), layers=[1])
    with pytest.raises(JobError, match="the sensitivity job failed: RuntimeError: disk on fire") as caught:
        w.wait(WAIT)
    assert isinstance(caught.value.__cause__, RuntimeError) and caught.value.snapshot is w.snapshot
    assert w.status == "error" and w.message == "RuntimeError: disk on fire"
    assert w.done == 16 and w.total is None and w.eta is None
    assert w.snapshot.done == 16
    np.testing.assert_array_equal(w.heat, w.snapshot.stats[1].mean.numpy())
    assert np.isfinite(w.heat).all() and w.layer_options == [1]
    failed = w.job
    w.start()  # after an error, start() begins a fresh run (which fails the same way here)
    with pytest.raises(JobError):
        w.wait(WAIT)
    assert w.job is not failed and w.status == "error" and w.done == 16


def test_hutchinson_is_labelled_as_an_estimate_with_its_standard_error(model, ids):
    from scipy import stats as scipy_stats

    w = SensitivityExplorer(model, ids, method="hutchinson", probes=4, batch_size=8, reservoir_size=N, seed=0)
    assert w.method_note.startswith("Hutchinson estimates")  # before the first batch too
    assert w.wait(WAIT)
    assert w.method == "hutchinson" and "sem" in w.statistic_options
    assert w.method_note == "Hutchinson estimates with 4 probes: cell means ± standard error (sem)"
    html = w._picture_bundle()["text/html"]
    assert "Hutchinson estimates with 4 probes" in html
    browser_update(w, selected_cell=[3, 1])
    detail = w.detail
    # the standard error of the cell's mean over its per-sample estimates (every sample kept: reservoir >= N)
    per_sample = w.snapshot.reservoir.maps[w.layer][:N, 3, 1].to(torch.float64).numpy()
    assert detail["sem"] == pytest.approx(scipy_stats.sem(per_sample), rel=1e-5)
    assert detail["sem"] == pytest.approx(detail["std"] / np.sqrt(detail["count"]), rel=1e-12)
    browser_update(w, statistic="sem")
    np.testing.assert_allclose(w.heat, w.snapshot.stats[w.layer].sem.numpy())
    exact = SensitivityExplorer(model, ids, start=False)
    assert exact.method_note == "exact values"


def test_bad_data_are_refused_before_the_job_starts(model, ids):
    vocab = model.config.vocab_size
    with pytest.raises(TypeError, match=r"data: input_ids must hold integer token ids, got dtype torch.float32.*long"):
        SensitivityExplorer(model, ids.float())
    bad = ids.clone()
    bad[3, 2] = vocab + 5
    found = rf"data: token ids must lie in \[0, {vocab}\); found values in \[0, {vocab + 5}\]"
    with pytest.raises(ValueError, match=found):
        SensitivityExplorer(model, bad)
    with pytest.raises(ValueError, match="attention_mask must contain only 0"):
        SensitivityExplorer(model, (ids, torch.full_like(ids, 2)))
    # the first batch of a re-iterable data set (a list of batches, a DataLoader) is checked too
    with pytest.raises(ValueError, match="token ids must lie in"):
        SensitivityExplorer(model, [bad[:8], ids[8:]], batch_size=8)


def test_a_job_that_fails_before_any_data_shows_its_error_and_wait_raises(model, ids):
    bad = ids.clone()
    bad[0, 0] = -1

    def one_shot():  # a generator is not read before the run: its first batch fails in the job
        yield bad[:8]

    w = SensitivityExplorer(model, one_shot())
    with pytest.raises(JobError, match=r"the sensitivity job failed: ValueError: .*token ids must lie in"):
        w.wait(WAIT)
    assert w.status == "error" and w.stats is None and w.heat is None
    html = w._picture_bundle()["text/html"]
    assert "the job failed: ValueError" in html and "waiting for the first batch" not in html


def test_pause_resume_stop_from_python_and_from_the_browser(model, ids, real_snapshot, monkeypatch):
    started = threading.Event()
    kernel = fake_kernel(real_snapshot, 10_000, 0.005, started)
    monkeypatch.setattr(explorer_module, "iter_sensitivity", kernel)
    w = SensitivityExplorer(model, ids)
    assert started.wait(WAIT)
    browser_command(w, {"type": "command", "command": "pause"})
    assert w.status == "paused"
    time.sleep(0.15)  # the batch in flight finishes, then the job parks
    parked = w.job.progress.done
    time.sleep(0.15)
    assert w.job.progress.done == parked and w.done == parked and w.status == "paused"
    w.resume()
    assert w.status == "running"
    deadline = time.monotonic() + WAIT
    while w.job.progress.done < parked + 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.job.progress.done >= parked + 5
    browser_command(w, {"type": "command", "command": "stop"})
    assert w.message == "stopping after the batch in flight" or w.status == "cancelled"
    assert w.wait(WAIT)
    assert w.status == "cancelled" and w.message.startswith("cancelled after")
    assert 0 < w.done < 10_000 and w.heat is not None
    w.pause()  # no-ops once ended
    w.resume()
    assert w.status == "cancelled"


def test_start_later_restart_and_refuse_double_start(model, ids, real_snapshot, monkeypatch):
    monkeypatch.setattr(explorer_module, "iter_sensitivity", fake_kernel(real_snapshot, 3, 0.0))
    w = SensitivityExplorer(model, ids, start=False)
    assert (w.status, w.heat, w.done) == ("pending", None, 0)
    with pytest.raises(RuntimeError, match="never started"):
        w.wait(0.01)
    w.start()
    assert w.wait(WAIT) and w.status == "done" and w.done == 3
    first = w.job
    w.start()  # a fresh run
    assert w.job is not first
    assert w.wait(WAIT) and w.status == "done" and w.done == 3

    monkeypatch.setattr(explorer_module, "iter_sensitivity", fake_kernel(real_snapshot, 10_000, 0.005))
    w = SensitivityExplorer(model, ids)
    with pytest.raises(RuntimeError, match="stop\\(\\) it before"):
        w.start()
    w.close()
    assert w.wait(WAIT) and w.job.status == "cancelled"


def test_tokenizer_names_positions_by_the_first_sample(model, ids):
    class Tokenizer:
        def decode(self, token_ids):
            return "".join(f"t{i}" for i in token_ids)

    mask = torch.ones(N, S, dtype=torch.long)
    mask[0, -2:] = 0
    w = SensitivityExplorer(model, (ids, mask), layers=0, batch_size=8, tokenizer=Tokenizer())
    assert w.wait(WAIT)
    assert w.token_labels == [f"t{int(t)}" for t in ids[0, :3]] + ["", ""]
    assert w.label_note == "tokens of sample 0"
    assert w.counts[4, 4] == N - 1  # sample 0 is padded there


# ---------------------------------------------------------------------------- export
def test_exports_need_statistics_then_write_bokeh_html_and_results(
    finished, model, ids, tmp_path, real_snapshot, monkeypatch
):
    w, snap = finished, finished.snapshot
    fig = w.to_bokeh()
    assert isinstance(fig, figure) and "layer 1" in fig.title.text and "16 of 16 samples" in fig.title.text
    assert isinstance(w.to_bokeh(layers="all", statistics=["mean", "std"]), GridPlot)
    with pytest.raises(ValueError, match="unknown statistics"):
        w.to_bokeh(statistics="median")
    with pytest.raises(ValueError, match="layer 5"):
        w.to_bokeh(layers=[5])

    page = w.save_html(tmp_path / "report.html").read_text()
    assert "Position-to-position sensitivity" in page and "cdn.bokeh.org" not in page

    out = w.save_statistics(tmp_path / "stats")
    stats, meta = load_statistics(out)
    assert list(stats) == [0, 1]
    for layer in (0, 1):
        for key, value in snap.stats[layer].state_dict().items():
            assert torch.equal(stats[layer].state_dict()[key], value)
    assert meta["token_labels"] == LABELS and meta["method"] == "exact" and meta["done"] == N
    extra = load_extra_tensors(out)
    assert torch.equal(extra["reservoir.maps.1"], snap.reservoir.maps[1])
    assert torch.equal(extra["reservoir.input_ids"], snap.reservoir.input_ids)

    monkeypatch.setattr(explorer_module, "iter_sensitivity", fake_kernel(real_snapshot, 1, 0.0))
    fresh = SensitivityExplorer(model, ids, start=False)
    for call in (fresh.to_bokeh, lambda: fresh.save_statistics(tmp_path / "x")):
        with pytest.raises(RuntimeError, match="no statistics yet"):
            call()


def test_colours_default_to_auto_log_and_follow_the_settings_everywhere(finished):
    w = finished
    assert (w.log_scale, w.colormap, w.color_percentiles, w.color_limits) == ("auto", "viridis", None, None)
    mean = w.snapshot.stats[w.layer].mean.numpy()
    positive = mean[np.isfinite(mean) & (mean > 0)]
    assert positive.max() / positive.min() >= 100  # a sensitivity map spans decades: "auto" draws it in log
    assert 'data-log="true"' in w._picture_svg()
    assert w.to_bokeh().select_one({"type": LogColorMapper}) is not None
    try:
        browser_update(w, log_scale=False, color_percentiles=[5, 95], colormap="magma")
        assert 'data-log="false"' in w._picture_svg()
        mapper = w.to_bokeh().select_one({"type": LinearColorMapper})
        finite = mean[np.isfinite(mean)]
        assert (mapper.low, mapper.high) == pytest.approx(tuple(np.percentile(finite, [5, 95])))
        assert mapper.palette[0] == "#000004"  # magma
        w.statistic = "count"  # counts: linear, viridis, unclamped
        assert w.to_bokeh().select_one({"type": LinearColorMapper}).palette[0] == "#440154"
    finally:
        browser_update(w, log_scale="auto", color_percentiles=None, colormap="viridis", statistic="mean")


def test_constructor_refuses_bad_arguments(model, ids):
    with pytest.raises(ValueError, match="colormap='jet'"):
        SensitivityExplorer(model, ids, colormap="jet", start=False)
    with pytest.raises(ValueError, match="color_percentiles"):
        SensitivityExplorer(model, ids, color_percentiles=(99, 1), start=False)
    with pytest.raises(ValueError, match="log_scale"):
        SensitivityExplorer(model, ids, log_scale="yes", start=False)
    with pytest.raises(TypeError, match="unknown keyword arguments \\['colour'\\]"):
        SensitivityExplorer(model, ids, colour="red")
    with pytest.raises(ValueError, match="throttle"):
        SensitivityExplorer(model, ids, throttle=0)
    with pytest.raises(TypeError, match="token_labels"):
        SensitivityExplorer(model, ids, token_labels="abcde")
    with pytest.raises(ValueError, match="out of range"):
        SensitivityExplorer(model, ids, layers=[5])
    with pytest.raises(ValueError, match="method"):
        SensitivityExplorer(model, ids, method="magic")
    with pytest.raises(ValueError, match="batch_size"):
        SensitivityExplorer(model, ids, batch_size=0)


# ---------------------------------------------------------------------------- intra-op threads
# The explorer hands num_threads to its Job; the rules of the process default (a default changed
# meanwhile, stop, error, overlapping runs) are tested on Job itself in tests/test_jobs.py.
def gated_kernel(snapshot, seen: list, gate: threading.Event | None = None, reached: threading.Event | None = None):
    """An iter_sensitivity stand-in of 3 snapshots recording the job thread's intra-op thread count;
    with ``gate``, it sets ``reached`` after the first snapshot and waits for ``gate`` before the next."""

    def kernel(*_args, **_kwargs):
        def run():
            for k in range(1, 4):
                seen.append(torch.get_num_threads())
                yield dataclasses.replace(snapshot, done=k, total=3, batches=k)
                if gate is not None and k == 1:
                    reached.set()
                    assert gate.wait(WAIT)

        return run()

    return kernel


@pytest.fixture
def default_threads():
    """The process default of intra-op threads is 1 (tests/conftest.py); put it back after the test."""
    assert torch.get_num_threads() == 1 and default_num_threads() == 1
    yield 1
    torch.set_num_threads(1)


def test_num_threads_is_validated(model, ids):
    for bad in (1.5, "2", True, [2]):
        with pytest.raises(TypeError, match="num_threads must be a positive int"):
            SensitivityExplorer(model, ids, num_threads=bad, start=False)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_threads must be a positive int"):
            SensitivityExplorer(model, ids, num_threads=bad, start=False)
    SensitivityExplorer(model, ids, num_threads=np.int64(2), start=False).close()


def test_num_threads_applies_to_the_job_thread_only_and_the_default_comes_back(
    model, ids, real_snapshot, monkeypatch, default_threads
):
    seen: list[int] = []
    gate, reached = threading.Event(), threading.Event()
    monkeypatch.setattr(explorer_module, "iter_sensitivity", gated_kernel(real_snapshot, seen, gate, reached))
    w = SensitivityExplorer(model, ids, num_threads=3)
    assert reached.wait(WAIT)
    assert torch.get_num_threads() == 1  # the main thread keeps its count while the job runs with 3
    assert default_num_threads() == 3  # threads that first use torch now start with 3
    gate.set()
    assert w.wait(WAIT) and w.status == "done"
    assert seen == [3, 3, 3]
    assert torch.get_num_threads() == 1 and default_num_threads() == 1  # put back
    w.start()  # a restart runs with the same count
    assert w.wait(WAIT) and seen[3:] == [3, 3, 3] and default_num_threads() == 1

    seen.clear()
    w = SensitivityExplorer(model, ids)  # None: the job thread starts with the process default
    assert w.wait(WAIT) and seen == [1, 1, 1]


def test_num_threads_gives_the_same_statistics(model, ids, finished, default_threads):
    w = SensitivityExplorer(model, ids, batch_size=8, token_labels=LABELS, reservoir_size=8, num_threads=2)
    assert w.wait(WAIT) and w.status == "done"
    for layer in (0, 1):
        for stat in ("mean", "std", "min", "max", "count"):
            np.testing.assert_allclose(
                getattr(w.stats[layer], stat), getattr(finished.stats[layer], stat), rtol=1e-12, atol=0
            )
    assert default_num_threads() == 1


def test_a_long_map_travels_as_float16_within_its_precision_and_counts_narrow(model, ids):
    w = SensitivityExplorer(model, ids, start=False)
    wire = Wire(w)
    rng = np.random.default_rng(1)
    S = 600  # above 512 x 512 cells
    heat = (10.0 ** rng.uniform(-6, 0, size=(S, S))).astype(np.float32)
    heat[np.triu_indices(S, 1)] = 0.0  # a causal map's exact zeros
    w.heat = heat
    w.counts = np.full((S, S), 300, dtype=np.int64)
    (sent,) = wire.updates("heat")
    assert sent.dtype == np.float32 and sent.shape == (S, S)
    assert (sent[heat == 0] == 0).all()
    np.testing.assert_allclose(sent, heat, rtol=2.0**-11, atol=0)
    data, buffers = next(m for m in wire.messages if "heat" in m[0]["state"])
    heat_buffer = buffers[data["buffer_paths"].index(["heat", "view"])]
    assert memoryview(heat_buffer).nbytes == 2 * S * S  # half of float32
    (counts,) = wire.updates("counts")
    assert counts.dtype == np.uint16 and (counts == 300).all()
