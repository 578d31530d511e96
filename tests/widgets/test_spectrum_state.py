"""The spectrum widget's value checks as pure functions: histories, block norms and view state, hostile input."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tscope_widgets.tracking import SpectrumHistory
from tscope_widgets.widgets._spectrum_state import (
    BROWSER_TRAITS,
    HISTORY_VECTORS,
    as_array,
    block_groups,
    check_block_norms,
    check_block_options,
    check_history,
    check_source,
    check_view_state,
    density_wire,
    eigen_record,
    eigen_result,
    eigen_wire,
    series_wire,
    status_text,
)

GRAD_LABELS = ["embed", "block0"]
BLOCK_LABELS = ["q", "k"]


def history(T: int = 3, *, P: int = 5) -> SpectrumHistory:
    h = SpectrumHistory.empty(GRAD_LABELS, BLOCK_LABELS)
    for t in range(T):
        record = dict(
            steps=10 * t,
            loss=1.0 / (t + 1),
            train_loss=1.0,
            lambda_max=1.0 + t,
            lambda_min=-t,
            trace=2.0 + t,
            trace_stderr=0.1,
            grad_norms=np.array([1.0, 2.0]) * t,
            block_lambda_max=np.array([t, 2.0 * t]),
            threshold=20.0,
            lr=0.1,
            matvecs=10,
            converged=True,
        )
        if t % 2 == 0:
            record["density_grid"] = np.linspace(-1, 1 + t, P)
            record["density"] = np.full(P, float(t + 1))
        h.append(record)
    return h


def as_namespace(h: SpectrumHistory) -> SimpleNamespace:
    """The history's fields on a plain object (``done`` is a read-only property of the dataclass)."""
    names = (
        *HISTORY_VECTORS,
        "steps",
        "grad_norms",
        "grad_norm_labels",
        "block_lambda_max",
        "block_labels",
        "density_steps",
        "density_grid",
        "density",
        "done",
        "total",
    )
    return SimpleNamespace(**{n: getattr(h, n) for n in names})


def norms(G: int = 2, **fields):
    base = dict(
        labels=[f"g{i}" for i in range(G)],
        frobenius=np.eye(G),
        frobenius_stderr=None,
        spectral=None,
        exact=True,
        num_matvecs=7,
    )
    base.update(fields)
    return SimpleNamespace(**base)


# ---------------------------------------------------------------------------- histories
def test_a_history_becomes_checked_arrays_and_its_wire_form():
    h = check_history(history(3))
    assert h["steps"].dtype == np.int64 and h["steps"].tolist() == [0, 10, 20]
    assert h["grad_norms"].shape == (3, 2) and h["block_lambda_max"].shape == (3, 2)
    assert h["density_steps"].tolist() == [0, 20] and h["density_grid"].shape == (2, 5)
    wire = series_wire(h)
    assert wire["grad_norms"].shape == (2, 3) and wire["grad_norms"].flags.c_contiguous
    assert wire["block_lambda_max"].shape == (2, 3)
    assert set(wire["values"]) >= {"loss", "lambda_max", "trace_stderr"}


def test_an_empty_history_is_valid_and_has_no_density():
    h = check_history(SpectrumHistory.empty([], []))
    assert h["steps"].shape == (0,) and h["grad_norms"].shape == (0, 0)
    assert density_wire(h, None) is None and density_wire(None, None) is None
    assert series_wire(h)["block_lambda_max"] is None
    assert (
        status_text(h, True) == "tracker · 0 records" and status_text(None, True) == "no history yet (tracker attached)"
    )


def test_the_density_wire_is_the_one_nearest_the_picked_step():
    h = check_history(history(3))
    latest, first = density_wire(h, None), density_wire(h, 0)
    assert (latest["index"], latest["step"], latest["picked"]) == (1, 20, None)
    assert (first["index"], first["step"], first["picked"]) == (0, 0, 0)
    np.testing.assert_array_equal(first["values"], np.full(5, 1.0))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(steps="abc"), TypeError, "steps must be a numeric array"),
        (dict(loss=[1.0, 2.0]), ValueError, r"history.loss has shape \(2,\); expected \[3\]"),
        (dict(grad_norms=np.zeros((3, 5))), ValueError, r"grad_norms has shape \(3, 5\); expected \[3, 2\]"),
        (dict(grad_norm_labels="embed"), TypeError, "grad_norm_labels must be a list of strings"),
        (dict(block_labels=[1, 2]), TypeError, "block_labels must be a list of strings"),
        (dict(block_labels=None), TypeError, "block_labels must be a list of strings"),
        (dict(density=np.zeros((2, 4))), ValueError, "density_grid .* and history.density"),
        (dict(done=1.5), TypeError, "history.done must be an int"),
        (dict(done=True), TypeError, "history.done must be an int"),
        (dict(total="3"), TypeError, "history.total an int or None"),
        (dict(lambda_max=[object()] * 3), TypeError, "lambda_max must be a numeric array"),
    ],
)
def test_a_bad_history_field_is_refused_with_its_name(change, error, match):
    h = as_namespace(history(3))
    for key, value in change.items():
        setattr(h, key, value)
    with pytest.raises(error, match=match):
        check_history(h)


def test_an_object_that_is_not_a_history_names_what_it_lacks():
    with pytest.raises(TypeError, match="lacks"):
        check_history({"steps": [0]})
    with pytest.raises(TypeError, match="lacks"):
        check_history(None)


def test_nan_values_pass_through_a_history_unchanged():
    h = as_namespace(history(2))
    h.lambda_max = np.array([np.nan, np.inf])
    checked = check_history(h)
    assert math.isnan(checked["lambda_max"][0]) and math.isinf(checked["lambda_max"][1])


def test_tensors_are_accepted_as_arrays():
    a = as_array(torch.arange(3, dtype=torch.float32), "x")
    assert a.dtype == np.float64 and a.tolist() == [0.0, 1.0, 2.0]
    assert as_array(torch.tensor([1.0, 2.0]), "x", np.int64).dtype == np.int64
    with pytest.raises(TypeError, match="x must be a numeric array"):
        as_array([[1.0], [1.0, 2.0]], "x")  # ragged


# ---------------------------------------------------------------------------- block norms
def test_block_norms_become_checked_arrays():
    out = check_block_norms(norms(3, spectral=torch.ones(3), frobenius_stderr=np.zeros((3, 3)), num_matvecs=True))
    assert out["labels"] == ["g0", "g1", "g2"] and out["frobenius"].shape == (3, 3)
    assert out["spectral"].tolist() == [1.0, 1.0, 1.0] and out["exact"] is True
    assert out["num_matvecs"] is None  # a bool is not a count


@pytest.mark.parametrize(
    "fields, error, match",
    [
        (dict(labels=[]), TypeError, "non-empty list of strings"),
        (dict(labels="g0"), TypeError, "list of strings"),
        (dict(labels=[0, 1]), TypeError, "list of strings"),
        (dict(frobenius=np.eye(3)), ValueError, r"expected \[2, 2\] for 2 labels"),
        (dict(frobenius="x"), TypeError, "frobenius must be a numeric array"),
        (dict(frobenius_stderr=np.zeros(2)), ValueError, r"frobenius_stderr has shape \(2,\)"),
        (dict(spectral=np.zeros(5)), ValueError, r"spectral has shape \(5,\); expected \[2\]"),
    ],
)
def test_bad_block_norms_are_refused(fields, error, match):
    with pytest.raises(error, match=match):
        check_block_norms(norms(2, **fields))


def test_an_object_that_is_not_block_norms_names_what_it_lacks():
    with pytest.raises(TypeError, match="BlockNorms"):
        check_block_norms(object())


# ---------------------------------------------------------------------------- arguments
def test_source_and_block_options():
    tracker = SimpleNamespace(history=None, subscribe=lambda cb: None)
    check_source(tracker, None)
    check_source(None, history())
    with pytest.raises(ValueError, match="not both"):
        check_source(tracker, history())
    with pytest.raises(TypeError, match="SpectrumTracker"):
        check_source(SimpleNamespace(history=None, subscribe=3), None)
    assert check_block_options(np.int64(3), 1e-6) == (3, 1e-6)
    for top_k in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="top_k"):
            check_block_options(top_k, 1e-6)
    for tol in (0, -1e-3, math.nan, math.inf, 10**400, True, "1e-6", None):
        with pytest.raises(ValueError, match="tol"):
            check_block_options(5, tol)


def test_block_groups_follow_the_tracker_then_the_model():
    assert block_groups("attn", {"attn": ("a", "b")}, ["a", "b"]) == ["a", "b"]
    assert block_groups("a", {}, ["a", "b"]) == "a"
    assert block_groups("block0", None, ["block0.x"]) == "block0.*"


def test_eigen_results_are_descending_and_plain_floats_on_the_wire():
    snap = SimpleNamespace(
        eigenvalues=torch.tensor([1.0, 3.0]),
        residual_norms=torch.tensor([1e-3, 1e-9], dtype=torch.float64),
        converged=np.True_,
    )
    result = eigen_result(snap)
    assert result["eigenvalues"].tolist() == [3.0, 1.0] and result["residuals"].tolist() == [1e-9, 1e-3]
    wire = eigen_wire("q", 10, result, "done", "")
    assert wire["eigenvalues"] == [3.0, 1.0] and all(type(v) is float for v in wire["residuals"])
    assert eigen_wire("q", None, None, "running", "") == {
        "label": "q",
        "step": None,
        "status": "running",
        "message": "",
    }
    record = eigen_record(10, None, "error", "boom")
    assert record["eigenvalues"] is None and record["status"] == "error" and record["message"] == "boom"


# ---------------------------------------------------------------------------- view state from the browser
OFFER = dict(series=["loss", "lambda_max", "trace"], steps={0, 10, 20}, blocks=["q", "k"])


@pytest.mark.parametrize(
    "name, value, canonical",
    [
        ("selected_series", ["trace", "loss"], ["loss", "trace"]),  # put in the offered order
        ("selected_series", ("loss", "loss"), ["loss"]),
        ("selected_series", [], []),
        ("picked_step", None, None),
        ("picked_step", np.int64(10), 10),
        ("selected_block", None, None),
        ("selected_block", "k", "k"),
        ("log_y", np.bool_(False), False),
    ],
)
def test_valid_view_state_is_made_canonical(name, value, canonical):
    ok, value, why = check_view_state(name, value, **OFFER)
    assert ok and value == canonical and type(value) is type(canonical) and why == ""


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("selected_series", "loss", "list of series names"),
        ("selected_series", [1, 2], "list of series names"),
        ("selected_series", ["loss", "nope"], r"unknown series \['nope'\]"),
        ("selected_series", {"loss": 1}, "list of series names"),
        ("picked_step", 5, "recorded steps"),
        ("picked_step", 10.0, "recorded steps"),
        ("picked_step", True, "recorded steps"),
        ("picked_step", math.nan, "recorded steps"),
        ("picked_step", 10**100, "recorded steps"),
        ("picked_step", "10", "recorded steps"),
        ("selected_block", "v", "not one of the blocks"),
        ("selected_block", ["q"], "not one of the blocks"),
        ("log_y", 1, "true or false"),
        ("log_y", "false", "true or false"),
    ],
)
def test_nonsense_view_state_is_refused_with_a_reason(name, value, match):
    ok, canonical, why = check_view_state(name, value, **OFFER)
    assert not ok and canonical is None
    assert re.search(match, why)


def test_a_huge_list_of_unknown_series_is_quoted_briefly():
    ok, _, why = check_view_state("selected_series", [f"s{i}" for i in range(100_000)], **OFFER)
    assert not ok and "and 99992 more" in why and len(why) < 300


def test_an_unknown_trait_name_is_an_error():
    assert set(BROWSER_TRAITS) == {"selected_series", "picked_step", "selected_block", "log_y"}
    with pytest.raises(KeyError, match="not a view-state trait"):
        check_view_state("colour", "red", **OFFER)
