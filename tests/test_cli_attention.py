"""``tscope run`` with ``kind = "attention"``: files, meta, report, the correlation equal to the kernel's on the
same sequences, and config errors."""

from __future__ import annotations

import re

import pytest
import torch

from tscope_widgets import attention_sensitivity_correlation, attention_sensitivity_samples, head_spectra
from tscope_widgets.cli import ConfigError, main, validate_config
from tscope_widgets.export.results import load_results

FAST = ["--no-progress", "--threads", "1"]

CONFIG = """
[model]
kind = "hf"
seed = 0
[model.config]
model_type = "gpt2"
vocab_size = 32
n_positions = 32
n_embd = 16
n_layer = 2
n_head = 2
n_inner = 32
bos_token_id = 0
eos_token_id = 0
[data]
task = "induction"
task_kwargs = { num_symbols = 12, k_max = 4 }
samples = 12
seed = 1
[analysis]
kind = "attention"
batch_size = 5
correlation_samples = 8
bootstrap = 200
"""


def test_attention_run_writes_statistics_spectra_correlation_and_report(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert meta["analysis"] == "attention" and meta["samples"] == 12 and meta["layers"] == [0, 1]
    S = meta["seq_len"]
    assert tensors["statistics.weights.1.mean"].shape == (2, S, S)
    assert torch.equal(tensors["statistics.weights.1.count"][0, 0], torch.full((S,), 12.0, dtype=torch.float64))
    # the saved spectra and correlation are those of the kernels on the saved model and the same sequences
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    spec = head_spectra(model, dtype=torch.float64)
    assert torch.equal(tensors["spectra.singular_values.qk"], spec.singular_values["qk"])
    table = meta["correlation"]["table"]
    assert set(table) == {"0", "1"} and [r["map"] for r in table["1"]] == ["head0", "head1", "head mean", "rollout"]
    assert meta["correlation"]["samples"] == 8
    ids = tensors["correlation.input_ids"]
    assert ids.shape == (8, S)
    att, roll, sens = attention_sensitivity_samples(model, ids)
    maps = {b: torch.cat([att[b], att[b].mean(1, keepdim=True), roll[b][:, None]], 1) for b in (0, 1)}
    res = attention_sensitivity_correlation(maps, sens, num_bootstrap=200)
    for b in (0, 1):
        assert torch.allclose(res[b].rho, tensors[f"correlation.{b}.rho"], atol=1e-12)
        assert torch.allclose(res[b].low, tensors[f"correlation.{b}.low"], atol=1e-12)
    for r in table["0"]:
        assert -1 <= r["low"] <= r["rho"] <= r["high"] <= 1
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "percentile bootstrap" in report and "mean attention" in report and "W_QK" in report
    assert "wrote:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nkind = 'tiny'\n[analysis]\nkind = 'attention'\nbootstrap = 10\n", r"bootstrap must be >= 100"),
        ("[model]\nkind = 'tiny'\n[analysis]\nkind = 'attention'\ncorrelation_samples = 1\n", "correlation_samples"),
        ("[model]\nkind = 'tiny'\n[analysis]\nkind = 'attention'\nmethod = 'exact'\n", "do not apply"),
        ("[model]\nkind = 'tiny'\n[analysis]\nsensitivity = false\n", "do not apply"),
    ],
)
def test_attention_config_errors(text, message):
    import tomllib

    with pytest.raises(ConfigError, match=message):
        validate_config(tomllib.loads(text))


def test_final_is_not_an_attention_layer(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(CONFIG.replace('kind = "attention"', 'kind = "attention"\nlayers = [0, "final"]'))
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert re.search("'final' is the final norm", capsys.readouterr().err)
