"""AttentionExplorer: traits and wire messages, untrusted input from the page, following a tracker live,
the picture and the export. No browser: messages are captured where the comm would send them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_update
from tscope_widgets import AttentionExplorer, AttentionTracker
from tscope_widgets.kernels.attention import head_spectra

N, S = 5, 5
LOGGER = "tscope_widgets.widgets.attention"


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def explorer(model, ids):
    return AttentionExplorer(model, ids, num_bootstrap=100, token_labels=list("abcde"))


def test_starts_on_the_last_layer_head_mean_with_the_correlation(explorer):
    w = explorer
    c = w.correlations[1]
    assert w.layer == 1 and w.layer_options == [0, 1] and w.seq_len == S
    assert w.map_options == ["head0", "head1", "head mean", "rollout"] and w.attention_map == "head mean"
    assert w.pane["map"] == "head mean" and w.pane["rho"] == c.rho[2].item()
    np.testing.assert_array_equal(w.pane["attention"], c.mean_attention[2].float().numpy())
    assert [r["map"] for r in w.table] == w.map_options
    spectra = head_spectra(tiny())
    np.testing.assert_allclose(w.grid, spectra.entropy_rank["qk"].float().numpy(), rtol=1e-6)
    assert w.head_layers == [0, 1] and w.n_heads == 2 and w.steps == []


def test_page_choices_reach_python_and_the_data_follows(explorer):
    w = explorer
    wire = Wire(w)
    browser_update(w, selected_cell=[3, 1])
    assert w.selected_cell == [3, 1] and w.cell["cell"] == [3, 1]
    assert w.cell["attention"][2] == pytest.approx(w.correlations[1].mean_attention[2, 3, 1].item(), abs=0)
    browser_update(w, attention_map="rollout")
    assert w.pane["map"] == "rollout" and wire.updates("pane")[-1]["map"] == "rollout"
    browser_update(w, layer=0)
    assert w.pane["layer"] == 0 and w.pane["rho"] == w.correlations[0].rho[3].item()
    assert w.cell["layer"] == 0  # the selected cell is read in the new layer
    browser_update(w, selected_head=[1, 0], measure="stable_rank", kind="ov")
    assert w.head["layer"] == 1 and w.head["head"] == 0
    np.testing.assert_allclose(w.grid, head_spectra(tiny()).stable_rank["ov"].float().numpy(), rtol=1e-6)
    sent = wire.updates("head")[-1]
    assert set(sent["singular_values"]) == {"q", "k", "v", "o", "qk", "ov"}
    assert sent["singular_values"]["ov"].dtype == np.float32


@pytest.mark.parametrize(
    "name,value",
    [("layer", 5), ("attention_map", "head9"), ("selected_cell", [S, 0]), ("selected_head", [0, 2]),
     ("measure", "rank"), ("kind", 3), ("selected_cell", "0,0")],
)
def test_nonsense_from_the_page_is_refused_and_the_page_put_back(explorer, caplog, name, value):
    w = explorer
    before = getattr(w, name)
    wire = Wire(w)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, **{name: value})
    assert getattr(w, name) == before
    assert f"ignored {name}=" in caplog.text
    assert wire.updates(name)[-1] == before  # the page is told what to show


def test_writes_to_data_traits_are_refused(explorer, caplog):
    w = explorer
    rho = w.pane["rho"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        browser_update(w, pane=None, grid=None)
    assert w.pane["rho"] == rho and w.grid is not None and "read-only traits" in caplog.text


def test_follows_a_tracker_live(model, ids):
    m = tiny()
    tracker = AttentionTracker(m, ids, every=1)
    w = AttentionExplorer(m, ids, num_bootstrap=100, tracker=tracker)
    assert w.steps == []  # no record yet: the model as it is
    w.selected_head = [0, 1]
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(3):
        loss = m(ids).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.step()
    h = tracker.history
    assert w.steps == [0, 1, 2] and len(w.head["trajectory"]) == 3
    np.testing.assert_allclose(w.grid, h.entropy_rank["qk"][-1].astype(np.float32))
    np.testing.assert_allclose(w.head["trajectory"], h.entropy_rank["qk"][:, 0, 1].astype(np.float32))
    assert w.head["trajectory"][0] != w.head["trajectory"][-1]  # training moved the weights
    w.close()
    tracker.step()
    assert w.steps == [0, 1, 2]  # unsubscribed


def test_picture_and_html_export(explorer, tmp_path):
    svg = explorer._picture_svg()
    assert svg.startswith("<svg") and "mean sensitivity" in svg and "per head" in svg
    cap = explorer._picture_caption()
    assert "ρ =" in cap.status and cap.attrs["layer"] == str(explorer.layer)
    figure = explorer.save_svg(tmp_path / "attention.svg")
    assert "mean sensitivity" in figure.read_text() and explorer.save_png(tmp_path / "a.png").stat().st_size > 0
    out = explorer.save_html(tmp_path / "attention.html")
    text = out.read_text()
    assert "Spearman \\u03c1 of mean attention" in text and "Bokeh" in text  # notes are JSON in a script


def test_bad_input_is_refused_with_what_to_do(model, ids):
    with pytest.raises(TypeError, match="integer tensor"):
        AttentionExplorer(model, ids.double())
    with pytest.raises(TypeError, match=r"\[N, S\] integer tensor"):
        AttentionExplorer(model, ids.tolist())
    with pytest.raises(ValueError, match="vocabulary"):
        AttentionExplorer(model, ids + 20)
    with pytest.raises(ValueError, match="at least 2 samples"):
        AttentionExplorer(model, ids[:1], num_bootstrap=100)
    with pytest.raises(ValueError, match="num_bootstrap"):
        AttentionExplorer(model, ids, num_bootstrap=10)
    with pytest.raises(ValueError, match="log_scale"):
        AttentionExplorer(model, ids, log_scale="maybe")
    with pytest.raises(TypeError, match="tracker must be an AttentionTracker"):
        AttentionExplorer(model, ids, tracker="history")
    with pytest.raises(TypeError, match="token_labels"):
        AttentionExplorer(model, ids, token_labels="abcde")
