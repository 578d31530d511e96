"""Command line: ``tscope demo`` and ``tscope run CONFIG.toml``.

``tscope demo`` trains the tiny induction model (:func:`train_tiny`), measures position-to-position
sensitivity :math:`s_{ij} = \\lVert \\partial h_i / \\partial e_j \\rVert_F^2` of every layer over a few
hundred induction sequences, and writes to ``--out`` (default ``results/demo``):

- ``statistics.safetensors`` + ``meta.json``: per-layer Welford statistics
  (:mod:`tscope_widgets.export.results`);
- ``model.safetensors`` + ``model.json``: the trained model;
- ``report.html``: mean and std heatmaps per layer, self-contained (opens offline).

``tscope run CONFIG.toml`` does the same for a model, data set and analysis described in a TOML file
(see ``examples/``; :data:`CONFIG_SCHEMA` lists every key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
from .models import ModelAdapter, adapt

Layer = int | str

STATISTICS_SHOWN = ("mean", "std")
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


_INT, _STR, _BOOL = (int,), (str,), (bool,)
# Integer keys that count something and must be >= 1.
_COUNTS = frozenset(
    {"steps", "samples", "limit", "batch_size", "max_seq_len", "probes", "chunk_size", "checkpoint_every"}
)
_LAYERS = (str, int, list)

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
        "kind": Key(_STR, "sensitivity", "the analysis to run", ("sensitivity",)),
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
        "seed": Key(_INT, 0, "seed of Hutchinson probes and the sample reservoir"),
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
    _check_combinations(out)
    return out


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
    layers = cfg["analysis"]["layers"]
    if isinstance(layers, list) and not all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in layers
    ):
        raise ConfigError(f"[analysis].layers list must hold ints and 'final', got {layers!r}")
    unknown = [
        s
        for s in cfg["output"]["statistics"]
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


@dataclass
class Dataset:
    """Token ids for the analysis and how to label their positions."""

    data: Any  # what iter_sensitivity takes: ids [N, S], {"input_ids", "attention_mask"} or list[str]
    description: dict[str, Any]
    token_labels: Callable[[Tensor, Tensor | None], list[str]] | None = None
    tokenizer: Any = None
    num_samples: int = 0
    extra: dict[str, Tensor] = field(default_factory=dict)


def _task_dataset(task, samples: int, seed: int) -> Dataset:
    from .tasks import InductionTask

    g = torch.Generator().manual_seed(seed)
    if isinstance(task, InductionTask):
        # The fixed layout (k = k_max, no padding) so that every position has one role.
        ids = task.sample(samples, g, k=task.k_max)["input_ids"]
        roles = task.role_labels(task.k_max)
    else:
        ids = task.sample(samples, g, **({"split": "test"} if task.name == "modadd" else {}))["input_ids"]
        roles = ["a", "b", "=", "c"] if task.name == "modadd" else None
    desc = {"kind": "task", "task": task.name, "task_kwargs": task.config(), "samples": samples, "seed": seed}
    if task.name == "induction":
        desc["layout"] = f"[BOS, r1 … r{task.k_max}, r1 … r{task.k_max}] (fixed k = {task.k_max})"
    if task.name == "modadd":
        desc["split"] = "test"
    labels = (lambda ids, mask: list(roles)) if roles else None
    return Dataset(ids, desc, labels, num_samples=samples, extra={"input_ids": ids})


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
):
    """Stream :func:`iter_sensitivity` to its last snapshot with a progress bar (and checkpoints).

    Returns:
        ``(snapshot, seconds, layers)``.
    """
    from .jobs import load_checkpoint, save_checkpoint
    from .kernels.sensitivity import iter_sensitivity

    adapter = adapt(prepared.model)
    layers = parse_layers(analysis["layers"], adapter)
    source = analysis["source"]
    if isinstance(source, str) and source != "embeddings":
        raise ConfigError(f"[analysis].source must be 'embeddings' or a block index, got {source!r}")
    checkpoint = None
    if resume:
        if checkpoint_dir is None or not (checkpoint_dir / "meta.json").is_file():
            raise ConfigError(f"--resume: no checkpoint in {checkpoint_dir}")
        checkpoint = load_checkpoint(checkpoint_dir)
    try:
        stream = iter_sensitivity(
            adapter,
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
            dtype=_DTYPES[analysis["dtype"]],
            seed=analysis["seed"],
            resume=checkpoint,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[analysis]: {err}") from None
    snapshot = None
    start = time.perf_counter()
    every = analysis["checkpoint_every"]
    with tqdm(
        total=dataset.num_samples or None, desc="sensitivity", unit="sample", disable=not progress
    ) as bar:
        for snapshot in stream:
            bar.update(snapshot.done - bar.n)
            if every and checkpoint_dir is not None and snapshot.batches % every == 0:
                save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
    if snapshot is None:
        raise ConfigError("the data produced no batches")
    if every and checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, snapshot, job_name="tscope run")
    return snapshot, time.perf_counter() - start, layers


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
# Commands
# ======================================================================================
def cmd_demo(args: argparse.Namespace) -> int:
    """``tscope demo``: train the induction model, measure its sensitivity, write results and report."""
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
    prepared = prepare_tiny(model_cfg, progress=not args.no_progress, num_threads=args.threads or 1)
    result = prepared.training
    print(
        f"trained {RECIPES['induction'].model} on induction for {len(result.losses)} steps in "
        f"{result.seconds:.1f} s: held-out accuracy {result.accuracy:.3f}"
    )
    task = prepared.task
    dataset = _task_dataset(task, samples, args.seed + 1)
    snapshot, seconds, layers = run_sensitivity(prepared, dataset, analysis, progress=not args.no_progress)
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
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``tscope run CONFIG``: the analysis a TOML file describes."""
    cfg = load_config(args.config)
    out = Path(args.out or cfg["output"]["dir"] or Path("results") / Path(args.config).stem)
    start = time.perf_counter()
    model_cfg = cfg["model"]
    if model_cfg["kind"] == "tiny":
        prepared = prepare_tiny(model_cfg, progress=not args.no_progress, num_threads=args.threads or 1)
        if prepared.training is not None:
            r = prepared.training
            print(
                f"trained tiny model on {r.task.name} for {len(r.losses)} steps in {r.seconds:.1f} s: "
                f"held-out accuracy {r.accuracy:.3f}"
            )
    else:
        prepared = prepare_hf(model_cfg)
    dataset = prepare_data(cfg["data"], model_cfg, prepared)
    checkpoint_dir = out / "checkpoint" if cfg["analysis"]["checkpoint_every"] or args.resume else None
    snapshot, seconds, layers = run_sensitivity(
        prepared,
        dataset,
        cfg["analysis"],
        not args.no_progress,
        checkpoint_dir=checkpoint_dir,
        resume=args.resume,
    )
    adapter = adapt(prepared.model)
    token_labels = position_token_labels(dataset, snapshot.seq_len)
    meta = {
        **_analysis_meta(snapshot, layers, seconds, cfg["analysis"], adapter),
        "command": f"tscope run {args.config}",
        "config": cfg,
        "model": prepared.description,
        "data": dataset.description,
        "total_seconds": round(time.perf_counter() - start, 3),
    }
    notes = [
        f"Model: {_model_summary(prepared, adapter)}.",
        f"Data: {json.dumps(dataset.description, default=str)}.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tscope`` command; returns the exit status (0 ok, 2 configuration error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("samples", "steps", "probes", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"tscope: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads_before)


if __name__ == "__main__":
    sys.exit(main())
