"""``tscope sweep``: a 2 x 2 sweep end to end, its rows against the points' own results, resume after a kill,
and bad sweep files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from tscope_widgets.cli import load_sweep, main
from tscope_widgets.export import load_statistics
from tscope_widgets.export.results import load_results
from tscope_widgets.kernels.summaries import diagonal_mass_fraction, receptive_field

FAST = ["--no-progress", "--threads", "1"]

BASE = """
[model]
kind = "tiny"
task = "induction"
steps = {steps}
task_kwargs = {{num_symbols = 8, k_max = 4, k_min = 2}}
tiny_config = {{n_layer = 1, n_head = 2}}
[data]
samples = 8
[analysis]
batch_size = 4
layers = [0, "final"]
checkpoint_every = 1
k = 2
tol = 1e-6
trace_matvecs = 6
density_probes = 0
block_norms = ["block0.attn.*"]  # the query and value groups (Q/V ratio), fast
[output]
report = false
"""

SWEEP = BASE + """
[sweep]
analyses = ["curvature", "sensitivity"]
[sweep.axes]
d_model = [4, 8]
seed = [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_table(out: Path) -> dict:
    return json.loads((out / "table.json").read_text())


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """The 2 x 2 sweep (d_model 4 and 8, seeds 0 and 1) run once without interruption."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    assert main(["sweep", str(write(tmp, SWEEP.format(steps=20))), "--out", str(out), *FAST]) == 0
    return out


def test_sweep_writes_one_row_per_point_from_the_points_own_results(swept):
    table = read_table(swept)
    rows = table["rows"]
    assert [(r["d_model"], r["seed"]) for r in rows] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert table["axes"] == {"d_model": "model.tiny_config.d_model", "seed": "model.seed"}
    assert table["seed_axes"] == ["seed"] and table["columns"][:3] == ["point", "d_model", "seed"]
    for row in rows:
        folder = swept / "points" / row["point"]
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["curvature", "done.json", "model", "point.json", "sensitivity"]
        tensors, meta = load_results(folder / "curvature")
        eig = tensors["eigenvalues"]
        assert row["lambda_max"] == eig[-1].item() == meta["summary"]["sharpness"]
        assert row["lambda_min"] == eig[0].item()
        assert row["trace"] == meta["trace"]["value"]
        assert row["lambda_max_over_trace"] == pytest.approx(eig[-1].item() / meta["trace"]["value"], rel=1e-15)
        assert row["eigengap_1"] == pytest.approx(((eig[-1] - eig[-2]) / eig[-1].abs()).item(), rel=1e-15)
        assert row["loss"] == meta["operator"]["loss"]
        assert row["qv_ratio"] > 0 and row["attn_mlp_ratio"] is None  # attention-only: no MLP groups
        stats, smeta = load_statistics(folder / "sensitivity")
        mean = stats["final"].mean
        assert row["sens_diag_fraction"] == pytest.approx(diagonal_mass_fraction(mean), rel=1e-15)
        assert row["sens_erf90"] == pytest.approx(float(receptive_field(mean, 0.9).nanmean()), rel=1e-15)
        assert row["sens_induction_ratio"] > 0
        d = row["d_model"]
        model_json = json.loads((folder / "model" / "model.json").read_text())
        assert model_json["tiny_config"]["d_model"] == d and model_json["training"]["seed"] == row["seed"]
        assert row["train_accuracy"] == model_json["training"]["accuracy"]
        assert row["num_params"] == meta["operator"]["num_params"]
    with open(swept / "table.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == table["columns"] and len(lines) == 5
    assert float(lines[1][lines[0].index("lambda_max")]) == rows[0]["lambda_max"]
    assert lines[1][lines[0].index("attn_mlp_ratio")] == "nan"


def test_sweep_fits_and_scaling_report(swept):
    fits = json.loads((swept / "fits.json").read_text())["fits"]
    by = {(f["summary"], f["axis"]): f for f in fits}
    assert ("lambda_max", "d_model") in by and all(f["axis"] == "d_model" for f in fits)  # seeds are not an x axis
    params = by[("num_params", "d_model")]
    assert params["points"] == 4 and params["seeds"] == 2 and params["group"] == "all"
    rows = read_table(swept)["rows"]
    x = np.log([r["d_model"] for r in rows])
    y = np.log([r["num_params"] for r in rows])
    assert params["exponent"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    report = (swept / "scaling_report.html").read_text(encoding="utf-8")
    assert "Bokeh.embed" in report and not re.search(r"<script[^>]+src=", report)
    assert "lambda_max against d_model" in report


def test_resume_after_a_kill_skips_finished_points_and_gives_identical_rows(tmp_path, swept):
    import tscope_widgets.jobs as jobs
    import tscope_widgets.training as training
    from tscope_widgets.cli import runs

    config = write(tmp_path, SWEEP.format(steps=20))
    out = tmp_path / "out"
    real_save = jobs.save_checkpoint
    saves = []

    def save_then_die(directory, *args, **kwargs):
        path = real_save(directory, *args, **kwargs)
        saves.append(Path(directory))
        if "d_model-8_seed-0" in str(directory):  # the third point, after its first sensitivity batch
            raise KeyboardInterrupt
        return path

    with mock.patch.object(jobs, "save_checkpoint", save_then_die):
        assert main(["sweep", str(config), "--out", str(out), *FAST]) == 130
    third = out / "points" / "d_model-8_seed-0"
    assert (third / "curvature" / "summary.json").is_file() and not (third / "done.json").exists()
    assert (third / "sensitivity" / "checkpoint" / "meta.json").is_file()
    assert len(read_table(out)["rows"]) == 2  # the table of the finished points, written after each

    real_train, real_load = training.train_tiny, runs._load_resume_checkpoint
    resumed = []

    def load_and_note(directory):
        resumed.append(directory)
        return real_load(directory)

    with (
        mock.patch.object(training, "train_tiny", side_effect=real_train) as train,
        mock.patch.object(runs, "_load_resume_checkpoint", load_and_note),
    ):
        assert main(["sweep", str(config), "--out", str(out), *FAST]) == 0
    assert train.call_count == 1  # the fourth point; the third reloads the model it saved
    assert resumed == [third / "sensitivity" / "checkpoint"]
    assert read_table(out)["rows"] == read_table(swept)["rows"]
    # A third run finds everything finished and trains nothing.
    with mock.patch.object(training, "train_tiny", side_effect=real_train) as train:
        assert main(["sweep", str(config), "--out", str(out), *FAST]) == 0
    assert train.call_count == 0


def test_a_changed_sweep_is_refused_in_the_old_folder(tmp_path, swept, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(swept, out)
    config = write(tmp_path, SWEEP.format(steps=21))
    assert main(["sweep", str(config), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "tscope: error:" in err and "d_model-4_seed-0" in err and "another configuration" in err


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("[sweep.axes]\nwidth = [1, 2]", "[sweep.axes].width: unknown axis 'width'"),
        ("[sweep.axes]\nd_model = []", "[sweep.axes].d_model is an empty list"),
        ("[sweep.axes]\nd_model = [8, 8]", "[sweep.axes].d_model lists the value 8 twice"),
        ('[sweep.axes]\nd_model = [8]\n"model.tiny_config.d_model" = [16]', "both set model.tiny_config.d_model"),
        ("[sweep.axes]\nd_model = [8]\n[[sweep.points]]\nd_model = 8", "not both"),
        ("[sweep]\nanalyses = []", "[sweep].analyses must be a non-empty list"),
        ('[sweep]\nanalyses = ["hessian"]\n[sweep.axes]\nseed = [0]', "[sweep].analyses: unknown ['hessian']"),
        ("[sweep.axes]\nsteps = [10, 0]", "sweep point 2 (steps = 0): [model].steps must be >= 1"),
        ("[sweep.axes]\n\"model.bogus\" = [1]", "unknown axis 'model.bogus'"),
        ("[sweep.axes]\n\"output.dir\" = ['a']", "[output] keys cannot be swept"),
        ("[[sweep.points]]\nseed = 1\n[[sweep.points]]\nseed = 1", "points 1 and 2 are the same"),
        ("[sweep.axes]\nd_model = 8", "[sweep.axes].d_model must be a list"),
        ("[sweep]\nrepeat = 2", "[sweep]: unknown key(s) ['repeat']"),
    ],
)
def test_bad_sweep_files_name_the_key(tmp_path, capsys, sweep, message):
    config = write(tmp_path, BASE.format(steps=20) + sweep)
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tscope: error:") and message in err and str(config) in err
    assert not (tmp_path / "out" / "points").exists()


def test_listed_points_and_aliases_resolve_to_run_configs(tmp_path):
    text = BASE.format(steps=20) + """
[sweep]
analyses = ["sensitivity"]
[[sweep.points]]
d_model = 8
lr = 0.01
[[sweep.points]]
d_model = 16
norm = "post"
"""
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.axes == {"d_model": "model.tiny_config.d_model", "lr": "model.lr", "norm": "model.tiny_config.norm"}
    first, second = sweep.points
    assert first.name == "d_model-8_lr-0.01" and second.name == "d_model-16_norm-post"
    cfg = first.runs["sensitivity"]
    assert cfg.model.tiny_config == {"n_layer": 1, "n_head": 2, "d_model": 8} and cfg.model.lr == 0.01
    assert cfg.analysis.kind == "sensitivity" and cfg.output.save_model is False
    other = second.runs["sensitivity"].model
    assert other.tiny_config["norm"] == "post" and other.lr is None
    assert first.digest != second.digest


def test_the_width_example_is_a_valid_twelve_point_sweep():
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "examples" / "sweep_width.toml")
    assert [p.values for p in sweep.points[:4]] == [{"d_model": 16, "seed": s} for s in (0, 1, 2)] + [
        {"d_model": 32, "seed": 0}
    ]
    assert len(sweep.points) == 12 and sweep.analyses == ("curvature", "sensitivity")
    assert sweep.output_dir == "results/sweep_width" and sweep.seed_axes == ("seed",)
    cfg = sweep.points[-1].runs["curvature"]
    assert cfg.model.tiny_config == {"d_model": 128} and cfg.model.seed == 2 and cfg.analysis.k == 3


def test_torchrun_deals_the_points_out_and_gives_the_rows_of_one_process(tmp_path, swept):
    import os
    import subprocess
    import sys

    from tests.test_cli import ROOT, loopback_interface

    config = write(tmp_path, SWEEP.format(steps=20))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=loopback_interface(), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "tscope_widgets.cli", "sweep", str(config), "--out", str(out), *FAST]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    rows = read_table(out)["rows"]
    assert rows == read_table(swept)["rows"]
    ranks = [json.loads((out / "points" / r["point"] / "done.json").read_text())["rank"] for r in rows]
    assert ranks == [0, 1, 0, 1]  # point i on rank i mod 2, each once
    assert proc.stdout.count("table: ") == 1  # rank 0 alone writes the table


def test_landscape_points_give_the_curvature_along_the_top_eigenvector(tmp_path):
    text = BASE.format(steps=20).replace("checkpoint_every = 1\nk = 2\n", "").replace(
        "trace_matvecs = 6\ndensity_probes = 0\nblock_norms = [\"block0.attn.*\"]  # the query and value groups "
        "(Q/V ratio), fast\n",
        'directions = "eigen"\nspan = 0.001\nresolution = 3\n',
    ) + '[sweep]\nanalyses = ["landscape"]\n[sweep.axes]\nd_model = [8]\n'
    out = tmp_path / "out"
    assert main(["sweep", str(write(tmp_path, text)), "--out", str(out), *FAST, "--no-report"]) == 0
    (row,) = read_table(out)["rows"]
    _, meta = load_results(out / "points" / "d_model-8" / "landscape")
    lam1 = meta["directions"]["eigenvalues"][0]
    # (L(h) - 2 L(0) + L(-h)) / h^2 along the unit top eigenvector: lambda_1 + O(h^2) (2% off at h = 0.01 here).
    assert row["landscape_curvature_d1"] == pytest.approx(lam1, rel=1e-3)
    assert row["landscape_loss"] == meta["origin_loss"] and row["landscape_accuracy"] == meta["origin_accuracy"]
    assert not (out / "scaling_report.html").exists() and (out / "table.csv").is_file()


HF_DEPTHS = """
[model]
kind = "hf"
seed = 0
[model.config]
model_type = "gpt2"
vocab_size = 12
n_positions = 16
n_embd = 8
n_head = 2
n_inner = 16
n_layer = 1
[data]
task = "induction"
task_kwargs = {num_symbols = 6, k_max = 3, k_min = 2}
samples = 4
[analysis]
batch_size = 4
layers = ["final"]
k = 1
tol = 1e-6
trace_matvecs = 4
density_probes = 0
block_norms = false
[output]
report = false
[sweep]
analyses = ["curvature", "sensitivity"]
[[sweep.points]]
"model.config.n_layer" = 1
[[sweep.points]]
"model.config.n_layer" = 2
[[sweep.points]]
"model.config.n_layer" = 2
steps = 8
"""


def test_hf_depth_sweep_with_random_and_briefly_trained_points(tmp_path):
    """The shape of examples/sweep_gpt2_family.toml at toy size: config depths, random and trained points."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    assert main(["sweep", str(write(tmp_path, HF_DEPTHS)), "--out", str(out), *FAST, "--no-report"]) == 0
    rows = read_table(out)["rows"]
    assert [(r["point"], r.get("steps")) for r in rows] == [
        ("model.config.n_layer-1", None), ("model.config.n_layer-2", None), ("model.config.n_layer-2_steps-8", 8)
    ]
    assert all(np.isfinite(r["lambda_max"]) for r in rows)
    random, trained = rows[1], rows[2]
    assert random["lambda_max"] != trained["lambda_max"]  # same initial weights, 8 AdamW steps apart
    saved = AutoModelForCausalLM.from_pretrained(out / "points" / "model.config.n_layer-2_steps-8" / "model" / "model")
    assert saved.config.n_layer == 2
    assert not (out / "points" / "model.config.n_layer-2" / "model").exists()  # random weights: not saved


def test_the_gpt2_family_example_is_a_valid_ten_point_sweep():
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "examples" / "sweep_gpt2_family.toml")
    assert len(sweep.points) == 10 and sweep.analyses == ("curvature", "sensitivity")
    assert [p.values for p in sweep.points[:2]] == [{"model.config.n_layer": 2}, {"model.config.n_layer": 2,
                                                                                    "steps": 300}]
    trained = sweep.points[-1].runs["sensitivity"]
    assert trained.model.config["n_layer"] == 12 and trained.model.steps == 300
    assert trained.model.task_kwargs == trained.data.task_kwargs == {"num_symbols": 24, "k_max": 8, "k_min": 3}
    assert sweep.points[0].runs["curvature"].model.steps is None


def test_iter_sweep_tables_streams_the_rows_and_feeds_the_sweep_widget(tmp_path, swept):
    import shutil

    from tscope_widgets import SweepWidget
    from tscope_widgets.cli import iter_sweep_tables
    from tscope_widgets.kernels.power_law import fit_power_law

    out = tmp_path / "out"
    shutil.copytree(swept, out)
    for name in ("d_model-8_seed-0", "d_model-8_seed-1"):  # two points to finish again (their analyses are kept)
        (out / "points" / name / "done.json").unlink()
    config = write(tmp_path, SWEEP.format(steps=20))
    tables = list(iter_sweep_tables(config, out, threads=1))
    assert [(t.done, t.total) for t in tables] == [(2, 4), (3, 4), (4, 4)]
    assert tables[-1].axes == ("d_model", "seed") and tables[-1].seed_axes == ("seed",)
    expected = read_table(swept)["rows"]
    def as_json(row):  # the table file writes NaN as null
        return {k: None if isinstance(row[k], float) and np.isnan(row[k]) else row[k] for k in expected[0]}

    assert [as_json(r) for r in tables[-1].rows] == expected
    w = SweepWidget(lambda: iter_sweep_tables(config, out, threads=1), summary="lambda_max", num_bootstrap=100)
    assert w.wait(60) and w.status == "done" and w.x_axis == "d_model" and w.runs == 4
    ref = fit_power_law([r["d_model"] for r in expected], [r["lambda_max"] for r in expected],
                        [str(r["seed"]) for r in expected], num_bootstrap=100)
    assert w.fits["all"].exponent == pytest.approx(ref.exponent, rel=1e-12)


def test_curvature_rows_give_the_bulk_to_outlier_ratio_of_the_density():
    """Bulk N(0, 0.05²) of mass 0.9, outliers N(5, 0.1²) of mass 0.1, λ_max = 5: the bulk is |t| <= 0.5."""
    from types import SimpleNamespace

    import torch

    from tscope_widgets.cli.sweep_rows import curvature_summaries

    t = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    phi = 0.9 * torch.exp(-0.5 * (t / 0.05) ** 2) / (0.05 * np.sqrt(2 * np.pi)) \
        + 0.1 * torch.exp(-0.5 * ((t - 5) / 0.1) ** 2) / (0.1 * np.sqrt(2 * np.pi))
    result = SimpleNamespace(summary=SimpleNamespace(sharpness=5.0, lambda_min=-0.1, negative_fraction=0.4),
                             trace=None, lanczos=SimpleNamespace(eigenvalues=torch.tensor([1.0, 5.0])), loss=1.0,
                             blocks=None, density=SimpleNamespace(grid=t, density=phi))
    assert curvature_summaries(result, 2)["bulk_outlier_ratio"] == pytest.approx(9.0, rel=1e-6)
    no_density = SimpleNamespace(**{**vars(result), "density": None})
    assert np.isnan(curvature_summaries(no_density, 2)["bulk_outlier_ratio"])


ATTENTION_SWEEP = """
[model]
kind = "tiny"
task = "induction"
steps = 20
task_kwargs = {num_symbols = 8, k_max = 4, k_min = 2}
tiny_config = {n_layer = 2, n_head = 2}
[data]
samples = 6
[analysis]
batch_size = 3
layers = "all"
correlation_samples = 4
bootstrap = 100
[output]
report = false
[sweep]
analyses = ["attention"]
[sweep.axes]
d_model = [8, 16]
"""


def test_attention_points_give_head_ranks_entropy_and_the_correlation_with_sensitivity(tmp_path):
    from tscope_widgets import head_spectra
    from tscope_widgets.training import load_model

    out = tmp_path / "out"
    assert main(["sweep", str(write(tmp_path, ATTENTION_SWEEP)), "--out", str(out), *FAST, "--no-report"]) == 0
    rows = read_table(out)["rows"]
    assert [r["d_model"] for r in rows] == [8, 16]
    for row in rows:
        model, _ = load_model(out / "points" / row["point"] / "model")
        spectra = head_spectra(model, dtype=torch.float64)
        assert row["attn_qk_rank"] == pytest.approx(float(spectra.entropy_rank["qk"].mean()), rel=1e-12)
        assert row["attn_ov_rank"] == pytest.approx(float(spectra.entropy_rank["ov"].mean()), rel=1e-12)
        d_head = row["d_model"] // 2
        assert 1 <= row["attn_qk_rank"] <= d_head
        assert 0 < row["attn_entropy"] < math.log(9)  # at most log(S) nats, S = 9 positions
        assert -1 <= row["attn_sens_rho"] <= 1
    assert "attn_qk_rank" in read_table(out)["definitions"]


def test_analyses_without_a_row_summary_are_refused_in_a_sweep(tmp_path, capsys):
    text = ATTENTION_SWEEP.replace('analyses = ["attention"]', 'analyses = ["blocks"]')
    assert main(["sweep", str(write(tmp_path, text)), "--out", str(tmp_path / "out"), *FAST]) == 2
    assert "['blocks'] run with tscope run only" in capsys.readouterr().err
