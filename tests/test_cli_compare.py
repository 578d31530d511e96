"""``tscope compare``: two tiny ``tscope run`` folders compared cell by cell (Welch and paired), files, report,
and the runs it refuses with exit status 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tscope_widgets.cli import main
from tscope_widgets.cli.compare import stacked
from tscope_widgets.export import load_statistics
from tscope_widgets.export.results import load_results
from tscope_widgets.kernels.compare import compare_statistics
from tscope_widgets.training import save_model, train_tiny

FAST = ["--no-progress", "--threads", "1"]
SMALL_TASK = {"num_symbols": 8, "k_max": 4, "k_min": 2}  # sequences [BOS, r1..r4, r1..r4]: 9 tokens


def small_model(out: Path, seed: int) -> Path:
    result = train_tiny("induction", steps=30, seed=seed, config={"d_model": 8, "n_layer": 1, "n_head": 2},
                        task_kwargs=SMALL_TASK, progress=False, num_threads=1)
    save_model(out, result)
    return out


def run(work: Path, name: str, model: Path, data_seed: int, layers: str = '[0, "final"]', samples: int = 24) -> Path:
    config = work / f"{name}.toml"
    config.write_text(f"""
[model]
kind = "tiny"
path = "{model.as_posix()}"
[data]
samples = {samples}
seed = {data_seed}
[analysis]
layers = {layers}
batch_size = 12
[output]
statistics = ["mean"]
""")
    out = work / name
    assert main(["run", str(config), "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("compare")
    m0, m1 = small_model(work / "m0", 0), small_model(work / "m1", 1)
    return {
        "a": run(work, "a", m0, data_seed=1),
        "a_other_data": run(work, "a_other_data", m0, data_seed=2),  # same model, same data distribution
        "b": run(work, "b", m1, data_seed=1),  # another model on the same samples
        "one_layer": run(work, "one_layer", m0, data_seed=1, layers='["final"]'),
        "m0": m0,
    }


def test_welch_comparison_files_match_the_kernel_and_the_report_is_offline(runs, tmp_path, capsys):
    out = tmp_path / "ab"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "--paired" in printed and "Welch's t-test" in printed  # same samples: the paired test is offered
    tensors, meta = load_results(out)
    assert meta["results"] == "comparison" and meta["test"] == "welch" and meta["layers"] == [0, "final"]
    assert meta["same_data"] and meta["correction"] == "fdr_bh" and meta["alpha"] == 0.05
    sa, _ = load_statistics(runs["a"])
    sb, _ = load_statistics(runs["b"])
    want = compare_statistics(stacked(sa, [0, "final"]), stacked(sb, [0, "final"]))
    for key, value in want.tensors().items():
        assert torch.equal(tensors[key], value) or torch.allclose(tensors[key], value, equal_nan=True), key
    assert tensors["difference"].shape == (2, 9, 9) and tensors["significant"].dtype == torch.bool
    assert meta["num_significant"] == want.num_significant > 0  # two differently trained models differ
    assert meta["token_labels"][0] == "BOS"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Bokeh.embed" in report and "<script src=" not in report and "faded" in report


def test_same_model_on_other_data_of_the_same_distribution_differs_in_few_cells(runs, tmp_path):
    out = tmp_path / "null"
    assert main(["compare", str(runs["a"]), str(runs["a_other_data"]), "--out", str(out), *FAST]) == 0
    _, meta = load_results(out)
    assert not meta["same_data"] and meta["num_tests"] > 50
    assert meta["num_significant"] <= 0.05 * meta["num_tests"]


def test_paired_comparison_reruns_both_models_on_the_same_samples(runs, tmp_path):
    out = tmp_path / "paired"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--paired", "--out", str(out), *FAST]) == 0
    tensors, meta = load_results(out)
    assert meta["test"] == "paired" and meta["paired"]
    sa, _ = load_statistics(runs["a"])  # the rerun of model a reproduces run a's statistics
    torch.testing.assert_close(tensors["mean_a"], stacked(sa, [0, "final"]).mean, equal_nan=True, rtol=1e-12,
                               atol=0)
    sb, _ = load_statistics(runs["b"])  # ... and of model b
    torch.testing.assert_close(tensors["mean_b"], stacked(sb, [0, "final"]).mean, equal_nan=True, rtol=1e-12,
                               atol=0)
    valid = tensors["valid"]
    assert torch.equal(tensors["count_a"][valid], torch.full_like(tensors["count_a"][valid], 24.0))  # 24 pairs
    assert meta["num_significant"] > 0 and torch.equal(tensors["df"][valid & ~tensors["df"].isnan()].unique(),
                                                       torch.tensor([23.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("pair", "extra", "message"),
    [
        (("a", "one_layer"), [], r"different layers: .* has \[0, 'final'\], .* has \['final'\]"),
        (("a", "m0"), [], "RUN_B .*meta.json not found"),
        (("a", "a_other_data"), ["--paired"], "--paired needs both runs on the same samples"),
        (("a", "b"), ["--alpha", "1.5"], r"--alpha must be in \(0, 1\)"),
    ],
)
def test_runs_that_cannot_be_compared_exit_2_saying_why(runs, tmp_path, capsys, pair, extra, message):
    code = main(["compare", str(runs[pair[0]]), str(runs[pair[1]]), "--out", str(tmp_path / "x"), *extra, *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tscope: error: ")
    assert re.search(message, err), err


def test_cell_grids_of_other_lengths_are_refused(runs, tmp_path, capsys):
    other = tmp_path / "short"
    other.mkdir()
    stats, meta = load_statistics(runs["a"])
    from tscope_widgets.export import save_statistics
    from tscope_widgets.kernels.welford import WelfordState

    small = {layer: WelfordState((5, 5)) for layer in stats}
    save_statistics(other, small, {k: v for k, v in meta.items() if k not in ("format", "layers", "tensors",
                                                                              "versions", "created")})
    assert main(["compare", str(runs["a"]), str(other), "--out", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "layer 0 has cells [9, 9]" in err and "[5, 5]" in err and "sequence lengths differ" in err
    json.loads((runs["a"] / "meta.json").read_text())  # the inputs are left as they were
