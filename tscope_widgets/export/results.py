"""Results files: per-layer Welford statistics (and other named results) as safetensors plus JSON.

Layout of a results folder::

    statistics.safetensors   layer{label}.{count,mean,m2,min,max,rows,std}  (label: 0, 1, …, final)
    meta.json                layers, method, token labels, model, samples, versions, timing, …

``count, mean, m2, min, max, rows`` are exactly :meth:`WelfordState.state_dict` (so ``mean``/``min``/``max``
are only meaningful where ``count > 0``; ``min``/``max`` hold ``±inf`` there), which makes
:func:`load_statistics` a bit-for-bit round trip. ``std`` (Bessel, NaN where ``count < 2``) is added for
readers that do not use this package; it is recomputed, not read, on load. Nothing is pickled:
safetensors, ``numpy.load(allow_pickle=False)`` and JSON only.

Other results (a Hessian spectrum, a loss-landscape grid) use :func:`save_results` /
:func:`load_results`: named tensors in ``{name}.safetensors`` plus the same ``meta.json``, which lists
every tensor's shape and dtype.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._atomic import write_safetensors, write_text
from .._version import __version__
from ..files import read_json, read_safetensors
from ..kernels.welford import WelfordState
from ..models.adapter import LayerDict

STATISTICS_FILE = "statistics.safetensors"
META_FILE = "meta.json"
FORMAT = "tscope_widgets.statistics/1"
_STATE_KEYS = ("count", "mean", "m2", "min", "max", "rows")
_KEY = re.compile(r"^layer(?P<label>\d+|[A-Za-z_][A-Za-z0-9_]*)\.(?P<key>[a-z0-9_]+)$")

Layer = int | str


def _label(layer: Layer) -> str:
    if isinstance(layer, bool) or not isinstance(layer, (int, str)):
        raise TypeError(f"layer labels must be ints or strings, got {type(layer).__name__} {layer!r}")
    text = str(layer)
    if not re.fullmatch(r"\d+|[A-Za-z_][A-Za-z0-9_]*", text):
        raise ValueError(f"layer label {layer!r} must be a non-negative int or an identifier such as 'final'")
    return text


def _parse_label(text: str) -> Layer:
    return int(text) if text.isdigit() else text


def statistics_tensors(stats: Mapping[Layer, WelfordState]) -> dict[str, Tensor]:
    """Flat ``{"layer{l}.{key}": tensor}`` of every state's ``state_dict()`` plus its ``std``."""
    if not isinstance(stats, Mapping) or not stats:
        raise ValueError("stats must be a non-empty mapping {layer: WelfordState}")
    out: dict[str, Tensor] = {}
    for layer, state in stats.items():
        if not isinstance(state, WelfordState):
            raise TypeError(f"stats[{layer!r}] must be a WelfordState, got {type(state).__name__}")
        prefix = f"layer{_label(layer)}."
        tensors = {**state.state_dict(), "std": state.std}
        out.update({prefix + k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    return out


def _versions() -> dict[str, str]:
    versions = {
        "tscope_widgets": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
    return versions


def _jsonable(value: Any, where: str) -> Any:
    """``value`` with tuples as lists and non-finite floats as strings; TypeError for anything else."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"meta{where} is a {type(value).__name__}, which JSON cannot hold; convert it first")


def save_statistics(
    directory: str | Path,
    stats: Mapping[Layer, WelfordState],
    meta: Mapping[str, Any] | None = None,
    *,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write ``statistics.safetensors`` and ``meta.json`` into ``directory`` (created if needed).

    Args:
        directory: Output folder.
        stats: ``{layer: WelfordState}``; labels are ints (block index) or identifiers (``"final"``).
        meta: JSON-serialisable description (method, token labels, model, samples, timing, …). The keys
            ``format``, ``layers``, ``tensors``, ``versions`` and ``created`` are filled in here.
        extra_tensors: More tensors to store under ``extra.{name}`` (e.g. example input ids).

    Returns:
        The folder.

    Raises:
        TypeError: for a non-WelfordState value, a meta value JSON cannot hold, or a non-tensor extra.
        ValueError: for empty ``stats`` or a layer label that is not an int or identifier.
    """
    directory = Path(directory)
    tensors = statistics_tensors(stats)
    for name, t in (extra_tensors or {}).items():
        if not isinstance(t, Tensor):
            raise TypeError(f"extra_tensors[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
        tensors[f"extra.{name}"] = t.detach().cpu().contiguous()
    layers = list(stats.keys())
    info = _jsonable(dict(meta or {}), "")
    info.update(
        format=FORMAT,
        layers=layers,
        tensors="layer{l}.{count,mean,m2,min,max,rows}: WelfordState.state_dict() (mean/min/max valid "
        "where count > 0); layer{l}.std: Bessel std, NaN where count < 2",
        versions=_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / STATISTICS_FILE, tensors, {"format": FORMAT})
    write_text(directory / META_FILE, json.dumps(info, indent=2, allow_nan=False))
    return directory


def _states_from_tensors(tensors: Mapping[str, Tensor], order: list | None, source: Path) -> LayerDict:
    grouped: dict[Layer, dict[str, Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("extra."):
            continue
        m = _KEY.match(name)
        if m is None:
            raise ValueError(
                f"{source}: unexpected tensor {name!r}; expected layer{{l}}.{{key}} or extra.{{name}}"
            )
        grouped.setdefault(_parse_label(m["label"]), {})[m["key"]] = t
    if order is not None:
        unknown = [layer for layer in grouped if layer not in order]
        missing = [layer for layer in order if layer not in grouped]
        if unknown or missing:
            raise ValueError(f"{source}: meta lists layers {order}, the tensors hold {list(grouped)}")
    stats = LayerDict()
    for layer in order if order is not None else list(grouped):
        state = {k: grouped[layer][k] for k in _STATE_KEYS if k in grouped[layer]}
        try:
            stats[layer] = WelfordState.from_state_dict(state)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}: layer {layer!r}: {err}") from None
    return stats


def _with_num_layers(stats: LayerDict, meta: Mapping[str, Any]) -> LayerDict:
    num_layers = meta.get("num_layers")
    if isinstance(num_layers, int) and not isinstance(num_layers, bool):
        stats.num_layers = num_layers
    return stats


_STATS_WHAT = "a folder written by save_statistics"


def load_statistics(directory: str | Path) -> tuple[LayerDict, dict[str, Any]]:
    """Read a folder written by :func:`save_statistics`.

    Returns:
        ``(stats, meta)``: ``LayerDict {layer: WelfordState}`` in the saved order, each bit-identical to
        the saved state (``state_dict()`` equal), negative indices answering when ``meta["num_layers"]``
        is given; and the parsed ``meta.json``. Extra tensors are returned by :func:`load_extra_tensors`.

    Raises:
        FileNotFoundError: when a file is missing. ValueError: for files of another format, or damaged
            ones (each naming the file).
    """
    directory = Path(directory)
    meta_path, stats_path = directory / META_FILE, directory / STATISTICS_FILE
    for path in (meta_path, stats_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected {_STATS_WHAT}")
    meta = read_json(meta_path, what=f"the description (meta.json) of {_STATS_WHAT}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a tscope_widgets statistics description (format {FORMAT!r})")
    layers = meta.get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(layer, (int, str)) and not isinstance(layer, bool) for layer in layers
    ):
        raise ValueError(f"{meta_path}: 'layers' must be a list of layer labels (ints or names), got {layers!r}")
    tensors, _ = read_safetensors(stats_path, what=f"the statistics of {_STATS_WHAT}")
    stats = _states_from_tensors(tensors, layers, stats_path)
    return _with_num_layers(stats, meta), meta


def load_extra_tensors(directory: str | Path) -> dict[str, Tensor]:
    """The ``extra_tensors`` stored by :func:`save_statistics` (``{}`` when there are none).

    Args:
        directory: A folder written by :func:`save_statistics`.

    Returns:
        ``{name: Tensor}``.

    Raises:
        FileNotFoundError: when the statistics file is missing. ValueError: for a damaged one.
    """
    tensors, _ = read_safetensors(Path(directory) / STATISTICS_FILE, what=f"the statistics of {_STATS_WHAT}")
    return {name.removeprefix("extra."): t for name, t in tensors.items() if name.startswith("extra.")}


def save_npz(path: str | Path, stats: Mapping[Layer, WelfordState]) -> Path:
    """Write the tensors of :func:`save_statistics` (without metadata) to one ``.npz`` file.

    Read it with ``numpy.load(path, allow_pickle=False)`` or :func:`load_npz`.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the file name must end in .npz")
    arrays = {name: t.numpy() for name, t in statistics_tensors(stats).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_npz(path: str | Path) -> LayerDict:
    """``{layer: WelfordState}`` from a file written by :func:`save_npz` (bit-for-bit, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a file written by save_npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            tensors = {name: torch.from_numpy(data[name].copy()) for name in data.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path}: cannot read it as an .npz file of statistics ({err}); expected a file written by "
            "save_npz. The file is damaged or of another kind: write it again, or restore it from a good copy"
        ) from None
    return _states_from_tensors(tensors, None, path)


# ======================================================================================
# Generic results: named tensors + JSON (curvature spectra, landscape grids, ...)
# ======================================================================================
RESULTS_FORMAT = "tscope_widgets.results/1"
_RESULTS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def save_results(
    directory: str | Path, name: str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``{name}.safetensors`` (the tensors) and ``meta.json`` (the description) into ``directory``.

    For results that are not Welford statistics (those go through :func:`save_statistics`): a Hessian
    spectrum, a loss-landscape grid, ... Tensors keep their dtype and shape bit for bit; the tensor file
    is written under a temporary name and moved into place.

    Args:
        directory: Output folder (created if needed).
        name: File stem, an identifier such as ``"curvature"`` or ``"landscape"``.
        tensors: ``{key: Tensor}``; keys are non-empty strings (dots group them, e.g. ``"density.grid"``).
        meta: JSON-serialisable description. The keys ``format``, ``results``, ``tensors``, ``versions``
            and ``created`` are filled in here (``tensors``: ``{key: {"shape", "dtype"}}``).

    Returns:
        The path of ``{name}.safetensors``.

    Raises:
        ValueError: for a bad name, no tensors, or an empty key. TypeError: for a value that is not a tensor
            or meta that JSON cannot hold.
    """
    if not isinstance(name, str) or not _RESULTS_NAME.fullmatch(name):
        raise ValueError(f"results name {name!r} must be an identifier such as 'curvature'")
    if not isinstance(tensors, Mapping) or not tensors:
        raise ValueError("tensors must be a non-empty mapping {key: Tensor}")
    flat: dict[str, Tensor] = {}
    for key, t in tensors.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"tensor keys must be non-empty strings, got {key!r}")
        if not isinstance(t, Tensor):
            raise TypeError(f"tensors[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
        flat[key] = t.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
    info = _jsonable(dict(meta or {}), "")
    info.update(
        format=RESULTS_FORMAT,
        results=name,
        tensors={k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for k, t in flat.items()},
        versions=_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = write_safetensors(directory / f"{name}.safetensors", flat, {"format": RESULTS_FORMAT, "results": name})
    write_text(directory / META_FILE, json.dumps(info, indent=2, allow_nan=False))
    return path


def load_results(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a folder written by :func:`save_results` (safetensors and JSON; nothing is pickled).

    Returns:
        ``(tensors, meta)``: ``{key: Tensor}`` bit for bit as saved, in the saved order, and the parsed
        ``meta.json`` (``meta["results"]`` names the tensor file).

    Raises:
        FileNotFoundError: when a file is missing. ValueError: for a folder of another format, or a tensor
            file whose keys, shapes or dtypes differ from what ``meta.json`` lists.
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; expected a folder written by save_results")
    meta = read_json(meta_path, what="the description (meta.json) of a folder written by save_results")
    if meta.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{meta_path} is not a tscope_widgets results description (format {RESULTS_FORMAT!r})")
    name = meta.get("results")
    if not isinstance(name, str) or not _RESULTS_NAME.fullmatch(name):
        raise ValueError(f"{meta_path}: 'results' must name the tensor file, got {name!r}")
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {meta_path} refers to it")
    tensors, _ = read_safetensors(path, what=f"the tensors of a folder written by save_results ({meta_path})")
    listed = meta.get("tensors")
    if not isinstance(listed, dict) or set(listed) != set(tensors):
        names = sorted(listed) if isinstance(listed, dict) else listed
        raise ValueError(f"{path} holds {sorted(tensors)}, {meta_path} lists {names!r}")
    for key, want in listed.items():
        t = tensors[key]
        got = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if got != want:
            raise ValueError(f"{path}: tensor {key!r} is {got}, {meta_path} says {want}")
    return {key: tensors[key] for key in listed}, meta
