"""The attention explorer's value checks and data readers as pure functions, with hostile values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.model_zoo import tiny
from tscope_widgets.kernels.attention import head_spectra, layer_correlations
from tscope_widgets.tracking import AttentionTracker
from tscope_widgets.widgets._attention_state import (
    BROWSER_TRAITS,
    KINDS,
    MEASURES,
    cell_values,
    check_view_state,
    correlation_table,
    geometry_from_history,
    geometry_from_spectra,
    head_detail,
    pane_data,
    rank_grid,
)

MAPS = ["head0", "head1", "head mean", "rollout"]
OFFER = dict(layers=[0, 1], maps=MAPS, seq_len=5, head_layers=[0, 1], n_heads=2)


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def correlations(model):
    ids = torch.randint(0, 11, (5, 5), generator=torch.Generator().manual_seed(2))
    return layer_correlations(model, ids, num_bootstrap=100)


def test_view_state_accepts_what_is_offered_in_canonical_form():
    assert check_view_state("layer", 1, **OFFER) == (True, 1, "")
    assert check_view_state("layer", np.int64(0), **OFFER) == (True, 0, "")
    assert check_view_state("attention_map", "rollout", **OFFER) == (True, "rollout", "")
    assert check_view_state("selected_cell", (4, 0), **OFFER) == (True, [4, 0], "")
    assert check_view_state("selected_cell", None, **OFFER) == (True, None, "")
    assert check_view_state("selected_head", [1, 1], **OFFER) == (True, [1, 1], "")
    for m in MEASURES:
        assert check_view_state("measure", m, **OFFER) == (True, m, "")
    for k in KINDS:
        assert check_view_state("kind", k, **OFFER) == (True, k, "")


@pytest.mark.parametrize(
    "name,value,why",
    [
        ("layer", 2, "not one of the analysed layers [0, 1]"),
        ("layer", "1", "not one of the analysed layers"),
        ("layer", True, "not one of the analysed layers"),
        ("attention_map", "head2", "choose one of"),
        ("attention_map", None, "choose one of"),
        ("selected_cell", [5, 0], "0 <= i, j < 5"),
        ("selected_cell", [-1, 0], "0 <= i, j < 5"),
        ("selected_cell", [1.0, 0], "0 <= i, j < 5"),
        ("selected_cell", [1, 0, 2], "0 <= i, j < 5"),
        ("selected_cell", "1,0", "0 <= i, j < 5"),
        ("selected_head", [2, 0], "layer in [0, 1] and 0 <= head < 2"),
        ("selected_head", [0, 2], "0 <= head < 2"),
        ("selected_head", [0, True], "0 <= head < 2"),
        ("selected_head", {"layer": 0}, "0 <= head < 2"),
        ("measure", "rank", "choose one of"),
        ("kind", "QK", "choose one of"),
    ],
)
def test_view_state_refuses_nonsense_and_says_why(name, value, why):
    ok, canonical, reason = check_view_state(name, value, **OFFER)
    assert not ok and canonical is None and why in reason


def test_unknown_trait_is_a_key_error():
    assert "selected_head" in BROWSER_TRAITS
    with pytest.raises(KeyError, match="not a view-state trait of AttentionExplorer"):
        check_view_state("colormap", "viridis", **OFFER)


def test_pane_table_and_cell_read_the_correlation(correlations):
    c = correlations[1]
    pane = pane_data(c, 1, "head1")
    assert pane["map"] == "head1" and pane["attention"].dtype == np.float32
    np.testing.assert_array_equal(pane["attention"], c.mean_attention[1].float().numpy())
    np.testing.assert_array_equal(pane["sensitivity"], c.mean_sensitivity.float().numpy())
    assert pane["rho"] == c.rho[1].item() and pane["low"] == c.low[1].item() and pane["samples"] == 5
    assert pane["attention_high"] == c.attention_high[1].tolist()
    with pytest.raises(KeyError, match="map 'head7'"):
        pane_data(c, 1, "head7")
    table = correlation_table(c)
    assert [r["map"] for r in table] == MAPS and table[3]["rho"] == c.rho[3].item()
    cell = cell_values(c, 1, [3, 1])
    assert cell["attention"] == pytest.approx(c.mean_attention[:, 3, 1].tolist(), abs=0)
    assert cell["sensitivity"] == c.mean_sensitivity[3, 1].item()
    assert cell_values(c, 1, None) is None and cell_values(c, 1, [5, 0]) is None


def test_rank_grid_and_head_detail_are_the_spectra_of_the_heads(model):
    spectra = head_spectra(model)
    geom = geometry_from_spectra(spectra)
    assert geom.records == 1 and geom.layers == [0, 1] and geom.n_heads == 2
    for m in MEASURES:
        np.testing.assert_array_equal(rank_grid(geom, m, "ov"), getattr(spectra, m)["ov"].float().numpy())
    d = head_detail(geom, 1, 0, "stable_rank", "qk")
    np.testing.assert_array_equal(d["singular_values"]["qk"], spectra[(1, 0)]["qk"].float().numpy())
    assert d["ranks"]["entropy_rank"]["v"] == pytest.approx(spectra.ranks(1, 0)["entropy_rank"]["v"], abs=0)
    assert d["steps"] == [0] and d["trajectory"].shape == (1,) and d["entropy"] is None
    s = spectra[(1, 0)]["qk"]
    assert d["trajectory"][0] == pytest.approx(float((s * s).sum() / s.max() ** 2), rel=1e-6)
    for bad in ((2, 0), (0, 2), (0, -1)):
        with pytest.raises(KeyError, match="head"):
            head_detail(geom, *bad, "stable_rank", "qk")
    with pytest.raises(KeyError, match="choose"):
        rank_grid(geom, "nuclear", "qk")


def test_geometry_of_a_tracker_history_follows_its_records(model):
    ids = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(0))
    tracker = AttentionTracker(model, ids, every=2)
    assert geometry_from_history(tracker.history) is None  # no record yet
    for _ in range(5):
        tracker.step()
    geom = geometry_from_history(tracker.history)
    assert list(geom.steps) == [0, 2, 4] and geom.records == 3
    d = head_detail(geom, 0, 1, "participation_ratio", "v")
    h = tracker.history
    np.testing.assert_allclose(d["trajectory"], h.participation_ratio["v"][:, 0, 1].astype(np.float32))
    np.testing.assert_allclose(d["entropy"], h.entropy[:, 0, 1].astype(np.float32))
    assert d["steps"] == [0, 2, 4] and all(math.isfinite(x) for x in d["entropy"])
