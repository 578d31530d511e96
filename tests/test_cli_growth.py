"""``tscope run`` with ``kind = "growth_rates"``: the quick config end to end, its slopes, resume and config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tscope_widgets.cli import ConfigError, load_config, main, validate_config
from tscope_widgets.export.results import load_results

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "ormaniec2025_quick.toml"
FULL = ROOT / "examples" / "ormaniec2025.toml"
FAST = ["--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("growth")
    assert main(["run", str(QUICK), "--out", str(out), *FAST]) == 0
    return out


def exponents(meta: dict) -> dict[tuple[str, str, str], dict]:
    return {(r["setting"], r["block"], r["part"]): r for r in meta["exponents"]}


def test_quick_config_reaches_the_slope_targets_it_can_support(quick_run):
    """The targets the quick config (d = 16, batches of 16, 3 seeds, one embedding draw per seed scaled by σ, four
    σ <= 0.26 per setting) supports: Q Hessian 5 ± 0.1, Q GGN 6 ± 0.1, V Hessian 2 ± 0.1 and the V functional
    part zero to rounding (one layer, no LayerNorm); linear attention's last-layer Q and V blocks 6 and 18
    within 2 % (one and two layers; 54 at three layers is left to the full run); the Q and V Hessian curves
    cross between σ = 0.78 and 1.13 (interpolated on the log-log scale between the grid points 0.40, 1 and
    2.5). Not supported: more layers, pre-LN (no stated exponents), standard errors over 20 seeds."""
    tensors, meta = load_results(quick_run)
    ex = exponents(meta)
    assert ex[("L=1", "q", "hessian")]["slope"] == pytest.approx(5.0, abs=0.1)
    assert ex[("L=1", "q", "ggn")]["slope"] == pytest.approx(6.0, abs=0.1)
    assert ex[("L=1", "v", "hessian")]["slope"] == pytest.approx(2.0, abs=0.1)
    assert ex[("L=1", "v", "functional")]["functional_over_hessian"] < 1e-10
    for L, k in ((1, 6), (2, 18)):
        for block in ("q", "v"):
            assert ex[(f"linear L={L}", block, "hessian")]["slope"] == pytest.approx(k, rel=0.02)
            assert ex[(f"linear L={L}", block, "hessian")]["paper"] == k
    assert ex[("L=1", "q", "hessian")]["paper"] == 5 and ex[("L=1", "v", "functional")]["paper"] is None
    assert 0.78 < meta["q_v_hessian_crossing"]["L=1"] < 1.13
    mean = tensors["mean"]
    assert mean.shape == (3, 7, 2, 3) and mean.dtype == torch.float64
    assert torch.isnan(mean[1:, 4:]).all() and not torch.isnan(mean[0]).any()
    assert tensors["point_done"].sum() == 3 * (7 + 4 + 4)


def test_quick_run_writes_results_report_and_checkpoint(quick_run):
    meta = json.loads((quick_run / "meta.json").read_text())
    assert meta["analysis"] == "growth_rates" and meta["kernel"] == "growth_rates" and meta["seeds"] == [0, 1, 2]
    assert meta["config"]["analysis"]["num_samples"] == 20 and meta["done"] == meta["total"] == 45
    assert [s["label"] for s in meta["settings"]] == ["L=1", "linear L=1", "linear L=2"]
    report = (quick_run / "report.html").read_text(encoding="utf-8")
    assert "Bokeh.embed" in report and not re.search(r"<script[^>]+src=", report)
    assert "Fitted exponents" in report and "[5]" in report
    assert (quick_run / "checkpoint" / "meta.json").is_file()


def test_resume_of_a_finished_run_gives_the_same_numbers(quick_run, tmp_path, capsys):
    out = tmp_path / "again"
    (out / "checkpoint").mkdir(parents=True)
    for f in (quick_run / "checkpoint").iterdir():
        (out / "checkpoint" / f.name).write_bytes(f.read_bytes())
    assert main(["run", str(QUICK), "--out", str(out), "--resume", *FAST]) == 0
    a, _ = load_results(quick_run)
    b, _ = load_results(out)
    same = dict(rtol=0, atol=0, equal_nan=True)  # NaN pads the shorter sigma grids
    torch.testing.assert_close(a["norms"], b["norms"], **same)
    torch.testing.assert_close(a["mean"], b["mean"], **same)
    assert "Fitted exponents" in capsys.readouterr().out


def test_full_config_is_valid_and_matches_the_paper_setup():
    cfg = load_config(FULL)
    a = cfg["analysis"]
    assert cfg["model"]["tiny_config"] == {"d_model": 128, "n_head": 1, "d_mlp": 512, "activation": "relu"}
    assert a["seeds"] == 20 and a["num_samples"] == 20 and a["batch_size"] == 64
    assert [s["n_layer"] for s in a["settings"]] == [1, 2, 3, 4, 5, 1, 1, 2, 3]


def base(**analysis):
    return {"model": {"kind": "growth", "tiny_config": {"d_model": 8}},
            "analysis": {"kind": "growth_rates", "settings": [{"label": "a"}], **analysis}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**base(settings=[{"label": "a", "n_layer": 2}]), "model": {"kind": "tiny"}},
         r"key\(s\) \['n_layer'\] describe the paper's models"),
        ({**base(settings=[{"layer": 0}, {"layer": 1}]), "model": {"kind": "tiny"}}, "measures one block"),
        ({**base(settings=[{"layer": -1}]), "model": {"kind": "tiny"}}, r"layer must be an int >= 0"),
        ({**base(embedding_draw="shared"), "model": {"kind": "tiny"}}, "redraws the embeddings at every sigma"),
        ({**base(), "model": {"kind": "growth", "tiny_config": {"n_layer": 2}}}, "tiny_config keys"),
        (base(settings=[]), "non-empty list of tables"),
        (base(settings=[{"label": "a", "depth": 2}]), r"settings\[0\]: unknown key\(s\) \['depth'\]"),
        (base(settings=[{"label": "a", "sigmas": [1.0, -1.0, 5]}]), "sigmas must be positive, finite and increasing"),
        (base(settings=[{"label": "a", "sigmas": [-1.0, 0.0]}]), r"sigmas must be \[log10 start, log10 stop, num\]"),
        (base(settings=[{"label": "a"}, {"label": "a"}]), "labels must differ"),
        (base(dtype="float32"), "computes in float64"),
        (base(probes=3), "do not apply to kind = 'growth_rates'"),
        ({**base(), "data": {"task": "induction"}}, "five-digit addition"),
        ({"model": {"kind": "growth"}, "analysis": {"kind": "curvature"}}, "not 'curvature'"),
    ],
)
def test_bad_growth_configs_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


MODEL_RUN = """
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
samples = 6
seed = 1
[analysis]
kind = "growth_rates"
settings = [{ label = "gpt2 block 1", layer = LAYER, sigmas = [-1.0, 0.0, 3] }]
seeds = 2
num_samples = 4
batch_size = 4
"""


def test_growth_rates_on_a_configured_model_equal_the_kernel_on_its_first_batch(tmp_path, capsys):
    """``[model] kind = "hf"``: the run measures block ``layer`` of the configured model on the first batch of the
    data, exactly as :func:`iter_model_growth_rates` does; ``--resume`` of the finished run gives the same numbers."""
    from tscope_widgets.cli.config import load_run_config
    from tscope_widgets.cli.prepare import prepare_data, prepare_model
    from tscope_widgets.cli.runs import loss_batches
    from tscope_widgets.kernels.theory import growth_sigmas, iter_model_growth_rates

    path = tmp_path / "model_growth.toml"
    path.write_text(MODEL_RUN.replace("LAYER", "1"))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), *FAST]) == 0
    assert "Fitted exponents" in capsys.readouterr().out
    tensors, meta = load_results(out)
    assert meta["settings"][0]["label"] == "gpt2 block 1" and meta["kernel_config"]["model"] == "GPT2LMHeadModel"
    assert (out / "report.html").is_file() and (out / "checkpoint" / "meta.json").is_file()

    cfg = load_run_config(path)
    prepared = prepare_model(cfg.model, False, 1)
    batch = loss_batches(prepare_data(cfg.data, cfg.model, prepared), cfg.analysis)[0]
    assert batch["input_ids"].shape[0] == 4
    *_, ref = iter_model_growth_rates(prepared.model, batch, sigmas=growth_sigmas(-1.0, 0.0, 3), seeds=2,
                                      layer=1, num_samples=4, label="gpt2 block 1")
    torch.testing.assert_close(tensors["norms"], ref.norms, rtol=0, atol=0)
    assert tensors["norms"].shape[1] == 3 and torch.isfinite(tensors["norms"]).all()

    again = tmp_path / "again"
    (again / "checkpoint").mkdir(parents=True)
    for f in (out / "checkpoint").iterdir():
        (again / "checkpoint" / f.name).write_bytes(f.read_bytes())
    assert main(["run", str(path), "--out", str(again), "--resume", *FAST]) == 0
    torch.testing.assert_close(load_results(again)[0]["norms"], tensors["norms"], rtol=0, atol=0)


def test_growth_rates_on_a_layer_the_model_lacks_is_named(tmp_path, capsys):
    path = tmp_path / "model_growth.toml"
    path.write_text(MODEL_RUN.replace("LAYER", "5"))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), *FAST]) == 2
    assert re.search(r"tscope: error: \[analysis\]: .*layer must be in \[0, 2\), got 5", capsys.readouterr().err)
