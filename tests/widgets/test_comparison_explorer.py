"""ComparisonExplorer: traits against compare_statistics, untrusted browser values, a clicked cell's two
reservoirs, live updates while both runs fill in (throttled), results folders, and runs that do not match.
No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_update
from tscope_widgets import ComparisonExplorer as TopLevel
from tscope_widgets.jobs import Job
from tscope_widgets.kernels import iter_sensitivity
from tscope_widgets.kernels.compare import compare_statistics
from tscope_widgets.widgets import ComparisonExplorer, SensitivityExplorer

N, S = 16, 5
LABELS = ["<s>", "a", "b", "c", "d"]
WAIT = 60.0
LOGGER = "tscope_widgets.widgets.comparison"


@pytest.fixture(scope="module")
def runs():
    """Two finished explorers: the same model on two data sets, the second biased to repeat a token."""
    model = tiny()
    ids_a = torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(1))
    ids_b = torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(2))
    ids_b[:, 1::2] = 3
    a = SensitivityExplorer(model, ids_a, batch_size=8, token_labels=LABELS, reservoir_size=8, num_threads=1)
    b = SensitivityExplorer(model, ids_b, batch_size=8, token_labels=LABELS, reservoir_size=8, num_threads=1)
    assert a.wait(WAIT) and b.wait(WAIT)
    return a, b


@pytest.fixture
def view(runs):
    a, b = runs
    w = a.compare(b, names=("random", "repeats"))
    yield w
    w.close()


def test_traits_are_welch_of_the_two_runs_and_travel_as_float32(view, runs):
    a, b = runs
    assert TopLevel is ComparisonExplorer and isinstance(view, ComparisonExplorer)
    layer = view.layer
    assert layer == a.layer_options[-1] and view.layer_options == a.layer_options
    ref = compare_statistics(a.stats[layer], b.stats[layer], alpha=0.05, correction="fdr_bh")
    np.testing.assert_array_equal(view.values, ref.difference.numpy())
    np.testing.assert_array_equal(view.significant, ref.significant.numpy())
    np.testing.assert_array_equal(view.q, ref.q.numpy())
    assert view.num_tests == ref.num_tests and view.num_significant == ref.num_significant > 0
    assert view.status == "done" and view.status_a == view.status_b == "done" and view.done_a == N
    assert view.token_labels == LABELS and view.seq_len == S and view.names == ["random", "repeats"]
    wire = Wire(view)
    view.refresh()
    values = wire.updates("values")[-1]
    assert values.dtype == np.float32 and values.shape == (S, S)
    np.testing.assert_array_equal(values, ref.difference.numpy().astype(np.float32))
    assert wire.updates("significant")[-1].dtype == np.uint8


def test_browser_alpha_correction_and_shown_recompute_the_test(view, runs):
    a, b = runs
    layer = view.layer
    counts = {}
    for alpha in (0.001, 0.2):
        browser_update(view, alpha=alpha)
        ref = compare_statistics(a.stats[layer], b.stats[layer], alpha=alpha, correction="fdr_bh")
        np.testing.assert_array_equal(view.significant, ref.significant.numpy())
        counts[alpha] = view.num_significant
    assert counts[0.001] < counts[0.2]  # the level changes which cells are faded
    browser_update(view, correction=None)
    ref = compare_statistics(a.stats[layer], b.stats[layer], alpha=0.2, correction=None)
    np.testing.assert_array_equal(view.q, ref.p.numpy())
    browser_update(view, shown="log_ratio")
    np.testing.assert_array_equal(view.values, ref.log_ratio.numpy())
    browser_update(view, layer=a.layer_options[0])
    ref = compare_statistics(a.stats[0], b.stats[0], alpha=0.2, correction=None)
    np.testing.assert_array_equal(view.values, ref.log_ratio.numpy())
    before = view.values
    browser_update(view, mask=False)  # a drawing switch: nothing recomputed, the picture still draws
    assert view.values is before and view.mask is False and view._picture_svg().startswith("<svg")


@pytest.mark.parametrize(
    ("name", "bad"),
    [("alpha", 1.5), ("alpha", "0.05"), ("alpha", True), ("correction", "holm"), ("shown", "ratio"),
     ("mask", "yes"), ("layer", 9), ("selected_cell", [0, S]), ("selected_cell", "0,1")],
)
def test_bad_browser_values_are_refused_with_a_warning_and_sent_back(view, caplog, name, bad):
    before, values = getattr(view, name), view.values
    wire = Wire(view)
    with caplog.at_level(logging.WARNING):
        browser_update(view, **{name: bad})
    assert getattr(view, name) == before and view.values is values
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1 and name in warnings[0].getMessage()
    assert wire.updates(name) == [before]
    with caplog.at_level(logging.WARNING):
        browser_update(view, values={"view": b"\x00" * 4, "dtype": "float32", "shape": [1]})
    assert view.values is values


def test_a_clicked_cell_sends_both_runs_reservoir_values(view, runs):
    a, b = runs
    wire = Wire(view)
    browser_update(view, selected_cell=[3, 1])
    d = wire.updates("detail")[-1]
    layer = view.layer
    for run, key in ((a, "samples_a"), (b, "samples_b")):
        res = run.snapshot.reservoir
        expected = res.maps[layer][: res.size, 3, 1]
        np.testing.assert_array_equal(d[key], expected[torch.isfinite(expected)].numpy())
        assert d[key].size == 8
    ref = compare_statistics(a.stats[layer], b.stats[layer], alpha=0.05)
    assert d["cell"] == [3, 1] and d["t"] == pytest.approx(float(ref.t[3, 1]), rel=1e-12)
    assert d["count_a"] == d["count_b"] == N
    browser_update(view, selected_cell=None)
    assert view.detail is None


def test_live_while_both_runs_fill_in_throttled_and_ending_on_the_final_state():
    model = tiny()
    ids_a = torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(5))
    ids_b = torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(6))
    a = SensitivityExplorer(model, ids_a, batch_size=2, start=False, num_threads=1)
    job_b = Job(iter_sensitivity, model, ids_b, layers="all", batch_size=2, name="b", throttle=0.0, start=False,
                num_threads=1)
    view = ComparisonExplorer(a, job_b, throttle=0.05)
    try:
        assert view.status == "waiting" and view.values is None and view._picture_svg() is None
        with pytest.raises(RuntimeError, match="nothing to draw yet"):
            view.to_bokeh()
        a.start()
        job_b.start()
        assert view.wait(WAIT)
        assert view.updates >= 2  # recomputed while the runs were filling in
        assert view.status == "done" and view.done_a == view.done_b == N
        ref = compare_statistics(a.stats[view.layer], job_b.snapshot.stats[view.layer])
        np.testing.assert_array_equal(view.values, ref.difference.numpy())
    finally:
        view.close()
        a.close()


def test_results_folders_compare_like_the_live_runs(runs, tmp_path):
    a, b = runs
    a.save_statistics(tmp_path / "a")
    b.save_statistics(tmp_path / "b")
    view = ComparisonExplorer(tmp_path / "a", str(tmp_path / "b"), alpha=0.1, correction="bonferroni")
    ref = compare_statistics(a.stats[view.layer], b.stats[view.layer], alpha=0.1, correction="bonferroni")
    np.testing.assert_array_equal(view.significant, ref.significant.numpy())
    assert view.status_a == "saved" and view.status == "done"
    view.selected_cell = [2, 2]
    assert view.detail["samples_a"].size == 8 and view.detail["samples_b"].size == 8
    view.close()


def test_bokeh_export_and_report_show_the_faded_difference_and_both_means(view, tmp_path):
    from bokeh.models import GridPlot

    grid = view.to_bokeh()
    assert isinstance(grid, GridPlot) and len(grid.children) == 3
    diff = view.comparison
    html = view.save_html(tmp_path / "comparison.html").read_text()
    assert f"{diff.num_significant} of {diff.num_tests} cells significant" in html
    titles = [child[0].title.text for child in grid.children]
    assert "random − repeats" in titles[0] and "of random" in titles[1] and "of repeats" in titles[2], titles


def test_bad_arguments_and_runs_that_do_not_match_are_refused(runs, tmp_path):
    a, b = runs
    with pytest.raises(ValueError, match=r"alpha=1\.5: must be a number between 0 and 1"):
        ComparisonExplorer(a, b, alpha=1.5)
    with pytest.raises(ValueError, match="correction='holm'"):
        ComparisonExplorer(a, b, correction="holm")
    with pytest.raises(ValueError, match="shown='ratio'"):
        ComparisonExplorer(a, b, shown="ratio")
    with pytest.raises(TypeError, match="names must be two strings"):
        ComparisonExplorer(a, b, names="ab")
    with pytest.raises(TypeError, match="run b must be a SensitivityExplorer, a Job"):
        ComparisonExplorer(a, 42)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ComparisonExplorer(a, tmp_path / "missing")
    longer = torch.randint(0, 11, (4, S + 1), generator=torch.Generator().manual_seed(9))
    other = SensitivityExplorer(tiny(), longer, batch_size=4, num_threads=1)
    assert other.wait(WAIT)
    with pytest.raises(ValueError, match=r"cells \[5, 5\] in a but \[6, 6\].*max_seq_len"):
        ComparisonExplorer(a, other)
    one_layer = SensitivityExplorer(tiny(), longer[:, :S], layers=0, batch_size=4, num_threads=1)
    assert one_layer.wait(WAIT)
    with pytest.raises(ValueError, match="different layers"):
        a.compare(one_layer)


def test_live_runs_found_not_to_match_show_an_error_once_instead_of_raising(caplog):
    model = tiny()
    ids = torch.randint(0, 11, (4, S), generator=torch.Generator().manual_seed(7))
    a = SensitivityExplorer(model, ids, batch_size=2, start=False, num_threads=1)
    b = SensitivityExplorer(model, ids, layers=0, batch_size=2, start=False, num_threads=1)
    view = a.compare(b)  # nothing to check yet: no snapshots
    try:
        with caplog.at_level(logging.WARNING):
            a.start()
            b.start()
            assert view.wait(WAIT) is True
        assert view.status == "error" and "different layers" in view.message and view.values is None
        warnings = [r for r in caplog.records if r.name == LOGGER]
        assert len(warnings) == 1 and "different layers" in warnings[0].getMessage()
    finally:
        view.close()
