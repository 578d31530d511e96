"""``tscope run`` with kind = "blocks": block densities, their heterogeneity and the sharpness by block type,
against the kernels and dense float64 diagonal blocks; the example configs; config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch

from tests.test_cli import EXAMPLES, FAST, assert_self_contained, saved_batches, small_config, write_config
from tests.test_cli import small_model_dir as small_model_dir  # noqa: F401 (the module fixture)
from tscope_widgets.cli import ConfigError, main, validate_config
from tscope_widgets.cli.blocks import check_single_process
from tscope_widgets.export.results import load_results
from tscope_widgets.kernels import block_densities, block_type, spectral_heterogeneity
from tscope_widgets.kernels.curvature import HessianOperator, dense_hessian
from tscope_widgets.training import load_model

ANALYSIS = """kind = "blocks"
block_probes = 2
block_steps = 80
seed = 5"""


def test_run_blocks_matches_the_kernels_and_the_dense_blocks(tmp_path, small_model_dir):  # noqa: F811
    out = tmp_path / "out"
    config = write_config(tmp_path, small_config(small_model_dir, ANALYSIS, "save_model = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["blocks.safetensors", "meta.json", "report.html"]
    tensors, meta = load_results(out)
    assert meta["analysis"] == "blocks" and meta["samples"] == 16 and meta["batches"] == 2
    model, _ = load_model(small_model_dir)
    batches = saved_batches(tensors)
    groups = list(HessianOperator(model, batches).group_sizes)
    assert meta["labels"] == groups  # one block per parameter group, all of them
    # λ_max of each block: 80 Lanczos steps cover every block of this model (at most 72 parameters a block
    # except the embedding, whose top Ritz value converges first): the dense float64 block's largest eigenvalue
    H = dense_hessian(model, batches)
    offsets = HessianOperator(model, batches).offsets
    dense = torch.stack([torch.linalg.eigvalsh(H[offsets[g], offsets[g]])[-1] for g in groups])
    torch.testing.assert_close(tensors["block_lambda_max"], dense, rtol=1e-8, atol=1e-10)
    # by type: the mean of the blocks of each type, as stored
    types = [t for t in ("embed", "qk", "vo", "mlp", "norm", "head") if t in {block_type(g) for g in groups}]
    want = torch.stack([dense[[block_type(g) == t for g in groups]].mean() for t in types])
    torch.testing.assert_close(tensors["types.values"], want, rtol=1e-8, atol=1e-10)
    assert list(meta["type_sharpness"]) == types and meta["block_types"]["block0.attn.v"] == "vo"
    ratios = meta["sdp_ratios"]
    assert ratios["qk/embed"] == pytest.approx(meta["type_sharpness"]["qk"] / meta["type_sharpness"]["embed"])
    holds = all(r > 1 for r in ratios.values())
    assert meta["sdp_order_holds"] is holds
    # the densities and JS⁰ are those of the kernels with the run's seed, to the last bits
    again = spectral_heterogeneity(block_densities(model, batches, None, 2, 80,
                                                   generator=torch.Generator().manual_seed(5)))
    assert meta["js_mean"] == pytest.approx(again.mean, rel=1e-10)
    torch.testing.assert_close(tensors["js.distances"], again.distances, rtol=1e-9, atol=1e-12)
    assert tensors["density.0.nodes"].shape[0] == 2
    report = out / "report.html"
    assert_self_contained(report)
    text = report.read_text(encoding="utf-8")
    assert "Sharpness Disparity order" in text and ("does not hold" in text) is not holds
    # titles of the figures (Bokeh's JSON escapes non-ASCII letters)
    assert "Shannon distance between block spectra" in text and "of each Hessian block H_aa (kind" in text
    assert "sharpness by block type" in text and "block Hessian spectra" in text


def test_run_blocks_on_chosen_groups_and_bad_configs(tmp_path, small_model_dir, capsys):  # noqa: F811
    analysis = 'kind = "blocks"\nblocks = ["block0.attn.*", "head"]\nblock_probes = 1\nblock_steps = 8'
    out = tmp_path / "out"
    config = write_config(tmp_path, small_config(small_model_dir, analysis, "save_model = false\nreport = false"))
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert meta["labels"] == ["block0.attn.q", "block0.attn.k", "block0.attn.v", "block0.attn.o", "head"]
    assert list(meta["type_sharpness"]) == ["qk", "vo", "head"] and tensors["types.counts"].tolist() == [2, 2, 1]
    assert "S(QK) = " in capsys.readouterr().out
    base = {"model": {"kind": "tiny"}, "analysis": {"kind": "blocks"}}
    for extra, message in [
        ({"blocks": False}, r"\[analysis\].blocks must be true"),
        ({"blocks": []}, r"\[analysis\].blocks must be true"),
        ({"block_probes": 0}, "block_probes"),
        ({"block_steps": -1}, "block_steps"),
        ({"k": 3}, r"do not apply to kind = 'blocks'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "analysis": {"kind": "blocks", **extra}})
    bad = write_config(tmp_path, small_config(small_model_dir, 'kind = "blocks"\nblocks = ["block7.*"]'))
    assert main(["run", str(bad), "--out", str(tmp_path / "bad"), *FAST]) != 0
    assert "block7" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="one process"):
        check_single_process(2)


def test_example_tiny_blocks_runs(tmp_path):
    """The example, with fewer training steps, probes and Lanczos steps so that it takes seconds."""
    text = (EXAMPLES / "tiny_blocks.toml").read_text()
    text = text.replace("steps = 300", "steps = 20").replace("block_probes = 4", "block_probes = 1")
    text = text.replace("block_steps = 40", "block_steps = 6").replace("samples = 16", "samples = 4")
    out = tmp_path / "tiny_blocks"
    assert main(["run", str(write_config(tmp_path, text)), "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert len(meta["labels"]) == 19 and list(meta["type_sharpness"]) == ["embed", "qk", "vo", "mlp", "norm", "head"]
    assert torch.isfinite(tensors["block_lambda_max"]).all()
    assert_self_contained(out / "report.html")


def test_zhang2024_gpt2_example_is_the_papers_selection():
    cfg = validate_config(tomllib.loads((EXAMPLES / "zhang2024_gpt2.toml").read_text()))
    analysis = cfg["analysis"]
    assert analysis["kind"] == "blocks" and analysis["block_probes"] == 10 and analysis["block_steps"] == 100
    assert analysis["dtype"] == "float64"
    want = ["embed"] + [f"block{layer}.{p}" for layer in (0, 3, 7, 11)
                        for p in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.in", "mlp.out")]
    assert analysis["blocks"] == want
    assert cfg["model"]["kind"] == "hf" and Path(EXAMPLES / "zhang2024_gpt2.toml").is_file()


def test_zhang2024_gpt2_example_runs_at_a_toy_width(tmp_path):
    """The paper's selection resolves on a real GPT-2 adapter: the example with GPT-2 small's 12 layers but a
    narrow width, a small vocabulary and a few Lanczos steps (the full run is for a GPU)."""
    text = (EXAMPLES / "zhang2024_gpt2.toml").read_text()
    for old, new in [("vocab_size = 50257", "vocab_size = 64"), ("n_embd = 768", "n_embd = 16"),
                     ("n_head = 12", "n_head = 2"), ("n_positions = 1024", "n_positions = 32"),
                     ("num_symbols = 1000, k_max = 32", "num_symbols = 24, k_max = 4"), ("samples = 16", "samples = 2"),
                     ("block_probes = 10", "block_probes = 1"), ("block_steps = 100", "block_steps = 3"),
                     ("bos_token_id = 50256", "bos_token_id = 0"), ("eos_token_id = 50256", "eos_token_id = 0")]:
        assert old in text
        text = text.replace(old, new)
    out = tmp_path / "zhang"
    assert main(["run", str(write_config(tmp_path, text)), "--out", str(out), *FAST]) == 0
    _, meta = load_results(out)
    assert len(meta["labels"]) == 25 and meta["labels"][-1] == "block11.mlp.out"
    assert list(meta["type_sharpness"]) == ["embed", "qk", "vo", "mlp"]
    assert meta["sizes"]["block3.attn.q"] == 16 * 16 + 16  # a view of c_attn: its q columns and bias
