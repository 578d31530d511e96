"""Models and data for a run: what ``[model]`` and ``[data]`` describe, made ready for analysis.

:func:`prepare_model` trains (tiny), loads or builds (Hugging Face, trained when ``steps`` is given) the
model, the same on every rank of a ``torchrun`` run; :func:`prepare_data` reads a synthetic task, an ids file
or a text file into a :class:`Dataset` with labels for its positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import distributed as dist_
from ..models import adapt
from .config import ConfigError, DataConfig, ModelConfig
from .limits import build_checked, check_samples


@dataclass
class Prepared:
    """A model ready for analysis, with what the report and results need to know about it."""

    model: torch.nn.Module
    description: dict[str, Any]
    task: Any = None  # the synthetic task a tiny model was trained on
    save: Callable[[Path], list[Path]] | None = None  # writes the model into a folder
    training: Any = None  # TrainResult for models trained here


def _hub_error(name: str, err: Exception) -> ConfigError:
    return ConfigError(
        f"could not load {name!r} with from_pretrained: {err.__class__.__name__}: "
        f"{str(err).splitlines()[0].rstrip('.')}. "
        "The Hugging Face hub is unreachable from here or the name is wrong; download the model on a "
        "machine with internet (huggingface-cli download NAME) and pass its local folder as name, or "
        "build a model from a config table ([model].config = {model_type = ...}). Offline, set "
        "local_files_only = true (or HF_HUB_OFFLINE=1) to skip the connection retries."
    )


def prepare_tiny(cfg: ModelConfig, progress: bool, num_threads: int | None) -> Prepared:
    """Train (or load) a :class:`TinyTransformer` as ``[model]`` says."""
    from ..tasks import get_task
    from ..training import load_model, save_model, train_tiny

    if cfg.path is not None:
        try:
            model, info = load_model(cfg.path)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"[model].path: {err}") from None
        training = info.get("training") or {}
        try:
            task = get_task(training["task"], **training["task_kwargs"]) if training.get("task") else None
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"[model].path: {Path(cfg.path) / 'model.json'}: bad training task record ({err!r}); "
                "save the model again with save_model"
            ) from None
        desc = {
            "kind": "tiny",
            "class": "TinyTransformer",
            "path": str(cfg.path),
            "tiny_config": info["tiny_config"],
            "training": training,
        }
        return Prepared(
            model, desc, task, save=lambda d: [save_model(d, model, extra={"loaded_from": cfg.path})]
        )
    try:
        result = train_tiny(
            cfg.task,
            steps=cfg.steps,
            seed=cfg.seed,
            lr=cfg.lr,
            config=cfg.tiny_config,
            task_kwargs=cfg.task_kwargs,
            progress=progress,
            num_threads=num_threads,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model]: {err}") from None
    desc = {
        "kind": "tiny",
        "class": "TinyTransformer",
        "tiny_config": result.config["model"],
        "training": _training_record(result),
    }
    return Prepared(result.model, desc, result.task, save=lambda d: [save_model(d, result)], training=result)


def _config_errors() -> tuple[type[Exception], ...]:
    """The errors of a Hugging Face config field of the wrong type (huggingface_hub's strict dataclasses)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub
        return ()
    return (StrictDataclassError,)


def prepare_hf(cfg: ModelConfig) -> Prepared:
    """Load a Hugging Face model by name, or build one with random weights from a config table.

    A config table is first built on the ``meta`` device (no memory): a model type without an adapter, or a
    model whose weights would not fit in memory, is refused before its weights are allocated.
    """
    import transformers

    if cfg.name is not None:
        name = cfg.name
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                name, local_files_only=cfg.local_files_only
            )
        except (OSError, ValueError) as err:
            raise _hub_error(name, err) from None
        desc = {"kind": "hf", "name": name, "class": type(model).__name__}
        return Prepared(model, desc)  # on the hub already: not saved again
    fields = dict(cfg.config)
    model_type = fields.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **fields)
    except (*_config_errors(), TypeError, ValueError) as err:
        raise ConfigError(
            f"[model].config: {' '.join(str(err).split())}; fix that key (see the {model_type} config "
            "documentation of transformers)"
        ) from None
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers < 1:
        key = next((k for k in ("n_layer", "num_hidden_layers", "num_layers") if k in fields), "num_hidden_layers")
        raise ConfigError(
            f"[model].config.{key} = {fields.get(key, layers)} builds a model without transformer blocks: there is "
            "nothing to analyse; give at least 1 layer"
        )
    auto = transformers.AutoModelForMaskedLM if model_type == "bert" else transformers.AutoModelForCausalLM

    def supported(meta_model: torch.nn.Module) -> None:
        try:
            adapt(meta_model)
        except TypeError as err:
            raise ConfigError(f"[model].config.model_type = {model_type!r}: {err}") from None

    try:
        build_checked(lambda: auto.from_config(config), "[model].config", supported)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"[model].config: {err}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            model = auto.from_config(config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[model].config: {err}") from None
    model.eval()
    desc = {
        "kind": "hf",
        "class": type(model).__name__,
        "config": config.to_diff_dict(),
        "seed": cfg.seed,
        "weights": "random (built from config)",
    }

    def save(directory: Path) -> list[Path]:
        target = directory / "model"
        model.save_pretrained(target)  # safetensors + config.json
        return [target]

    return Prepared(model, desc, save=save)


def train_hf(prepared: Prepared, cfg: ModelConfig, progress: bool, num_threads: int | None) -> Prepared:
    """Train a Hugging Face model ``steps`` steps on ``[model].task`` (:func:`~tscope_widgets.train_model`)."""
    from ..training import train_model

    try:
        result = train_model(
            prepared.model,
            cfg.task,
            steps=cfg.steps,
            seed=cfg.seed,
            lr=cfg.lr,
            task_kwargs=cfg.task_kwargs,
            progress=progress,
            num_threads=num_threads,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model] (training on {cfg.task!r}): {err}") from None
    desc = {
        **prepared.description,
        "weights": f"trained {cfg.steps} steps on {cfg.task}",
        "training": {**_training_record(result)},
    }
    return dataclasses.replace(prepared, description=desc, task=result.task, training=result)


def _training_record(result) -> dict[str, Any]:
    return {
        **result.config,
        "accuracy": result.accuracy,
        "seconds": round(result.seconds, 3),
        "final_loss": result.losses[-1],
    }


def prepare_model(cfg: ModelConfig, progress: bool, num_threads: int | None,
                  device: torch.device | None = None) -> Prepared:
    """The model ``[model]`` describes, the same on every rank of a ``torchrun`` run.

    In one process this is :func:`prepare_tiny` or :func:`prepare_hf`. Under ``torchrun``, a tiny model
    that is trained is trained on rank 0 alone and its weights are broadcast (training is seeded, but
    bit-identical results on every rank would also need the same thread count and hardware; a broadcast
    does not), while the other ranks build the architecture from rank 0's config. A loaded or Hugging
    Face model is loaded on every rank. Either way the ranks then compare SHA-256 digests of their
    weights and refuse to go on when they differ (e.g. a ``path`` that holds other files on another
    machine). Errors on any rank stop every rank (:func:`distributed.check_all_ranks`).

    With ``device``, a Hugging Face model is moved there before it is trained (tiny models stay on the CPU).
    """
    if cfg.kind == "hf":
        prepared = on_every_rank("while loading the model", lambda: prepare_hf(cfg))
        if device is not None:
            prepared.model.to(device)
        if cfg.steps is not None:
            prepared = _hf_trained_on_rank0(prepared, cfg, progress, num_threads)
    elif cfg.path is not None or not dist_.is_distributed():
        prepared = on_every_rank("while loading the model", lambda: prepare_tiny(cfg, progress, num_threads))
    else:
        prepared = _train_on_rank0(cfg, progress, num_threads)
    try:
        dist_.check_same_on_every_rank(dict(prepared.model.state_dict()), "the model")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return prepared


def _train_on_rank0(cfg: ModelConfig, progress: bool, num_threads: int | None) -> Prepared:
    """Train on rank 0, send its config and weights to the other ranks (see :func:`prepare_model`)."""
    from ..models.tiny import TinyConfig, TinyTransformer
    from ..tasks import get_task

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
        prepared = on_every_rank("while building the model that rank 0 trained", build)
    else:
        on_every_rank("while building the model that rank 0 trained", lambda: None)
    dist_.broadcast_module_(prepared.model)
    return prepared


def _hf_trained_on_rank0(prepared: Prepared, cfg: ModelConfig, progress: bool, num_threads: int | None) -> Prepared:
    """Train the Hugging Face model every rank built (:func:`train_hf`) on rank 0 alone, then send its weights,
    task and description to the other ranks (in one process: just train it)."""
    from ..tasks import get_task

    if not dist_.is_distributed():
        return train_hf(prepared, cfg, progress, num_threads)
    trained, payload, error = None, None, None
    if dist_.rank() == 0:
        try:
            trained = train_hf(prepared, cfg, progress, num_threads)
            payload = {"training": trained.training.config, "description": trained.description}
        except Exception as err:  # noqa: BLE001 - reported to every rank, then re-raised
            error = err
    dist_.check_all_ranks(error, "while training the model (on rank 0)")
    payload = dist_.broadcast_json(payload)
    if trained is None:
        task = get_task(payload["training"]["task"], **payload["training"]["task_kwargs"])
        trained = dataclasses.replace(prepared, description=payload["description"], task=task)
    dist_.broadcast_module_(trained.model)
    return trained


def on_every_rank(what: str, step: Callable[[], Any]) -> Any:
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


def task_dataset(task, samples: int, seed: int) -> Dataset:
    """``samples`` sequences of a synthetic task, drawn with ``seed``, with each position labelled by its role.

    An induction task samples its fixed layout (``k = k_max``, no padding), so every position has one role
    (``BOS``, ``r1`` ... ``copy rk``); a modular-addition task samples its test split and labels ``a, b, =, c``.

    Args:
        task: A :class:`~tscope_widgets.tasks.InductionTask` or :class:`~tscope_widgets.tasks.ModularAdditionTask`.
        samples: Number of sequences ``N``.
        seed: Seed of the sampling generator.

    Returns:
        A :class:`Dataset` whose ids ``[N, S]`` (int64) are both the data and ``extra["input_ids"]``, with the
        task's labels ``[N, S]`` (-100 where not scored).
    """
    from ..tasks import InductionTask

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
        except (ValueError, OSError, EOFError) as err:
            raise ConfigError(
                f"[data].ids: {path}: cannot read it as an .npy array of token ids ({err}); write the ids "
                "with numpy.save (no pickled objects)"
            ) from None
        ids, mask = torch.from_numpy(np.ascontiguousarray(array)), None
    elif path.suffix == ".safetensors":
        from ..files import read_safetensors

        try:
            tensors, _ = read_safetensors(
                path,
                what="token ids [N, S] in a safetensors file ('input_ids', optionally 'attention_mask')",
                fix="write the ids with safetensors.torch.save_file({'input_ids': ids}, path)",
            )
        except ValueError as err:
            raise ConfigError(f"[data].ids: {err}") from None
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
    if ids.numel() == 0:
        raise ConfigError(f"[data].ids: {path} holds no token ids (shape {tuple(ids.shape)})")
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


def prepare_data(cfg: DataConfig, model_cfg: ModelConfig, prepared: Prepared) -> Dataset:
    """Build the analysis data as ``[data]`` says (see :data:`CONFIG_SCHEMA`)."""
    from ..tasks import get_task

    adapter = adapt(prepared.model)
    if cfg.task is not None:
        if prepared.task is not None:
            if cfg.task not in ("from_model", prepared.task.name):
                raise ConfigError(
                    f"[data].task = {cfg.task!r}, but the model was trained on {prepared.task.name!r}"
                )
            task = prepared.task
        elif cfg.task == "from_model":
            raise ConfigError("[data] needs task, text or ids: the loaded model records no task")
        else:
            try:
                task = get_task(cfg.task, **(cfg.task_kwargs or {}))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"[data]: {err}") from None
        if task.vocab_size > adapter.vocab_size:
            raise ConfigError(
                f"[data].task {task.name!r} uses {task.vocab_size} token ids, more than the model's "
                f"vocabulary of {adapter.vocab_size}"
            )
        check_samples(cfg.samples, task.seq_len)
        return task_dataset(task, cfg.samples, cfg.seed)
    if cfg.ids is not None:
        ids, mask = _read_ids(Path(cfg.ids))
        if cfg.limit:
            ids, mask = ids[: cfg.limit], None if mask is None else mask[: cfg.limit]
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

        desc = {"kind": "ids", "path": cfg.ids, "samples": len(ids), "seq_len": ids.shape[1]}
        data = ids if mask is None else {"input_ids": ids, "attention_mask": mask}
        return Dataset(data, desc, _common_tokens(to_text), num_samples=len(ids))
    path = Path(cfg.text)
    if not path.is_file():
        raise ConfigError(f"[data].text: {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"[data].text: {path} is not UTF-8 text ({err}); save it as UTF-8, one text a line") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if cfg.limit:
        texts = texts[: cfg.limit]
    if not texts:
        raise ConfigError(f"[data].text: {path} has no non-empty lines")
    name = cfg.tokenizer or model_cfg.name
    if name is None:
        raise ConfigError(
            "[data].text needs a tokenizer: set [data].tokenizer = 'NAME' (loaded with "
            "AutoTokenizer.from_pretrained)"
        )
    tok = _load_tokenizer(name, model_cfg.local_files_only)
    desc = {"kind": "text", "path": str(path), "samples": len(texts), "tokenizer": name}
    return Dataset(
        texts, desc, _common_tokens(tok.convert_ids_to_tokens), tokenizer=tok, num_samples=len(texts)
    )


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
