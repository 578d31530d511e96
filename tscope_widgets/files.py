"""Checked file reads: the one reader of every file this package saves (the writer is :mod:`._atomic`).

:func:`read_safetensors` and :func:`read_safetensors_header` check a safetensors file's header (its
length, its JSON, known dtypes, shapes and offsets consistent with one another and with the file's size)
before anything is allocated; :func:`read_json` and :func:`parse_json` read JSON (UTF-8 only, bounded
nesting and number sizes). A damaged, truncated, empty or foreign file (a pickle, a ``torch.save`` zip,
text) is refused with a :class:`ValueError` that names the file, what it should have been and what to do;
a missing file (or a folder in its place) raises :class:`FileNotFoundError`. Nothing is unpickled.

Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SAFETENSORS_DTYPES",
    "SafetensorsHeader",
    "TensorSpec",
    "parse_json",
    "read_json",
    "read_safetensors",
    "read_safetensors_header",
]

MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself applies
MAX_JSON_BYTES = 256 * 2**20
MAX_JSON_DEPTH = 200  # nesting of arrays and objects; our files use fewer than 10 levels
MAX_INT_DIGITS = 100
_FIX = "The file is damaged or of another kind: write it again, or restore it from a good copy"


def _torch_dtype(name: str) -> torch.dtype | None:
    return getattr(torch, name, None)


# safetensors dtype name -> (torch dtype, bytes per element); only those torch can hold
SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    name: (dtype, size)
    for name, dtype, size in [
        ("BOOL", torch.bool, 1),
        ("U8", torch.uint8, 1),
        ("I8", torch.int8, 1),
        ("I16", torch.int16, 2),
        ("U16", _torch_dtype("uint16"), 2),
        ("I32", torch.int32, 4),
        ("U32", _torch_dtype("uint32"), 4),
        ("I64", torch.int64, 8),
        ("U64", _torch_dtype("uint64"), 8),
        ("F16", torch.float16, 2),
        ("BF16", torch.bfloat16, 2),
        ("F32", torch.float32, 4),
        ("F64", torch.float64, 8),
        ("C64", torch.complex64, 8),
        ("F8_E4M3", _torch_dtype("float8_e4m3fn"), 1),
        ("F8_E5M2", _torch_dtype("float8_e5m2"), 1),
        ("F8_E8M0", _torch_dtype("float8_e8m0fnu"), 1),
    ]
    if dtype is not None
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as a safetensors header describes it.

    Attributes:
        dtype: The safetensors dtype name (``"F32"``, ``"I64"``, ...).
        shape: The tensor's shape.
        offsets: ``(begin, end)`` byte offsets in the data part of the file.
    """

    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype."""
        return SAFETENSORS_DTYPES[self.dtype][0]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header.

    Attributes:
        path: The file.
        tensors: ``{name: TensorSpec}`` in the order of their offsets.
        metadata: The string-to-string ``__metadata__`` (``{}`` when there is none).
    """

    path: Path
    tensors: dict[str, TensorSpec]
    metadata: dict[str, str]

    @property
    def numel(self) -> int:
        """Total number of elements over all tensors."""
        return sum(spec.numel for spec in self.tensors.values())


def _refuse(path: Path | str, kind: str, reason: str, what: str, fix: str | None) -> ValueError:
    return ValueError(f"{path}: cannot read it as {kind} ({reason}); expected {what}. {fix or _FIX}")


def _check_file(path: Path, what: str) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot open it ({e.strerror or e}); expected {what}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; expected {what}")
    return st.st_size


# ---------------------------------------------------------------------------------------------- JSON
def _depth_ok(text: str, limit: int) -> bool:
    """Whether the nesting of ``[``/``{`` outside strings stays within ``limit`` (a linear scan)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are read)")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 1000:
        raise ValueError(f"a number of {len(text)} characters")
    return float(text)


def _loads(data: str | bytes) -> Any:
    """The parsed value of ``data``, or a :class:`ValueError` saying only what is wrong with it."""
    if isinstance(data, bytes):
        if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and (data[0] == 0 or data[1] == 0)):
            raise ValueError("UTF-16 text or binary data; JSON here is UTF-8 text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    else:
        text = data
    if not text.strip():
        raise ValueError("it is empty")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and not _depth_ok(text, MAX_JSON_DEPTH):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as e:  # JSONDecodeError included
        raise ValueError(str(e)) from None


def parse_json(
    data: str | bytes, *, source: str | os.PathLike, what: str, expect: type | None = None, fix: str | None = None
) -> Any:
    """Parse a JSON document (a file's contents, or JSON stored in a safetensors header).

    Args:
        data: The document, as text or UTF-8 bytes.
        source: Where it comes from (a file, or ``"<file>: header entry 'meta'"``), named in errors.
        what: What it should be, for errors (``"a results description written by save_results"``).
        expect: The type the top-level value must have (``dict``, ``list``), or ``None`` for any.
        fix: What to do about a bad document, for errors (default: write it again or restore it).

    Returns:
        The parsed value.

    Raises:
        ValueError: If it is empty, not UTF-8, not valid JSON, nested deeper than 200 levels, holds an
            integer of more than 100 digits, or its top-level value is not an ``expect``.
    """
    try:
        value = _loads(data)
    except ValueError as e:
        raise ValueError(f"{source} is not valid JSON ({e}); expected {what}. {fix or _FIX}") from None
    if expect is not None and not isinstance(value, expect):
        kind = "object" if expect is dict else "array" if expect is list else expect.__name__
        raise ValueError(
            f"{source} holds a JSON {type(value).__name__}, not a JSON {kind}; expected {what}. {fix or _FIX}"
        )
    return value


def read_json(
    path: str | os.PathLike,
    *,
    what: str,
    expect: type | None = dict,
    fix: str | None = None,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """Read a JSON file, refusing a bad one with a :class:`ValueError` that names it (see :func:`parse_json`).

    Args:
        path: The file.
        what: What it should be, for errors (``"a checkpoint description written by save_checkpoint"``).
        expect: The type the top-level value must have (default ``dict``), or ``None`` for any.
        fix: What to do about a bad file, for errors (default: write it again or restore it).
        max_bytes: Larger files are refused unread.

    Returns:
        The parsed value.

    Raises:
        FileNotFoundError: If ``path`` does not exist or is not a file.
        ValueError: If it is larger than ``max_bytes``, or not valid JSON of type ``expect``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "meta.json"
        >>> _ = path.write_text('{"a": [1, 2]}')
        >>> read_json(path, what="a test file")
        {'a': [1, 2]}
        >>> _ = path.write_text('[1, 2')
        >>> read_json(path, what="a test file")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: .../meta.json is not valid JSON (...); expected a test file. ...
    """
    path = Path(path)
    size = _check_file(path, what)
    if size > max_bytes:
        raise _refuse(path, "JSON", f"{size} bytes, more than the {max_bytes} read here", what, fix)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e}); expected {what}") from None
    return parse_json(data, source=path, what=what, expect=expect, fix=fix)


# ---------------------------------------------------------------------------------------------- safetensors
def _header_from_bytes(path: Path, size: int, head: bytes, what: str, fix: str | None) -> SafetensorsHeader:
    def bad(reason: str) -> ValueError:
        return _refuse(path, "a safetensors file", reason, what, fix)

    def foreign(reason: str) -> ValueError:
        if head.startswith(b"PK\x03\x04"):
            return bad("a zip archive, e.g. written by torch.save; such files are not loaded here (no unpickling)")
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return bad("a Python pickle; pickles are never loaded here")
        return bad(reason)

    if size < 8:
        raise bad(f"{size} bytes, shorter than the 8-byte header length" if size else "the file is empty")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES:
        raise foreign(f"a header length of {n} bytes, more than the {MAX_HEADER_BYTES} safetensors allows")
    if n < 2 or 8 + n > size:
        raise foreign(f"a header length of {n} bytes in a file of {size} bytes (truncated?)")
    raw = head[8 : 8 + n]
    if raw[:1] != b"{":
        raise foreign("the header is not a JSON object (a pickle, a torch.save zip or text?)")
    try:
        header = _loads(raw)
    except ValueError as e:
        raise bad(f"its header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise bad("__metadata__ must map strings to strings")
    data_size = size - 8 - n
    specs: dict[str, TensorSpec] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise bad(f"tensor {name!r}: its entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise bad(f"tensor {name!r} has shape {shape!r}; expected a list of non-negative ints")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise bad(f"tensor {name!r} has data_offsets {offsets!r} outside the {data_size} bytes of data")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype][1]
        if offsets[1] - offsets[0] != nbytes:
            span = offsets[1] - offsets[0]
            raise bad(f"tensor {name!r}: {dtype} {shape} needs {nbytes} bytes, its offsets span {span}")
        specs[name] = TensorSpec(dtype, tuple(shape), (offsets[0], offsets[1]))
    ordered = dict(sorted(specs.items(), key=lambda item: item[1].offsets))
    end = 0
    for name, spec in ordered.items():
        if spec.offsets[0] != end:
            raise bad(f"tensor {name!r} starts at byte {spec.offsets[0]} of the data, expected {end}")
        end = spec.offsets[1]
    if end != data_size:
        raise bad(f"the tensors cover {end} bytes of data, the file holds {data_size}")
    return SafetensorsHeader(path, ordered, dict(meta))


def read_safetensors_header(path: str | os.PathLike, *, what: str, fix: str | None = None) -> SafetensorsHeader:
    """Read and check a safetensors file's header, reading no tensor.

    Checks: the 8-byte header length (within the file and safetensors' 100 MB limit), the header's JSON,
    every dtype known to torch, shapes of non-negative ints, each tensor's offsets spanning exactly its
    bytes, and the tensors tiling the data part of the file exactly.

    Args:
        path: The file.
        what: What it should be, for errors (``"the weights of a model written by save_model"``).
        fix: What to do about a bad file, for errors (default: write it again or restore it).

    Returns:
        The :class:`SafetensorsHeader`.

    Raises:
        FileNotFoundError: If ``path`` does not exist or is not a file.
        ValueError: If any check fails.
    """
    path = Path(path)
    size = _check_file(path, what)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) == 8:
                n = struct.unpack("<Q", head)[0]
                if 8 + n <= size and n <= MAX_HEADER_BYTES:
                    head += f.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e}); expected {what}") from None
    return _header_from_bytes(path, size, head, what, fix)


def read_safetensors(
    path: str | os.PathLike, *, what: str, fix: str | None = None, device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read every tensor of a safetensors file after checking its header (:func:`read_safetensors_header`).

    Args:
        path: The file.
        what: What it should be, for errors (``"the statistics of a folder written by save_statistics"``).
        fix: What to do about a bad file, for errors (default: write it again or restore it).
        device: Where the tensors are placed.

    Returns:
        ``(tensors, metadata)``: ``{name: Tensor}`` in the order of the file's data, and the header's
        string-to-string metadata.

    Raises:
        FileNotFoundError: If ``path`` does not exist or is not a file.
        ValueError: If it is not a sound safetensors file.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from safetensors.torch import save_file
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.safetensors"
        >>> save_file({"w": torch.ones(2)}, path, metadata={"format": "demo"})
        >>> read_safetensors(path, what="a demo file")
        ({'w': tensor([1., 1.])}, {'format': 'demo'})
        >>> _ = path.write_bytes(path.read_bytes()[:-3])  # truncated
        >>> read_safetensors(path, what="a demo file")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: .../x.safetensors: cannot read it as a safetensors file (...); expected a demo file. ...
    """
    from safetensors.torch import load_file

    header = read_safetensors_header(path, what=what, fix=fix)
    try:
        tensors = load_file(str(header.path), device=str(device))
    except FileNotFoundError:
        raise FileNotFoundError(f"{header.path} not found; expected {what}") from None
    except Exception as e:  # safetensors raises its own error types; the file may have changed since
        raise _refuse(header.path, "a safetensors file", str(e), what, fix) from None
    return {name: tensors[name] for name in header.tensors if name in tensors}, header.metadata

