"""The sensitivity explorer's value checks as pure functions, with hostile values."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tscope_widgets.widgets._sensitivity_state import (
    BROWSER_TRAITS,
    KERNEL_OPTIONS,
    STATISTICS,
    cell_detail,
    check_kernel_options,
    check_layer,
    check_statistics,
    check_token_labels,
    check_view_state,
    fit_labels,
)

OFFER = dict(layers=[0, 1, "final"], num_layers=2, seq_len=4)


def test_kernel_options_pass_known_names_and_refuse_others():
    assert {"source", "probes", "seed"} <= KERNEL_OPTIONS and "resume" not in KERNEL_OPTIONS
    assert check_kernel_options({"seed": 3}) == {"seed": 3}
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['colour', 'resume'\]"):
        check_kernel_options({"colour": "red", "resume": None, "seed": 1})


def test_token_labels():
    assert check_token_labels(None) is None
    assert check_token_labels(("a", "b")) == ["a", "b"]
    assert check_token_labels(t for t in "ab") == ["a", "b"]  # a generator is read once
    assert check_token_labels(np.array(["a", "b"])) == ["a", "b"]
    for bad in ("ab", b"ab", ["a", 1], [None], {"a": 1}, 3):
        with pytest.raises(TypeError, match="token_labels must be a sequence of strings"):
            check_token_labels(bad)
    assert fit_labels(["a", "b", "c"], 2) == ["a", "b"] and fit_labels(["a"], 3) == ["a", "", ""]


def test_statistics_of_an_export():
    assert check_statistics(None, "std") == ["std"] and check_statistics("max", "std") == ["max"]
    assert check_statistics(("mean", "count"), "std") == ["mean", "count"]
    for bad in ([], ["median"], [["mean"]], [None]):
        with pytest.raises(ValueError, match="unknown statistics"):
            check_statistics(bad, "mean")


@pytest.mark.parametrize(
    "name, value, canonical",
    [
        ("layer", 1, 1),
        ("layer", -1, 1),  # from the end of the model's layers
        ("layer", np.int64(0), 0),
        ("layer", "final", "final"),
        ("statistic", "cv", "cv"),
        ("view", "offset", "offset"),
        ("log_scale", np.bool_(True), True),
        ("log_scale", "auto", "auto"),
        ("colormap", "rdbu", "rdbu"),
        ("color_percentiles", None, None),
        ("color_percentiles", (1, np.float64(99.5)), [1.0, 99.5]),
        ("color_limits", [None, 3], [None, 3.0]),
        ("color_limits", (np.int64(-1), 2.5), [-1.0, 2.5]),
        ("selected_cell", None, None),
        ("selected_cell", (3, np.int64(0)), [3, 0]),
    ],
)
def test_valid_view_state_is_made_canonical(name, value, canonical):
    ok, value, why = check_view_state(name, value, **OFFER)
    assert ok and value == canonical and type(value) is type(canonical) and why == ""


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("layer", 2, "analysed layers"),
        ("layer", -3, "analysed layers"),
        ("layer", True, "analysed layers"),
        ("layer", 1.0, "analysed layers"),
        ("layer", 10**100, "analysed layers"),
        ("layer", [0], "analysed layers"),
        ("statistic", "median", "choose one of"),
        ("statistic", None, "choose one of"),
        ("view", "3d", "choose one of"),
        ("log_scale", 0, "true, false or 'auto'"),
        ("log_scale", "yes", "true, false or 'auto'"),
        ("colormap", "jet", "choose one of"),
        ("color_percentiles", [99, 1], "0 <= low < high <= 100"),
        ("color_percentiles", [-1, 50], "0 <= low < high <= 100"),
        ("color_percentiles", [1, math.nan], "0 <= low < high <= 100"),
        ("color_percentiles", [1], "0 <= low < high <= 100"),
        ("color_percentiles", [True, 50], "0 <= low < high <= 100"),
        ("color_limits", [3, 1], "low < high"),
        ("color_limits", [1, math.inf], "low < high"),
        ("color_limits", "1,2", "low < high"),
        ("selected_cell", [4, 0], r"0 <= i, j < 4"),
        ("selected_cell", [-1, 0], r"0 <= i, j < 4"),
        ("selected_cell", [0.0, 1], r"0 <= i, j < 4"),
        ("selected_cell", [math.nan, 1], r"0 <= i, j < 4"),
        ("selected_cell", [True, 1], r"0 <= i, j < 4"),
        ("selected_cell", [1, 2, 3], r"0 <= i, j < 4"),
        ("selected_cell", "0,1", r"0 <= i, j < 4"),
        ("selected_cell", {"i": 0, "j": 1}, r"0 <= i, j < 4"),
    ],
)
def test_nonsense_view_state_is_refused_with_a_reason(name, value, match):
    ok, canonical, why = check_view_state(name, value, **OFFER)
    assert not ok and canonical is None and re.search(match, why)


def test_an_unknown_trait_name_is_an_error_and_layers_check_alone():
    assert set(BROWSER_TRAITS) == {
        "layer",
        "statistic",
        "selected_cell",
        "view",
        "log_scale",
        "colormap",
        "color_percentiles",
        "color_limits",
        "sample",
    }
    with pytest.raises(KeyError, match="not a view-state trait"):
        check_view_state("colour", "red", **OFFER)
    assert check_layer(-2, [0, 1], 2) == (True, 0, "")


def fake_snapshot(S: int = 3, n: int = 2):
    state = SimpleNamespace(
        **{s: torch.arange(S * S, dtype=torch.float64).reshape(S, S) + k for k, s in enumerate(STATISTICS)}
    )
    maps = torch.full((4, S, S), math.nan)
    maps[0, 1, 2], maps[1, 1, 2] = 5.0, math.nan  # sample 1 is padding at (1, 2)
    reservoir = SimpleNamespace(size=n, maps={0: maps}, sample_index=torch.tensor([7, 9, 0, 0]), seen=10)
    return SimpleNamespace(seq_len=S, stats={0: state}, reservoir=reservoir)


def test_cell_detail_reads_every_statistic_and_the_finite_samples():
    detail = cell_detail(fake_snapshot(), 0, [1, 2])
    assert detail["cell"] == [1, 2] and detail["layer"] == 0 and detail["mean"] == 5.0
    assert detail["count"] == 11 and type(detail["count"]) is int  # 5 + its offset in STATISTICS
    assert detail["samples"].tolist() == [5.0] and detail["sample_index"].tolist() == [7]
    assert detail["reservoir_size"] == 2 and detail["seen"] == 10
    assert cell_detail(fake_snapshot(), 0, None) is None
    assert cell_detail(fake_snapshot(S=3), 0, [3, 0]) is None  # a cell of a longer earlier run
