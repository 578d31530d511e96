"""Sweep files: a base run configuration plus ``[sweep]`` axes, validated into one run config per point.

A sweep file is a ``tscope run`` file (``[model]``, ``[data]``, ``[analysis]``, ``[output]``) with a ``[sweep]``
table::

    [sweep]
    analyses = ["curvature", "sensitivity"]   # default: [analysis].kind
    [sweep.axes]                              # a full grid over these (or [[sweep.points]], listed points)
    d_model = [16, 32, 64]
    seed = [0, 1, 2]

An axis is a short name of :data:`AXIS_ALIASES` or a dotted path into the base configuration,
``table.key`` or ``table.key.field`` for table-valued keys (``model.tiny_config.norm``,
``model.config.n_layer``, ``data.task_kwargs.k_max``, ``model.name``). ``[analysis]`` may hold the keys of
every kind in ``analyses``; each analysis gets the keys of its own kind. Listed points are tables
``[[sweep.points]]`` of axis values (keys as above). Every point's configuration is validated before anything
runs; every refusal is a :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ANALYSES, ANALYSIS_KEYS, CONFIG_SCHEMA, ConfigError, RunConfig, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Short axis names: (path for a tiny model, path for a Hugging Face model or None where it has no one name).
AXIS_ALIASES: dict[str, tuple[str, str | None]] = {
    "d_model": ("model.tiny_config.d_model", None),
    "n_layer": ("model.tiny_config.n_layer", None),
    "n_head": ("model.tiny_config.n_head", None),
    "d_mlp": ("model.tiny_config.d_mlp", None),
    "norm": ("model.tiny_config.norm", None),
    "attention": ("model.tiny_config.attention", None),
    "residual_scale": ("model.tiny_config.residual_scale", None),
    "seed": ("model.seed", "model.seed"),
    "steps": ("model.steps", "model.steps"),
    "lr": ("model.lr", "model.lr"),
    "samples": ("data.samples", "data.samples"),
    "data_seed": ("data.seed", "data.seed"),
    "seq_len": ("analysis.max_seq_len", "analysis.max_seq_len"),
}
SWEEP_KEYS = ("analyses", "axes", "points")
SWEEP_ANALYSES = ("curvature", "sensitivity", "landscape", "attention")  # those with a row of summaries
SEED_PATHS = ("model.seed",)  # axes whose values are seeds: resampled by the fits, never an x axis


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its axis values, folder name, and one validated run config per analysis."""

    values: dict[str, Any]  # axis name -> value, in the sweep's axis order
    name: str  # folder name, from the values
    runs: dict[str, RunConfig]  # analysis kind -> configuration
    digest: str  # SHA-256 of the configurations: a finished point is reused only when it matches


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: the axes (name -> dotted path), their order, the analyses and the points."""

    path: Path
    axes: dict[str, str]
    analyses: tuple[str, ...]
    points: tuple[SweepPoint, ...]
    output_dir: str | None

    @property
    def seed_axes(self) -> tuple[str, ...]:
        """Axes whose values are seeds (resampled by the power-law fits)."""
        return tuple(a for a, p in self.axes.items() if p in SEED_PATHS)


def _resolve_axis(name: Any, model_kind: str | None, where: str) -> str:
    """The dotted path an axis name stands for, or a :class:`ConfigError` naming it."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: axis names must be non-empty strings, got {name!r}")
    if name in AXIS_ALIASES:
        tiny, hf = AXIS_ALIASES[name]
        path = tiny if model_kind != "hf" else hf
        if path is None:
            raise ConfigError(
                f"{where}: axis {name!r} applies to [model] kind = 'tiny' only; for a Hugging Face model give the "
                f"config key as a dotted path, e.g. 'model.config.n_embd' or 'model.config.n_layer'"
            )
        return path
    parts = name.split(".")
    table = parts[0]
    if table not in CONFIG_SCHEMA or len(parts) not in (2, 3) or parts[1] not in CONFIG_SCHEMA[table]:
        raise ConfigError(
            f"{where}: unknown axis {name!r}; use one of {sorted(AXIS_ALIASES)} or a dotted path 'table.key' "
            f"into the run configuration (tables {list(CONFIG_SCHEMA)}, e.g. 'model.tiny_config.norm')"
        )
    key = CONFIG_SCHEMA[table][parts[1]]
    if len(parts) == 3 and dict not in key.types:
        raise ConfigError(
            f"{where}: axis {name!r}: [{table}].{parts[1]} is not a table, so it has no field {parts[2]!r}"
        )
    if table == "analysis" and parts[1] == "kind":
        raise ConfigError(f"{where}: axis {name!r}: list the analyses in [sweep].analyses instead")
    if table == "output":
        raise ConfigError(f"{where}: axis {name!r}: [output] keys cannot be swept (every point writes the same files)")
    return name


def _set(raw: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    table = raw.setdefault(parts[0], {})
    if len(parts) == 2:
        table[parts[1]] = copy.deepcopy(value)
    else:
        sub = table.get(parts[1])
        table[parts[1]] = {**(sub or {}), parts[2]: copy.deepcopy(value)}


def _value_text(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def point_name(values: Mapping[str, Any]) -> str:
    """The folder name of a point: ``d_model-32_seed-1`` (its axis values, characters safe in file names)."""
    return "_".join(f"{_value_text(k)}-{_value_text(v)}" for k, v in values.items()) or "base"


def _run_config(base: Mapping[str, Any], kind: str, where: str) -> RunConfig:
    raw = copy.deepcopy(dict(base))
    analysis = dict(raw.get("analysis", {}))
    other_keys = {k for o in ANALYSES if o != kind for k in ANALYSIS_KEYS[o]} - set(ANALYSIS_KEYS[kind])
    raw["analysis"] = {k: v for k, v in analysis.items() if k not in other_keys} | {"kind": kind}
    output = dict(raw.get("output", {}))
    if kind != "sensitivity":
        output.pop("statistics", None)
    output["save_model"] = False  # the point saves its model once, beside its analyses
    output.pop("dir", None)  # each analysis writes into its point's folder
    raw["output"] = output
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _digest(runs: Mapping[str, RunConfig]) -> str:
    text = json.dumps({k: c.to_dict() for k, c in runs.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def validate_sweep(raw: Mapping[str, Any], path: Path) -> SweepConfig:
    """Check a parsed sweep document and expand it into points (see the module docstring)."""
    if "sweep" not in raw or not isinstance(raw["sweep"], Mapping):
        raise ConfigError("a sweep file needs a [sweep] table with [sweep.axes] or [[sweep.points]]")
    sweep = raw["sweep"]
    unknown = [k for k in sweep if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"[sweep]: unknown key(s) {unknown}; allowed: {list(SWEEP_KEYS)}")
    base = {k: v for k, v in raw.items() if k != "sweep"}
    model_kind = base.get("model", {}).get("kind") if isinstance(base.get("model"), Mapping) else None
    analyses = sweep.get("analyses", [base.get("analysis", {}).get("kind", "sensitivity")])
    if not isinstance(analyses, list) or not analyses:
        raise ConfigError(f"[sweep].analyses must be a non-empty list of {list(ANALYSES)}, got {analyses!r}")
    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        raise ConfigError(f"[sweep].analyses: unknown {bad}; choose from {list(SWEEP_ANALYSES)}")
    unswept = [a for a in analyses if a not in SWEEP_ANALYSES]
    if unswept:
        raise ConfigError(
            f"[sweep].analyses: {unswept} run with tscope run only (they have no one-row summary); choose from "
            f"{list(SWEEP_ANALYSES)}"
        )
    if len(set(analyses)) != len(analyses):
        raise ConfigError(f"[sweep].analyses lists an analysis twice: {analyses}")
    kind = base.get("analysis", {}).get("kind")
    if kind is not None and kind not in analyses:
        raise ConfigError(
            f"[analysis].kind = {kind!r} conflicts with [sweep].analyses = {analyses}; drop [analysis].kind "
            "or list it in [sweep].analyses"
        )
    if ("axes" in sweep) == ("points" in sweep):
        raise ConfigError(
            "[sweep] takes either [sweep.axes] (a full grid) or [[sweep.points]] (listed points), "
            + ("not both" if "axes" in sweep else "and has neither")
        )
    if "axes" in sweep:
        axes_raw = sweep["axes"]
        if not isinstance(axes_raw, Mapping) or not axes_raw:
            raise ConfigError("[sweep.axes] must be a table of axis = [values, ...] with at least one axis")
        points_values = _grid(axes_raw)
        names = list(axes_raw)
    else:
        listed = sweep["points"]
        if not isinstance(listed, list) or not listed or not all(isinstance(p, Mapping) and p for p in listed):
            raise ConfigError("[[sweep.points]] must be a non-empty list of tables of axis = value")
        names = list(dict.fromkeys(k for p in listed for k in p))
        points_values = [dict(p) for p in listed]
    axes: dict[str, str] = {}
    for name in names:
        where = f"[sweep.axes].{name}" if "axes" in sweep else f"[[sweep.points]] key {name!r}"
        resolved = _resolve_axis(name, model_kind, where)
        clash = next((a for a, p in axes.items() if p == resolved), None)
        if clash is not None:
            raise ConfigError(
                f"{where}: axis {name!r} and axis {clash!r} both set {resolved}; the values conflict: keep one"
            )
        axes[name] = resolved
    seen: dict[str, int] = {}
    points = []
    for i, values in enumerate(points_values):
        values = {a: values[a] for a in names if a in values}
        label = ", ".join(f"{a} = {values[a]!r}" for a in values)
        key = json.dumps(values, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"[[sweep.points]]: points {seen[key] + 1} and {i + 1} are the same ({label})")
        seen[key] = i
        point_raw = copy.deepcopy(base)
        for a, v in values.items():
            _set(point_raw, axes[a], v)
        runs = {k: _run_config(point_raw, k, f"sweep point {i + 1} ({label})") for k in analyses}
        points.append(SweepPoint(values, point_name(values), runs, _digest(runs)))
    names_seen: dict[str, int] = {}
    for i, p in enumerate(points):
        if p.name in names_seen:
            raise ConfigError(
                f"sweep points {names_seen[p.name] + 1} and {i + 1} map to the same folder {p.name!r}; give "
                "values that differ in more than punctuation"
            )
        names_seen[p.name] = i
    output_dir = base.get("output", {}).get("dir")
    return SweepConfig(path, axes, tuple(analyses), tuple(points), output_dir)


def _grid(axes_raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The full grid of ``[sweep.axes]``: every combination, the last axis varying fastest."""
    grid: list[dict[str, Any]] = [{}]
    for name, values in axes_raw.items():
        if not isinstance(values, list):
            raise ConfigError(f"[sweep.axes].{name} must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"[sweep.axes].{name} is an empty list; give at least one value")
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(texts)) != len(texts):
            dup = next(v for v, t in zip(values, texts, strict=True) if texts.count(t) > 1)
            raise ConfigError(f"[sweep.axes].{name} lists the value {dup!r} twice; the values conflict: keep one")
        grid = [{**g, name: v} for g in grid for v in values]
    return grid


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file; errors are :class:`ConfigError` naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"sweep file {path} is a folder; give the TOML file inside it") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep file {path} is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    try:
        return validate_sweep(raw, path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
