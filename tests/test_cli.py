"""The ``tscope`` command line: demo and run end to end (sensitivity, curvature, landscape), config validation,
the induction reading."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import nullcontext, redirect_stderr, redirect_stdout
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from tscope_widgets.cli import ANALYSIS_KEYS, ConfigError, induction_reading, load_config, main, validate_config
from tscope_widgets.cli.prepare import task_dataset
from tscope_widgets.export import load_statistics
from tscope_widgets.export.directions import load_directions
from tscope_widgets.export.results import load_results
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.kernels.density import slq_density
from tscope_widgets.kernels.lanczos import lanczos
from tscope_widgets.kernels.landscape import slice_2d
from tscope_widgets.kernels.sensitivity import position_sensitivity
from tscope_widgets.kernels.trace import hutchpp_trace
from tscope_widgets.kernels.welford import WelfordState
from tscope_widgets.models import adapt
from tscope_widgets.tasks import get_task
from tscope_widgets.training import load_model, save_model, train_tiny

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAST = ["--no-progress", "--threads", "1"]


def assert_self_contained(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text) and "Bokeh.embed" in text


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """``tscope demo --quick`` (300 training steps, 32 sequences): about 10 s on one core."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), *FAST]) == 0
    return out


def test_demo_writes_statistics_model_and_report(demo_dir, capsys):
    stats, meta = load_statistics(demo_dir)
    assert list(stats) == [0, 1, "final"] and meta["layers"] == [0, 1, "final"]
    assert meta["samples"] == 32 and meta["method"] == "exact" and meta["seq_len"] == 17
    assert meta["token_labels"][:2] == ["BOS", "r1"] and meta["token_labels"][-1] == "copy r8"
    for state in stats.values():
        assert state.shape == (17, 17) and state.count.max() == 32
        # Causal model: exact zeros above the diagonal.
        assert torch.equal(state.mean.triu(1), torch.zeros(17, 17, dtype=torch.float64))
    reading = meta["induction_reading"]
    assert set(reading) == {"0", "1", "final"} and reading["1"]["ratio"] > 1
    curvature = meta["curvature"]  # extreme eigenvalues and trace of the trained model's loss
    assert curvature["samples"] == 32 and curvature["lanczos"]["converged"]
    eigenvalues = curvature["lanczos"]["eigenvalues"]
    assert len(eigenvalues) == 6 and eigenvalues == sorted(eigenvalues)
    assert curvature["summary"]["sharpness"] == eigenvalues[-1] > 0
    assert curvature["trace"]["method"] == "hutch++" and curvature["trace"]["num_matvecs"] == 30
    assert curvature["density"] is None and curvature["block_norms"] is None
    assert "Hutch++" in (demo_dir / "report.html").read_text(encoding="utf-8")
    model, info = load_model(demo_dir)
    assert info["training"]["task"] == "induction" and info["training"]["steps"] == 300
    assert model.config.n_layer == 2
    assert_self_contained(demo_dir / "report.html")


def test_demo_reading_matches_the_saved_statistics(demo_dir):
    stats, meta = load_statistics(demo_dir)
    recomputed = induction_reading(stats, k=8)
    for layer, values in recomputed.items():
        assert values == pytest.approx(meta["induction_reading"][str(layer)], rel=1e-12)


def test_induction_reading_on_a_planted_pattern():
    k, S = 4, 9
    mean = torch.full((S, S), 1.0, dtype=torch.float64).tril()
    for j in range(1, k):  # row k + j (copy r_j) -> column j + 1
        mean[k + j, j + 1] = 5.0
    state = WelfordState((S, S))
    state.update(mean[None])
    reading = induction_reading({1: state}, k)[1]
    # Rows 5, 6, 7 hold 5, 6, 7 other off-diagonal cells of value 1.
    assert reading["induction_mean"] == 5.0 and reading["other_mean"] == 1.0 and reading["ratio"] == 5.0
    assert reading["rows_topped_by_induction"] == 1.0 and reading["rows_topped_by_previous"] == 0.0


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


TINY = """
[model]
kind = "tiny"
task = "induction"
steps = 60
[data]
samples = 8
[analysis]
layers = [1, "final"]
batch_size = 4
checkpoint_every = 1
[output]
statistics = ["mean", "count"]
"""


def test_run_tiny_config_and_resume(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, TINY)), "--out", str(out), *FAST]) == 0
    stats, meta = load_statistics(out)
    assert list(stats) == [1, "final"] and meta["samples"] == 8 and meta["batches"] == 2
    assert (
        meta["config"]["analysis"]["checkpoint_every"] == 1 and (out / "checkpoint" / "meta.json").is_file()
    )
    assert_self_contained(out / "report.html")
    assert "samples per cell" in (out / "report.html").read_text(encoding="utf-8")
    # Resuming a finished run yields its last snapshot again: the same statistics, bit for bit.
    again = tmp_path / "again"
    shutil.copytree(out / "checkpoint", again / "checkpoint")
    assert main(["run", str(write_config(tmp_path, TINY)), "--out", str(again), "--resume", *FAST]) == 0
    resumed, _ = load_statistics(again)
    for layer in stats:
        for key, value in stats[layer].state_dict().items():
            assert torch.equal(resumed[layer].state_dict()[key], value)
    assert "wrote:" in capsys.readouterr().out


def test_run_example_hf_gpt2_from_config(tmp_path):
    text = (EXAMPLES / "gpt2_random.toml").read_text().replace("samples = 64", "samples = 8")
    out = tmp_path / "gpt2"
    assert main(["run", str(write_config(tmp_path, text)), "--out", str(out), *FAST]) == 0
    stats, meta = load_statistics(out)
    assert list(stats) == [0, 1, "final"] and meta["model"]["class"] == "GPT2LMHeadModel"
    assert meta["model"]["config"]["n_layer"] == 2 and meta["samples"] == 8
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    assert torch.equal(stats[0].mean.triu(1), torch.zeros(17, 17, dtype=torch.float64))
    assert_self_contained(out / "report.html")


def test_run_saved_tiny_model_on_an_npy_id_file(tmp_path, demo_dir):
    ids = np.array([[24, 3, 5, 7, 3, 5, 7], [24, 1, 2, 4, 1, 2, 4], [24, 9, 9, 9, 9, 9, 9]])
    np.save(tmp_path / "ids.npy", ids)
    config = f"""
[model]
kind = "tiny"
path = "{demo_dir.as_posix()}"
[data]
ids = "{(tmp_path / "ids.npy").as_posix()}"
[analysis]
layers = "final"
method = "hutchinson"
probes = 4
"""
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), *FAST]) == 0
    stats, meta = load_statistics(out)
    assert list(stats) == ["final"] and meta["method"] == "hutchinson" and meta["probes"] == 4
    assert meta["data"] == {
        "kind": "ids",
        "path": (tmp_path / "ids.npy").as_posix(),
        "samples": 3,
        "seq_len": 7,
    }
    # Position 0 is BOS (id 24) in every sample; the others differ, so only the index labels them.
    assert meta["token_labels"] == ["BOS", "", "", "", "", "", ""]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nkind = 'tiny'\nstep = 3\n", r"\[model\]: unknown key\(s\) \['step'\]"),
        ("[model]\nkind = 'tiny'\nsteps = 'many'\n", r"\[model\]\.steps must be an integer, got str 'many'"),
        ("[model]\nkind = 'tiny'\nsteps = true\n", r"\[model\]\.steps must be an integer, got bool"),
        ("[model]\nkind = 'tiny'\nsteps = 0\n", r"\[model\]\.steps must be >= 1, got 0"),
        ("[model]\nkind = 'tiny'\nseed = -1\n", r"\[model\]\.seed must be >= 0"),
        ("[model]\ntask = 'induction'\n", r"\[model\]\.kind is required"),
        ("[model]\nkind = 'onnx'\n", r"\[model\]\.kind = 'onnx'; choose one of \['tiny', 'hf', 'growth'\]"),
        ("[modle]\nkind = 'tiny'\n", r"unknown table\(s\) \['modle'\]"),
        ("[model]\nkind = 'hf'\n", "exactly one of name"),
        ("[model]\nkind = 'hf'\nname = 'gpt2'\ntiny_config = {}\n", r"\['tiny_config'\] apply to kind = 'tiny' only"),
        ("[model]\nkind = 'hf'\nname = 'gpt2'\nlr = 0.1\n", r"\['lr'\] set how a Hugging Face model is trained"),
        (
            "[model]\nkind = 'hf'\nname = 'gpt2'\nsteps = 3\ntask_kwargs = {k_max = 5}\n[data]\ntask = 'induction'\n"
            "task_kwargs = {k_max = 4}\n",
            r"\[data\]\.task_kwargs = \{'k_max': 4\} differ from \[model\]\.task_kwargs = \{'k_max': 5\}",
        ),
        (
            "[model]\nkind = 'hf'\nname = 'gpt2'\nsteps = 3\n[data]\ntask = 'modadd'\ntask_kwargs = {p = 7}\n",
            r"but the model is trained on \[model\]\.task = 'induction'",
        ),
        ("[model]\nkind = 'hf'\nconfig = {n_layer = 2}\n", "needs model_type"),
        ("[model]\nkind = 'hf'\nname = 'gpt2'\n", r"\[data\] needs one of task"),
        ("[model]\nkind = 'tiny'\n[data]\ntask = 'induction'\ntext = 'a.txt'\n", "one of task, text or ids"),
        ("[model]\nkind = 'tiny'\n[analysis]\nmethod = 'approx'\n", r"choose one of \['exact'"),
        ("[model]\nkind = 'tiny'\n[analysis]\nlayers = [1.5]\n", "must hold ints and 'final'"),
        ("[model]\nkind = 'tiny'\n[output]\nstatistics = ['median']\n", r"unknown \['median'\]"),
        (
            "[model]\nkind = 'tiny'\n[output]\nlog = 'yes'\n",
            r"\[output\]\.log = 'yes'; choose one of \[True, False, 'auto'\]",
        ),
    ],
)
def test_bad_configs_are_rejected_with_the_key_named(tmp_path, capsys, text, message):
    import tomllib

    with pytest.raises(ConfigError, match=message):
        validate_config(tomllib.loads(text))
    assert main(["run", str(write_config(tmp_path, text)), *FAST]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_errors_found_while_preparing_the_run(tmp_path, capsys):
    big = tmp_path / "big.npy"
    np.save(big, np.array([[1, 2, 300]]))
    cases = [
        ("[model]\nkind = 'tiny'\nsteps = 5\n[analysis]\nlayers = [7]\n", "layer 7 out of range"),
        (
            "[model]\nkind = 'hf'\nname = 'no-such-org/no-such-model'\nlocal_files_only = true\n"
            "[data]\ntask = 'induction'\n",
            "hub is unreachable",
        ),
        (
            "[model]\nkind = 'hf'\nconfig = {model_type = 'gpt2', vocab_size = 8, n_layer = 1, n_embd = 8, "
            "n_head = 2}\n[data]\ntask = 'induction'\n",
            "more than the model's vocabulary of 8",
        ),
        (
            "[model]\nkind = 'hf'\nsteps = 2\nconfig = {model_type = 'gpt2', vocab_size = 8, n_layer = 1, n_embd = 8, "
            "n_head = 2}\n",
            "[model] (training on 'induction'): task 'induction' uses 26 token ids, more than the model's "
            "vocabulary of 8",
        ),
        ("[model]\nkind = 'tiny'\nsteps = 5\n[data]\nids = 'missing.npy'\n", "missing.npy not found"),
        (
            f"[model]\nkind = 'tiny'\nsteps = 5\n[data]\nids = '{big.as_posix()}'\n",
            "outside the model's vocabulary",
        ),
    ]
    for text, message in cases:
        assert main(["run", str(write_config(tmp_path, text)), "--out", str(tmp_path / "o"), *FAST]) == 2
        assert message in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--samples", "0"])


def test_valid_config_defaults_and_negative_layers():
    import tomllib

    cfg = validate_config(tomllib.loads("[model]\nkind = 'tiny'\n[analysis]\nlayers = -1\nsource = 0\n"))
    assert cfg["analysis"]["layers"] == -1 and cfg["analysis"]["source"] == 0
    assert cfg["analysis"]["method"] == "exact" and cfg["analysis"]["dtype"] == "float64"
    assert cfg["data"]["task"] == "from_model" and cfg["data"]["samples"] == 256
    assert cfg["output"]["statistics"] == ["mean", "std"]
    assert cfg["output"]["log"] == "auto"  # log colours where the values span decades, as the widgets
    assert validate_config(tomllib.loads("[model]\nkind = 'tiny'\n[output]\nlog = false\n"))["output"]["log"] is False


def test_typed_configs_hold_the_validated_tables(tmp_path):
    import dataclasses

    import tomllib

    from tscope_widgets.cli import (
        AttentionConfig,
        BlocksConfig,
        CurvatureConfig,
        GrowthRatesConfig,
        LandscapeConfig,
        RunConfig,
        SensitivityConfig,
        load_run_config,
        parse_config,
    )

    texts = [
        # Run configurations (sweep_*.toml are sweep files: tests/test_cli_sweep.py)
        *(p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.toml")) if not p.name.startswith("sweep_")),
        "[model]\nkind = 'tiny'\n[analysis]\nlayers = [0, 'final']\n[output]\nstatistics = ['mean', 'max']\n",
        "[model]\nkind = 'tiny'\n[analysis]\nkind = 'curvature'\nblock_norms = ['head']\nhessian_kind = 'ggn'\n",
        "[model]\nkind = 'tiny'\n[analysis]\nkind = 'landscape'\ndirections = 'eigen'\nspan = 0.5\n",
    ]
    for text in texts:
        cfg = validate_config(tomllib.loads(text))
        typed = parse_config(tomllib.loads(text))
        # What meta.json records: the validated tables, keys in the same order.
        assert typed.to_dict() == cfg and json.dumps(typed.to_dict()) == json.dumps(cfg)
        assert RunConfig.from_dict(cfg) == typed
        assert typed.analysis.kind == cfg["analysis"]["kind"] and typed.analysis.torch_dtype == torch.float64
        for table in ("model", "data", "analysis", "output"):
            for key, value in cfg[table].items():
                assert getattr(getattr(typed, table), key) == value, (table, key)
    kinds = {type(parse_config({"model": {"kind": "tiny"}, "analysis": {"kind": k}}).analysis)
             for k in ANALYSIS_KEYS if k != "growth_rates"}
    assert kinds == {SensitivityConfig, CurvatureConfig, LandscapeConfig, AttentionConfig, BlocksConfig}
    growth = parse_config({"model": {"kind": "growth"},
                           "analysis": {"kind": "growth_rates", "settings": [{"label": "a"}]}})
    assert type(growth.analysis) is GrowthRatesConfig and growth.analysis.growth_settings()[0].label == "a"
    assert growth.data.task == "addition"
    landscape = parse_config({"model": {"kind": "tiny"}, "analysis": {"kind": "landscape"}})
    assert landscape.output.statistics is None and not hasattr(landscape.analysis, "k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        landscape.analysis.span = 2.0
    with pytest.raises(ConfigError, match="kind = 'landscape'"):
        CurvatureConfig.from_dict(landscape.analysis.to_dict())
    # Errors still name the file, the key and the allowed values.
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nkind = 'tiny'\n[analysis]\nhessian_kind = 'ggn'\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: [analysis] key(s) ['hessian_kind'] do not apply")):
        load_run_config(bad)
    bad.write_text("[model]\nkind = 'tiny'\n[analysis]\nkind = 'curvature'\nhessian_kind = 'full'\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: [analysis].hessian_kind = 'full'; choose one of")):
        load_run_config(bad)


def test_run_trains_a_hf_config_model_on_its_task_and_analyses_that_task(tmp_path, capsys):
    """``[model] kind = 'hf'`` with ``steps``: trained on [model].task, [data] defaults to that task, the saved
    model is the trained one."""
    from transformers import AutoModelForCausalLM

    config = """
[model]
kind = "hf"
steps = 12
lr = 0.01
task_kwargs = {num_symbols = 6, k_max = 3, k_min = 2}
[model.config]
model_type = "gpt2"
vocab_size = 12
n_positions = 16
n_embd = 8
n_layer = 1
n_head = 2
[data]
samples = 4
[analysis]
layers = "final"
batch_size = 4
"""
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), *FAST]) == 0
    assert "trained GPT2LMHeadModel on induction for 12 steps" in capsys.readouterr().out
    stats, meta = load_statistics(out)
    training = meta["model"]["training"]
    assert training["steps"] == 12 and training["lr"] == 0.01 and training["task_kwargs"]["num_symbols"] == 6
    assert meta["model"]["weights"] == "trained 12 steps on induction" and meta["samples"] == 4
    saved = AutoModelForCausalLM.from_pretrained(out / "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # [model].seed: the initial weights of the run
        untrained = AutoModelForCausalLM.from_config(saved.config)
    moved = (saved.transformer.h[0].attn.c_attn.weight - untrained.transformer.h[0].attn.c_attn.weight).abs().max()
    assert 0 < moved <= 12 * 0.01 * 1.05  # the seeded initial weights after 12 AdamW steps of at most ~lr each


def test_run_hf_config_model_on_a_text_file_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "start", "the", "cat", "sat", "on", "mat", "a", "dog"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "lines.txt").write_text("start the cat sat on the mat\n\nstart a dog sat\nstart the dog\n")
    config = f"""
[model]
kind = "hf"
[model.config]
model_type = "gpt2"
vocab_size = 10
n_positions = 16
n_embd = 8
n_layer = 1
n_head = 2
bos_token_id = 2
eos_token_id = 2
[data]
text = "{(tmp_path / "lines.txt").as_posix()}"
tokenizer = "{(tmp_path / "tokenizer").as_posix()}"
[analysis]
layers = "final"
batch_size = 2
"""
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), *FAST]) == 0
    stats, meta = load_statistics(out)
    assert meta["samples"] == 3 and meta["seq_len"] == 7
    # Cell (i, j) counts the samples in which both positions are real tokens (lengths 7, 4 and 3).
    real = (torch.arange(7)[None, :] < torch.tensor([7, 4, 3])[:, None]).double()  # [N, S]
    assert torch.equal(stats["final"].count, real.T @ real)
    assert meta["token_labels"] == ["start", "", "", "", "", "", ""]

    # A landscape of the same model on the same texts: batches padded on the right to their longest text.
    landscape = config.replace('layers = "final"', 'kind = "landscape"\nresolution = 3\nspan = 0.1')
    out = tmp_path / "landscape"
    assert main(["run", str(write_config(tmp_path, landscape)), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert meta["samples"] == 3 and meta["batches"] == 2 and not any(k.startswith("data.") for k in tensors)
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    batches = [
        tokenizer(texts, padding="longest", padding_side="right", return_tensors="pt")
        for texts in (["start the cat sat on the mat", "start a dog sat"], ["start the dog"])
    ]
    batches = [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in batches]
    assert [b["input_ids"].shape[1] for b in batches] == [7, 3]
    origin = token_weighted_loss(model, batches)
    assert meta["origin_loss"] == pytest.approx(origin, rel=1e-12)
    assert tensors["loss"][1, 1].item() == pytest.approx(origin, rel=1e-12)


# ======================================================================================
# kind = "curvature" and kind = "landscape"
# ======================================================================================
SMALL_TASK = {"num_symbols": 8, "k_max": 4, "k_min": 2}  # sequences [BOS, r1..r4, r1..r4]: 9 tokens


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory) -> Path:
    """A one-layer d=8 induction model (568 parameters) after 40 training steps, saved as tscope saves models."""
    out = tmp_path_factory.mktemp("small_model")
    result = train_tiny(
        "induction",
        steps=40,
        seed=0,
        config={"d_model": 8, "n_layer": 1, "n_head": 2},
        task_kwargs=SMALL_TASK,
        progress=False,
        num_threads=1,
    )
    save_model(out, result)
    return out


def small_config(model_dir: Path, analysis: str, output: str = "") -> str:
    return f"""
[model]
kind = "tiny"
path = "{model_dir.as_posix()}"
[data]
samples = 16
[analysis]
batch_size = 8
{analysis}
[output]
{output}
"""


def saved_batches(tensors: dict, batch_size: int = 8) -> list[dict]:
    """The loss batches a run used, rebuilt from its results file."""
    ids, labels = tensors["data.input_ids"], tensors["data.labels"]
    return [
        {"input_ids": ids[a : a + batch_size], "labels": labels[a : a + batch_size]}
        for a in range(0, len(ids), batch_size)
    ]


def token_weighted_loss(model, batches) -> float:
    """The loss every curvature and landscape kernel uses: the mean over all labelled tokens, in float64."""
    adapter = adapt(model).analysis(torch.float64)
    with torch.no_grad():
        total = sum(adapter.loss(b).item() * adapter.num_targets(b) for b in batches)
    return total / sum(adapter.num_targets(b) for b in batches)


def test_run_curvature_matches_the_kernels_and_the_dense_hessian(tmp_path, small_model_dir):
    analysis = """kind = "curvature"
k = 2
tol = 1e-9
trace_matvecs = 12
density_probes = 3
density_steps = 20
seed = 3"""
    out = tmp_path / "out"
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "save_model = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["curvature.safetensors", "meta.json", "report.html"]
    tensors, meta = load_results(out)
    assert meta["analysis"] == "curvature" and meta["samples"] == 16 and meta["batches"] == 2
    model, _ = load_model(small_model_dir)
    batches = saved_batches(tensors)
    assert tensors["data.input_ids"].shape == (16, 9)

    # Truth: the dense float64 Hessian of the same loss.
    H = dense_hessian(model, batches)
    exact = torch.linalg.eigvalsh(H)
    eigenvalues, residuals = tensors["eigenvalues"], tensors["residual_norms"]
    assert meta["lanczos"]["converged"] and meta["lanczos"]["eigenvalues"] == eigenvalues.tolist()
    torch.testing.assert_close(eigenvalues, torch.cat([exact[:2], exact[-2:]]), rtol=0, atol=1e-7 * exact.abs().max())
    assert residuals.max() <= 1e-9 * exact.abs().max()
    summary = meta["summary"]
    lam_min, lam_max = eigenvalues[0].item(), eigenvalues[-1].item()
    assert summary["sharpness"] == lam_max and summary["lambda_min"] == lam_min
    assert summary["condition_number"] == pytest.approx(abs(lam_max / lam_min), rel=1e-14)
    assert meta["operator"]["num_params"] == H.shape[0] == 568 and meta["operator"]["kind"] == "hessian"
    assert meta["operator"]["loss"] == pytest.approx(token_weighted_loss(model, batches), rel=1e-12)

    # The same kernels called directly, each with a generator seeded with [analysis].seed, give the same numbers.
    op = HessianOperator(model, batches, dtype=torch.float64)
    direct = lanczos(op, 2, "both", tol=1e-9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(eigenvalues, direct.eigenvalues, rtol=1e-10, atol=0)
    trace = hutchpp_trace(op, 12, generator=torch.Generator().manual_seed(3))
    assert meta["trace"]["value"] == pytest.approx(trace.value, rel=1e-10)
    assert meta["trace"]["stderr"] == pytest.approx(trace.stderr, rel=1e-8)
    assert abs(meta["trace"]["value"] - H.trace().item()) <= 4 * meta["trace"]["stderr"]
    density = slq_density(op, 3, 20, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(tensors["density.grid"], density.grid, rtol=1e-10, atol=0)
    torch.testing.assert_close(tensors["density.values"], density.density, rtol=1e-8, atol=1e-12)
    assert summary["negative_fraction"] == pytest.approx(density.mass_below(0.0), abs=1e-12)
    area = torch.trapezoid(tensors["density.values"], tensors["density.grid"]).item()
    assert area == pytest.approx(1.0, abs=1e-3)

    # Block norms: exact here (568 <= 4096 parameters), so they equal the blocks of the dense Hessian.
    labels = meta["block_norms"]["labels"]
    assert meta["block_norms"]["exact"] and labels == list(op.offsets)
    blocks = [[H[op.offsets[a], op.offsets[b]] for b in labels] for a in labels]
    frobenius = torch.tensor([[block.norm().item() for block in row] for row in blocks], dtype=torch.float64)
    torch.testing.assert_close(tensors["blocks.frobenius"], frobenius, rtol=1e-9, atol=1e-12)
    spectral = [torch.linalg.eigvalsh(row[i]).abs().max().item() for i, row in enumerate(blocks)]
    spectral = torch.tensor(spectral, dtype=torch.float64)
    torch.testing.assert_close(tensors["blocks.spectral"], spectral, rtol=1e-9, atol=1e-12)

    report = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(out / "report.html")
    assert "Spectral density of the Hessian" in report and "block0.attn.q" in report


# torch's forward-mode AD (the GGN's jvp route) loads decompositions that call the deprecated torch.jit.script.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", ["ggn", "functional"])
def test_run_curvature_of_the_gauss_newton_and_functional_parts(tmp_path, small_model_dir, kind):
    analysis = f"kind = 'curvature'\nhessian_kind = '{kind}'\nk = 1\ntol = 1e-9\ntrace_matvecs = 0\ndensity_probes = 0"
    out = tmp_path / "out"
    config = small_config(small_model_dir, f"{analysis}\nblock_norms = false", "report = false\nsave_model = false")
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert meta["operator"]["kind"] == kind and meta["trace"] is meta["density"] is meta["block_norms"] is None
    exact = torch.linalg.eigvalsh(dense_hessian(load_model(small_model_dir)[0], saved_batches(tensors), kind=kind))
    expected = torch.stack([exact[0], exact[-1]])
    torch.testing.assert_close(tensors["eigenvalues"], expected, rtol=0, atol=1e-7 * exact.abs().max())
    if kind == "ggn":  # positive semi-definite with a null space (384 scored logits directions < 568 parameters)
        assert abs(meta["summary"]["lambda_min"]) < 1e-8 * meta["summary"]["sharpness"]
        assert any("condition number is ill-defined" in w for w in meta["warnings"])


def test_run_curvature_stopping_on_the_eigenvalue_error_estimate(tmp_path, small_model_dir):
    runs = {}
    for criterion in ("residual", "eigenvalue"):
        analysis = (f"kind = 'curvature'\nk = 1\ntol = 1e-8\ncriterion = '{criterion}'\ntrace_matvecs = 0\n"
                    "density_probes = 0\nblock_norms = false")
        out = tmp_path / criterion
        config = small_config(small_model_dir, analysis, "report = false\nsave_model = false")
        assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), *FAST]) == 0
        runs[criterion] = load_results(out)
    tensors, meta = runs["eigenvalue"]
    exact = torch.linalg.eigvalsh(dense_hessian(load_model(small_model_dir)[0], saved_batches(tensors)))
    torch.testing.assert_close(tensors["eigenvalues"], torch.stack([exact[0], exact[-1]]), rtol=0,
                               atol=1e-8 * exact.abs().max())
    assert meta["lanczos"]["converged"]
    assert max(meta["lanczos"]["error_estimates"]) <= 1e-8 * exact.abs().max()
    assert meta["lanczos"]["num_matvecs"] < runs["residual"][1]["lanczos"]["num_matvecs"]


def test_run_curvature_says_when_lanczos_did_not_converge(tmp_path, capsys, small_model_dir):
    analysis = "kind = 'curvature'\nk = 1\nmax_iter = 3\ntrace_matvecs = 0\ndensity_probes = 0\nblock_norms = false"
    out = tmp_path / "out"
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "report = false\nsave_model = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    _, meta = load_results(out)
    assert not meta["lanczos"]["converged"] and meta["lanczos"]["num_iterations"] == 3
    assert meta["warnings"][0].startswith("Lanczos stopped after 3 steps without reaching tol=1e-06")
    captured = capsys.readouterr()
    assert "NOT converged" in captured.out and "warning: Lanczos stopped after 3 steps" in captured.err


def test_run_landscape_is_reproducible_from_its_files(tmp_path, small_model_dir):
    out = tmp_path / "out"
    analysis = 'kind = "landscape"\nresolution = 5\nspan = 0.5\nseed = 2'
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "log = true"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    grid = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5], dtype=torch.float64)
    assert torch.equal(tensors["alphas"], grid) and torch.equal(tensors["betas"], grid)
    assert tensors["loss"].shape == tensors["accuracy"].shape == (5, 5)

    # The slice again from the saved model and directions: the same numbers.
    directions, how = load_directions(out / "directions.safetensors")
    assert list(directions) == ["d1", "d2"] and how["kind"] == "random" and how["seed"] == 2
    saved, _ = load_model(out)
    model, _ = load_model(small_model_dir)
    for name, p in model.state_dict().items():
        assert torch.equal(saved.state_dict()[name], p), name
    d1, d2 = directions["d1"], directions["d2"]
    assert set(d1) == {n for n, _ in model.named_parameters()} and d1["wte.weight"].dtype == torch.float64
    assert not torch.equal(d1["wte.weight"], d2["wte.weight"])
    batches = saved_batches(tensors)
    again = list(slice_2d(saved, batches, d1, d2, grid, grid, dtype=torch.float64))[-1]
    torch.testing.assert_close(tensors["loss"], again.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(tensors["accuracy"], again.accuracy, rtol=0, atol=0)

    # The centre of the grid is the model itself.
    origin = token_weighted_loss(model, batches)
    assert meta["origin_loss"] == pytest.approx(origin, rel=1e-12)
    assert tensors["loss"][2, 2].item() == pytest.approx(origin, rel=1e-12)
    assert tensors["origin"][0].item() == meta["origin_loss"]
    assert meta["loss_min"] == tensors["loss"].min().item() and meta["nonfinite_points"] == 0
    assert_self_contained(out / "report.html")
    assert "MultiLine" in (out / "report.html").read_text(encoding="utf-8")  # contour lines


def test_run_landscape_along_hessian_eigenvectors(tmp_path, small_model_dir):
    out = tmp_path / "out"
    span = 1e-3
    analysis = f'kind = "landscape"\ndirections = "eigen"\nresolution = 3\nspan = {span}\ntol = 1e-10'
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "report = false\nsave_model = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["directions.safetensors", "landscape.safetensors", "meta.json"]
    tensors, meta = load_results(out)
    directions, how = load_directions(out / "directions.safetensors")
    model, _ = load_model(small_model_dir)
    op = HessianOperator(model, saved_batches(tensors), dtype=torch.float64)
    top = lanczos(op, 2, "largest", tol=1e-10, generator=torch.Generator().manual_seed(1)).eigenvalues.flip(0)
    assert how["kind"] == "eigen" and how["eigenvalues"] == meta["directions"]["eigenvalues"]
    assert how["eigenvalues"] == pytest.approx(top.tolist(), rel=1e-8)
    for d in directions.values():  # unit norm in the flat parameter space
        assert sum(t.square().sum() for t in d.values()).item() == pytest.approx(1.0, rel=1e-10)
    # Second differences of the slice along each unit eigenvector give its eigenvalue.
    loss = tensors["loss"]
    along_1 = (loss[0, 1] + loss[2, 1] - 2 * loss[1, 1]) / span**2
    along_2 = (loss[1, 0] + loss[1, 2] - 2 * loss[1, 1]) / span**2
    assert along_1.item() == pytest.approx(how["eigenvalues"][0], rel=1e-3)
    assert along_2.item() == pytest.approx(how["eigenvalues"][1], rel=1e-3)


def test_examples_of_curvature_and_landscape_run_on_a_small_model(tmp_path, small_model_dir):
    for name, written in (("tiny_curvature", "curvature.safetensors"), ("tiny_landscape", "landscape.safetensors")):
        text = (EXAMPLES / f"{name}.toml").read_text()
        kind = name.removeprefix("tiny_")
        assert load_config(EXAMPLES / f"{name}.toml")["analysis"]["kind"] == kind
        model_table = 'kind = "tiny"\ntask = "induction"\nseed = 0\n'
        assert model_table in text and "samples = 64" in text
        text = text.replace(model_table, f'kind = "tiny"\npath = "{small_model_dir.as_posix()}"\n')
        text = text.replace("samples = 64", "samples = 16")
        out = tmp_path / name
        assert main(["run", str(write_config(tmp_path, text)), "--out", str(out), *FAST]) == 0
        assert (out / written).is_file() and (out / "report.html").is_file()
        _, meta = load_results(out)
        assert meta["config"]["analysis"]["kind"] == kind and meta["samples"] == 16
    _, meta = load_results(tmp_path / "tiny_curvature")
    assert meta["block_norms"]["labels"] == [f"block0.attn.{x}" for x in "qkvo"]


ANALYSIS_ERRORS = [
    ("kind = 'hessian'",
     r"\[analysis\]\.kind = 'hessian'; choose one of \['sensitivity', 'curvature', 'landscape', 'attention', "
     r"'blocks', 'growth_rates'\]"),
    ("kind = 'curvature'\nk = 0", r"\[analysis\]\.k must be >= 1, got 0"),
    ("kind = 'curvature'\ntol = 0", r"\[analysis\]\.tol must be a number in \(0, 1\), got 0"),
    ("kind = 'curvature'\ntol = 'small'", r"\[analysis\]\.tol must be a number, got str 'small'"),
    ("kind = 'curvature'\ntrace_matvecs = 2", r"trace_matvecs must be 0 \(off\) or >= 3 .* got 2"),
    ("kind = 'curvature'\ndensity_probes = -1", r"density_probes must be >= 0 \(0 = no density\), got -1"),
    ("kind = 'curvature'\ndensity_steps = 0", r"\[analysis\]\.density_steps must be >= 1, got 0"),
    ("kind = 'curvature'\nblock_norms = 'all'", r"block_norms must be true/false or a list, got str 'all'"),
    ("kind = 'curvature'\nblock_norms = []", r"block_norms must be true, false or a non-empty list"),
    ("kind = 'curvature'\nhessian_kind = 'fisher'", r"choose one of \['hessian', 'ggn', 'functional'\]"),
    ("kind = 'curvature'\ncriterion = 'value'", r"choose one of \['residual', 'eigenvalue'\]"),
    ("kind = 'landscape'\ndirections = 'pca'", r"directions = 'pca'; choose one of \['random', 'eigen'\]"),
    ("kind = 'landscape'\nspan = -1.5", r"\[analysis\]\.span must be a positive number, got -1.5"),
    ("kind = 'landscape'\nresolution = 1", r"resolution must be >= 2 grid points per direction, got 1"),
    ("k = 3", r"key\(s\) \['k'\] do not apply to kind = 'sensitivity' \(they belong to k: curvature\)"),
    ("kind = 'curvature'\nlayers = 'all'\nspan = 1", r"\['layers', 'span'\] do not apply to kind = 'curvature'"),
    ("kind = 'landscape'\nk = 2", r"\(they belong to k: curvature\)"),
    ("kind = 'landscape'\n[output]\nstatistics = ['mean']", r"\[output\]\.statistics applies to kind = 'sensitivity'"),
]


@pytest.mark.parametrize(("analysis", "message"), ANALYSIS_ERRORS)
def test_bad_curvature_and_landscape_keys_are_rejected(tmp_path, capsys, analysis, message):
    import tomllib

    text = f"[model]\nkind = 'tiny'\n[analysis]\n{analysis}\n"
    with pytest.raises(ConfigError, match=message):
        validate_config(tomllib.loads(text))
    assert main(["run", str(write_config(tmp_path, text)), *FAST]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_valid_curvature_and_landscape_configs_keep_only_their_keys():
    import tomllib

    cfg = validate_config(tomllib.loads("[model]\nkind = 'tiny'\n[analysis]\nkind = 'curvature'\ntol = 1e-3\n"))
    assert cfg["analysis"]["tol"] == 1e-3 and cfg["analysis"]["k"] == 3 and cfg["analysis"]["block_norms"] is True
    assert set(cfg["analysis"]) == {"kind", "batch_size", "max_seq_len", "dtype", "seed", *ANALYSIS_KEYS["curvature"]}
    assert "statistics" not in cfg["output"]
    cfg = validate_config(tomllib.loads("[model]\nkind = 'tiny'\n[analysis]\nkind = 'landscape'\nspan = 2\n"))
    assert cfg["analysis"]["span"] == 2 and cfg["analysis"]["directions"] == "random"
    assert cfg["analysis"]["resolution"] == 21 and "k" not in cfg["analysis"] and "layers" not in cfg["analysis"]


def test_curvature_and_landscape_errors_found_while_running(tmp_path, capsys, monkeypatch, small_model_dir):
    quick = "kind = 'curvature'\nk = 1\ntol = 1e-2\ntrace_matvecs = 0\ndensity_probes = 0"
    cases = [
        (f"{quick}\nblock_norms = ['nope.*']", "[analysis].block_norms: unknown parameter group 'nope.*'"),
        ("kind = 'curvature'\nk = 1000", "[analysis]: k must be an int in [1, N=568]"),
    ]
    for analysis, message in cases:
        config = write_config(tmp_path, small_config(small_model_dir, analysis))
        assert main(["run", str(config), "--out", str(tmp_path / "o"), *FAST]) == 2
        assert message in capsys.readouterr().err
    config = write_config(tmp_path, small_config(small_model_dir, quick))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--resume", *FAST]) == 2
    assert "--resume continues a sensitivity or growth_rates run" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the output folder is made


# ======================================================================================
# The package's layout
# ======================================================================================
# each imports only those before it
CLI_LAYERS = (
    "config", "limits", "prepare", "runs", "reports", "attention", "blocks", "growth", "compare_paired", "compare",
    "sweep_config", "sweep_rows", "sweep_report", "sweep", "commands",
)


def test_cli_modules_import_downward_and_never_the_widgets():
    import ast

    import tscope_widgets.cli as cli
    import tscope_widgets.tasks as tasks

    package = ROOT / "tscope_widgets" / "cli"
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*CLI_LAYERS, "__init__", "__main__"])
    widget_imports = []
    for i, name in enumerate(CLI_LAYERS):
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 1:  # a sibling in cli/
                assert node.module in CLI_LAYERS[:i], f"cli/{name}.py imports .{node.module} (upward or unknown)"
            module = node.module or ""
            if (node.level == 2 and module.split(".")[0] == "widgets") or module.startswith("tscope_widgets.widgets"):
                widget_imports.append(name)
    assert widget_imports == []  # pictures come from tscope_widgets.figures
    assert cli.induction_reading is tasks.induction_reading and cli.describe_induction is tasks.describe_induction
    assert callable(cli.main) and cli.main is cli.commands.main


# ======================================================================================
# Under torchrun: 2 gloo processes on the CPU
# ======================================================================================
# Rank 0 holds samples 0, 2, 4, 6 (batches of 2, 2), rank 1 samples 1, 3, 5 (batches of 2, 1).
TORCHRUN_TRAIN = """
[model]
kind = "tiny"
task = "induction"
steps = 20
tiny_config = {d_model = 8, n_layer = 1, n_head = 2}
task_kwargs = {num_symbols = 8, k_max = 4, k_min = 2}
[data]
samples = 7
[analysis]
layers = "all"
batch_size = 2
checkpoint_every = 1
"""
TORCHRUN_HF_TRAINED = """
[model]
kind = "hf"
steps = 6
task_kwargs = {num_symbols = 6, k_max = 3, k_min = 2}
config = {model_type = "gpt2", vocab_size = 12, n_positions = 16, n_embd = 8, n_layer = 1, n_head = 2}
[data]
samples = 3
[analysis]
layers = "final"
batch_size = 2
dtype = "float64"
[output]
report = false
"""
DIST_TIMEOUT_S = 15  # of the worker's own group; the curvature and landscape runs in it wait seconds under load
SLEEP_ON_RANK1_S = 20  # rank 1 is this late at the merge in the timeout scenario


# 7 samples in batches of 2: rank 0 holds batches 0 and 2 (4 sequences), rank 1 batches 1 and 3 (3 sequences).
TORCHRUN_CURVATURE = """
kind = "curvature"
k = 2
tol = 1e-8
trace_matvecs = 12
density_probes = 2
density_steps = 6
block_norms = ["block0.attn.*"]
"""
TORCHRUN_LANDSCAPE = """
kind = "landscape"
directions = "eigen"
span = 0.5
resolution = 5
tol = 1e-8
"""


def loaded_config(model_dir: Path) -> str:
    """The sensitivity analysis of TORCHRUN_TRAIN on the model that run saved, writing only statistics."""
    return torchrun_analysis_config(model_dir, 'layers = "all"\ncheckpoint_every = 1')


def torchrun_analysis_config(model_dir: Path, analysis: str, dtype: str = "float64") -> str:
    """An analysis of the model TORCHRUN_TRAIN saved, on its 7 samples in batches of 2, writing only results."""
    return f"""
[model]
kind = "tiny"
path = "{model_dir.as_posix()}"
[data]
samples = 7
[analysis]
batch_size = 2
dtype = "{dtype}"
{analysis}
[output]
report = false
save_model = false
"""


def file_barrier(work: Path, name: str, rank: int, world: int = 2) -> None:
    """Wait until every rank has reached ``name`` (files, so that no collective can time out meanwhile)."""
    (work / f"barrier-{name}-{rank}").touch()
    deadline = time.monotonic() + 120
    while not all((work / f"barrier-{name}-{r}").exists() for r in range(world)):
        assert time.monotonic() < deadline, f"rank {rank}: the other rank never reached {name}"
        time.sleep(0.05)


def fail_on_second_batch(real):
    calls = []

    def position_sensitivity(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("injected failure in the second batch of rank 1")
        return real(*args, **kwargs)

    return position_sensitivity


def late(real):
    calls = []

    def position_sensitivity(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(SLEEP_ON_RANK1_S)
        return real(*args, **kwargs)

    return position_sensitivity


def torchrun_worker(work: Path) -> None:
    """One rank of ``python -m torch.distributed.run --nproc-per-node 2 -m tests.test_cli WORK``.

    First ``tscope run`` exactly as the command runs it (main() joins torchrun's process group and leaves
    it), printing to the real stdout. Then scenarios with faults injected on rank 1, in a group of the
    worker's own (torchrun's store takes no second group) with a short timeout, their output captured;
    everything main() returned or raised goes to WORK/results<rank>.json.
    """
    import torch.distributed as dist

    from tscope_widgets import jobs
    from tscope_widgets.cli import commands, prepare
    from tscope_widgets.kernels.sensitivity import stream as sensitivity  # where _Run looks it up

    rank = int(os.environ["RANK"])
    results = {"run": main(["run", str(work / "train.toml"), "--out", str(work / "run"), *FAST])}
    file_barrier(work, "run", rank)
    dist.init_process_group("gloo", store=dist.FileStore(str(work / "store"), 2), rank=rank, world_size=2,
                            timeout=timedelta(seconds=DIST_TIMEOUT_S))
    loaded = str(work / "loaded.toml")
    for kind in ("curvature", "landscape"):  # main() runs in the group it finds
        out = io.StringIO()
        with redirect_stdout(out):
            rc = main(["run", str(work / f"{kind}.toml"), "--out", str(work / kind), *FAST])
        results[kind] = [rc, out.getvalue()]
        file_barrier(work, kind, rank)

    def scenario(name: str, argv: list[str], fault=None) -> None:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), (fault if rank == 1 and fault else nullcontext()):
            try:
                rc = main(argv)
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                rc = f"{type(exc).__name__}: {exc}"
        results[name] = [rc, out.getvalue(), err.getvalue()]
        file_barrier(work, name, rank)

    def perturbed_model(*args, **kwargs):
        prepared = real_prepare_tiny(*args, **kwargs)
        with torch.no_grad():
            prepared.model.blocks[0].attn.k.weight[0, 0] += 1e-6
        return prepared

    real_prepare_tiny = prepare.prepare_tiny
    scenario("data_failure", ["run", loaded, "--out", str(work / "never"), *FAST],
             mock.patch.object(commands, "prepare_data", side_effect=ConfigError("[data].ids: injected on rank 1")))
    scenario("resume_missing", ["run", loaded, "--out", str(work / "never"), "--resume", *FAST])
    scenario("model_differs", ["run", loaded, "--out", str(work / "never"), *FAST],
             mock.patch.object(prepare, "prepare_tiny", perturbed_model))
    interrupted = ["run", loaded, "--out", str(work / "interrupted"), *FAST]
    real_sensitivity = sensitivity.position_sensitivity
    scenario("shard_failure", interrupted,
             mock.patch.object(sensitivity, "position_sensitivity", fail_on_second_batch(real_sensitivity)))
    scenario("resume", [*interrupted, "--resume"])
    disk_full = mock.patch.object(jobs, "save_checkpoint", side_effect=OSError("disk full (injected on rank 1)"))
    scenario("checkpoint_failure", ["run", loaded, "--out", str(work / "unsaved"), *FAST], disk_full)
    scenario("demo", ["demo", "--quick", "--steps", "10", "--samples", "3", "--layers", "final",
                      "--out", str(work / "demo"), *FAST])
    (work / "hf_trained.toml").write_text(TORCHRUN_HF_TRAINED)
    scenario("hf_trained", ["run", str(work / "hf_trained.toml"), "--out", str(work / "hf_trained"), *FAST])
    scenario("timeout", ["run", loaded, "--out", str(work / "late"), *FAST],
             mock.patch.object(sensitivity, "position_sensitivity", late(real_sensitivity)))
    (work / f"results{rank}.json").write_text(json.dumps(results))
    file_barrier(work, "end", rank)
    dist.destroy_process_group()  # gloo's threads left running abort the interpreter at exit (SIGABRT)


def loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


@pytest.fixture(scope="module")
def torchrun_work(tmp_path_factory) -> tuple[Path, str]:
    """Runs :func:`torchrun_worker` on 2 ranks; returns the work folder and torchrun's output."""
    work = tmp_path_factory.mktemp("torchrun")
    (work / "train.toml").write_text(TORCHRUN_TRAIN)
    (work / "loaded.toml").write_text(loaded_config(work / "run"))
    (work / "curvature.toml").write_text(torchrun_analysis_config(work / "run", TORCHRUN_CURVATURE))
    (work / "landscape.toml").write_text(torchrun_analysis_config(work / "run", TORCHRUN_LANDSCAPE))
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=loopback_interface(), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "tests.test_cli", str(work)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return work, proc.stdout


def rank_results(work: Path) -> list[dict]:
    return [json.loads((work / f"results{r}.json").read_text()) for r in range(2)]


def assert_same_statistics(got: dict, want: dict, exact: bool) -> None:
    assert list(got) == list(want)
    for layer in want:
        for key in ("count", "min", "max", "rows"):
            assert torch.equal(got[layer].state_dict()[key], want[layer].state_dict()[key]), (layer, key)
        for key in ("mean", "std"):
            tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-12, "atol": 0}
            torch.testing.assert_close(getattr(got[layer], key), getattr(want[layer], key), equal_nan=True,
                                       msg=f"{layer} {key}", **tol)


def test_torchrun_sensitivity_equals_one_process_and_rank0_writes_once(torchrun_work, tmp_path):
    work, stdout = torchrun_work
    assert [r["run"] for r in rank_results(work)] == [0, 0]
    reference = tmp_path / "reference"
    assert main(["run", str(work / "train.toml"), "--out", str(reference), *FAST]) == 0
    stats, meta = load_statistics(work / "run")
    want, want_meta = load_statistics(reference)
    assert_same_statistics(stats, want, exact=False)
    assert stats[0].total_count == 7 and stats[0].count.max() == 7 and meta["samples"] == 7
    assert (meta["world_size"], meta["merged"], meta["batches"]) == (2, True, 4)
    assert meta["token_labels"] == want_meta["token_labels"]
    # Rank 0 trained the model and broadcast it: the model of a one-process run, bit for bit.
    model, _ = load_model(work / "run")
    one_process, _ = load_model(reference)
    for key, value in one_process.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # One set of files, as in one process, and one checkpoint folder per rank; rank 0 alone printed.
    assert sorted(p.name for p in (work / "run").iterdir()) == sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in (work / "run" / "checkpoint").iterdir()) == ["rank0-of-2", "rank1-of-2"]
    assert stdout.count("wrote:") == 1 and stdout.count("trained tiny model") == 1
    assert stdout.count("sensitivity over 7 samples") == 1


@pytest.mark.parametrize("kind", ["curvature", "landscape"])
def test_torchrun_curvature_and_landscape_equal_one_process(torchrun_work, tmp_path, kind):
    work, _ = torchrun_work
    rank0, rank1 = (r[kind] for r in rank_results(work))
    assert rank0[0] == rank1[0] == 0 and "wrote:" in rank0[1] and rank1[1] == ""  # rank 0 alone writes
    assert main(["run", str(work / f"{kind}.toml"), "--out", str(tmp_path / kind), *FAST]) == 0
    got, meta = load_results(work / kind)
    want, want_meta = load_results(tmp_path / kind)
    assert got.keys() == want.keys() and len(got) > 3
    for key, value in want.items():
        if value.is_floating_point():
            scale = max(float(value.abs().max()), 1.0)  # absolute 1e-10 for tiny values (residuals)
            assert float((got[key] - value).abs().max()) <= 1e-10 * scale, key
        else:
            assert torch.equal(got[key], value), key
    assert meta["samples"] == want_meta["samples"] == 7


def test_torchrun_failures_stop_every_rank_with_the_message(torchrun_work):
    work, _ = torchrun_work
    rank0, rank1 = rank_results(work)
    # A rank that fails while preparing: every rank stops; rank 0 reports it once.
    assert rank0["data_failure"][0] == rank1["data_failure"][0] == 2
    assert "rank(s) [1] failed while preparing the data: ConfigError: [data].ids: injected on rank 1" in (
        rank0["data_failure"][2])
    assert rank1["data_failure"][2] == ""
    # --resume without checkpoints: refused on every rank before anything runs.
    assert rank0["resume_missing"][0] == rank1["resume_missing"][0] == 2
    assert (f"rank(s) [0, 1] failed while looking for the checkpoint: ConfigError: --resume: "
            f"{work / 'never' / 'checkpoint'} has no rank<r>-of-2 checkpoints") in rank0["resume_missing"][2]
    assert rank1["resume_missing"][2] == ""
    # Ranks whose weights differ refuse (here: one weight off by 1e-6 on rank 1).
    for rank in (rank0, rank1):
        assert rank["model_differs"][0] == 2
        assert "the model differs between rank 0 and rank 1 (first at 'blocks.0.attn.k.weight')" in (
            rank["model_differs"][2])
    # A rank that fails inside its shard: its own error there, the message on rank 0, no hang.
    assert rank0["shard_failure"][0] == 1
    assert ("rank(s) [1] failed while processing their shard: ValueError: injected failure in the second "
            "batch of rank 1") in rank0["shard_failure"][2]
    assert rank1["shard_failure"][0] == "ValueError: injected failure in the second batch of rank 1"
    # A checkpoint that rank 1 cannot write counts as a failure of its shard.
    assert rank0["checkpoint_failure"][0] == 1
    assert rank1["checkpoint_failure"][0] == "OSError: disk full (injected on rank 1)"
    assert "rank(s) [1] failed while processing their shard: OSError: disk full" in rank0["checkpoint_failure"][2]
    assert not (work / "unsaved" / "statistics.safetensors").exists()
    assert not (work / "never").exists()


def test_torchrun_resume_continues_each_rank_from_its_checkpoint(torchrun_work, capsys):
    work, _ = torchrun_work
    rank0, rank1 = rank_results(work)
    assert rank0["resume"][0] == rank1["resume"][0] == 0
    assert "wrote:" in rank0["resume"][1] and rank1["resume"][1] == ""
    # Rank 1 had saved 1 of its 2 batches when it failed; resumed, the statistics are the uninterrupted
    # run's bit for bit (same model, shards and batches).
    resumed, meta = load_statistics(work / "interrupted")
    uninterrupted, _ = load_statistics(work / "run")
    assert_same_statistics(resumed, uninterrupted, exact=True)
    assert meta["world_size"] == 2 and meta["samples"] == 7
    # Without torchrun the per-rank checkpoints are not resumed, and the message says how to.
    loaded = str(work / "loaded.toml")
    assert main(["run", loaded, "--out", str(work / "interrupted"), "--resume", *FAST]) == 2
    err = capsys.readouterr().err
    assert "holds the checkpoints of a run under torchrun: resume that with torchrun --nproc-per-node 2" in err


def test_torchrun_demo_runs_on_both_ranks_and_writes_once(torchrun_work):
    work, _ = torchrun_work
    rank0, rank1 = rank_results(work)
    assert rank0["demo"][0] == rank1["demo"][0] == 0
    assert "held-out accuracy" in rank0["demo"][1] and "Curvature" in rank0["demo"][1]
    assert rank1["demo"][1] == ""
    stats, meta = load_statistics(work / "demo")
    assert list(stats) == ["final"] and meta["samples"] == 3 and meta["world_size"] == 2
    assert (work / "demo" / "report.html").is_file()


def test_torchrun_trains_a_hf_model_on_rank_0_and_analyses_it_on_both(torchrun_work):
    """Rank 0 trains, the other ranks receive its weights (the ranks' digests then agree) and its task."""
    from transformers import AutoModelForCausalLM

    work, _ = torchrun_work
    rank0, rank1 = rank_results(work)
    assert rank0["hf_trained"][0] == rank1["hf_trained"][0] == 0, (rank0["hf_trained"], rank1["hf_trained"])
    assert "trained GPT2LMHeadModel on induction for 6 steps" in rank0["hf_trained"][1]
    stats, meta = load_statistics(work / "hf_trained")
    assert meta["world_size"] == 2 and meta["samples"] == 3 and meta["model"]["training"]["steps"] == 6
    model = AutoModelForCausalLM.from_pretrained(work / "hf_trained" / "model").double()
    ids = task_dataset(get_task("induction", num_symbols=6, k_max=3, k_min=2), 3, 1).data
    want = position_sensitivity(model, ids, layers=["final"], method="exact")["final"]
    assert torch.allclose(stats["final"].mean, want.mean(0), rtol=1e-10, atol=0)


def test_torchrun_rank_that_falls_behind_times_out_with_a_message(torchrun_work):
    work, _ = torchrun_work
    rank0, rank1 = rank_results(work)
    assert rank0["timeout"][0] == 1 and rank1["timeout"][0] == 1
    for rank, results in enumerate((rank0, rank1)):
        assert f"tscope: error: rank {rank} of 2: waiting for the other processes failed" in results["timeout"][2]
    assert "Timed out" in rank0["timeout"][2]  # rank 0 waited at the merge for DIST_TIMEOUT_S
    assert not (work / "late" / "statistics.safetensors").exists()


if __name__ == "__main__":
    torchrun_worker(Path(sys.argv[1]))
