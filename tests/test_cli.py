"""The ``tscope`` command line: demo and run end to end, config validation, the induction reading."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tscope_widgets.cli import ConfigError, induction_reading, main, validate_config
from tscope_widgets.export import load_statistics
from tscope_widgets.kernels.welford import WelfordState
from tscope_widgets.training import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
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
        ("[model]\nkind = 'onnx'\n", r"\[model\]\.kind = 'onnx'; choose one of \['tiny', 'hf'\]"),
        ("[modle]\nkind = 'tiny'\n", r"unknown table\(s\) \['modle'\]"),
        ("[model]\nkind = 'hf'\n", "exactly one of name"),
        ("[model]\nkind = 'hf'\nname = 'gpt2'\nsteps = 3\n", r"\['steps'\] apply to kind = 'tiny' only"),
        ("[model]\nkind = 'hf'\nconfig = {n_layer = 2}\n", "needs model_type"),
        ("[model]\nkind = 'hf'\nname = 'gpt2'\n", r"\[data\] needs one of task"),
        ("[model]\nkind = 'tiny'\n[data]\ntask = 'induction'\ntext = 'a.txt'\n", "one of task, text or ids"),
        ("[model]\nkind = 'tiny'\n[analysis]\nmethod = 'approx'\n", r"choose one of \['exact'"),
        ("[model]\nkind = 'tiny'\n[analysis]\nlayers = [1.5]\n", "must hold ints and 'final'"),
        ("[model]\nkind = 'tiny'\n[output]\nstatistics = ['median']\n", r"unknown \['median'\]"),
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


def test_run_hf_config_model_on_a_text_file_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

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
