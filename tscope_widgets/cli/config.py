"""Run configurations: the schema of ``tscope run``'s TOML files, their validation, loading and typed form.

Just over 500 lines: the schema, its checks and the typed tables read from it change together (a new key
touches all three), so they stay in one module.

:data:`CONFIG_SCHEMA` lists every key of every table, :data:`ANALYSIS_KEYS` which ``[analysis]`` keys apply to
which kind of analysis; :func:`validate_config` checks a parsed document against them and fills in defaults,
:func:`load_config` reads a file. Every refusal is a :class:`ConfigError` naming the table, the key and what is
allowed (and, from :func:`load_config`, the file). :func:`load_run_config` (or :func:`parse_config`) then gives
the validated tables as frozen dataclasses, :class:`RunConfig` of :class:`ModelConfig`, :class:`DataConfig`, one
:class:`AnalysisConfig` per kind (:class:`SensitivityConfig`, :class:`CurvatureConfig`,
:class:`LandscapeConfig`) and :class:`OutputConfig`; this is what the other modules read, and
:meth:`RunConfig.to_dict` gives back the validated dict that ``meta.json`` records.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


STATISTICS_SHOWN = ("mean", "std")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


class ConfigError(ValueError):
    """A run configuration (TOML file or command-line option) that cannot be used as given."""


@dataclass(frozen=True)
class Key:
    """One allowed configuration key: its accepted types, default and meaning."""

    types: tuple[type, ...]
    default: Any
    help: str
    choices: tuple | None = None


_INT, _STR, _BOOL, _NUMBER = (int,), (str,), (bool,), (float, int)


# Integer keys that count something and must be >= 1.
_COUNTS = frozenset(
    {
        "steps",
        "samples",
        "limit",
        "batch_size",
        "max_seq_len",
        "probes",
        "chunk_size",
        "checkpoint_every",
        "k",
        "max_iter",
        "density_steps",
        "block_probes",
        "block_steps",
    }
)


_LAYERS = (str, int, list)
ANALYSES = ("sensitivity", "curvature", "landscape", "attention", "blocks", "growth_rates")
# keys of one [analysis].settings table of kind = "growth_rates" (GrowthSetting fields)
GROWTH_SETTING_KEYS = ("label", "n_layer", "norm", "attention", "residual_scale", "loss", "sigmas", "layer")
# [model].tiny_config keys of kind = "growth" (the rest of the architecture is per setting)
GROWTH_MODEL_KEYS = ("d_model", "n_head", "d_mlp", "activation")
# [analysis].settings keys of kind = "growth_rates" on a tiny or hf model (the user's model: one block)
MODEL_GROWTH_SETTING_KEYS = ("label", "sigmas", "layer")


# [analysis] keys of one kind of analysis only; the others (kind, batch_size, max_seq_len, dtype, seed) apply to all.
ANALYSIS_KEYS = {
    "sensitivity": ("layers", "method", "mode", "source", "probes", "chunk_size", "checkpoint_every"),
    "curvature": (
        "k",
        "tol",
        "criterion",
        "max_iter",
        "trace_matvecs",
        "density_probes",
        "density_steps",
        "block_norms",
        "hessian_kind",
    ),
    "landscape": ("directions", "span", "resolution", "tol", "max_iter"),
    "attention": ("layers", "chunk_size", "sensitivity", "correlation_samples", "bootstrap"),
    "blocks": ("blocks", "block_probes", "block_steps"),
    "growth_rates": ("settings", "seeds", "num_samples", "exact_max", "embedding_draw", "max_sigma",
                     "checkpoint_every"),
}


CONFIG_SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "kind": Key(_STR, None, "'tiny' (TinyTransformer), 'hf' (Hugging Face) or 'growth' (fresh models per "
                    "point of a growth_rates run)", ("tiny", "hf", "growth")),
        "task": Key(_STR, "induction", "tiny, or hf with steps: the task to train on", ("induction", "modadd")),
        "steps": Key(_INT, None, "tiny: training steps (default: the task's recipe); hf: train the model this many "
                     "steps on [model].task (default: not trained)"),
        "seed": Key(_INT, 0, "seed of training (tiny) or of the random weights (hf config)"),
        "lr": Key(_NUMBER, None, "tiny, or hf with steps: peak learning rate of training (default: the task's recipe)"),
        "task_kwargs": Key((dict,), None, "tiny, or hf with steps: task arguments, e.g. {k_max = 8}"),
        "tiny_config": Key((dict,), None, "tiny: TinyConfig fields overriding the recipe; growth: d_model, n_head, "
                           "d_mlp, activation"),
        "path": Key(_STR, None, "tiny: load a model saved by tscope (folder with model.safetensors)"),
        "name": Key(_STR, None, "hf: from_pretrained name or local folder"),
        "config": Key((dict,), None, "hf: a config table with model_type = '...' (random weights)"),
        "local_files_only": Key(_BOOL, False, "hf: never contact the hub"),
    },
    "data": {
        "task": Key(_STR, None, "synthetic task: 'induction', 'modadd' or 'addition' (five digits)",
                    ("induction", "modadd", "addition")),
        "samples": Key(_INT, 256, "task: number of sequences"),
        "seed": Key(_INT, 1, "task: seed of the sequences"),
        "task_kwargs": Key((dict,), None, "task: arguments (hf models only; a tiny model brings its task)"),
        "text": Key(_STR, None, "a text file, one sample per non-empty line (needs a tokenizer)"),
        "tokenizer": Key(_STR, None, "text: tokenizer name (default: the hf model's name)"),
        "ids": Key(_STR, None, "an .npy or .safetensors file of token ids [N, S]"),
        "limit": Key(_INT, None, "text/ids: use only the first N samples"),
    },
    "analysis": {
        "kind": Key(_STR, "sensitivity", "the analysis to run", ANALYSES),
        "layers": Key(_LAYERS, "all", "'all' (every block and 'final'), an int, 'final' or a list"),
        "method": Key(_STR, "exact", "'exact', 'hutchinson' or 'full'", ("exact", "hutchinson", "full")),
        "mode": Key(_STR, "auto", "'auto', 'reverse' or 'forward'", ("auto", "reverse", "forward")),
        "source": Key((str, int), "embeddings", "'embeddings' or a block index"),
        "batch_size": Key(_INT, 32, "samples per batch"),
        "max_seq_len": Key(_INT, None, "truncate longer samples"),
        "probes": Key(_INT, 8, "hutchinson: probes per position"),
        "chunk_size": Key(_INT, None, "vectors per vmapped pass (default: by memory budget)"),
        "dtype": Key(_STR, "float64", "compute dtype", tuple(DTYPES)),
        "checkpoint_every": Key(_INT, None, "save a resumable checkpoint every N batches"),
        "seed": Key(_INT, 0, "seed of every random draw: probes, reservoir, Lanczos starts, random directions"),
        # curvature
        "k": Key(_INT, 3, "curvature: eigenvalues at each end of the spectrum (Lanczos, which = 'both')"),
        "tol": Key(_NUMBER, 1e-6, "curvature, landscape (eigen): Lanczos relative residual tolerance"),
        "criterion": Key(
            _STR, "residual", "curvature: Lanczos stops on the Ritz residual, or on the eigenvalues' error estimate "
            "min(r, r^2/gap) (fewer products; eigenvalues only)", ("residual", "eigenvalue"),
        ),
        "max_iter": Key(_INT, None, "curvature, landscape (eigen): Lanczos steps at most (default: the kernel's)"),
        "trace_matvecs": Key(_INT, 30, "curvature: Hutch++ products for the trace (0 = off, else >= 3)"),
        "density_probes": Key(_INT, 4, "curvature: SLQ probes for the spectral density (0 = off)"),
        "density_steps": Key(_INT, 30, "curvature: Lanczos steps per SLQ probe"),
        "block_norms": Key(
            (bool, list), True, "curvature: map ||H_ab||_F over all parameter groups (true), none (false) or a list"
        ),
        "hessian_kind": Key(_STR, "hessian", "curvature: the matrix", ("hessian", "ggn", "functional")),
        # blocks
        "blocks": Key(
            (bool, list), True, "blocks: one Hessian block per parameter group, all (true) or those a list names "
            "(names or patterns such as ['embed', 'block0.attn.*'])"
        ),
        "block_probes": Key(_INT, 10, "blocks: SLQ probes per block (Zhang et al. 2024: 10)"),
        "block_steps": Key(_INT, 100, "blocks: Lanczos steps per SLQ probe (Zhang et al. 2024: 100)"),
        # growth rates
        "settings": Key((list,), None, "growth_rates: tables {label, n_layer, norm, attention, residual_scale, "
                        "loss, sigmas = [log10 start, log10 stop, num], layer} (model kind 'growth'), or one "
                        "table {label, sigmas, layer} (kind 'tiny' or 'hf': the configured model)"),
        "seeds": Key(_INT, 20, "growth_rates: seeds 0 .. n-1 of weights, embeddings, data and probes"),
        "num_samples": Key(_INT, 20, "growth_rates: Hutchinson probes per block and part"),
        "exact_max": Key(_INT, None, "growth_rates: blocks of at most this many parameters are exact "
                         "(default: num_samples)"),
        "embedding_draw": Key(_STR, "per_sigma", "growth_rates: embeddings redrawn for each sigma, or one draw "
                              "scaled", ("per_sigma", "shared")),
        "max_sigma": Key(_NUMBER, 0.26, "growth_rates: the fitted slopes use sigma <= max_sigma"),
        # landscape
        "directions": Key(_STR, "random", "landscape: 'random' (filter-normalized) or 'eigen'", ("random", "eigen")),
        "span": Key(_NUMBER, 1.0, "landscape: the grid covers [-span, span] along both directions"),
        "resolution": Key(_INT, 21, "landscape: grid points per direction (odd: the origin is on the grid)"),
        # attention
        "sensitivity": Key(
            _BOOL, True, "attention: also compute exact sensitivity on the first correlation_samples sequences "
            "and its rank correlation with attention"
        ),
        "correlation_samples": Key(_INT, 32, "attention: sequences of the correlation and its bootstrap (>= 2)"),
        "bootstrap": Key(_INT, 1000, "attention: bootstrap replicates of the correlation interval (>= 100)"),
    },
    "output": {
        "dir": Key(_STR, None, "output folder (the --out option wins)"),
        "report": Key(_BOOL, True, "write report.html"),
        "statistics": Key((list,), list(STATISTICS_SHOWN), "statistics shown per layer in the report"),
        "log": Key(
            (bool, str), "auto", "colour scale of the report: true (log), false (linear) or 'auto' (log where the "
            "values span decades; never for counts)", (True, False, "auto")
        ),
        "save_model": Key(_BOOL, True, "write the model next to the statistics"),
    },
}


def _type_name(types: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        dict: "a table",
        list: "a list",
    }
    if float in types:  # an integer is a number too
        types = tuple(t for t in types if t is not int)
    return " or ".join(dict.fromkeys(names[t] for t in types))


def validate_config(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a parsed TOML config against :data:`CONFIG_SCHEMA` and fill in defaults.

    Raises:
        ConfigError: for unknown tables or keys, values of the wrong type, values outside their choices,
            missing required keys and contradictory combinations, each naming the key.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("the configuration must be a TOML document of tables")
    unknown = sorted(set(raw) - set(CONFIG_SCHEMA))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; allowed: {list(CONFIG_SCHEMA)}")
    out: dict[str, dict[str, Any]] = {}
    for table, keys in CONFIG_SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{table}] must be a table, got {type(given).__name__}")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise ConfigError(f"[{table}]: unknown key(s) {bad}; allowed: {sorted(keys)}")
        values = {}
        for name, key in keys.items():
            if name not in given:
                values[name] = key.default
                continue
            value = given[name]
            ok = isinstance(value, key.types) and not (isinstance(value, bool) and bool not in key.types)
            if not ok:
                raise ConfigError(
                    f"[{table}].{name} must be {_type_name(key.types)}, got "
                    f"{type(value).__name__} {value!r} ({key.help})"
                )
            if key.choices is not None and value not in key.choices:
                raise ConfigError(f"[{table}].{name} = {value!r}; choose one of {list(key.choices)}")
            if name in _COUNTS and value < 1:
                raise ConfigError(f"[{table}].{name} must be >= 1, got {value}")
            if name == "seed" and value < 0:
                raise ConfigError(f"[{table}].seed must be >= 0, got {value}")
            values[name] = value
        out[table] = values
    _check_analysis(out, raw.get("analysis", {}), raw.get("output", {}))
    _check_combinations(out)
    return out


def _check_analysis(cfg: dict[str, dict[str, Any]], given: Mapping[str, Any], output: Mapping[str, Any]) -> None:
    """Refuse keys of another kind of analysis, check the ranges of the chosen kind's keys, drop the rest."""
    analysis = cfg["analysis"]
    kind = analysis["kind"]
    stray = [k for k in given if k not in ANALYSIS_KEYS[kind] and any(k in keys for keys in ANALYSIS_KEYS.values())]
    if stray:
        owners = "; ".join(f"{k}: {' or '.join(o for o in ANALYSES if k in ANALYSIS_KEYS[o])}" for k in stray)
        raise ConfigError(f"[analysis] key(s) {stray} do not apply to kind = {kind!r} (they belong to {owners})")
    if kind != "sensitivity" and "statistics" in output:
        raise ConfigError(f"[output].statistics applies to kind = 'sensitivity' only, not to kind = {kind!r}")
    for keys in ANALYSIS_KEYS.values():
        for key in keys:
            if key not in ANALYSIS_KEYS[kind]:
                analysis.pop(key, None)
    if kind != "sensitivity":
        cfg["output"].pop("statistics")
    if "tol" in analysis:
        tol = analysis["tol"]
        if not (math.isfinite(tol) and 0 < tol < 1):
            raise ConfigError(f"[analysis].tol must be a number in (0, 1), got {tol!r}")
    if kind == "curvature":
        if analysis["trace_matvecs"] < 0 or analysis["trace_matvecs"] in (1, 2):
            raise ConfigError(
                f"[analysis].trace_matvecs must be 0 (off) or >= 3 (Hutch++ spends a third of its products on "
                f"a sketch), got {analysis['trace_matvecs']}"
            )
        if analysis["density_probes"] < 0:
            raise ConfigError(
                f"[analysis].density_probes must be >= 0 (0 = no density), got {analysis['density_probes']}"
            )
        blocks = analysis["block_norms"]
        if isinstance(blocks, list) and not (blocks and all(isinstance(g, str) and g for g in blocks)):
            raise ConfigError(
                "[analysis].block_norms must be true, false or a non-empty list of parameter group names or "
                f"patterns such as ['block0.attn.*', 'head'], got {blocks!r}"
            )
    if kind == "attention":
        if analysis["correlation_samples"] < 2:
            raise ConfigError(
                f"[analysis].correlation_samples must be >= 2 (a bootstrap over samples), got "
                f"{analysis['correlation_samples']}"
            )
        if analysis["bootstrap"] < 100:
            raise ConfigError(f"[analysis].bootstrap must be >= 100 replicates, got {analysis['bootstrap']}")
    if kind == "blocks":
        blocks = analysis["blocks"]
        if blocks is False or (isinstance(blocks, list) and not (blocks and all(isinstance(g, str) and g
                                                                                   for g in blocks))):
            raise ConfigError(
                "[analysis].blocks must be true (every parameter group) or a non-empty list of parameter group "
                f"names or patterns such as ['embed', 'block0.attn.*'], got {blocks!r}"
            )
    if kind == "landscape":
        span = analysis["span"]
        if not (math.isfinite(span) and span > 0):
            raise ConfigError(f"[analysis].span must be a positive number, got {span!r}")
        if analysis["resolution"] < 2:
            raise ConfigError(
                f"[analysis].resolution must be >= 2 grid points per direction, got {analysis['resolution']}"
            )
    if kind == "growth_rates":
        _check_growth(cfg)
    elif cfg["model"]["kind"] == "growth":
        raise ConfigError(f"[model].kind = 'growth' builds fresh models for kind = 'growth_rates', not {kind!r}")


def _check_growth(cfg: dict[str, dict[str, Any]]) -> None:
    """``kind = "growth_rates"``: float64 and valid numbers; with a ``growth`` model the addition task and valid
    settings tables, with a ``tiny`` or ``hf`` model one table ``{label, sigmas, layer}`` (the user's model)."""
    analysis, model = cfg["analysis"], cfg["model"]
    if analysis["dtype"] != "float64":
        raise ConfigError("kind = 'growth_rates' computes in float64 (norms span dozens of decades): drop "
                          "[analysis].dtype or set it to 'float64'")
    if not (math.isfinite(analysis["max_sigma"]) and analysis["max_sigma"] > 0):
        raise ConfigError(f"[analysis].max_sigma must be a positive number, got {analysis['max_sigma']!r}")
    if analysis["exact_max"] is not None and analysis["exact_max"] < 0:
        raise ConfigError(f"[analysis].exact_max must be >= 0, got {analysis['exact_max']}")
    for key in ("seeds", "num_samples"):
        if analysis[key] < 1:
            raise ConfigError(f"[analysis].{key} must be >= 1, got {analysis[key]}")
    if model["kind"] == "growth":
        _check_paper_growth(cfg)
    else:
        _check_model_growth(analysis)


def _growth_sigmas(spec: Any, where: str) -> tuple[float, ...]:
    """``[log10 start, log10 stop, num]`` as the scales, or a :class:`ConfigError` naming ``where``."""
    from ..kernels.theory import growth_sigmas

    if not (isinstance(spec, list) and len(spec) == 3 and all(isinstance(v, (int, float)) for v in spec)
            and not isinstance(spec[2], bool) and isinstance(spec[2], int)):
        raise ConfigError(f"{where}.sigmas must be [log10 start, log10 stop, num], e.g. [-2.0, 1.0, 20], "
                          f"got {spec!r}")
    try:
        return growth_sigmas(float(spec[0]), float(spec[1]), spec[2])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_model_growth(analysis: dict[str, Any]) -> None:
    """The growth-rate experiment on the configured model: at most one settings table, with the keys
    :data:`MODEL_GROWTH_SETTING_KEYS`; embeddings redrawn per scale."""
    tables = analysis["settings"] or [{}]
    if len(tables) != 1 or not isinstance(tables[0], dict):
        raise ConfigError("kind = 'growth_rates' on a tiny or hf model measures one block: give at most one "
                          "[analysis].settings table such as {label = 'GPT-2 block 0', layer = 0, "
                          "sigmas = [-2.0, 1.0, 20]}")
    unknown = sorted(set(tables[0]) - set(MODEL_GROWTH_SETTING_KEYS))
    if unknown:
        raise ConfigError(f"[analysis].settings[0]: key(s) {unknown} describe the paper's models; on a tiny or hf "
                          f"model the keys are {list(MODEL_GROWTH_SETTING_KEYS)}")
    layer = tables[0].get("layer", 0)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ConfigError(f"[analysis].settings[0].layer must be an int >= 0, got {layer!r}")
    if "label" in tables[0] and not isinstance(tables[0]["label"], str):
        raise ConfigError(f"[analysis].settings[0].label must be a string, got {tables[0]['label']!r}")
    _growth_sigmas(tables[0].get("sigmas", [-2.0, 1.0, 20]), "[analysis].settings[0]")
    if analysis["embedding_draw"] != "per_sigma":
        raise ConfigError("kind = 'growth_rates' on a tiny or hf model redraws the embeddings at every sigma: "
                          "drop [analysis].embedding_draw or set it to 'per_sigma'")


def _check_paper_growth(cfg: dict[str, dict[str, Any]]) -> None:
    """The paper's experiment (``[model] kind = "growth"``): the addition task and valid settings tables."""
    from ..kernels.theory import GrowthSetting

    analysis, model, data = cfg["analysis"], cfg["model"], cfg["data"]
    stray = [k for k in ("steps", "task_kwargs", "path", "name", "config") if model[k] is not None]
    bad = sorted(set(model["tiny_config"] or {}) - set(GROWTH_MODEL_KEYS))
    if stray or bad:
        raise ConfigError(f"[model] kind = 'growth' takes tiny_config keys {list(GROWTH_MODEL_KEYS)} only; "
                          f"got {stray + bad}")
    if data["task"] not in (None, "addition") or data["text"] is not None or data["ids"] is not None:
        raise ConfigError("kind = 'growth_rates' with [model].kind = 'growth' runs on the five-digit addition "
                          "task: drop [data] or set task = 'addition'")
    tables = analysis["settings"]
    if not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("[analysis].settings must be a non-empty list of tables such as "
                          "{label = 'L=1', n_layer = 1, sigmas = [-2.0, 1.0, 20]}")
    parsed = []
    for i, table in enumerate(tables):
        where = f"[analysis].settings[{i}]"
        unknown = sorted(set(table) - set(GROWTH_SETTING_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(GROWTH_SETTING_KEYS)}")
        values = dict(table)
        values["sigmas"] = _growth_sigmas(values.get("sigmas", [-2.0, 1.0, 20]), where)
        try:
            parsed.append(GrowthSetting(**values))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    labels = [s.label for s in parsed]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"[analysis].settings: labels must differ, got {labels}")


def _check_combinations(cfg: dict[str, dict[str, Any]]) -> None:
    model, data = cfg["model"], cfg["data"]
    if model["kind"] is None:
        raise ConfigError("[model].kind is required: 'tiny' or 'hf'")
    tiny_only = ("tiny_config", "path")
    hf_only = ("name", "config", "local_files_only")
    if model["kind"] == "growth":
        if data["task"] is None and data["text"] is None and data["ids"] is None:
            data["task"] = "addition"
        return
    lr = model["lr"]
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"[model].lr must be a positive number, got {lr!r}")
    if model["kind"] == "tiny":
        stray = [k for k in hf_only if model[k] not in (None, False)]
        if stray:
            raise ConfigError(f"[model] keys {stray} apply to kind = 'hf' only")
        if model["path"] is not None and any(
            model[k] is not None for k in ("steps", "lr", "task_kwargs", "tiny_config")
        ):
            raise ConfigError("[model].path loads a trained model; drop steps/lr/task_kwargs/tiny_config")
    else:
        stray = [k for k in tiny_only if model[k] is not None]
        if stray:
            raise ConfigError(f"[model] keys {stray} apply to kind = 'tiny' only")
        if (model["name"] is None) == (model["config"] is None):
            raise ConfigError("[model] with kind = 'hf' needs exactly one of name = '...' or config = {...}")
        if model["config"] is not None and not isinstance(model["config"].get("model_type"), str):
            raise ConfigError("[model].config needs model_type = '...' (e.g. 'gpt2', 'llama')")
        untrained = [k for k in ("lr", "task_kwargs") if model[k] is not None]
        if model["steps"] is None and untrained:
            raise ConfigError(
                f"[model] keys {untrained} set how a Hugging Face model is trained; give steps = N to train it on "
                "[model].task, or drop them"
            )
    sources = [k for k in ("task", "text", "ids") if data[k] is not None]
    if len(sources) > 1:
        raise ConfigError(f"[data] takes one of task, text or ids; got {sources}")
    if not sources:
        if model["kind"] != "tiny" and model["steps"] is None:
            raise ConfigError("[data] needs one of task = '...', text = 'FILE' or ids = 'FILE'")
        data["task"] = "from_model"
    if data["tokenizer"] is not None and data["text"] is None:
        raise ConfigError("[data].tokenizer applies to text data only")
    if data["task_kwargs"] is not None and model["kind"] == "tiny":
        raise ConfigError("[data].task_kwargs: a tiny model brings its own task; set [model].task_kwargs")
    if data["task_kwargs"] is not None and model["kind"] == "hf" and model["steps"] is not None:
        if data["task"] != model["task"]:
            raise ConfigError(
                f"[data].task = {data['task']!r} with task_kwargs, but the model is trained on [model].task = "
                f"{model['task']!r}: analyse the task it is trained on (drop [data].task) or train on the other"
            )
        if model["task_kwargs"] is None:  # trained on the task it is analysed on
            model["task_kwargs"] = data["task_kwargs"]
        elif model["task_kwargs"] != data["task_kwargs"]:
            raise ConfigError(
                f"[data].task_kwargs = {data['task_kwargs']} differ from [model].task_kwargs = "
                f"{model['task_kwargs']}: the model is analysed on the task it is trained on; keep one of them"
            )
    layers = cfg["analysis"].get("layers")
    if isinstance(layers, list) and not all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in layers
    ):
        raise ConfigError(f"[analysis].layers list must hold ints and 'final', got {layers!r}")
    unknown = [
        s
        for s in cfg["output"].get("statistics", ())
        if s not in ("mean", "std", "var", "sem", "cv", "min", "max", "count")
    ]
    if unknown:
        raise ConfigError(f"[output].statistics: unknown {unknown}")


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and validate a TOML run configuration (see :func:`validate_config`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give the TOML file inside it") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 (TOML "
            "files are UTF-8)"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror or err}); check its permissions") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# ======================================================================================
# Typed configurations: what the commands, runners and reports read
# ======================================================================================
def _default(table: str, key: str) -> Any:
    """A dataclass field whose default is :data:`CONFIG_SCHEMA`'s (copied: some are lists)."""
    return field(default_factory=lambda: copy.deepcopy(CONFIG_SCHEMA[table][key].default))


class _Table:
    """A validated TOML table as a frozen dataclass; :meth:`to_dict` gives the table back as validated."""

    TABLE: ClassVar[str]

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """The table as :func:`validate_config` returns it, keys in :data:`CONFIG_SCHEMA`'s order (``None``
        where a key does not apply to this kind of analysis, e.g. ``[output].statistics``, is left out)."""
        values = self._values()
        return {k: copy.deepcopy(values[k]) for k in CONFIG_SCHEMA[self.TABLE] if k in values}

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]):
        """The typed form of a table that :func:`validate_config` returned."""
        return _from_table(cls, table)


def _from_table(cls: type, table: Mapping[str, Any]):
    return cls(**{f.name: copy.deepcopy(table[f.name]) for f in fields(cls) if f.name in table})


@dataclass(frozen=True)
class ModelConfig(_Table):
    """``[model]``: a tiny model to train (or load from ``path``), or a Hugging Face model (``name`` or ``config``),
    trained on ``task`` when ``steps`` is given."""

    TABLE: ClassVar[str] = "model"
    kind: str  # "tiny" or "hf"
    task: str = _default("model", "task")
    steps: int | None = _default("model", "steps")  # None: the task's recipe
    seed: int = _default("model", "seed")
    lr: float | None = _default("model", "lr")  # None: the task's recipe
    task_kwargs: dict | None = _default("model", "task_kwargs")
    tiny_config: dict | None = _default("model", "tiny_config")
    path: str | None = _default("model", "path")
    name: str | None = _default("model", "name")
    config: dict | None = _default("model", "config")
    local_files_only: bool = _default("model", "local_files_only")


@dataclass(frozen=True)
class DataConfig(_Table):
    """``[data]``: one of a synthetic ``task`` (``"from_model"``: the tiny model's own), ``text`` or ``ids``."""

    TABLE: ClassVar[str] = "data"
    task: str | None = _default("data", "task")
    samples: int = _default("data", "samples")
    seed: int = _default("data", "seed")
    task_kwargs: dict | None = _default("data", "task_kwargs")
    text: str | None = _default("data", "text")
    tokenizer: str | None = _default("data", "tokenizer")
    ids: str | None = _default("data", "ids")
    limit: int | None = _default("data", "limit")


@dataclass(frozen=True)
class AnalysisConfig(_Table):
    """``[analysis]`` keys of every kind; :class:`SensitivityConfig`, :class:`CurvatureConfig` and
    :class:`LandscapeConfig` add their own (:data:`ANALYSIS_KEYS`)."""

    TABLE: ClassVar[str] = "analysis"
    kind: ClassVar[str]
    batch_size: int = _default("analysis", "batch_size")
    max_seq_len: int | None = _default("analysis", "max_seq_len")
    dtype: str = _default("analysis", "dtype")  # "float64" or "float32"
    seed: int = _default("analysis", "seed")

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype (``torch.float64`` or ``torch.float32``)."""
        return DTYPES[self.dtype]

    def _values(self) -> dict[str, Any]:
        return {"kind": self.kind, **super()._values()}

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]):
        """The typed form of a validated ``[analysis]`` table: the class of its ``kind``."""
        kind_cls = ANALYSIS_CONFIGS[table["kind"]] if cls is AnalysisConfig else cls
        if table.get("kind", kind_cls.kind) != kind_cls.kind:
            raise ConfigError(f"[analysis].kind = {table['kind']!r}; {cls.__name__} is kind = {cls.kind!r}")
        return _from_table(kind_cls, table)


@dataclass(frozen=True)
class SensitivityConfig(AnalysisConfig):
    """``[analysis] kind = "sensitivity"``: position-to-position sensitivity maps."""

    kind: ClassVar[str] = "sensitivity"
    layers: str | int | list = _default("analysis", "layers")
    method: str = _default("analysis", "method")
    mode: str = _default("analysis", "mode")
    source: str | int = _default("analysis", "source")
    probes: int = _default("analysis", "probes")
    chunk_size: int | None = _default("analysis", "chunk_size")
    checkpoint_every: int | None = _default("analysis", "checkpoint_every")


@dataclass(frozen=True)
class CurvatureConfig(AnalysisConfig):
    """``[analysis] kind = "curvature"``: extreme eigenvalues, trace, density and block norms."""

    kind: ClassVar[str] = "curvature"
    k: int = _default("analysis", "k")
    tol: float = _default("analysis", "tol")
    criterion: str = _default("analysis", "criterion")
    max_iter: int | None = _default("analysis", "max_iter")
    trace_matvecs: int = _default("analysis", "trace_matvecs")
    density_probes: int = _default("analysis", "density_probes")
    density_steps: int = _default("analysis", "density_steps")
    block_norms: bool | list = _default("analysis", "block_norms")
    hessian_kind: str = _default("analysis", "hessian_kind")


@dataclass(frozen=True)
class LandscapeConfig(AnalysisConfig):
    """``[analysis] kind = "landscape"``: a 2D loss slice along random or Hessian eigenvector directions."""

    kind: ClassVar[str] = "landscape"
    directions: str = _default("analysis", "directions")
    span: float = _default("analysis", "span")
    resolution: int = _default("analysis", "resolution")
    tol: float = _default("analysis", "tol")
    max_iter: int | None = _default("analysis", "max_iter")


@dataclass(frozen=True)
class AttentionConfig(AnalysisConfig):
    """``[analysis] kind = "attention"``: attention statistics, head spectra and the correlation with sensitivity."""

    kind: ClassVar[str] = "attention"
    layers: str | int | list = _default("analysis", "layers")
    chunk_size: int | None = _default("analysis", "chunk_size")
    sensitivity: bool = _default("analysis", "sensitivity")
    correlation_samples: int = _default("analysis", "correlation_samples")
    bootstrap: int = _default("analysis", "bootstrap")


@dataclass(frozen=True)
class BlocksConfig(AnalysisConfig):
    """``[analysis] kind = "blocks"``: SLQ density of each diagonal Hessian block, their Jensen–Shannon
    heterogeneity (Zhang et al. 2024) and the sharpness by block type (Wang et al. 2025)."""

    kind: ClassVar[str] = "blocks"
    blocks: bool | list = _default("analysis", "blocks")
    block_probes: int = _default("analysis", "block_probes")
    block_steps: int = _default("analysis", "block_steps")


@dataclass(frozen=True)
class GrowthRatesConfig(AnalysisConfig):
    """``[analysis] kind = "growth_rates"``: block norms of W_Q and W_V against the embedding scale."""

    kind: ClassVar[str] = "growth_rates"
    settings: list | None = _default("analysis", "settings")  # list of tables (GROWTH_SETTING_KEYS)
    seeds: int = _default("analysis", "seeds")
    num_samples: int = _default("analysis", "num_samples")
    exact_max: int | None = _default("analysis", "exact_max")
    embedding_draw: str = _default("analysis", "embedding_draw")
    max_sigma: float = _default("analysis", "max_sigma")
    checkpoint_every: int | None = _default("analysis", "checkpoint_every")

    def growth_settings(self) -> list:
        """The settings tables as :class:`~tscope_widgets.kernels.theory.GrowthSetting` (validated before)."""
        from ..kernels.theory import GrowthSetting, growth_sigmas

        out = []
        for table in self.settings:
            values = dict(table)
            spec = values.pop("sigmas", [-2.0, 1.0, 20])
            out.append(GrowthSetting(**values, sigmas=growth_sigmas(float(spec[0]), float(spec[1]), spec[2])))
        return out

    def model_growth_arguments(self) -> dict[str, Any]:
        """``sigmas``, ``layer`` and ``label`` of the one settings table of a run on a tiny or hf model (validated
        before), as :func:`~tscope_widgets.kernels.theory.iter_model_growth_rates` takes them."""
        from ..kernels.theory import growth_sigmas

        table = dict((self.settings or [{}])[0])
        spec = table.get("sigmas", [-2.0, 1.0, 20])
        return {"sigmas": growth_sigmas(float(spec[0]), float(spec[1]), spec[2]), "layer": table.get("layer", 0),
                "label": table.get("label")}


ANALYSIS_CONFIGS: dict[str, type[AnalysisConfig]] = {
    "sensitivity": SensitivityConfig,
    "curvature": CurvatureConfig,
    "landscape": LandscapeConfig,
    "attention": AttentionConfig,
    "blocks": BlocksConfig,
    "growth_rates": GrowthRatesConfig,
}


@dataclass(frozen=True)
class OutputConfig(_Table):
    """``[output]``. ``statistics`` is ``None`` for analyses other than sensitivity (the key does not apply)."""

    TABLE: ClassVar[str] = "output"
    dir: str | None = _default("output", "dir")
    report: bool = _default("output", "report")
    statistics: list[str] | None = None
    log: bool | str = _default("output", "log")
    save_model: bool = _default("output", "save_model")

    def _values(self) -> dict[str, Any]:
        values = super()._values()
        if values["statistics"] is None:
            del values["statistics"]
        return values


@dataclass(frozen=True)
class RunConfig:
    """A whole ``tscope run`` configuration, validated and typed: what :func:`load_run_config` returns."""

    model: ModelConfig
    data: DataConfig
    analysis: AnalysisConfig
    output: OutputConfig

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Mapping[str, Any]]) -> RunConfig:
        """The typed form of what :func:`validate_config` returned."""
        return cls(
            ModelConfig.from_dict(cfg["model"]),
            DataConfig.from_dict(cfg["data"]),
            AnalysisConfig.from_dict(cfg["analysis"]),
            OutputConfig.from_dict(cfg["output"]),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The configuration as :func:`validate_config` returns it (``meta.json`` records this)."""
        return {name: getattr(self, name).to_dict() for name in CONFIG_SCHEMA}


def parse_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a parsed TOML document (:func:`validate_config`) and type it."""
    return RunConfig.from_dict(validate_config(raw))


def load_run_config(path: str | Path) -> RunConfig:
    """Read, validate (:func:`load_config`, errors name the file) and type a TOML run configuration."""
    return RunConfig.from_dict(load_config(path))
