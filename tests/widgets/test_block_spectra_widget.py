"""BlockSpectraWidget: the view against the kernels (heterogeneity, λ_max, sharpness by type), the wire, untrusted
browser input, a live job on a tiny transformer, a ``tscope run`` blocks folder, the picture and the export.
No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from bokeh.models import Column

from tests.model_zoo import tiny
from tests.test_cli import FAST, small_config, write_config
from tests.test_cli import small_model_dir as small_model_dir  # noqa: F401 (the module fixture)
from tests.widgets.comm import Wire, browser_command, browser_update
from tscope_widgets import BlockSpectraWidget
from tscope_widgets.cli import main
from tscope_widgets.export.results import load_results
from tscope_widgets.figures.block_spectra import block_spectra_charts
from tscope_widgets.figures.charts import LineChart, MatrixChart
from tscope_widgets.kernels import block_densities, block_type_sharpness, spectral_heterogeneity
from tscope_widgets.kernels.block_density import iter_block_slq
from tscope_widgets.widgets._block_spectra_state import blocks_view, check_view_state, load_blocks_folder, view_wire

LOGGER = "tscope_widgets.widgets.block_spectra"
BLOCKS = ["embed", "block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.mlp.in", "block0.ln1"]
WAIT = 120.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def case():
    model = tiny(n_layer=1)
    batch = {"input_ids": torch.randint(0, 11, (3, 7), generator=gen(3))}
    dens = block_densities(model, batch, BLOCKS, num_probes=3, num_steps=20, generator=gen(4))
    return model, batch, dens


def test_view_holds_the_kernels_numbers(case):
    _, _, dens = case
    view = blocks_view(dens)
    het = spectral_heterogeneity(dens)
    assert view["labels"] == BLOCKS and view["done"] == view["total"] == len(BLOCKS)
    np.testing.assert_array_equal(view["distances"], het.distances.numpy())
    np.testing.assert_array_equal(view["densities"], het.densities.numpy())
    assert view["js_mean"] == het.mean
    lam = np.array([dens[g].nodes.max().item() for g in BLOCKS])
    np.testing.assert_array_equal(view["block_lambda_max"], lam)
    t = block_type_sharpness(lam, BLOCKS)
    assert view["types"]["types"] == t.types == ["embed", "qk", "vo", "mlp", "norm"]
    np.testing.assert_array_equal(view["types"]["values"], t.values.numpy())
    assert view["types"]["values"][1] == pytest.approx((lam[1] + lam[2]) / 2)  # QK: mean of q and k
    assert view["types"]["counts"] == [1, 2, 1, 1, 1]
    assert view["types"]["ratios"]["qk/embed"] == pytest.approx(view["types"]["values"][1] / lam[0])
    assert view["types"]["follows"] is bool(t.follows_sdp())
    # blocks with labels of no type: the densities and distances, no type view, and a note why
    other = blocks_view({"x": dens["embed"], "y": dens["block0.ln1"]})
    assert other["types"] is None and "cannot tell the block type of 'x'" in other["types_note"]
    assert other["distances"].shape == (2, 2) and other["js_mean"] > 0
    single = blocks_view({"embed": dens["embed"]})
    assert single["js_mean"] is None and view_wire(single)["js_mean"] is None  # one block: no pair
    assert blocks_view({}) is None


def test_wire_has_no_nan_and_bad_densities_are_refused(case):
    _, _, dens = case
    view = blocks_view(dens)
    view["types"]["ratios"]["qk/embed"] = math.inf  # e.g. S(Emb) = 0
    wire = view_wire(view)
    assert wire["types"]["ratios"]["qk/embed"] is None and wire["types"]["values"] == list(view["types"]["values"])
    with pytest.raises(TypeError, match="expected BlockDensities"):
        blocks_view([dens["embed"]])
    with pytest.raises(TypeError, match="expected a SpectralDensity"):
        blocks_view({"embed": "nope"})
    bad = dens["embed"]
    with pytest.raises(ValueError, match="not finite"):
        blocks_view({"embed": type(bad)(bad.grid, bad.density, bad.nodes * math.nan, bad.weights, 0.1, 0, 1, 1)})


def test_view_state_checks_refuse_what_makes_no_sense():
    labels = ["a", "b", "c"]
    assert check_view_state("selected_blocks", ["c", "a", "a"], labels=labels) == (True, ["a", "c"], "")
    assert check_view_state("selected_blocks", [], labels=labels) == (True, [], "")
    for bad in ("a", None, [1], ["a", "zzz"], {"a": 1}):
        ok, _, why = check_view_state("selected_blocks", bad, labels=labels)
        assert not ok and why
    assert "unknown blocks ['zzz']" in check_view_state("selected_blocks", ["zzz"], labels=labels)[2]
    for name in ("overlay", "log_y"):
        assert check_view_state(name, False, labels=labels) == (True, False, "")
        for bad in (1, "true", None):
            assert not check_view_state(name, bad, labels=labels)[0]
    with pytest.raises(KeyError):
        check_view_state("view", None, labels=labels)


def test_fixed_widget_traits_browser_input_and_picture(case, caplog):
    _, _, dens = case
    w = BlockSpectraWidget(densities=dens, selected=["block0.attn.q", "embed"], overlay=False)
    wire = Wire(w)
    assert w.source == "densities" and w.status == "done" and w.block_labels == BLOCKS
    assert w.selected_blocks == ["embed", "block0.attn.q"]  # block order
    view = w.view
    np.testing.assert_allclose(view["distances"], spectral_heterogeneity(dens).distances.numpy())
    # the browser: a valid choice is taken, nonsense is refused, logged and put back
    browser_update(w, selected_blocks=["block0.ln1"])
    assert w.selected_blocks == ["block0.ln1"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, selected_blocks=["block7.attn.q"], overlay="yes", log_y=None)
        browser_update(w, view=None, block_labels=["x"])  # traits only Python sets
    assert w.selected_blocks == ["block0.ln1"] and w.overlay is False and w.log_y is True
    assert w.view is view and w.block_labels == BLOCKS
    text = caplog.text
    assert "unknown blocks ['block7.attn.q']" in text and "must be true or false" in text and "read-only" in text
    assert wire.updates("selected_blocks")[-1] == ["block0.ln1"]  # the page was told what to show instead
    with pytest.raises(RuntimeError, match="no job"):
        w.start()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_command(w, {"type": "command", "command": "pause"})  # no job: logged, nothing raised
    assert w.wait(0) is True
    # the picture and the export: one density chart per picked block, then the distances and the type points
    charts = w._charts()
    assert [type(c) for c in charts] == [LineChart, MatrixChart, LineChart]
    assert [s.label for s in charts[0].series] == ["block0.ln1"]
    assert "<svg" in w._picture_svg() and "does not hold" in w._picture_caption().extra_html or "holds" in (
        w._picture_caption().extra_html)
    assert isinstance(w.to_bokeh(), Column)
    w.close()


def test_side_by_side_charts_share_one_y_range_and_keep_block_colours(case):
    _, _, dens = case
    view = blocks_view(dens)
    side = block_spectra_charts(view, ["block0.attn.k", "block0.ln1"], overlay=False, log=True)
    assert len(side) == 4 and side[0].y_range == side[1].y_range
    over = block_spectra_charts(view, ["block0.attn.k", "block0.ln1"], overlay=True, log=True)
    assert len(over) == 3 and [s.color for s in over[0].series] == [s.series[0].color for s in side[:2]]
    every = block_spectra_charts(view, None)
    assert [s.label for s in every[0].series] == BLOCKS
    assert over[0].series[1].color == every[0].series[5].color  # a block's colour is its index among all
    # on a log axis each density is floored at 1e-6 of its peak (its Gaussian tails underflow)
    y = over[0].series[0].y
    assert y.min() == pytest.approx(1e-6 * y.max())
    points = over[-1]
    assert [s.label for s in points.series] == ["S(Emb)", "S(QK)", "S(FFN)", "S(VO)", "S(Norm)"]
    assert np.isfinite(points.series[2].y).tolist() == [False, False, True, False, False]


def test_live_widget_runs_the_kernel_and_equals_block_densities(case):
    model, batch, dens = case
    w = BlockSpectraWidget(model, batch, BLOCKS, num_probes=3, num_steps=20, seed=4, selected=["block0.ln1"],
                           num_threads=1)
    wire = Wire(w)
    assert w.wait(WAIT) and w.status == "done" and w.done == w.total == len(BLOCKS)
    result = w.result
    np.testing.assert_array_equal(result["distances"], spectral_heterogeneity(dens).distances.numpy())
    assert result["js_mean"] == spectral_heterogeneity(dens).mean
    # the selection given before the block existed is applied when it arrives, and kept
    assert w.selected_blocks == ["block0.ln1"]
    views = [v for v in wire.updates("view") if v is not None]
    assert views and len(views[-1]["labels"]) == len(BLOCKS)
    assert all(views[k]["labels"] == BLOCKS[: len(views[k]["labels"])] for k in range(len(views)))
    w.close()
    with pytest.raises(ValueError, match="either a model and data"):
        BlockSpectraWidget(model, batch, densities=dens)
    with pytest.raises(ValueError, match="needs data"):
        BlockSpectraWidget(model)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        BlockSpectraWidget(model, batch, num_steps=0)
    with pytest.raises(TypeError, match="overlay must be True or False"):
        BlockSpectraWidget(densities=dens, overlay="yes")
    with pytest.raises(TypeError, match="selected must be a list of block labels"):
        BlockSpectraWidget(densities=dens, selected="embed")
    with pytest.raises(ValueError, match=r"selected names blocks \['block9.attn.q'\]"):
        BlockSpectraWidget(densities=dens, selected=["block9.attn.q"])


def test_live_widget_reports_a_bad_group_as_a_job_error():
    w = BlockSpectraWidget(tiny(n_layer=1), {"input_ids": torch.zeros(1, 4, dtype=torch.long)}, ["nope.*"],
                           num_probes=1, num_steps=2, num_threads=1)
    with pytest.raises(RuntimeError, match="nope"):
        w.wait(WAIT)
    assert w.status == "error" and w.view is None
    w.close()


def test_from_results_shows_a_tscope_run_folder(tmp_path, small_model_dir):  # noqa: F811
    analysis = 'kind = "blocks"\nblocks = ["block0.*", "embed"]\nblock_probes = 2\nblock_steps = 12\nseed = 1'
    out = tmp_path / "out"
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "save_model = false\nreport = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    w = BlockSpectraWidget.from_results(out, log_y=False)
    assert w.source == "results" and w.block_labels == meta["labels"] and w.log_y is False
    r = w.result
    np.testing.assert_allclose(r["distances"], tensors["js.distances"].numpy(), rtol=1e-12, atol=1e-14)
    assert r["js_mean"] == pytest.approx(meta["js_mean"], rel=1e-12)
    np.testing.assert_array_equal(r["block_lambda_max"], tensors["block_lambda_max"].numpy())
    assert r["types"]["types"] == list(meta["type_sharpness"])
    np.testing.assert_allclose(r["types"]["values"], tensors["types.values"].numpy(), rtol=1e-12)
    assert r["types"]["follows"] is meta["sdp_order_holds"]
    w.close()
    # a folder of another kind, or one whose tensors are missing, is refused with what to pass
    with pytest.raises(FileNotFoundError):
        load_blocks_folder(tmp_path / "missing")
    from tscope_widgets.export.results import save_results

    save_results(tmp_path / "other", "curvature", {"x": torch.zeros(1)}, {})
    with pytest.raises(ValueError, match="not of 'blocks'"):
        load_blocks_folder(tmp_path / "other")
    save_results(tmp_path / "broken", "blocks", {"x": torch.zeros(1)}, {"labels": ["embed"]})
    with pytest.raises(ValueError, match="lacks the tensors"):
        load_blocks_folder(tmp_path / "broken")


def test_dense_blocks_without_a_model_are_shown_too():
    A = torch.diag(torch.linspace(0.1, 2.0, 12, dtype=torch.float64))
    # the same probes for both blocks (one seed each): the quadratures differ by the factor 3 only
    dens = {g: list(iter_block_slq({g: M}, 2, 12, generator=gen(0)))[-1][g] for g, M in (("embed", A), ("head", 3 * A))}
    w = BlockSpectraWidget(densities=dens)
    r = w.result
    assert r["distances"][0, 1] < 1e-6  # same shape up to scale: the normalisation removes it
    assert r["block_lambda_max"].tolist() == pytest.approx([2.0, 6.0])
    assert r["types"]["ratios"] == {}  # no neighbours in the principle's order (the head is not part of it)
    w.close()


def test_spectrum_widget_shows_the_sharpness_by_block_type_over_training():
    from tests.widgets.test_spectrum_widget import make_history
    from tscope_widgets.figures.spectrum import spectrum_charts
    from tscope_widgets.tracking import SpectrumHistory
    from tscope_widgets.widgets._spectrum_state import check_history, type_wire
    from tscope_widgets.widgets.spectrum import SpectrumWidget

    h = check_history(make_history(3))  # blocks q, k (NaN at the first record), head
    t = type_wire(h)
    assert t["types"] == ["qk", "head"] and t["values"].shape == (2, 3)
    np.testing.assert_allclose(t["values"][0], [0.5, (1.5 + 0.25) / 2, (2.5 + 0.5) / 2])  # NaN left out
    np.testing.assert_allclose(t["values"][1], [3.0, 3.0, 3.0])
    chart = spectrum_charts(h, log=False)[-1]
    assert [s.label for s in chart.series] == ["S(QK)", "S(head)"] and chart.x.tolist() == [0, 10, 20]
    w = SpectrumWidget(history=make_history(3))
    wire = Wire(w)
    w.send_state("series")  # what the page receives
    (sent,) = wire.updates("series")
    assert sent["type_sharpness"]["types"] == ["qk", "head"]
    np.testing.assert_allclose(sent["type_sharpness"]["values"], t["values"], rtol=1e-6)  # float32 on the wire
    w.close()
    layers = SpectrumHistory.empty(["block0"], ["block0"])  # a layer mixes types: no type view
    layers.append(dict(steps=0, loss=1.0, train_loss=1.0, lambda_max=1.0, lambda_min=0.0, trace=1.0,
                       trace_stderr=0.0, grad_norms=np.ones(1), block_lambda_max=np.ones(1), threshold=20.0, lr=0.1,
                       matvecs=1, converged=True))
    assert type_wire(check_history(layers)) is None
