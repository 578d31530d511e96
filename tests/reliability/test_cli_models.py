"""Finding 5: a Hugging Face model built from a config with no blocks is refused before anything runs."""

from __future__ import annotations

import pytest

from tscope_widgets.cli import main


@pytest.mark.parametrize(
    ("model_type", "key", "value"),
    [("gpt2", "n_layer", 0), ("gpt2", "n_layer", -1), ("llama", "num_hidden_layers", 0)],
)
def test_a_config_without_blocks_exits_2_naming_the_key(tmp_path, capsys, model_type, key, value):
    sizes = "vocab_size = 16, n_embd = 8, n_head = 2" if model_type == "gpt2" else (
        "vocab_size = 16, hidden_size = 8, num_attention_heads = 2, intermediate_size = 16"
    )
    config = tmp_path / "run.toml"
    config.write_text(
        f"[model]\nkind = 'hf'\nconfig = {{model_type = '{model_type}', {key} = {value}, {sizes}}}\n"
        "[data]\ntask = 'induction'\nsamples = 4\n[analysis]\nmax_seq_len = 8\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"[model].config.{key} = {value} builds a model without transformer blocks" in err
    assert not (out / "meta.json").exists()
