"""Arrays on the widget wire: ``{"view": memoryview, "dtype": str, "shape": [int, ...]}``.

Jupyter widgets send ``memoryview``/``bytes`` values as binary buffers beside the JSON state, and the
browser receives them as a ``DataView``; ``js/src/lib/codec.js`` wraps that in the matching typed
array without copying. JavaScript has no 64-bit float heat maps worth their size and no convenient
64-bit integers, so floats travel as float32 and 64-bit integers as 32-bit ones (refused when a value
does not fit). Bytes are C-ordered and little-endian.

Large maps travel at half size (:func:`map_to_json`): a float map of more than ``HALF_FROM_CELLS`` values
goes as float16 times a power-of-two ``scale`` when that keeps every value to float16's 11 significant
bits (about 3 decimal digits), and counts go as the narrowest unsigned integers that hold them
(:func:`counts_to_json`).

JSON itself has no NaN or infinity (Jupyter's serializer refuses them), so :func:`to_json_tree`
turns non-finite Python floats into ``None`` while arrays keep their NaNs inside the buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch

__all__ = [
    "HALF_FROM_CELLS",
    "WIRE_DTYPES",
    "array_to_json",
    "array_from_json",
    "counts_to_json",
    "map_to_json",
    "to_json_tree",
]

# dtype names both sides understand; ``js/src/lib/codec.js`` maps each to a TypedArray.
WIRE_DTYPES = ("float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32")

_NARROW = {
    "float16": "float32",
    "float32": "float32",
    "float64": "float32",
    "bool": "uint8",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int32",
    "uint64": "uint32",
}


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        if a.dtype == torch.bfloat16:
            a = a.float()
        return a.numpy()
    if isinstance(a, np.ndarray):
        return a
    raise TypeError(f"expected a numpy array or torch tensor, got {type(a).__name__}")


def array_to_json(a: np.ndarray | torch.Tensor | None, _widget: Any = None) -> dict[str, Any] | None:
    """Encode an array as a binary widget value (a traitlets ``to_json``).

    Floats become float32 (NaN and infinities kept), booleans uint8, 64-bit integers 32-bit ones.

    Args:
        a: Array of any shape (numpy or torch, any device), or ``None``.
        _widget: Ignored; traitlets passes the widget.

    Returns:
        ``{"view": memoryview of the C-contiguous little-endian bytes, "dtype": wire dtype name,
        "shape": list of ints}``, or ``None`` for ``None``.

    Raises:
        TypeError: For something that is not an array, or a dtype the wire cannot carry (complex,
            strings, objects).
        ValueError: For 64-bit integers outside the 32-bit range.

    Example:
        >>> out = array_to_json(np.array([[1.0, np.nan]]))
        >>> out["dtype"], out["shape"], out["view"].nbytes
        ('float32', [1, 2], 8)
    """
    if a is None:
        return None
    arr = _as_numpy(a)
    wire = _NARROW.get(arr.dtype.name)
    if wire is None:
        raise TypeError(f"cannot send an array of dtype {arr.dtype} to the browser; use a float, int or bool dtype")
    target = np.dtype(wire).newbyteorder("<")
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > target.itemsize and arr.size:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"{arr.dtype} values in [{lo}, {hi}] do not fit the {wire} the browser receives")
    out = np.asarray(arr, dtype=target, order="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray
    view = memoryview(out.reshape(-1)).cast("B")  # 1-D bytes: casts also work for empty arrays
    return {"view": view, "dtype": wire, "shape": [int(n) for n in out.shape]}


def array_from_json(value: Mapping[str, Any] | None, _widget: Any = None) -> np.ndarray | None:
    """Decode :func:`array_to_json` output (or what a browser sends back) into a numpy array.

    The result shares memory with the message buffer and is read-only.

    Args:
        value: ``{"view": bytes-like, "dtype": one of WIRE_DTYPES, "shape": [int, ...]}`` or ``None``.
        _widget: Ignored; traitlets passes the widget.

    Returns:
        The array with the given dtype and shape, or ``None``.

    Raises:
        TypeError: For a value that is not such a dict or a view that is not bytes-like.
        ValueError: For an unknown dtype, a bad shape, or a byte length that does not match the shape.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or not {"view", "dtype", "shape"} <= value.keys():
        raise TypeError("a binary array must be a dict with keys 'view', 'dtype' and 'shape'")
    view, dtype, shape = value["view"], value["dtype"], value["shape"]
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"unknown wire dtype {dtype!r}; expected one of {WIRE_DTYPES}")
    if not isinstance(view, (bytes, bytearray, memoryview)):
        raise TypeError(f"'view' must be bytes-like, got {type(view).__name__}")
    if (
        isinstance(shape, (str, bytes))
        or not isinstance(shape, Sequence)
        or not all(isinstance(n, Integral) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ValueError(f"'shape' must be a list of non-negative ints, got {shape!r}")
    dt = np.dtype(dtype).newbyteorder("<")
    nbytes = memoryview(view).nbytes
    expected = math.prod(shape) * dt.itemsize
    if nbytes != expected:
        raise ValueError(f"{nbytes} bytes do not hold a {dtype} array of shape {list(shape)} ({expected} bytes)")
    return np.frombuffer(view, dtype=dt).reshape([int(n) for n in shape])


# Maps with more values than this (a 512 x 512 map: 1 MiB as float32) travel as scaled float16.
HALF_FROM_CELLS = 512 * 512
_HALF_MAX_EXP = 15  # the largest |value| is scaled into [2**14, 2**15): float16 ends at 65504
_HALF_MIN_NORMAL_EXP = -14  # float16 keeps 11 significant bits down to 2**-14 (subnormals below)


def half_scale(a: np.ndarray) -> float | None:
    """The power of two that scales ``a`` into float16 without losing more than float16's precision.

    Args:
        a: Float array of any shape.

    Returns:
        ``scale = 2**e`` such that every finite ``a / scale`` lies within float16's normal range
        (``|a| / scale < 2**15``, and the smallest nonzero ``|a| / scale >= 2**-14``), so each value keeps 11
        significant bits (relative error <= 2**-11); 1.0 for an array without finite nonzero values;
        None when the nonzero values span more than float16 can hold (about 2**29, 8.7 decades).
    """
    finite = np.abs(a[np.isfinite(a)])
    nonzero = finite[finite > 0]
    if nonzero.size == 0:
        return 1.0
    hi, lo = float(nonzero.max()), float(nonzero.min())
    e = int(np.frexp(hi)[1]) - _HALF_MAX_EXP  # hi < 2**frexp_exp, so hi / 2**e < 2**15
    if lo / 2.0**e < 2.0**_HALF_MIN_NORMAL_EXP:
        return None
    return 2.0**e


def map_to_json(a: np.ndarray | torch.Tensor | None, _widget: Any = None) -> dict[str, Any] | None:
    """Encode a float map for the wire at half size when it is large (a traitlets ``to_json``).

    Up to ``HALF_FROM_CELLS`` values, or when float16 cannot hold the values' span (:func:`half_scale` is
    None), this is :func:`array_to_json` (float32). Above, the values go as float16 ``a / scale`` with a
    power-of-two ``scale``: ``{"view", "dtype": "float16", "shape", "scale"}``; the browser multiplies
    back (``js/src/lib/codec.js``), so each value arrives to 11 significant bits (relative error <= 2**-11;
    zeros, NaN and infinities exactly).

    Args:
        a: Float array of any shape (numpy or torch), or ``None``.
        _widget: Ignored; traitlets passes the widget.

    Returns:
        The wire dict, or ``None``.

    Example:
        >>> out = map_to_json(np.full((600, 600), 3.0))
        >>> out["dtype"], out["scale"], out["view"].nbytes
        ('float16', 0.0001220703125, 720000)
    """
    if a is None:
        return None
    arr = _as_numpy(a)
    if arr.dtype.kind != "f" or arr.size <= HALF_FROM_CELLS:
        return array_to_json(arr)
    scale = half_scale(arr)
    if scale is None:
        return array_to_json(arr)
    half = np.asarray(arr / scale, dtype=np.dtype("float16").newbyteorder("<"), order="C")
    view = memoryview(half.reshape(-1)).cast("B")
    return {"view": view, "dtype": "float16", "shape": [int(n) for n in half.shape], "scale": scale}


def counts_to_json(a: np.ndarray | torch.Tensor | None, _widget: Any = None) -> dict[str, Any] | None:
    """Encode non-negative integer counts as the narrowest of uint8, uint16 or uint32 that holds them.

    Args:
        a: Integer array of any shape (numpy or torch), or ``None``.
        _widget: Ignored; traitlets passes the widget.

    Returns:
        :func:`array_to_json` of the narrowed array, or ``None``.

    Raises:
        TypeError: For a non-integer array.
        ValueError: For negative counts or counts of 2**32 and more.

    Example:
        >>> counts_to_json(np.array([3, 300]))["dtype"]
        'uint16'
    """
    if a is None:
        return None
    arr = _as_numpy(a)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"counts must be integers, got dtype {arr.dtype}")
    hi = int(arr.max()) if arr.size else 0
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"counts must be non-negative, got a minimum of {int(arr.min())}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return array_to_json(arr.astype(dtype, copy=False))
    raise ValueError(f"counts up to {hi} do not fit the uint32 the browser receives")


def to_json_tree(value: Any, _widget: Any = None) -> Any:
    """Make a nested value JSON-safe for a widget trait (a traitlets ``to_json``).

    Arrays and tensors anywhere in dicts, lists or tuples become :func:`array_to_json` dicts (their
    buffers travel in binary), non-finite floats become ``None``, numpy scalars Python scalars.

    Args:
        value: ``None``, a scalar, an array/tensor, or dicts/lists/tuples of them.
        _widget: Ignored; traitlets passes the widget.

    Returns:
        The converted value (new containers; arrays are not copied beyond narrowing).

    Raises:
        TypeError: For dict keys that are not strings, or values JSON cannot hold.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return array_to_json(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"widget dict keys must be strings, got {k!r}")
            out[k] = to_json_tree(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_tree(v) for v in value]
    raise TypeError(f"cannot send a {type(value).__name__} to the browser as JSON")
