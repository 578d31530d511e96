"""The explorer's per-sample view: any reservoir sample's own map s_ij with its token strings, beside the
population mean (``sample``, ``sample_options``, ``sample_view``); hostile values refused; token decoding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_update
from tscope_widgets.widgets import SensitivityExplorer
from tscope_widgets.widgets._sensitivity_state import check_view_state, decode_tokens, sample_detail

N, S = 16, 5
WAIT = 60.0
OFFER = dict(layers=[0, 1], num_layers=2, seq_len=S)


@pytest.fixture(scope="module")
def explorer():
    ids = torch.randint(0, 11, (N, S), generator=torch.Generator().manual_seed(2))
    w = SensitivityExplorer(tiny(), ids, batch_size=8, reservoir_size=6, num_threads=1, token_labels=list("<abcd"))
    assert w.wait(WAIT)
    return w, ids


def test_sample_options_are_the_samples_the_reservoir_holds(explorer):
    w, _ = explorer
    res = w.snapshot.reservoir
    assert res.size == 6 and w.sample_options == sorted(res.sample_index[:6].tolist())
    assert w.sample is None and w.sample_view is None


def test_a_chosen_sample_sends_its_own_map_tokens_and_the_population_mean(explorer):
    w, ids = explorer
    snap = w.snapshot
    res = snap.reservoir
    k = w.sample_options[2]
    slot = int(torch.nonzero(res.sample_index[: res.size] == k)[0])
    wire = Wire(w)
    browser_update(w, sample=k)
    try:
        view = wire.updates("sample_view")[-1]
        assert view["sample"] == k and view["layer"] == w.layer
        np.testing.assert_array_equal(view["map"], res.maps[w.layer][slot].numpy())
        assert view["map"].dtype == np.float32 and view["map"].shape == (S, S)
        np.testing.assert_array_equal(view["mean"], snap.stats[w.layer].mean.to(torch.float32).numpy())
        assert view["tokens"] == [str(int(t)) for t in ids[k]]  # the sample's own ids (no tokenizer)
        assert view["ids"] == ids[k].tolist() and view["length"] == S
        # the per-sample map is the one the population statistics average: the mean over the reservoir's
        # samples is not the population mean, but each cell lies within the population's [min, max]
        state = snap.stats[w.layer]
        m = torch.tensor(view["map"], dtype=torch.float64)
        lo, hi = state.min.double(), state.max.double()
        assert bool(((m >= lo * (1 - 1e-6) - 1e-12) & (m <= hi * (1 + 1e-6) + 1e-12)).all())
        browser_update(w, layer=0)  # the view follows the layer
        assert w.sample_view["layer"] == 0
        np.testing.assert_array_equal(w.sample_view["map"], res.maps[0][slot].numpy())
    finally:
        browser_update(w, sample=None, layer=1)
    assert w.sample_view is None


def test_a_sample_the_reservoir_does_not_hold_is_reported_missing(explorer):
    w, _ = explorer
    gone = next(k for k in range(N) if k not in w.sample_options)
    browser_update(w, sample=gone)
    try:
        assert w.sample_view == {"sample": gone, "layer": w.layer, "missing": True}
    finally:
        browser_update(w, sample=None)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", [1], True])
def test_nonsense_samples_from_the_page_are_refused(explorer, caplog, bad):
    w, _ = explorer
    with caplog.at_level(logging.WARNING):
        browser_update(w, sample=bad)
    assert w.sample is None
    assert any("sample" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    ok, _, why = check_view_state("sample", bad, **OFFER)
    assert not ok and "index in the data set" in why


def test_sample_values_are_canonical():
    assert check_view_state("sample", None, **OFFER) == (True, None, "")
    assert check_view_state("sample", np.int64(7), **OFFER) == (True, 7, "")


def test_tokens_are_decoded_one_by_one_and_padding_is_blank():
    class Tok:
        def decode(self, ids):
            (t,) = ids
            return {1: "the", 2: " cat"}.get(t, f"<{t}>")

    class Broken:
        def decode(self, ids):
            raise TypeError("needs a list of lists")

    assert decode_tokens([1, 2, 9, 0], [True, True, True, False], Tok()) == ["the", " cat", "<9>", ""]
    assert decode_tokens([1, 2, 0], [True, True, False], Broken()) == ["1", "2", ""]
    assert decode_tokens([5, 6], [True, True]) == ["5", "6"]


def test_sample_detail_without_a_sample_is_none(explorer):
    w, _ = explorer
    assert sample_detail(w.snapshot, w.layer, None) is None
