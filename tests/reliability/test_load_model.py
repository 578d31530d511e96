"""A saved model whose ``model.json`` asks for more than its weights hold (issue 12, finding 3) is refused from
the weights file's header, before anything is built: ``n_layer = 100000`` used to take 100 s and 6 GB."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tscope_widgets.training as training
from tscope_widgets.cli import main
from tscope_widgets.models import TinyConfig, TinyTransformer
from tscope_widgets.training import load_model, save_model, tiny_parameter_count, tiny_parameter_shapes

FAST = ["--no-progress", "--threads", "1"]
CFG = {"vocab_size": 11, "max_seq_len": 8, "d_model": 8, "n_layer": 2, "n_head": 2}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    save_model(tmp_path / "model", TinyTransformer(TinyConfig(**CFG)))
    return tmp_path / "model"


def _edit_config(model_dir: Path, **changes) -> Path:
    path = model_dir / "model.json"
    info = json.loads(path.read_text())
    info["tiny_config"].update(changes)
    path.write_text(json.dumps(info))
    return path


@pytest.fixture
def nothing_is_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before its config was checked against the weights")

    monkeypatch.setattr(training, "TinyTransformer", refuse)


def test_a_huge_config_is_refused_from_the_header_at_once(model_dir, nothing_is_built):
    path = _edit_config(model_dir, n_layer=100_000)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"model.json describes a model of [\d,]+ parameters, but .*model.safetensors "
                                         r"holds [\d,]+"):
        load_model(model_dir)
    assert time.perf_counter() - start < 5.0
    assert str(path) in str(pytest.raises(ValueError, load_model, model_dir).value)


@pytest.mark.parametrize("changes", [{"d_model": 4096}, {"vocab_size": 10**9}, {"max_seq_len": 10**7},
                                     {"d_mlp": 10**6}, {"bias": False}, {"norm": "none"}])
def test_configs_that_differ_from_the_weights_are_refused(model_dir, nothing_is_built, changes):
    _edit_config(model_dir, **changes)
    with pytest.raises(ValueError, match="model.json describes a model of"):
        load_model(model_dir)


def test_same_count_other_names_or_shapes_are_refused(model_dir, nothing_is_built):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    renamed = dict(tensors)
    renamed["blocks.9.attn.q.weight"] = renamed.pop("blocks.1.attn.q.weight")
    save_file(renamed, weights)
    with pytest.raises(ValueError, match=r"does not hold the weights .*missing \['blocks.1.attn.q.weight'\]"):
        load_model(model_dir)
    reshaped = dict(tensors)
    reshaped["blocks.0.mlp.fc_in.weight"] = reshaped["blocks.0.mlp.fc_in.weight"].T.contiguous()
    save_file(reshaped, weights)
    with pytest.raises(ValueError, match=r"other shapes for \[\('blocks.0.mlp.fc_in.weight', \(8, 32\), \(32, 8\)\)"):
        load_model(model_dir)


def test_a_dtype_that_differs_from_the_weights_is_refused(model_dir, nothing_is_built):
    path = model_dir / "model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dtype": "float64"}))
    with pytest.raises(ValueError, match=r"holds \['F32'\] tensors, .*model.json says float64"):
        load_model(model_dir)


@pytest.mark.parametrize("value", ["3", 2.0, True, None, [2]])
def test_config_values_of_the_wrong_type_are_refused(model_dir, nothing_is_built, value):
    _edit_config(model_dir, n_layer=value)
    with pytest.raises(ValueError, match="model.json: tiny_config.n_layer must be an integer"):
        load_model(model_dir)


def test_unknown_config_keys_are_refused(model_dir, nothing_is_built):
    _edit_config(model_dir, n_layers=3)
    with pytest.raises(ValueError, match="model.json: bad tiny_config"):
        load_model(model_dir)


def test_tscope_run_refuses_a_huge_model_path_config(model_dir, tmp_path, capsys):
    path = _edit_config(model_dir, n_layer=100_000)
    config = tmp_path / "run.toml"
    config.write_text(f"[model]\nkind = 'tiny'\npath = '{model_dir.as_posix()}'\n[data]\ntask = 'induction'\n")
    start = time.perf_counter()
    assert main(["run", str(config), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert time.perf_counter() - start < 10.0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[model].path" in err and str(path) in err and "parameters" in err


@pytest.mark.parametrize("tie,bias,norm,d_mlp", list(itertools.product([False, True], [False, True],
                                                                  ["pre", "post", "none"], [None, 0, 7])))
def test_counts_and_shapes_from_the_config_match_the_model(tmp_path, tie, bias, norm, d_mlp):
    cfg = TinyConfig(**{**CFG, "n_head": 1}, tie_weights=tie, bias=bias, norm=norm, d_mlp=d_mlp)
    model = TinyTransformer(cfg)
    assert tiny_parameter_count(cfg) == sum(p.numel() for p in model.parameters())
    save_model(tmp_path, model)
    saved = {k: tuple(t.shape) for k, t in load_file(tmp_path / "model.safetensors").items()}
    assert saved == tiny_parameter_shapes(cfg)
    back, _ = load_model(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
