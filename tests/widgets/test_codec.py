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


def _half_back(out):
    """What the browser makes of a float16 map (js/src/lib/codec.js): float16 values times the scale."""
    bits = np.frombuffer(out["view"], dtype="<f2").reshape(out["shape"])
    return bits.astype(np.float64) * out["scale"]


def test_large_maps_travel_as_scaled_float16_within_its_precision():
    from tscope_widgets.widgets._codec import HALF_FROM_CELLS, map_to_json

    rng = np.random.default_rng(0)
    small = rng.random((512, 512))
    assert small.size == HALF_FROM_CELLS and map_to_json(small)["dtype"] == "float32"  # unchanged up to 512 x 512
    # a map spanning 6 decades, with exact zeros (the causal upper triangle), NaN (padding) and a negative value
    a = 10.0 ** rng.uniform(-9, -3, size=(600, 600))
    a[np.triu_indices(600, 1)] = 0.0
    a[5, :] = np.nan
    a[7, 3] = -2.5e-6
    out = map_to_json(torch.from_numpy(a))
    assert out["dtype"] == "float16" and out["shape"] == [600, 600]
    assert out["view"].nbytes == 2 * a.size  # half of float32
    scale = out["scale"]
    assert scale == 2.0 ** round(np.log2(scale))  # a power of two: multiplying back is exact
    back = _half_back(out)
    assert np.isnan(back[5]).all() and not np.isnan(np.delete(back, 5, axis=0)).any()
    assert (back[a == 0] == 0).all() and (a == 0).sum() > 170_000
    ok = np.isfinite(a) & (a != 0)
    rel = np.abs(back[ok] - a[ok]) / np.abs(a[ok])
    assert rel.max() <= 2.0**-11 and (back[ok] != 0).all()
    assert back[7, 3] < 0
    assert np.abs(a[ok] / scale).max() < 2.0**15  # within float16's finite range


def test_maps_float16_cannot_hold_stay_float32():
    from tscope_widgets.widgets._codec import half_scale, map_to_json

    wide = np.full((600, 600), 1.0)
    wide[0, 0] = 1e-10  # 10 decades: below float16's normal range once the maximum is scaled in
    assert half_scale(wide) is None
    out = map_to_json(wide)
    assert out["dtype"] == "float32" and array_from_json(out)[0, 0] == np.float32(1e-10)
    assert half_scale(np.zeros(3)) == 1.0 and half_scale(np.full(3, np.nan)) == 1.0
    big = np.full((600, 600), 3.0e7)  # beyond float16's 65504 before scaling
    assert np.allclose(_half_back(map_to_json(big)), 3.0e7, rtol=2.0**-11)
    counts = np.arange(600 * 600).reshape(600, 600)
    assert map_to_json(counts)["dtype"] == "int32"  # integer maps are not narrowed to floats
    assert map_to_json(None) is None


def test_counts_travel_as_the_narrowest_unsigned_ints():
    from tscope_widgets.widgets._codec import counts_to_json

    for hi, dtype in [(0, "uint8"), (255, "uint8"), (256, "uint16"), (65535, "uint16"), (65536, "uint32")]:
        out = counts_to_json(np.array([[0, hi]], dtype=np.int64))
        assert out["dtype"] == dtype and array_from_json(out).tolist() == [[0, hi]]
    assert counts_to_json(torch.tensor([True, False]))["dtype"] == "uint8"
    assert counts_to_json(np.zeros((0, 3), dtype=np.int64))["shape"] == [0, 3]
    with pytest.raises(ValueError, match="non-negative"):
        counts_to_json(np.array([-1, 2]))
    with pytest.raises(ValueError, match="uint32"):
        counts_to_json(np.array([2**33]))
    with pytest.raises(TypeError, match="integers"):
        counts_to_json(np.array([1.5]))
    assert counts_to_json(None) is None
