"""Command line: ``tscope demo`` and ``tscope run CONFIG.toml``.

``tscope demo`` trains the tiny induction model (:func:`train_tiny`), measures position-to-position
sensitivity :math:`s_{ij} = \\lVert \\partial h_i / \\partial e_j \\rVert_F^2` of every layer over a few
hundred induction sequences, and writes to ``--out`` (default ``results/demo``):

- ``statistics.safetensors`` + ``meta.json``: per-layer Welford statistics
  (:mod:`tscope_widgets.export.results`);
- ``model.safetensors`` + ``model.json``: the trained model;
- ``report.html``: mean and std heatmaps per layer, self-contained (opens offline);

and, on the first 64 sequences, the 3 largest and smallest Hessian eigenvalues of the loss (Lanczos) and
its trace (Hutch++), printed and shown in the report (``meta["curvature"]``; about 5 s more).

``tscope run CONFIG.toml`` runs the analysis a TOML file describes for a model and data set (see
``examples/``; :data:`CONFIG_SCHEMA` lists every key, :data:`ANALYSIS_KEYS` which apply to which kind):

- ``[analysis] kind = "sensitivity"``: as the demo; ``statistics.safetensors`` + ``meta.json``.
- ``kind = "curvature"``: extreme eigenvalues with residuals, trace, spectral density, block norm map
  and summary (sharpness, λ_min, condition number, negative mass) of the Hessian, its Gauss–Newton or
  its functional part (:func:`run_curvature`); ``curvature.safetensors`` + ``meta.json``.
- ``kind = "landscape"``: the loss on a 2D grid along random (filter-normalized) or Hessian eigenvector
  directions (:func:`run_landscape`); ``landscape.safetensors`` + ``meta.json`` and
  ``directions.safetensors``, from which the slice can be recomputed exactly.

Each also writes the model (unless ``[output] save_model = false``) and a self-contained ``report.html``.
Several processes (``torchrun``), for every analysis and the demo::

    torchrun --nproc-per-node 2 -m tscope_widgets.cli run examples/tiny_induction.toml
    torchrun --nproc-per-node 2 --no-python tscope run examples/tiny_induction.toml  # the same

- Every process joins torchrun's process group (gloo on the CPU; nccl with CUDA, each process on
  ``cuda:<LOCAL_RANK>``) and analyses its shard of the data, samples ``r, r + W, ...``
  (:func:`distributed.shard`); the Welford states are merged exactly at the end
  (:func:`distributed.all_merge_welford`): counts equal a one-process run's exactly, minima and maxima
  exactly when the per-sample maps are bit-identical, means and standard deviations to rounding (about
  1e-15 relative in float64, more for a std far below its mean). Per-sample maps can differ in their last
  bits with the samples that share a batch (BLAS blocking; e.g. GPT-2 maps change by ~3e-16 relative
  between batch sizes 1 and 8 in one process), and shards make other batches; the tiny models here give
  bit-identical maps. The reservoir of per-sample maps is rank 0's.
- The model is the same on every rank: a tiny model that is trained is trained on rank 0 alone and its
  weights broadcast (seeded training repeats bit for bit only on the same thread count and hardware; a
  broadcast needs neither), a loaded or Hugging Face model is loaded on every rank; then the ranks compare
  SHA-256 digests of the weights, and of the data, and refuse to go on when they differ.
- Curvature and landscapes shard the loss batches instead (batches ``r, r + W, ...``): each product,
  gradient and grid point is reduced over the ranks with the token weights of all ranks
  (``HessianOperator(process_group=)``, ``slice_2d(process_group=)``), so every rank holds the loss and
  products of one process holding all the data, and Lanczos, Hutch++, SLQ and block norms (seeded
  alike) run identically on every rank; results equal a one-process run to rounding (tested: 1e-10 in
  float64). Each rank needs at least one batch.
- Rank 0 alone prints, shows progress bars (of its own shard) and writes the results; the files are those
  of a one-process run, with ``world_size`` in ``meta.json``. The only files other ranks write are their
  checkpoints: with ``checkpoint_every`` each rank saves its own in ``OUT/checkpoint/rank<r>-of-<W>/``, and
  ``--resume`` continues each rank from its own, so a run resumes with the number of processes that
  started it (any other is refused, naming the one to use).
- A failure on one rank stops every rank with a message naming the rank and its error instead of leaving
  the others waiting; a rank that hangs or dies is noticed after ``--dist-timeout`` seconds (default 1800;
  the merge waits for the slowest shard, so keep it above the time a shard takes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from . import __version__
from . import distributed as dist_
from .models import ModelAdapter, adapt

Layer = int | str

STATISTICS_SHOWN = ("mean", "std")
DEMO_CURVATURE_SAMPLES = 64  # sequences whose loss `tscope demo` takes the Hessian spectrum and trace of
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class ConfigError(ValueError):
    """A run configuration (TOML file or command-line option) that cannot be used as given."""


# ======================================================================================
# Configuration schema and validation
# ======================================================================================
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
    }
)
_LAYERS = (str, int, list)
ANALYSES = ("sensitivity", "curvature", "landscape")
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
}

CONFIG_SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "kind": Key(_STR, None, "'tiny' (TinyTransformer) or 'hf' (Hugging Face)", ("tiny", "hf")),
        "task": Key(_STR, "induction", "tiny: the task to train on", ("induction", "modadd")),
        "steps": Key(_INT, None, "tiny: training steps (default: the task's recipe)"),
        "seed": Key(_INT, 0, "seed of training (tiny) or of the random weights (hf config)"),
        "task_kwargs": Key((dict,), None, "tiny: task arguments, e.g. {k_max = 8}"),
        "tiny_config": Key((dict,), None, "tiny: TinyConfig fields overriding the recipe"),
        "path": Key(_STR, None, "tiny: load a model saved by tscope (folder with model.safetensors)"),
        "name": Key(_STR, None, "hf: from_pretrained name or local folder"),
        "config": Key((dict,), None, "hf: a config table with model_type = '...' (random weights)"),
        "local_files_only": Key(_BOOL, False, "hf: never contact the hub"),
    },
    "data": {
        "task": Key(_STR, None, "synthetic task: 'induction' or 'modadd'", ("induction", "modadd")),
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
        "dtype": Key(_STR, "float64", "compute dtype", tuple(_DTYPES)),
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
        # landscape
        "directions": Key(_STR, "random", "landscape: 'random' (filter-normalized) or 'eigen'", ("random", "eigen")),
        "span": Key(_NUMBER, 1.0, "landscape: the grid covers [-span, span] along both directions"),
        "resolution": Key(_INT, 21, "landscape: grid points per direction (odd: the origin is on the grid)"),
    },
    "output": {
        "dir": Key(_STR, None, "output folder (the --out option wins)"),
        "report": Key(_BOOL, True, "write report.html"),
        "statistics": Key((list,), list(STATISTICS_SHOWN), "statistics shown per layer in the report"),
        "log": Key(_BOOL, False, "log colour scale in the report"),
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
    if kind == "landscape":
        span = analysis["span"]
        if not (math.isfinite(span) and span > 0):
            raise ConfigError(f"[analysis].span must be a positive number, got {span!r}")
        if analysis["resolution"] < 2:
            raise ConfigError(
                f"[analysis].resolution must be >= 2 grid points per direction, got {analysis['resolution']}"
            )


def _check_combinations(cfg: dict[str, dict[str, Any]]) -> None:
    model, data = cfg["model"], cfg["data"]
    if model["kind"] is None:
        raise ConfigError("[model].kind is required: 'tiny' or 'hf'")
    tiny_only = ("steps", "task_kwargs", "tiny_config", "path")
    hf_only = ("name", "config", "local_files_only")
    if model["kind"] == "tiny":
        stray = [k for k in hf_only if model[k] not in (None, False)]
        if stray:
            raise ConfigError(f"[model] keys {stray} apply to kind = 'hf' only")
        if model["path"] is not None and any(
            model[k] is not None for k in ("steps", "task_kwargs", "tiny_config")
        ):
            raise ConfigError("[model].path loads a trained model; drop steps/task_kwargs/tiny_config")
    else:
        stray = [k for k in tiny_only if model[k] is not None]
        if stray:
            raise ConfigError(f"[model] keys {stray} apply to kind = 'tiny' only")
        if (model["name"] is None) == (model["config"] is None):
            raise ConfigError("[model] with kind = 'hf' needs exactly one of name = '...' or config = {...}")
        if model["config"] is not None and not isinstance(model["config"].get("model_type"), str):
            raise ConfigError("[model].config needs model_type = '...' (e.g. 'gpt2', 'llama')")
    sources = [k for k in ("task", "text", "ids") if data[k] is not None]
    if len(sources) > 1:
        raise ConfigError(f"[data] takes one of task, text or ids; got {sources}")
    if not sources:
        if model["kind"] != "tiny":
            raise ConfigError("[data] needs one of task = '...', text = 'FILE' or ids = 'FILE'")
        data["task"] = "from_model"
    if data["tokenizer"] is not None and data["text"] is None:
        raise ConfigError("[data].tokenizer applies to text data only")
    if data["task_kwargs"] is not None and model["kind"] == "tiny":
        raise ConfigError("[data].task_kwargs: a tiny model brings its own task; set [model].task_kwargs")
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
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# ======================================================================================
# Models and data
# ======================================================================================
@dataclass
class Prepared:
    """A model ready for analysis, with what the report and results need to know about it."""

    model: torch.nn.Module
    description: dict[str, Any]
    task: Any = None  # the synthetic task a tiny model was trained on
    save: Callable[[Path], list[Path]] | None = None  # writes the model into a folder
    training: Any = None  # TrainResult for freshly trained tiny models


def _hub_error(name: str, err: Exception) -> ConfigError:
    return ConfigError(
        f"could not load {name!r} with from_pretrained: {err.__class__.__name__}: "
        f"{str(err).splitlines()[0].rstrip('.')}. "
        "The Hugging Face hub is unreachable from here or the name is wrong; download the model on a "
        "machine with internet (huggingface-cli download NAME) and pass its local folder as name, or "
        "build a model from a config table ([model].config = {model_type = ...}). Offline, set "
        "local_files_only = true (or HF_HUB_OFFLINE=1) to skip the connection retries."
    )


def prepare_tiny(cfg: Mapping[str, Any], progress: bool, num_threads: int | None) -> Prepared:
    """Train (or load) a :class:`TinyTransformer` as ``[model]`` says."""
    from .tasks import get_task
    from .training import load_model, save_model, train_tiny

    if cfg["path"] is not None:
        try:
            model, info = load_model(cfg["path"])
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"[model].path: {err}") from None
        training = info.get("training") or {}
        task = get_task(training["task"], **training["task_kwargs"]) if training.get("task") else None
        desc = {
            "kind": "tiny",
            "class": "TinyTransformer",
            "path": str(cfg["path"]),
            "tiny_config": info["tiny_config"],
            "training": training,
        }
        return Prepared(
            model, desc, task, save=lambda d: [save_model(d, model, extra={"loaded_from": cfg["path"]})]
        )
    try:
        result = train_tiny(
            cfg["task"],
            steps=cfg["steps"],
            seed=cfg["seed"],
            config=cfg["tiny_config"],
            task_kwargs=cfg["task_kwargs"],
            progress=progress,
            num_threads=num_threads,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model]: {err}") from None
    desc = {
        "kind": "tiny",
        "class": "TinyTransformer",
        "tiny_config": result.config["model"],
        "training": {
            **result.config,
            "accuracy": result.accuracy,
            "seconds": round(result.seconds, 3),
            "final_loss": result.losses[-1],
        },
    }
    return Prepared(result.model, desc, result.task, save=lambda d: [save_model(d, result)], training=result)


def prepare_hf(cfg: Mapping[str, Any]) -> Prepared:
    """Load a Hugging Face model by name, or build one with random weights from a config table."""
    import transformers

    if cfg["name"] is not None:
        name = cfg["name"]
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                name, local_files_only=cfg["local_files_only"]
            )
        except (OSError, ValueError) as err:
            raise _hub_error(name, err) from None
        desc = {"kind": "hf", "name": name, "class": type(model).__name__}
        return Prepared(model, desc)  # on the hub already: not saved again
    fields = dict(cfg["config"])
    model_type = fields.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **fields)
    except ValueError as err:
        raise ConfigError(f"[model].config: {err}") from None
    auto = transformers.AutoModelForMaskedLM if model_type == "bert" else transformers.AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        try:
            model = auto.from_config(config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[model].config: {err}") from None
    model.eval()
    desc = {
        "kind": "hf",
        "class": type(model).__name__,
        "config": config.to_diff_dict(),
        "seed": cfg["seed"],
        "weights": "random (built from config)",
    }

    def save(directory: Path) -> list[Path]:
        target = directory / "model"
        model.save_pretrained(target)  # safetensors + config.json
        return [target]

    return Prepared(model, desc, save=save)


def prepare_model(cfg: Mapping[str, Any], progress: bool, num_threads: int | None) -> Prepared:
    """The model ``[model]`` describes, the same on every rank of a ``torchrun`` run.

    In one process this is :func:`prepare_tiny` or :func:`prepare_hf`. Under ``torchrun``, a tiny model
    that is trained is trained on rank 0 alone and its weights are broadcast (training is seeded, but
    bit-identical results on every rank would also need the same thread count and hardware; a broadcast
    does not), while the other ranks build the architecture from rank 0's config. A loaded or Hugging
    Face model is loaded on every rank. Either way the ranks then compare SHA-256 digests of their
    weights and refuse to go on when they differ (e.g. a ``path`` that holds other files on another
    machine). Errors on any rank stop every rank (:func:`distributed.check_all_ranks`).
    """
    if cfg["kind"] == "hf":
        prepared = _on_every_rank("while loading the model", lambda: prepare_hf(cfg))
    elif cfg["path"] is not None or not dist_.is_distributed():
        prepared = _on_every_rank("while loading the model", lambda: prepare_tiny(cfg, progress, num_threads))
    else:
        prepared = _train_on_rank0(cfg, progress, num_threads)
    try:
        dist_.check_same_on_every_rank(dict(prepared.model.state_dict()), "the model")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return prepared


def _train_on_rank0(cfg: Mapping[str, Any], progress: bool, num_threads: int | None) -> Prepared:
    """Train on rank 0, send its config and weights to the other ranks (see :func:`prepare_model`)."""
    from .models.tiny import TinyConfig, TinyTransformer
    from .tasks import get_task

    main = dist_.rank() == 0
    prepared, payload, error = None, None, None
    if main:
        try:
            prepared = prepare_tiny(cfg, progress, num_threads)
            payload = {"training": prepared.training.config, "description": prepared.description}
        except Exception as err:  # noqa: BLE001 - reported to every rank, then re-raised
            error = err
    dist_.check_all_ranks(error, "while training the model (on rank 0)")
    payload = dist_.broadcast_json(payload)

    def build() -> Prepared:
        training = payload["training"]
        with torch.random.fork_rng(devices=[]):  # weights come from rank 0; keep this rank's RNG as it was
            model = TinyTransformer(TinyConfig(**training["model"])).eval()
        return Prepared(model, payload["description"], get_task(training["task"], **training["task_kwargs"]))

    if not main:
        prepared = _on_every_rank("while building the model that rank 0 trained", build)
    else:
        _on_every_rank("while building the model that rank 0 trained", lambda: None)
    dist_.broadcast_module_(prepared.model)
    return prepared


def _on_every_rank(what: str, step: Callable[[], Any]) -> Any:
    """Run ``step`` on this rank and return its result; under ``torchrun``, if it failed on any rank, raise
    :class:`distributed.RankFailure` on every rank (without ``torchrun``: the error itself)."""
    result, error = None, None
    try:
        result = step()
    except Exception as err:  # noqa: BLE001 - reported to every rank, then re-raised
        error = err
    dist_.check_all_ranks(error, what)
    return result


@dataclass
class Dataset:
    """Token ids for the analysis and how to label their positions."""

    data: Any  # what iter_sensitivity takes: ids [N, S], {"input_ids", "attention_mask"} or list[str]
    description: dict[str, Any]
    token_labels: Callable[[Tensor, Tensor | None], list[str]] | None = None
    tokenizer: Any = None
    num_samples: int = 0
    extra: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None  # [N, S] targets of a synthetic task (-100: not scored), for losses


def _task_dataset(task, samples: int, seed: int) -> Dataset:
    from .tasks import InductionTask

    g = torch.Generator().manual_seed(seed)
    if isinstance(task, InductionTask):
        # The fixed layout (k = k_max, no padding) so that every position has one role.
        batch = task.sample(samples, g, k=task.k_max)
        roles = task.role_labels(task.k_max)
    else:
        batch = task.sample(samples, g, **({"split": "test"} if task.name == "modadd" else {}))
        roles = ["a", "b", "=", "c"] if task.name == "modadd" else None
    desc = {"kind": "task", "task": task.name, "task_kwargs": task.config(), "samples": samples, "seed": seed}
    if task.name == "induction":
        desc["layout"] = f"[BOS, r1 … r{task.k_max}, r1 … r{task.k_max}] (fixed k = {task.k_max})"
    if task.name == "modadd":
        desc["split"] = "test"
    ids = batch["input_ids"]
    labels = (lambda ids, mask: list(roles)) if roles else None
    return Dataset(ids, desc, labels, num_samples=samples, extra={"input_ids": ids}, labels=batch["labels"])


def _read_ids(path: Path) -> tuple[Tensor, Tensor | None]:
    if not path.is_file():
        raise ConfigError(f"[data].ids: {path} not found")
    if path.suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ConfigError(f"[data].ids: {path}: {err}") from None
        ids, mask = torch.from_numpy(np.ascontiguousarray(array)), None
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "input_ids" in tensors:
            ids, mask = tensors["input_ids"], tensors.get("attention_mask")
        elif len(tensors) == 1:
            (ids,), mask = tensors.values(), None
        else:
            raise ConfigError(f"[data].ids: {path} holds {sorted(tensors)}; name the ids tensor 'input_ids'")
    else:
        raise ConfigError(f"[data].ids: {path} must be an .npy or .safetensors file")
    if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ConfigError(f"[data].ids must be an integer tensor [N, S], got {ids.dtype} {tuple(ids.shape)}")
    return ids.long(), None if mask is None else mask.long()


def _common_tokens(to_text: Callable[[list[int]], list[str]]) -> Callable[[Tensor, Tensor | None], list[str]]:
    """Label a position with its token where every sample has the same one there, else leave it blank."""

    def labels(ids: Tensor, mask: Tensor | None) -> list[str]:
        same = (ids == ids[:1]).all(0)
        if mask is not None:
            same &= mask.bool().all(0)
        text = to_text(ids[0].tolist())
        return [t if s else "" for t, s in zip(text, same.tolist(), strict=True)]

    return labels


def _load_tokenizer(name: str, local_files_only: bool):
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def prepare_data(cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], prepared: Prepared) -> Dataset:
    """Build the analysis data as ``[data]`` says (see :data:`CONFIG_SCHEMA`)."""
    from .tasks import get_task

    adapter = adapt(prepared.model)
    if cfg["task"] is not None:
        if prepared.task is not None:
            if cfg["task"] not in ("from_model", prepared.task.name):
                raise ConfigError(
                    f"[data].task = {cfg['task']!r}, but the tiny model was trained on {prepared.task.name!r}"
                )
            task = prepared.task
        elif cfg["task"] == "from_model":
            raise ConfigError("[data] needs task, text or ids: the loaded model records no task")
        else:
            try:
                task = get_task(cfg["task"], **(cfg["task_kwargs"] or {}))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"[data]: {err}") from None
        if task.vocab_size > adapter.vocab_size:
            raise ConfigError(
                f"[data].task {task.name!r} uses {task.vocab_size} token ids, more than the model's "
                f"vocabulary of {adapter.vocab_size}"
            )
        return _task_dataset(task, cfg["samples"], cfg["seed"])
    if cfg["ids"] is not None:
        ids, mask = _read_ids(Path(cfg["ids"]))
        if cfg["limit"]:
            ids, mask = ids[: cfg["limit"]], None if mask is None else mask[: cfg["limit"]]
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= adapter.vocab_size:
            raise ConfigError(
                f"[data].ids: token ids lie in [{lo}, {hi}], outside the model's vocabulary "
                f"[0, {adapter.vocab_size})"
            )

        def to_text(row: list[int]) -> list[str]:
            if prepared.task is not None:
                return prepared.task.token_labels(torch.tensor(row))
            return [f"t{i}" for i in row]

        desc = {"kind": "ids", "path": cfg["ids"], "samples": len(ids), "seq_len": ids.shape[1]}
        data = ids if mask is None else {"input_ids": ids, "attention_mask": mask}
        return Dataset(data, desc, _common_tokens(to_text), num_samples=len(ids))
    path = Path(cfg["text"])
    if not path.is_file():
        raise ConfigError(f"[data].text: {path} not found")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if cfg["limit"]:
        texts = texts[: cfg["limit"]]
    if not texts:
        raise ConfigError(f"[data].text: {path} has no non-empty lines")
    name = cfg["tokenizer"] or model_cfg.get("name")
    if name is None:
        raise ConfigError(
            "[data].text needs a tokenizer: set [data].tokenizer = 'NAME' (loaded with "
            "AutoTokenizer.from_pretrained)"
        )
    tok = _load_tokenizer(name, model_cfg.get("local_files_only", False))
    desc = {"kind": "text", "path": str(path), "samples": len(texts), "tokenizer": name}
    return Dataset(
        texts, desc, _common_tokens(tok.convert_ids_to_tokens), tokenizer=tok, num_samples=len(texts)
    )


# ======================================================================================
# Analysis, outputs and the reading of the induction demo
# ======================================================================================
def parse_layers(spec: str | int | Sequence, adapter: ModelAdapter) -> list[Layer]:
    """``"all"`` → every block and ``"final"``; else ints and ``"final"`` (list or comma-separated)."""
    if spec == "all":
        return [*range(adapter.num_layers), "final"]
    items = spec.split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else list(spec))
    layers: list[Layer] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if item != "final":
                try:
                    item = int(item)
                except ValueError:
                    raise ConfigError(f"layers: {item!r} is neither an integer nor 'final'") from None
        try:
            layers.append(adapter.resolve_layer(item))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"layers: {err}") from None
    return list(dict.fromkeys(layers))


def run_sensitivity(
    prepared: Prepared,
    dataset: Dataset,
    analysis: Mapping[str, Any],
    progress: bool,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
):
    """Stream :func:`iter_sensitivity` to its last snapshot with a progress bar (and checkpoints).

    Under ``torchrun`` (an initialised process group of more than one process) each rank streams its
    shard with :func:`distributed.iter_sensitivity_distributed` and the returned snapshot holds the merged
    statistics of all ranks, the same on every rank. ``checkpoint_dir`` is then this rank's own folder
    (see :func:`sensitivity_checkpoint_dir`): every rank saves and resumes its local snapshots, and a run
    can only be resumed with the number of processes that made its checkpoints. A failure on any rank, while
    starting, in the middle of a shard or while saving a checkpoint, stops every rank at the merge with
    :class:`distributed.RankFailure` instead of a hang.

    Args:
        device: Where the model is analysed (its private copy); ``None``: where the model is.

    Returns:
        ``(snapshot, seconds, layers)``.
    """
    from .jobs import save_checkpoint
    from .kernels.sensitivity import iter_sensitivity

    distributed = dist_.is_distributed()
    adapter = adapt(prepared.model)

    def start_stream():
        layers = parse_layers(analysis["layers"], adapter)
        source = analysis["source"]
        if isinstance(source, str) and source != "embeddings":
            raise ConfigError(f"[analysis].source must be 'embeddings' or a block index, got {source!r}")
        checkpoint = _load_resume_checkpoint(checkpoint_dir) if resume else None
        dtype = _DTYPES[analysis["dtype"]]
        run = dist_.iter_sensitivity_distributed if distributed else iter_sensitivity
        try:
            stream = run(
                adapter if device is None else adapter.analysis(dtype, device),
                dataset.data,
                layers=layers,
                method=analysis["method"],
                mode=analysis["mode"],
                batch_size=analysis["batch_size"],
                max_seq_len=analysis["max_seq_len"],
                tokenizer=dataset.tokenizer,
                source=source,
                probes=analysis["probes"],
                chunk_size=analysis["chunk_size"],
                dtype=dtype,
                seed=analysis["seed"],
                resume=checkpoint,
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[analysis]: {err}") from None
        return layers, stream

    layers, stream = _on_every_rank("while starting the sensitivity analysis", start_stream)
    snapshot = None
    start = time.perf_counter()
    every = analysis["checkpoint_every"]
    desc = f"sensitivity (rank 0's shard of {dist_.world_size()})" if distributed else "sensitivity"
    with tqdm(total=None, desc=desc, unit="sample", disable=not progress) as bar:
        for snapshot in stream:
            if getattr(snapshot, "merged", False):
                continue  # the last one: every rank's statistics merged
            try:
                bar.total = snapshot.total
                bar.update(snapshot.done - bar.n)
                last = distributed and snapshot.done == snapshot.total  # the shard's end, before the merge
                if every and checkpoint_dir is not None and (snapshot.batches % every == 0 or last):
                    save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
            except Exception as err:  # noqa: BLE001 - other ranks learn of it at the merge
                if not distributed:
                    raise
                stream.throw(err)  # raises err here after telling the other ranks
    if snapshot is None:
        raise ConfigError("the data produced no batches")
    if every and checkpoint_dir is not None and not distributed:
        save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
    return snapshot, time.perf_counter() - start, layers


def sensitivity_checkpoint_dir(out: Path) -> Path:
    """Where a sensitivity run in ``out`` keeps its checkpoint: ``out/checkpoint``, or under ``torchrun``
    with ``W`` processes one folder per rank, ``out/checkpoint/rank<r>-of-<W>``."""
    if dist_.is_distributed():
        return out / "checkpoint" / f"rank{dist_.rank()}-of-{dist_.world_size()}"
    return out / "checkpoint"


def _load_resume_checkpoint(directory: Path) -> Any:
    """The checkpoint ``--resume`` continues from, or a :class:`ConfigError` saying what is there instead."""
    from .jobs import load_checkpoint

    _check_resume_checkpoint(directory)
    try:
        return load_checkpoint(directory)
    except ValueError as err:
        raise ConfigError(f"--resume: {err}") from None


def _check_resume_checkpoint(directory: Path) -> None:
    """Raise a :class:`ConfigError` when ``directory`` holds no checkpoint, saying which run's checkpoints
    are there instead (the same message on every rank that misses its own)."""
    if (directory / "meta.json").is_file():
        return
    distributed = dist_.is_distributed()
    folder = directory.parent if distributed else directory  # OUT/checkpoint
    worlds = {p.name.rsplit("-of-", 1)[1] for p in folder.glob("rank*-of-*") if (p / "meta.json").is_file()}
    worlds.discard(str(dist_.world_size()) if distributed else "")
    if distributed:
        w = dist_.world_size()
        what = f"--resume: {folder} has no rank<r>-of-{w} checkpoints (one per process of a run with {w})"
    else:
        what = f"--resume: no checkpoint in {directory}"
    if distributed and (folder / "meta.json").is_file():
        what += "; it holds the checkpoint of a run in one process: resume that without torchrun"
    elif worlds:
        what += (f"; it holds the checkpoints of a run under torchrun: resume that with torchrun "
                 f"--nproc-per-node {' or '.join(sorted(worlds))}")
    raise ConfigError(what)


def _first_batch(dataset: Dataset, seq_len: int) -> tuple[Tensor, Tensor | None] | None:
    data = dataset.data
    if isinstance(data, Tensor):
        return data[:, :seq_len], None
    if isinstance(data, Mapping):
        mask = data.get("attention_mask")
        return data["input_ids"][:, :seq_len], None if mask is None else mask[:, :seq_len]
    if isinstance(data, list) and dataset.tokenizer is not None:  # texts, padded as iter_sensitivity does
        enc = dataset.tokenizer(
            data, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
        )
        return enc["input_ids"], enc.get("attention_mask")
    return None


def position_token_labels(dataset: Dataset, seq_len: int) -> list[str]:
    """Axis labels for the ``seq_len`` positions of the statistics (roles, shared tokens or blanks)."""
    batch = _first_batch(dataset, seq_len)
    if dataset.token_labels is None or batch is None:
        return [""] * seq_len
    labels = dataset.token_labels(*batch)
    return (list(labels) + [""] * seq_len)[:seq_len]


def induction_reading(stats: Mapping, k: int) -> dict[Layer, dict[str, float]]:
    r"""Where the induction signature sits in each layer's mean map of the fixed layout ``[BOS, r, r]``.

    Output position ``i = k + j`` (``copy r_j``, ``1 <= j < k``) predicts ``r_{j+1}``, which sits at input
    position ``j + 1``: the *induction cell*. For each layer this returns the mean of the induction
    cells, the mean of the other strictly-causal off-diagonal cells ``j' < i`` of the same rows, their
    ratio, the fraction of those rows whose largest off-diagonal cell is the induction cell, and the
    same fraction for the previous-token cell ``i - 1`` (what a previous-token head produces).
    """
    out = {}
    rows = torch.arange(k + 1, 2 * k)  # copy r_1 … copy r_{k-1}
    target = rows - k + 1
    for layer, state in stats.items():
        mean = state.mean
        S = mean.shape[0]
        if S < 2 * k:
            continue
        sub = mean[rows]  # [k-1, S]
        cols = torch.arange(S)
        off = cols[None, :] < rows[:, None]
        is_target = cols[None, :] == target[:, None]
        induction = sub[is_target]
        others = sub[off & ~is_target]
        scored = torch.where(off, sub, torch.tensor(float("-inf"), dtype=sub.dtype))
        top = scored.argmax(1)
        out[layer] = {
            "induction_mean": float(induction.mean()),
            "other_mean": float(others.mean()),
            "ratio": float(induction.mean() / others.mean()),
            "rows_topped_by_induction": float((top == target).double().mean()),
            "rows_topped_by_previous": float((top == rows - 1).double().mean()),
        }
    return out


def _layer_name(layer: Layer) -> str:
    return "the final norm" if layer == "final" else f"layer {layer}"


def describe_induction(reading: Mapping[Layer, Mapping[str, float]], k: int, roles: Sequence[str]) -> str:
    """One paragraph stating what :func:`induction_reading` found (numbers computed, not assumed)."""
    if not reading:
        return "No layer has the fixed induction layout; nothing to read."
    n_rows = k - 1
    parts = []
    for layer, r in reading.items():
        topped = round(r["rows_topped_by_induction"] * n_rows)
        previous = round(r["rows_topped_by_previous"] * n_rows)
        parts.append(
            f"In {_layer_name(layer)}, the second-half positions ({roles[k + 1]} … {roles[2 * k - 1]}) "
            f"are on average {r['ratio']:.1f}x more sensitive to the token one after the earlier "
            f"occurrence of their own token (e.g. row '{roles[k + 2]}' → column '{roles[3]}': the "
            f"induction target) than to the other earlier positions (mean {r['induction_mean']:.3g} vs "
            f"{r['other_mean']:.3g}); that cell is the largest off-diagonal entry in {topped} of {n_rows} "
            f"rows, the previous token in {previous}."
        )
    clearest = max(
        reading, key=lambda layer: (reading[layer]["rows_topped_by_induction"], reading[layer]["ratio"])
    )
    strongest = max(reading, key=lambda layer: reading[layer]["ratio"])
    parts.append(
        f"The induction cell tops the most rows in {_layer_name(clearest)}; the largest ratio is in "
        f"{_layer_name(strongest)} ({reading[strongest]['ratio']:.1f}x)."
    )
    return " ".join(parts)


def write_outputs(
    out: Path,
    snapshot,
    layers,
    meta: dict,
    token_labels: list[str],
    prepared: Prepared,
    output: Mapping[str, Any],
    title: str,
    notes: list[str],
    extra_tensors: Mapping[str, Tensor],
) -> dict[str, Path]:
    """Write statistics, meta, model and report; return their paths."""
    from .export import save_report, save_statistics, sensitivity_figures

    stats = snapshot.stats
    meta = {**meta, "token_labels": token_labels}
    save_statistics(out, stats, meta, extra_tensors=extra_tensors)
    paths = {"statistics": out / "statistics.safetensors", "meta": out / "meta.json"}
    if output["save_model"] and prepared.save is not None:
        written = prepared.save(out)
        paths["model"] = written[0]
    if output["report"]:
        grid = sensitivity_figures(stats, token_labels, statistics=output["statistics"], log=output["log"])
        paths["report"] = save_report(out / "report.html", grid, title=title, notes=notes)
    return paths


def _analysis_meta(
    snapshot, layers, seconds: float, analysis: Mapping[str, Any], adapter: ModelAdapter
) -> dict:
    return {
        **snapshot.meta(),
        "layers": layers,
        "samples": snapshot.done,
        "num_layers": adapter.num_layers,
        "d_model": adapter.d_model,
        "vocab_size": adapter.vocab_size,
        "dtype": analysis["dtype"],
        "quantity": "s_ij = ||d h_i / d e_j||_F^2 (i: output/target position, j: input/source position)",
        "seconds": round(seconds, 3),
    }


def _model_summary(prepared: Prepared, adapter: ModelAdapter) -> str:
    desc = prepared.description
    what = desc.get("name") or desc["class"]
    how = {
        "tiny": f"trained on {desc.get('training', {}).get('task', '?')}",
        "hf": "pretrained" if "name" in desc else "random weights from a config",
    }[desc["kind"]]
    sizes = f"{adapter.num_layers} blocks, d_model {adapter.d_model}, vocabulary {adapter.vocab_size}"
    return f"{what} ({how}; {sizes})"


def _print_paths(paths: Mapping[str, Path], stream=None) -> None:
    stream = stream or sys.stdout
    print("wrote:", file=stream)
    for what, path in paths.items():
        print(f"  {what:<11} {path}", file=stream)


# ======================================================================================
# Curvature and loss landscapes
# ======================================================================================
def loss_batches(dataset: Dataset, analysis: Mapping[str, Any]) -> list[dict[str, Tensor]]:
    """The analysis data as loss batches ``{"input_ids": [B, S], "attention_mask"?, "labels"?}``.

    Batches hold ``[analysis].batch_size`` samples, cut to ``max_seq_len`` positions. A synthetic task
    brings its labels (only its predictable tokens are scored, as in training); other data are scored on
    every next token (:meth:`ModelAdapter.targets`). Texts are padded on the right to the longest text of
    their batch, as the sensitivity analysis pads them.
    """
    size, cut = analysis["batch_size"], analysis["max_seq_len"]
    data = dataset.data
    if isinstance(data, list):
        trunc = {"truncation": True, "max_length": cut} if cut else {}
        batches = []
        for a in range(0, len(data), size):
            enc = dataset.tokenizer(
                data[a : a + size], padding="longest", padding_side="right", return_tensors="pt", **trunc
            )
            batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return batches
    fields = dict(data) if isinstance(data, Mapping) else {"input_ids": data}
    if dataset.labels is not None:
        fields["labels"] = dataset.labels
    fields = {k: v[:, :cut] for k, v in fields.items() if v is not None}
    n = fields["input_ids"].shape[0]
    return [{k: v[a : a + size] for k, v in fields.items()} for a in range(0, n, size)]


def _data_tensors(batches: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """``{"data.input_ids": [N, S], ...}``: the batches joined, when they share one length (else ``{}``)."""
    if len({b["input_ids"].shape[1] for b in batches}) != 1:
        return {}
    return {f"data.{k}": torch.cat([b[k] for b in batches]) for k in batches[0]}


def _last_snapshot(snapshots, desc: str, unit: str, progress: bool):
    """Run a kernel generator to its last snapshot (each has ``done``/``total``) under a progress bar."""
    last = None
    with tqdm(desc=desc, unit=unit, disable=not progress) as bar:
        for last in snapshots:
            bar.total = last.total
            bar.update(last.done - bar.n)
        if last is not None:  # an iteration that converged early ends the bar there
            bar.total = last.done
            bar.refresh()
    return last


@contextmanager
def _kernel_errors(where: str, caught: list[str]):
    """Turn the kernels' argument errors into :class:`ConfigError`; collect their ``UserWarning`` messages
    (Lanczos not converged, an ill-defined condition number) in ``caught``, and pass other warnings on."""
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always", UserWarning)
            yield
    except (TypeError, ValueError, MemoryError, FloatingPointError) as err:
        raise ConfigError(f"{where}: {err}") from None
    finally:
        for w in records:
            if issubclass(w.category, UserWarning):
                caught.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _world_size() -> int:
    """Processes of the run: torch.distributed's world, else torchrun's ``WORLD_SIZE``, else 1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


# ======================================================================================
# torchrun
# ======================================================================================
DEFAULT_DIST_TIMEOUT_S = 1800  # torch's default for gloo; a rank gives up after waiting this long for the others


@contextmanager
def _process_group(args: argparse.Namespace, enabled: bool = True):
    """Join ``torchrun``'s process group for the duration of a command (gloo on the CPU, nccl with CUDA);
    without torchrun's environment, or when not ``enabled``, a world of one. Yields the :class:`DistContext`."""
    if not enabled or torch.distributed.is_initialized():  # a caller that runs main() inside its own group
        yield dist_.context()
        return
    try:
        ctx = dist_.init_from_env(timeout=args.dist_timeout)
    except ValueError as err:
        raise ConfigError(f"torchrun environment: {err}") from None
    finished = False
    try:
        yield ctx
        finished = True
    finally:
        if ctx.backend is not None and torch.distributed.is_initialized():
            if finished:  # every rank leaves together: tearing gloo down while a peer still talks aborts it
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _analysis_device(ctx: dist_.DistContext) -> torch.device | None:
    """The GPU of this rank under torchrun with CUDA (``cuda:<LOCAL_RANK>``), else ``None`` (the model's device)."""
    return ctx.device if ctx.device.type != "cpu" else None


def _check_same_data(dataset: Dataset) -> None:
    """Under torchrun: refuse on every rank when the ranks' data differ (e.g. an ids file that differs by machine)."""
    data = dataset.data
    if isinstance(data, Tensor):
        tensors = {"input_ids": data}
    elif isinstance(data, Mapping):
        tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    else:  # texts
        tensors = {"texts": torch.frombuffer(bytearray(json.dumps(data).encode()), dtype=torch.uint8)}
    try:
        dist_.check_same_on_every_rank(tensors, "the data")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _shard_batches(batches: list[dict[str, Tensor]], ctx: dist_.DistContext) -> tuple[list, Any]:
    """This rank's loss batches (``r, r + W, ...``) and the process group to reduce over (``None`` alone)."""
    if ctx.world_size == 1:
        return batches, None
    if len(batches) < ctx.world_size:
        raise ConfigError(
            f"the data make {len(batches)} loss batches for {ctx.world_size} processes, and every process needs "
            "at least one: lower [analysis].batch_size, raise [data].samples, or start fewer processes"
        )
    return batches[ctx.rank :: ctx.world_size], torch.distributed.group.WORLD


def _is_communication_error(err: BaseException) -> bool:
    """A collective that timed out or lost a peer (gloo raises a plain RuntimeError naming its source file)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistError) or "gloo/transport" in text or "Timed out" in text


@dataclass
class CurvatureResult:
    """What :func:`run_curvature` computed: kernel results (float64 on the CPU) and how long each took."""

    kind: str  # "hessian", "ggn" or "functional"
    num_params: int
    group_sizes: dict[str, int]
    loss: float  # the token-weighted loss the operator differentiates
    lanczos: Any  # LanczosResult, which = "both"
    summary: Any  # CurvatureSummary
    trace: Any = None  # TraceEstimate (Hutch++)
    density: Any = None  # SpectralDensity (SLQ)
    blocks: Any = None  # BlockNorms
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    estimate: Any = None  # CostEstimate made before the run


def run_curvature(
    model: torch.nn.Module,
    batches: list[dict[str, Tensor]],
    analysis: Mapping[str, Any],
    progress: bool,
    process_group=None,
) -> CurvatureResult:
    r"""Extreme eigenvalues, trace, spectral density and block norms of one curvature operator.

    The operator is :class:`~tscope_widgets.kernels.curvature.HessianOperator` of the token-weighted LM
    loss over ``batches`` (``[analysis].hessian_kind``: Hessian, Gauss–Newton or functional part), in
    ``[analysis].dtype``. Lanczos with full reorthogonalization gives the ``k`` largest and ``k``
    smallest eigenvalues with residual norms; Hutch++ the trace :math:`\pm` its standard error; SLQ the
    smoothed spectral density; the block map :math:`\lVert H_{ab} \rVert_F` over parameter groups is
    exact when the groups hold at most ``AUTO_EXACT_MAX_PARAMS`` parameters (spectral norms of the
    diagonal blocks come with it), else estimated from 16 probes per group. Every estimator draws from
    its own generator seeded with ``[analysis].seed``, so each can be repeated alone. Generators are
    streamed under progress bars. With a ``process_group``, ``batches`` are this rank's shard and every
    product is reduced over the ranks (see ``HessianOperator``).

    Raises:
        ConfigError: for arguments the kernels refuse (unknown groups, ``k`` above the parameter count, a
            loss that is not finite, ...), with the kernel's message.
    """
    from .kernels.blocks import AUTO_EXACT_MAX_PARAMS, iter_block_norms
    from .kernels.curvature import HessianOperator
    from .kernels.density import iter_slq
    from .kernels.lanczos import curvature_summary, iter_lanczos
    from .kernels.trace import hutchpp_trace

    dtype, kind, seed = _DTYPES[analysis["dtype"]], analysis["hessian_kind"], analysis["seed"]
    caught: list[str] = []
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    with _kernel_errors("[analysis]", caught):
        op = HessianOperator(model, batches, kind=kind, dtype=dtype, process_group=process_group)
        estimate = curvature_estimate(op, batches, analysis)
        if progress:
            print(f"estimate: {estimate}", file=sys.stderr)
        lap("estimate")
        lanczos_steps = iter_lanczos(
            op,
            analysis["k"],
            "both",
            tol=analysis["tol"],
            criterion=analysis["criterion"],
            max_iter=analysis["max_iter"],
            generator=torch.Generator().manual_seed(seed),
        )
        eig = _last_snapshot(lanczos_steps, f"lanczos ({kind})", "step", progress)
        lap("lanczos")
        if not eig.converged:
            caught.append(
                f"Lanczos stopped after {eig.num_iterations} steps without reaching tol={analysis['tol']:g} "
                f"(residual norms {', '.join(f'{r:.2g}' for r in eig.residual_norms.tolist())}); raise "
                "[analysis].max_iter or tol"
            )
        trace = density = blocks = None
        if analysis["trace_matvecs"]:
            trace = hutchpp_trace(op, analysis["trace_matvecs"], generator=torch.Generator().manual_seed(seed))
            lap("trace")
        if analysis["density_probes"]:
            slq = iter_slq(
                op,
                analysis["density_probes"],
                analysis["density_steps"],
                generator=torch.Generator().manual_seed(seed),
            )
            density = _last_snapshot(slq, "density (SLQ)", "matvec", progress)
            lap("density")
        summary = curvature_summary(eig, density)
    if analysis["block_norms"] is not False:
        groups = None if analysis["block_norms"] is True else list(analysis["block_norms"])
        with _kernel_errors("[analysis].block_norms", caught):
            exact = (op if groups is None else op.restrict(groups)).shape[0] <= AUTO_EXACT_MAX_PARAMS
            stream = iter_block_norms(
                model,
                batches,
                groups,
                kind=kind,
                exact=exact,
                spectral=exact,  # free from the dense diagonal blocks when exact; Lanczos per group otherwise
                dtype=dtype,
                generator=torch.Generator().manual_seed(seed),
                process_group=process_group,
            )
            blocks = _last_snapshot(stream, "block norms", "group", progress)
            lap("block_norms")
    return CurvatureResult(
        kind=kind,
        num_params=op.num_params,
        group_sizes=dict(op.group_sizes),
        loss=op.loss_value(),
        lanczos=eig,
        summary=summary,
        trace=trace,
        density=density,
        blocks=blocks,
        seconds=seconds,
        warnings=caught,
        estimate=estimate,
    )


def curvature_estimate(op, batches: list[dict[str, Tensor]], analysis: Mapping[str, Any]):
    """What the curvature run of ``analysis`` will cost: two measured products of ``op`` (the first also
    builds the gradient graph that the run reuses), the products the run needs at most, and the memory
    model of :mod:`tscope_widgets.kernels.cost`."""
    from .kernels.blocks import AUTO_EXACT_MAX_PARAMS
    from .kernels.cost import CostEstimate, available_memory, measure_seconds, product_memory

    v = torch.randn(op.shape[1], dtype=op.dtype, generator=torch.Generator().manual_seed(analysis["seed"]))
    first = measure_seconds(lambda: op @ v, op.device)
    unit = measure_seconds(lambda: op @ v, op.device)
    lanczos_steps = analysis["max_iter"] or min(op.shape[0], 20 * 2 * analysis["k"] + 100)
    units = lanczos_steps + analysis["trace_matvecs"] + analysis["density_probes"] * analysis["density_steps"]
    if analysis["block_norms"] is not False:
        groups = None if analysis["block_norms"] is True else list(analysis["block_norms"])
        try:
            blocks = op if groups is None else op.restrict(groups)
            units += blocks.shape[0] if blocks.shape[0] <= AUTO_EXACT_MAX_PARAMS else 16 * len(blocks.groups)
        except ValueError:  # an unknown group: the block-norm step reports it
            pass
    return CostEstimate("Hessian-vector product", units, unit, max(first - unit, 0.0),
                        product_memory(op.adapter, batches, op.dtype), available_memory(op.device))


def curvature_tensors(result: CurvatureResult) -> dict[str, Tensor]:
    """The arrays of a curvature run, keyed as in ``curvature.safetensors`` (all float64)."""
    tensors = {"eigenvalues": result.lanczos.eigenvalues, "residual_norms": result.lanczos.residual_norms,
               "error_estimates": result.lanczos.error_estimates}
    if result.density is not None:
        d = result.density
        tensors |= {
            "density.grid": d.grid,
            "density.values": d.density,
            "density.nodes": d.nodes,
            "density.weights": d.weights,
        }
    if result.blocks is not None:
        b = result.blocks
        tensors |= {
            "blocks.frobenius": b.frobenius,
            "blocks.frobenius_stderr": b.frobenius_stderr,
            "blocks.spectral": b.spectral,
        }
    return tensors


def curvature_meta(result: CurvatureResult) -> dict[str, Any]:
    """The numbers of a curvature run for ``meta.json`` (eigenvalues repeated as lists for JSON readers)."""
    lz, s = result.lanczos, result.summary
    meta: dict[str, Any] = {
        "operator": {
            "kind": result.kind,
            "num_params": result.num_params,
            "group_sizes": result.group_sizes,
            "loss": result.loss,
        },
        "lanczos": {
            "which": lz.which,
            "k": lz.k,
            "eigenvalues": lz.eigenvalues.tolist(),
            "residual_norms": lz.residual_norms.tolist(),
            "error_estimates": lz.error_estimates.tolist(),
            "num_matvecs": lz.num_matvecs,
            "num_iterations": lz.num_iterations,
            "converged": lz.converged,
        },
        "summary": {
            "sharpness": s.sharpness,
            "lambda_min": s.lambda_min,
            "condition_number": s.condition_number,
            "negative_fraction": s.negative_fraction,
        },
        "trace": None,
        "density": None,
        "block_norms": None,
        "seconds": result.seconds,
        "warnings": result.warnings,
    }
    if result.estimate is not None:
        e = result.estimate
        meta["estimate"] = {"products_at_most": e.units, "seconds_per_product": e.seconds_per_unit,
                            "setup_seconds": e.setup_seconds, "seconds_at_most": e.seconds, "peak_bytes": e.peak_bytes}
    if result.trace is not None:
        t = result.trace
        meta["trace"] = {"value": t.value, "stderr": t.stderr, "num_matvecs": t.num_matvecs, "method": t.method}
    if result.density is not None:
        d = result.density
        meta["density"] = {
            "num_probes": d.nodes.shape[0],
            "num_steps": d.nodes.shape[1],
            "sigma": d.sigma,
            "num_matvecs": d.num_matvecs,
            "grid_points": d.grid.numel(),
        }
    if result.blocks is not None:
        b = result.blocks
        meta["block_norms"] = {
            "labels": b.labels,
            "exact": b.exact,
            "num_probes": None if b.exact else b.num_probes,
            "num_matvecs": b.num_matvecs,
        }
    return meta


DENSITY_LOG_RANGE = 1e-6  # the density plot's log axis stops this far below its peak


def curvature_figures(result: CurvatureResult, log: bool) -> list:
    """Bokeh figures: the SLQ density (log axis) with the Lanczos eigenvalues marked, and the block-norm map."""
    import numpy as np
    from bokeh.models import ColumnDataSource, HoverTool, Span

    from .export.bokeh import line_figure, matrix_figure

    name = {"hessian": "Hessian", "ggn": "Gauss–Newton part", "functional": "functional part"}[result.kind]
    lz = result.lanczos
    eigenvalues, residuals = lz.eigenvalues.numpy(), lz.residual_norms.numpy()
    figures = []
    if result.density is not None:
        grid, values = result.density.grid.numpy(), result.density.density.numpy()
        floor = max(float(values.max()), 1e-300) * DENSITY_LOG_RANGE
        fig = line_figure(
            grid,
            {"SLQ density": np.maximum(values, floor)},
            title=f"Spectral density of the {name} (SLQ, σ = {result.density.sigma:.3g}); ▲ Lanczos eigenvalues",
            x_label="eigenvalue λ",
            y_label="density φ(λ)",
            log_y=True,
            width=760,
            height=320,
        )
        marker_y = np.maximum(np.interp(eigenvalues, grid, values), floor)
    else:
        fig = line_figure(
            np.arange(eigenvalues.size),
            {"Lanczos eigenvalues": eigenvalues},
            title=f"Extreme eigenvalues of the {name} (Lanczos)",
            x_label="index (ascending)",
            y_label="eigenvalue λ",
            width=760,
            height=320,
        )
        marker_y = eigenvalues
    xs = eigenvalues if result.density is not None else np.arange(eigenvalues.size)
    for lam in eigenvalues if result.density is not None else ():
        fig.add_layout(Span(location=float(lam), dimension="height", line_color="#d62728", line_dash="dotted"))
    source = ColumnDataSource({"x": xs, "y": marker_y, "lam": eigenvalues, "residual": residuals})
    marks = fig.scatter("x", "y", source=source, marker="triangle", size=9, color="#d62728")
    fig.add_tools(
        HoverTool(
            renderers=[marks],
            tooltips=[("λ", "@lam{%.6g}"), ("residual", "@residual{%.2e}")],
            formatters={"@lam": "printf", "@residual": "printf"},
        )
    )
    figures.append(fig)
    if result.blocks is not None:
        b = result.blocks
        figures.append(
            matrix_figure(
                b.frobenius,
                row_labels=b.labels,
                col_labels=b.labels,
                title=f"Block norms ‖H_ab‖_F of the {name}"
                + ("" if b.exact else f" ({b.num_probes} probes per group)"),
                x_label="group b",
                y_label="group a",
                value_name="‖H_ab‖_F",
                log=log,
                width=max(460, 24 * len(b.labels) + 200),
            )
        )
    return figures


def curvature_lines(result: CurvatureResult) -> list[str]:
    """Plain sentences with the run's numbers, for the terminal and the report."""
    name = {"hessian": "Hessian", "ggn": "Gauss–Newton part", "functional": "functional part"}[result.kind]
    lz, s = result.lanczos, result.summary
    state = "converged" if lz.converged else "NOT converged"
    lines = [
        f"{name} of the loss {result.loss:.6g} over {result.num_params:,} parameters: Lanczos ({lz.num_iterations} "
        f"steps, {state}, residuals <= {lz.residual_norms.max().item():.2g}) gives eigenvalues "
        f"{', '.join(f'{v:.6g}' for v in lz.eigenvalues.tolist())}.",
        f"Sharpness λ_max = {s.sharpness:.6g}, λ_min = {s.lambda_min:.6g}, condition number |λ_max/λ_min| = "
        f"{s.condition_number:.4g}"
        + ("" if s.negative_fraction is None else f", negative spectral mass {s.negative_fraction:.3f} (SLQ)")
        + ".",
    ]
    if result.trace is not None:
        t = result.trace
        lines.append(
            f"Trace ≈ {t.value:.6g} ± {t.stderr:.2g} (Hutch++, {t.num_matvecs} products); mean eigenvalue "
            f"{t.value / result.num_params:.3g}."
        )
    if result.blocks is not None:
        b = result.blocks
        F = b.frobenius.nan_to_num(0.0)
        i, j = divmod(int(F.argmax()), F.shape[1])
        lines.append(
            f"Largest block norm ‖H_ab‖_F = {F[i, j].item():.4g} at ({b.labels[i]}, {b.labels[j]}) of "
            f"{len(b.labels)} groups ({'exact' if b.exact else f'{b.num_probes} probes per group'})."
        )
    return lines


def landscape_grid(span: float, resolution: int) -> Tensor:
    """``resolution`` evenly spaced float64 points from ``-span`` to ``span``, symmetric about 0 bit for bit
    (``linspace`` is not), with an exact 0 in the middle when ``resolution`` is odd."""
    return (torch.arange(resolution, dtype=torch.float64) - (resolution - 1) / 2) * (2 * span / (resolution - 1))


@dataclass
class LandscapeResult:
    """What :func:`run_landscape` computed: the slice, its two directions and how they were made."""

    slice: Any  # LandscapeSlice, loss [A, B]
    directions: dict[str, dict[str, Tensor]]  # {"d1": Direction, "d2": Direction}
    how: dict[str, Any]  # kind of directions, seed, normalization or eigenvalues
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_landscape(
    model: torch.nn.Module,
    batches: list[dict[str, Tensor]],
    analysis: Mapping[str, Any],
    progress: bool,
    process_group=None,
) -> LandscapeResult:
    r"""The 2D slice :math:`L(\theta + \alpha d_1 + \beta d_2)` on a square grid around the model.

    Directions: ``"random"``, two Gaussian directions with filter normalization (Li et al., NeurIPS 2018;
    biases and norm gains held fixed), drawn in ``[analysis].dtype`` from one generator seeded with
    ``[analysis].seed``; or ``"eigen"``, the two top Hessian eigenvectors (unit norm, Lanczos to
    ``tol``). ``alphas = betas = linspace(-span, span, resolution)``; rows stream under a progress bar.
    With a ``process_group``, ``batches`` are this rank's shard; losses are reduced over the ranks and the
    directions, drawn from the same seed (or the same reduced Hessian), are the same on every rank.

    Raises:
        ConfigError: for arguments the kernels refuse, with the kernel's message.
    """
    from .kernels.landscape import eigen_directions, random_direction, slice_2d

    dtype, seed = _DTYPES[analysis["dtype"]], analysis["seed"]
    generator = torch.Generator().manual_seed(seed)
    caught: list[str] = []
    start = time.perf_counter()
    with _kernel_errors("[analysis]", caught):
        if analysis["directions"] == "random":
            copy = adapt(model).analysis(dtype)
            d1, d2 = (random_direction(copy, normalization="filter", generator=generator) for _ in range(2))
            how = {"kind": "random", "normalization": "filter", "ignore": ["bias", "norm"], "seed": seed}
        else:
            (d1, d2), eigenvalues = eigen_directions(
                model,
                batches,
                2,
                which="largest",
                tol=analysis["tol"],
                max_iter=analysis["max_iter"],
                dtype=dtype,
                generator=generator,
                process_group=process_group,
            )
            how = {"kind": "eigen", "which": "largest", "eigenvalues": eigenvalues.tolist(), "seed": seed}
        directions_seconds = round(time.perf_counter() - start, 3)
        grid = landscape_grid(analysis["span"], analysis["resolution"])
        rows = slice_2d(model, batches, d1, d2, grid, grid, dtype=dtype, process_group=process_group)
        landscape = _last_snapshot(rows, "landscape", "row", progress)
    seconds = {"directions": directions_seconds, "slice": round(time.perf_counter() - start - directions_seconds, 3)}
    return LandscapeResult(landscape, {"d1": d1, "d2": d2}, how, seconds, caught)


def landscape_meta(result: LandscapeResult) -> dict[str, Any]:
    """The numbers of a landscape run for ``meta.json``."""
    s = result.slice
    finite = s.loss[torch.isfinite(s.loss)]
    return {
        "directions": result.how,
        "grid": {"alphas": s.alphas.tolist(), "betas": s.betas.tolist()},
        "origin_loss": s.origin_loss,
        "origin_accuracy": s.origin_accuracy,
        "loss_min": finite.min().item() if finite.numel() else None,
        "loss_max": finite.max().item() if finite.numel() else None,
        "nonfinite_points": int((~torch.isfinite(s.loss)).sum()),
        "seconds": result.seconds,
        "warnings": result.warnings,
    }


def landscape_figures(result: LandscapeResult, log: bool) -> list:
    """Bokeh figures: loss heatmap with contour lines, accuracy heatmap, and the cuts through the origin."""
    import numpy as np

    from .export.bokeh import landscape_heatmap, line_figure
    from .widgets._landscape_static import contour_levels, contour_lines
    from .widgets._static import color_domain

    s = result.slice
    alphas, betas = s.alphas.numpy(), s.betas.numpy()
    loss, accuracy = s.loss.numpy(), s.accuracy.numpy()
    eigen = result.how["kind"] == "eigen"
    names = ("top eigenvector v1", "second eigenvector v2") if eigen else ("random d1", "random d2")
    lines = []
    if np.isfinite(loss).sum() >= 4:
        lines = contour_lines(alphas, betas, loss, contour_levels(color_domain(loss, log), log=log), log)
    figures = [
        landscape_heatmap(
            alphas,
            betas,
            loss,
            title="Loss L(θ + α d1 + β d2)" + (" (log colours)" if log else ""),
            value_name="loss",
            log=log,
            contours=lines,
            x_label=f"α · {names[0]}",
            y_label=f"β · {names[1]}",
        ),
        landscape_heatmap(
            alphas,
            betas,
            accuracy,
            title="Token accuracy",
            value_name="accuracy",
            x_label=f"α · {names[0]}",
            y_label=f"β · {names[1]}",
        ),
    ]
    ia, ib = np.flatnonzero(alphas == 0), np.flatnonzero(betas == 0)
    if ia.size and ib.size:  # the grid goes through the origin: cuts along each direction
        series = {f"along {names[0]} (β = 0)": loss[:, ib[0]], f"along {names[1]} (α = 0)": loss[ia[0], :]}
        if eigen:
            for label, lam in zip(("v1", "v2"), result.how["eigenvalues"], strict=True):
                series[f"L0 + ½λ α² ({label}, λ = {lam:.4g})"] = s.origin_loss + 0.5 * lam * alphas**2
        figures.append(
            line_figure(
                alphas,
                series,
                title="Cuts through θ" + (" and the quadratic model of each eigenvalue" if eigen else ""),
                x_label="step along the direction",
                y_label="loss",
                marker_x=0.0,
                width=760,
                height=300,
            )
        )
    return figures


# ======================================================================================
# Commands
# ======================================================================================
def cmd_demo(args: argparse.Namespace) -> int:
    """``tscope demo``: train the induction model, measure its sensitivity, write results and report.

    Under ``torchrun``: rank 0 trains and broadcasts the model, every rank maps the sensitivity of its
    shard, and rank 0 alone computes the curvature (64 sequences), writes and prints.
    """
    with _process_group(args) as ctx:
        return _demo(args, ctx)


def _demo(args: argparse.Namespace, ctx: dist_.DistContext) -> int:
    from .training import RECIPES

    out = Path(args.out)
    steps = args.steps if args.steps is not None else (300 if args.quick else None)
    samples = args.samples if args.samples is not None else (32 if args.quick else 256)
    model_cfg = {
        **{k: v.default for k, v in CONFIG_SCHEMA["model"].items()},
        "kind": "tiny",
        "task": "induction",
        "steps": steps,
        "seed": args.seed,
    }
    analysis = {
        **{k: v.default for k, v in CONFIG_SCHEMA["analysis"].items()},
        "layers": args.layers,
        "method": args.method,
        "probes": args.probes,
        "batch_size": 32,
        "seed": args.seed,
    }
    # Log colours: cells span orders of magnitude (the diagonal carries the residual identity path).
    output = {**{k: v.default for k, v in CONFIG_SCHEMA["output"].items()}, "log": True}
    start = time.perf_counter()
    progress = not args.no_progress and ctx.is_main
    prepared = prepare_model(model_cfg, progress, args.threads or 1)
    result = prepared.training  # None on ranks other than 0
    if ctx.is_main:
        print(
            f"trained {RECIPES['induction'].model} on induction for {len(result.losses)} steps in "
            f"{result.seconds:.1f} s: held-out accuracy {result.accuracy:.3f}"
        )
    task = prepared.task
    dataset = _task_dataset(task, samples, args.seed + 1)
    _check_same_data(dataset)
    snapshot, seconds, layers = run_sensitivity(
        prepared, dataset, analysis, progress, device=_analysis_device(ctx)
    )
    if not ctx.is_main:  # rank 0 holds the same merged statistics; it alone goes on
        return 0
    # Curvature of the trained model's loss on the first sequences: extreme eigenvalues and the trace.
    n_curv = min(samples, DEMO_CURVATURE_SAMPLES)
    curvature_analysis = {
        **analysis,
        **{k: CONFIG_SCHEMA["analysis"][k].default for k in ANALYSIS_KEYS["curvature"]},
        "density_probes": 0,
        "block_norms": False,
    }
    subset = Dataset(dataset.data[:n_curv], dataset.description, labels=dataset.labels[:n_curv])
    curvature = run_curvature(
        prepared.model, loss_batches(subset, curvature_analysis), curvature_analysis, not args.no_progress
    )
    curvature_text = [f"Curvature of the loss over the first {n_curv} sequences:", *curvature_lines(curvature)]
    adapter = adapt(prepared.model)
    roles = task.role_labels(task.k_max)
    reading = induction_reading(snapshot.stats, task.k_max)
    paragraph = describe_induction(reading, task.k_max, roles)
    meta = {
        **_analysis_meta(snapshot, layers, seconds, analysis, adapter),
        "command": "tscope demo",
        "model": prepared.description,
        "data": dataset.description,
        "induction_reading": {str(k): v for k, v in reading.items()},
        "curvature": {"samples": n_curv, **curvature_meta(curvature)},
        "total_seconds": round(time.perf_counter() - start, 3),
    }
    notes = [
        f"TinyTransformer (attention-only, {adapter.num_layers} layers, d_model {adapter.d_model}) trained "
        f"for {len(result.losses)} steps on induction sequences with segments of {task.k_min}–{task.k_max} "
        f"tokens; held-out accuracy {result.accuracy:.3f}.",
        f"Cells show s_ij = ||∂h_i/∂e_j||²_F over {snapshot.done} sequences [BOS, r1 … r{task.k_max}, "
        f"r1 … r{task.k_max}] ({snapshot.method}, {analysis['dtype']}): row i = output position, column j = "
        "input position, labelled by role. Colours are logarithmic (four decades); exact zeros, as above "
        "the diagonal of this causal model, take the lowest colour; grey = no data.",
        paragraph,
        " ".join(curvature_text),
    ]
    paths = write_outputs(
        out,
        snapshot,
        layers,
        meta,
        roles,
        prepared,
        output,
        title="tscope demo: sensitivity of an induction model",
        notes=notes,
        extra_tensors={"input_ids": dataset.data},
    )
    _print_paths(paths)
    print(
        f"sensitivity over {snapshot.done} samples took {seconds:.1f} s; total "
        f"{time.perf_counter() - start:.1f} s."
    )
    print(paragraph)
    print(" ".join(curvature_text), f"({sum(curvature.seconds.values()):.1f} s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``tscope run CONFIG``: the analysis a TOML file describes (sensitivity also under ``torchrun``)."""
    cfg = load_config(args.config)
    kind = cfg["analysis"]["kind"]
    if args.resume and kind != "sensitivity":
        raise ConfigError(f"--resume continues a sensitivity run from its checkpoint; kind = {kind!r} has none")
    out = Path(args.out or cfg["output"]["dir"] or Path("results") / Path(args.config).stem)
    with _process_group(args) as ctx:
        start = time.perf_counter()
        model_cfg = cfg["model"]
        progress = not args.no_progress and ctx.is_main
        if args.resume:  # before the model is trained
            where = sensitivity_checkpoint_dir(out)
            _on_every_rank("while looking for the checkpoint", lambda: _check_resume_checkpoint(where))
        prepared = prepare_model(model_cfg, progress, args.threads or 1)
        if prepared.training is not None:  # trained here (under torchrun: on rank 0)
            r = prepared.training
            print(
                f"trained tiny model on {r.task.name} for {len(r.losses)} steps in {r.seconds:.1f} s: "
                f"held-out accuracy {r.accuracy:.3f}"
            )
        dataset = _on_every_rank("while preparing the data", lambda: prepare_data(cfg["data"], model_cfg, prepared))
        _check_same_data(dataset)
        run = {"sensitivity": _run_sensitivity, "curvature": _run_curvature, "landscape": _run_landscape}[kind]
        return run(args, cfg, out, prepared, dataset, start)


def _run_header(args: argparse.Namespace, cfg, prepared: Prepared, dataset: Dataset, start: float) -> dict:
    return {
        "command": f"tscope run {args.config}",
        "config": cfg,
        "model": prepared.description,
        "data": dataset.description,
        "total_seconds": round(time.perf_counter() - start, 3),
    }


def _save_model(paths: dict[str, Path], out: Path, prepared: Prepared, output: Mapping[str, Any]) -> None:
    if output["save_model"] and prepared.save is not None:
        paths["model"] = prepared.save(out)[0]


def _run_sensitivity(args, cfg, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    ctx = dist_.context()
    checkpoints = sensitivity_checkpoint_dir(out) if cfg["analysis"]["checkpoint_every"] or args.resume else None
    snapshot, seconds, layers = run_sensitivity(
        prepared,
        dataset,
        cfg["analysis"],
        not args.no_progress and ctx.is_main,
        checkpoint_dir=checkpoints,
        resume=args.resume,
        device=_analysis_device(ctx),
    )
    if not ctx.is_main:  # rank 0 holds the same merged statistics and writes them
        return 0
    adapter = adapt(prepared.model)
    token_labels = position_token_labels(dataset, snapshot.seq_len)
    meta = {
        **_analysis_meta(snapshot, layers, seconds, cfg["analysis"], adapter),
        **_run_header(args, cfg, prepared, dataset, start),
    }
    notes = [
        f"Model: {_model_summary(prepared, adapter)}.",
        f"Data: {json.dumps(dataset.description, default=str, ensure_ascii=False)}.",
        f"Cells show s_ij = ||∂h_i/∂e_j||²_F over {snapshot.done} samples ({snapshot.method}, "
        f"{cfg['analysis']['dtype']}): row i = output position, column j = input position. Grey = no data.",
    ]
    extra = {"input_ids": dataset.extra["input_ids"]} if "input_ids" in dataset.extra else {}
    paths = write_outputs(
        out,
        snapshot,
        layers,
        meta,
        token_labels,
        prepared,
        cfg["output"],
        title=f"tscope run: {Path(args.config).name}",
        notes=notes,
        extra_tensors=extra,
    )
    _print_paths(paths)
    print(f"sensitivity over {snapshot.done} samples took {seconds:.1f} s.")
    return 0


def _run_curvature(args, cfg, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    from .export.html import save_report
    from .export.results import save_results

    analysis, output = cfg["analysis"], cfg["output"]
    batches = loss_batches(dataset, analysis)
    ctx = dist_.context()
    mine, group = _shard_batches(batches, ctx)
    if _analysis_device(ctx) is not None:  # under torchrun with CUDA: this rank's GPU
        prepared.model.to(_analysis_device(ctx))
    result = run_curvature(prepared.model, mine, analysis, not args.no_progress and ctx.is_main, group)
    if not ctx.is_main:  # every rank holds the same result; rank 0 writes it
        return 0
    adapter = adapt(prepared.model)
    lines = curvature_lines(result)
    meta = {
        "analysis": "curvature",
        **curvature_meta(result),
        "samples": sum(len(b["input_ids"]) for b in batches),
        "batches": len(batches),
        "dtype": analysis["dtype"],
        "quantity": "curvature of the token-weighted mean LM loss over the data (HessianOperator)",
        **_run_header(args, cfg, prepared, dataset, start),
    }
    paths = {"results": save_results(out, "curvature", curvature_tensors(result) | _data_tensors(batches), meta)}
    paths["meta"] = out / "meta.json"
    _save_model(paths, out, prepared, output)
    if output["report"]:
        notes = [
            f"Model: {_model_summary(prepared, adapter)}.",
            f"Data: {json.dumps(dataset.description, default=str, ensure_ascii=False)}; {meta['samples']} samples in "
            f"{len(batches)} batches, {analysis['dtype']}.",
            *lines,
            *(f"Warning: {w}" for w in result.warnings),
        ]
        if result.density is not None:
            notes.append(
                f"The density is drawn on a log axis, clipped at {DENSITY_LOG_RANGE:g} × its peak; red triangles "
                "and dotted lines mark the extreme eigenvalues from Lanczos (hover: value and residual)."
            )
        figures = curvature_figures(result, log=output["log"])
        paths["report"] = save_report(out / "report.html", figures, title=f"tscope run: {Path(args.config).name}",
                                      notes=notes)
    _print_paths(paths)
    for line in lines:
        print(line)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"curvature took {sum(result.seconds.values()):.1f} s ({parts}).")
    return 0


def _run_landscape(args, cfg, out: Path, prepared: Prepared, dataset: Dataset, start: float) -> int:
    from .export.directions import save_directions
    from .export.html import save_report
    from .export.results import save_results

    analysis, output = cfg["analysis"], cfg["output"]
    batches = loss_batches(dataset, analysis)
    ctx = dist_.context()
    mine, group = _shard_batches(batches, ctx)
    if _analysis_device(ctx) is not None:
        prepared.model.to(_analysis_device(ctx))
    result = run_landscape(prepared.model, mine, analysis, not args.no_progress and ctx.is_main, group)
    if not ctx.is_main:  # every rank holds the same result; rank 0 writes it
        return 0
    adapter = adapt(prepared.model)
    s = result.slice
    meta = {
        "analysis": "landscape",
        **landscape_meta(result),
        "samples": sum(len(b["input_ids"]) for b in batches),
        "batches": len(batches),
        "dtype": analysis["dtype"],
        "quantity": "L(θ + α d1 + β d2): token-weighted mean LM loss over the data; accuracy of the argmax",
        **_run_header(args, cfg, prepared, dataset, start),
    }
    tensors = s.state_dict() | _data_tensors(batches)
    paths = {"results": save_results(out, "landscape", tensors, meta), "meta": out / "meta.json"}
    paths["directions"] = save_directions(
        out / "directions.safetensors", result.directions, {**result.how, "dtype": analysis["dtype"]}
    )
    _save_model(paths, out, prepared, output)
    how = result.how
    if how["kind"] == "eigen":
        lam1, lam2 = how["eigenvalues"]
        made = f"d1, d2 = the two top Hessian eigenvectors (unit norm; λ = {lam1:.5g}, {lam2:.5g})"
    else:
        made = f"d1, d2 = Gaussian directions with filter normalization (Li et al. 2018), seed {how['seed']}"
    summary = (
        f"Loss at θ: {s.origin_loss:.6g} (token accuracy {s.origin_accuracy:.4f}); over the "
        f"{s.loss.shape[0]}×{s.loss.shape[1]} grid α, β ∈ [−{analysis['span']:g}, {analysis['span']:g}] the loss "
        f"runs from {meta['loss_min']:.6g} to {meta['loss_max']:.6g}."
    )
    if output["report"]:
        notes = [
            f"Model: {_model_summary(prepared, adapter)}.",
            f"Data: {json.dumps(dataset.description, default=str, ensure_ascii=False)}; {meta['samples']} samples, "
            f"{analysis['dtype']}.",
            f"{made}. directions.safetensors holds them, so the slice can be recomputed exactly.",
            summary,
            *(f"Warning: {w}" for w in result.warnings),
        ]
        paths["report"] = save_report(
            out / "report.html",
            landscape_figures(result, log=output["log"]),
            title=f"tscope run: {Path(args.config).name}",
            notes=notes,
        )
    _print_paths(paths)
    print(summary)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"landscape took {sum(result.seconds.values()):.1f} s.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tscope", description="Look inside transformers through their derivatives."
    )
    parser.add_argument("--version", action="version", version=f"tscope_widgets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny induction model and map its sensitivity")
    demo.add_argument("--out", default="results/demo", help="output folder (default: results/demo)")
    demo.add_argument(
        "--samples", type=int, default=None, help="sequences analysed (default 256; --quick: 32)"
    )
    demo.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the recipe's; --quick: 300)"
    )
    demo.add_argument("--layers", default="all", help="'all' (every block and final) or e.g. '0,1,final'")
    demo.add_argument("--method", default="exact", choices=("exact", "hutchinson", "full"))
    demo.add_argument("--probes", type=int, default=8, help="Hutchinson probes per position")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a short run (for tests): fewer steps and samples")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run the analysis a TOML file describes (see examples/)")
    run.add_argument("config", help="TOML configuration file")
    run.add_argument(
        "--out", default=None, help="output folder (default: [output].dir or results/<config name>)"
    )
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    run.set_defaults(func=cmd_run)

    for p in (demo, run):
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch threads (default: torch's; 1 is fastest for tiny models on a busy machine)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument(
            "--dist-timeout",
            type=float,
            default=DEFAULT_DIST_TIMEOUT_S,
            metavar="SECONDS",
            help="under torchrun: how long a process waits for the others at a collective step (the merge "
            "waits for the slowest shard) before it gives up with an error instead of hanging "
            f"(default {DEFAULT_DIST_TIMEOUT_S})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tscope`` command; returns the exit status (0 ok, 2 configuration error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("samples", "steps", "probes", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    if not (math.isfinite(args.dist_timeout) and args.dist_timeout > 0):
        parser.error(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout}")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rank = _env_rank()
    try:
        return args.func(args)
    except dist_.RankFailure as err:
        # Every rank raises it alike; rank 0 says it once. A rank's own unexpected error keeps its traceback.
        own = err.__cause__
        if own is not None and not isinstance(own, ConfigError):
            traceback.print_exception(type(own), own, own.__traceback__)
        if rank == 0:
            print(f"tscope: error: {err}", file=sys.stderr)
        return 2 if all(m.startswith("ConfigError: ") for m in err.failures.values()) else 1
    except ConfigError as err:
        print(f"tscope: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if _world_size() <= 1 or not _is_communication_error(err):
            raise
        print(
            f"tscope: error: rank {rank} of {_world_size()}: waiting for the other processes failed: "
            f"{str(err).splitlines()[0]}. Another process stopped (its own error is in its output) or fell "
            f"more than --dist-timeout {args.dist_timeout:g} s behind.",
            file=sys.stderr,
        )
        return 1
    finally:
        torch.set_num_threads(threads_before)


def _env_rank() -> int:
    """This process's rank from torchrun's ``RANK`` (0 without it)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
