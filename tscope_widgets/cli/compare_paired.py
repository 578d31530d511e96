"""The per-sample differences behind ``tscope compare --paired``: both runs' models again, on run A's data.

Both models are rebuilt (a tiny model from the folder its run loaded it from, else the ``model.safetensors`` the
run saved; a Hugging Face model from its ``[model]`` table) and checked against the model fingerprints the runs
recorded; the data are prepared from run A's ``[data]`` table and checked against its ``data_sha256``. Then
:func:`~tscope_widgets.kernels.sensitivity.iter_paired_sensitivity` runs both on the same batches with run A's
``[analysis]`` settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from ..kernels.fingerprint import fingerprint_difference, model_fingerprint
from ..kernels.welford import WelfordState
from ..models import adapt
from .config import ConfigError, RunConfig, SensitivityConfig
from .prepare import Prepared, prepare_data, prepare_hf, prepare_tiny


def stacked(stats, layers: list) -> WelfordState:
    """The layers' states ``[S, S]`` as one state ``[L, S, S]`` (so one correction covers every layer)."""
    dicts = [stats[layer].state_dict() for layer in layers]
    state = {k: torch.stack([d[k] for d in dicts]) for k in ("count", "mean", "m2", "min", "max")}
    state["rows"] = torch.tensor(max(int(d["rows"]) for d in dicts))
    return WelfordState.from_state_dict(state)


def _config(meta: dict, run: Path) -> RunConfig:
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise ConfigError(f"--paired runs the models again from their configurations, but {run}/meta.json has none "
                          "(it was not written by `tscope run`)")
    try:
        cfg = RunConfig.from_dict(raw)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{run}/meta.json: its config cannot be read back ({err})") from None
    if not isinstance(cfg.analysis, SensitivityConfig):
        raise ConfigError(f"{run} is a {cfg.analysis.kind} run; tscope compare needs sensitivity runs")
    return cfg


def _model(cfg: RunConfig, run: Path) -> Prepared:
    if cfg.model.kind == "tiny":
        if cfg.model.path is not None and Path(cfg.model.path).is_dir():  # the model the run loaded (with its task)
            return prepare_tiny(cfg.model, False, None)
        if not (run / "model.safetensors").is_file():
            raise ConfigError(f"--paired needs the model of {run}, but the run did not save it (model.safetensors); "
                              "run it again with [output] save_model = true")
        return prepare_tiny(dataclasses.replace(cfg.model, path=str(run)), False, None)
    return prepare_hf(cfg.model)


def paired_differences(
    a: Path, b: Path, meta_a: dict, meta_b: dict, layers: list, progress: bool
) -> tuple[WelfordState, WelfordState, WelfordState]:
    """States ``[L, S, S]`` of the per-sample differences ``s_a - s_b`` and of each run's maps, over run A's data."""
    from ..kernels.sensitivity import iter_paired_sensitivity
    cfg_a, cfg_b = _config(meta_a, a), _config(meta_b, b)
    prepared = []
    for run, cfg, meta in ((a, cfg_a, meta_a), (b, cfg_b, meta_b)):
        p = _model(cfg, run)
        recorded = (meta.get("fingerprint") or {}).get("model")
        now = model_fingerprint(adapt(p.model).analysis(cfg.analysis.torch_dtype).model)
        diff = fingerprint_difference(recorded, now) if isinstance(recorded, dict) else "no fingerprint recorded"
        if diff is not None:
            raise ConfigError(f"--paired: the model rebuilt from {run} is not the one the run analysed: {diff}")
        prepared.append(p)
    dataset = prepare_data(cfg_a.data, cfg_a.model, prepared[0])
    an = cfg_a.analysis
    stream = iter_paired_sensitivity(
        prepared[0].model, prepared[1].model, dataset.data, layers=layers, method=an.method, mode=an.mode,
        batch_size=an.batch_size, max_seq_len=an.max_seq_len, tokenizer=dataset.tokenizer, source=an.source,
        probes=an.probes, chunk_size=an.chunk_size, dtype=an.torch_dtype, seed=an.seed,
    )
    last = None
    with tqdm(total=None, desc="paired sensitivity", unit="sample", disable=not progress) as bar:
        for last in stream:
            bar.total = last.total
            bar.update(last.done - bar.n)
    recorded = meta_a["fingerprint"]["data_sha256"]
    if last is None or last.data_sha256 != recorded:
        raise ConfigError(f"--paired: the data prepared again from {a}'s config are not the samples the run read "
                          f"(sha256 {recorded[:12]}…); the data files changed since")
    return (stacked(last.differences, layers), stacked(last.a, layers), stacked(last.b, layers))
