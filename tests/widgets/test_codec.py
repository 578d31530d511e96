"""Binary array transport: array_to_json / array_from_json / to_json_tree, as ipywidgets sends them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

from tscope_widgets.widgets._codec import WIRE_DTYPES, array_from_json, array_to_json, to_json_tree


def test_float64_is_narrowed_to_float32_keeping_nan_and_inf():
    a = np.array([[1.0, np.nan], [np.inf, -2.5e-40]])  # -2.5e-40 is subnormal in float32
    out = array_to_json(a)
    assert out["dtype"] == "float32" and out["shape"] == [2, 2]
    view = out["view"]
    assert isinstance(view, memoryview) and view.format == "B" and view.nbytes == 16
    back = np.frombuffer(view, dtype="<f4").reshape(2, 2)
    np.testing.assert_array_equal(back, a.astype(np.float32))
    assert np.isnan(back[0, 1]) and np.isposinf(back[1, 0])


def test_non_contiguous_and_torch_inputs_are_sent_in_c_order():
    a = np.arange(12, dtype=np.float64).reshape(3, 4).T  # Fortran-ordered view [4, 3]
    out = array_to_json(a)
    assert out["shape"] == [4, 3]
    np.testing.assert_array_equal(np.frombuffer(out["view"], "<f4").reshape(4, 3), a)

    t = torch.arange(6, dtype=torch.float64, requires_grad=True).view(2, 3)[:, ::2]  # strided
    out = array_to_json(t)
    assert out["shape"] == [2, 2] and out["dtype"] == "float32"
    np.testing.assert_array_equal(array_from_json(out), [[0, 2], [3, 5]])
    assert array_to_json(torch.ones(2, dtype=torch.bfloat16))["dtype"] == "float32"


@pytest.mark.parametrize(
    ("dtype", "wire"),
    [
        (np.float16, "float32"),
        (np.float32, "float32"),
        (np.bool_, "uint8"),
        (np.int8, "int8"),
        (np.uint8, "uint8"),
        (np.int16, "int16"),
        (np.uint16, "uint16"),
        (np.int32, "int32"),
        (np.uint32, "uint32"),
        (np.int64, "int32"),
        (np.uint64, "uint32"),
    ],
)
def test_dtypes_map_to_wire_dtypes_and_round_trip(dtype, wire):
    a = np.array([[0, 1, 1], [1, 0, 1]], dtype=dtype)
    out = array_to_json(a)
    assert out["dtype"] == wire and wire in WIRE_DTYPES
    back = array_from_json(out)
    assert back.dtype == np.dtype(wire) and back.shape == (2, 3)
    np.testing.assert_array_equal(back, a.astype(wire))


def test_big_integers_and_unsupported_dtypes_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        array_to_json(np.array([0, 2**40], dtype=np.int64))
    with pytest.raises(ValueError, match="do not fit"):
        array_to_json(torch.tensor([-(2**31) - 1]))
    assert array_from_json(array_to_json(np.array([-(2**31), 2**31 - 1]))).tolist() == [-(2**31), 2**31 - 1]
    with pytest.raises(TypeError, match="complex128"):
        array_to_json(np.ones(2, dtype=np.complex128))
    with pytest.raises(TypeError, match="list"):
        array_to_json([1.0, 2.0])
    assert array_to_json(None) is None and array_from_json(None) is None


def test_empty_and_scalar_arrays():
    out = array_to_json(np.zeros((0, 5)))
    assert out["shape"] == [0, 5] and out["view"].nbytes == 0
    assert array_from_json(out).shape == (0, 5)
    out = array_to_json(np.array(3.5))
    assert out["shape"] == [] and array_from_json(out)[()] == np.float32(3.5)


def test_from_json_checks_what_the_browser_sends():
    good = {"view": np.arange(4, dtype="<f4").tobytes(), "dtype": "float32", "shape": [2, 2]}
    np.testing.assert_array_equal(array_from_json(good), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="bytes do not hold"):
        array_from_json({**good, "shape": [3, 2]})
    with pytest.raises(ValueError, match="unknown wire dtype"):
        array_from_json({**good, "dtype": "float128"})
    with pytest.raises(ValueError, match="non-negative ints"):
        array_from_json({**good, "shape": [-2, -2]})
    with pytest.raises(ValueError, match="non-negative ints"):
        array_from_json({**good, "shape": "22"})
    with pytest.raises(TypeError, match="bytes-like"):
        array_from_json({**good, "view": [0, 1, 2, 3]})
    with pytest.raises(TypeError, match="'view', 'dtype' and 'shape'"):
        array_from_json({"view": good["view"]})


def test_to_json_tree_splits_into_strict_json_and_binary_buffers():
    samples = np.array([0.5, np.nan, 2.0])
    value = {
        "cell": (3, np.int64(1)),
        "mean": float("nan"),
        "std": np.float64(0.25),
        "ok": np.bool_(True),
        "samples": samples,
        "index": torch.tensor([4, 7]),
        "name": "final",
        "missing": None,
    }
    tree = to_json_tree(value)
    state, paths, buffers = _remove_buffers({"detail": tree})
    text = json.dumps(state, allow_nan=False)  # what Jupyter's session serializer requires
    assert json.loads(text)["detail"]["cell"] == [3, 1]
    detail = state["detail"]
    assert detail["mean"] is None and detail["std"] == 0.25 and detail["ok"] is True
    assert sorted(paths) == [["detail", "index", "view"], ["detail", "samples", "view"]]
    by_path = {tuple(p): b for p, b in zip(paths, buffers, strict=True)}
    decoded = np.frombuffer(by_path[("detail", "samples", "view")], "<f4")
    np.testing.assert_array_equal(decoded, samples.astype(np.float32))
    assert np.frombuffer(by_path[("detail", "index", "view")], "<i4").tolist() == [4, 7]
    with pytest.raises(TypeError, match="keys must be strings"):
        to_json_tree({1: 2})
    with pytest.raises(TypeError, match="set"):
        to_json_tree({"a": {1, 2}})
