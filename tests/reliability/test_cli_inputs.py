"""Finding 9: bad inputs to ``tscope run`` exit 2 with ``tscope: error: ...`` naming the key or file, before any work.

Each case used to print a traceback and exit 1 (or, for ``--out``, only after the whole computation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import tscope_widgets.kernels.cost as cost
from tscope_widgets.cli import main

GiB = 2**30
MODEL = (
    "[model]\nkind = 'hf'\n[model.config]\nmodel_type = 'gpt2'\nvocab_size = 64\nn_positions = 32\n"
    "n_embd = 8\nn_layer = 1\nn_head = 2\nbos_token_id = 0\neos_token_id = 0\n"
)
TASK = "[data]\ntask = 'induction'\ntask_kwargs = {num_symbols = 24, k_max = 8}\nsamples = 4\n"


@pytest.fixture(autouse=True)
def eight_gib(monkeypatch):
    """The memory guard sees 8 GiB free, whatever the machine has."""
    monkeypatch.setattr(cost, "available_memory", lambda device: 8 * GiB)


def _run(tmp_path: Path, text: str | bytes, *extra: str) -> int:
    config = tmp_path / "run.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text, encoding="utf-8")
    out = ["--out", str(tmp_path / "out")] if "--out" not in extra else []
    return main(["run", str(config), "--no-progress", "--threads", "1", *out, *extra])


def _refused(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tscope: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_an_empty_ids_file(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.zeros((0, 5), dtype=np.int64))
    assert _run(tmp_path, MODEL + f"[data]\nids = '{tmp_path / 'ids.npy'}'\n") == 2
    _refused(capsys, "[data].ids", "ids.npy", "no token ids")


def test_a_model_type_without_an_adapter(tmp_path, capsys):
    assert _run(tmp_path, MODEL.replace("'gpt2'", "'opt'") + TASK) == 2
    _refused(capsys, "[model].config.model_type = 'opt'", "no adapter for OPTForCausalLM", "supported: ")


def test_a_config_field_of_the_wrong_type(tmp_path, capsys):
    assert _run(tmp_path, MODEL.replace("n_embd = 8", "n_embd = 'wide'") + TASK) == 2
    _refused(capsys, "[model].config", "n_embd", "'wide'", "fix that key")


def test_ids_longer_than_the_model_positions(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.zeros((2, 40), dtype=np.int64))
    assert _run(tmp_path, MODEL + f"[data]\nids = '{tmp_path / 'ids.npy'}'\n") == 2
    _refused(capsys, "sequences of 40 tokens", "at most 32 positions", "[analysis].max_seq_len = 32")


def test_ids_cut_to_the_model_positions_are_accepted(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.zeros((2, 40), dtype=np.int64))
    text = MODEL + f"[data]\nids = '{tmp_path / 'ids.npy'}'\n[analysis]\nmax_seq_len = 32\n[output]\nreport = false\n"
    assert _run(tmp_path, text) == 0
    assert (tmp_path / "out" / "meta.json").is_file()


def test_samples_that_do_not_fit(tmp_path, capsys):
    assert _run(tmp_path, MODEL + TASK.replace("samples = 4", f"samples = {10**12}")) == 2
    _refused(capsys, f"[data].samples = {10**12}", "GiB of memory", "8 GiB is available", "lower [data].samples")


def test_a_vocabulary_that_does_not_fit_is_refused_before_building(tmp_path, capsys):
    assert _run(tmp_path, MODEL.replace("vocab_size = 64", f"vocab_size = {10**12}") + TASK) == 2
    _refused(capsys, "[model].config describes a model of 8,000,000,", "nothing was allocated", "vocab_size")


def test_a_landscape_resolution_that_does_not_fit(tmp_path, capsys):
    text = MODEL + TASK + "[analysis]\nkind = 'landscape'\nresolution = 100000\n"
    assert _run(tmp_path, text) == 2
    _refused(capsys, "[analysis].resolution = 100000", "100000 x 100000", "lower [analysis].resolution")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_out_pointing_to_a_file_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    import tscope_widgets.cli.commands as commands

    monkeypatch.setattr(commands, "prepare_model", lambda *a: pytest.fail("the run started"))
    (tmp_path / "a_file").write_text("x")
    assert _run(tmp_path, MODEL + TASK, "--out", str(tmp_path / "a_file")) == 2
    _refused(capsys, f"--out {tmp_path / 'a_file'} is a file, not a folder")


def test_out_below_a_file_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    import tscope_widgets.cli.commands as commands

    monkeypatch.setattr(commands, "prepare_model", lambda *a: pytest.fail("the run started"))
    (tmp_path / "a_file").write_text("x")
    assert _run(tmp_path, MODEL + TASK, "--out", str(tmp_path / "a_file" / "out")) == 2
    _refused(capsys, "cannot write results there", "give a folder you can write to")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _run(tmp_path, MODEL + TASK, "--out", str(locked / "out")) == 2
    finally:
        locked.chmod(0o700)
    _refused(capsys, "cannot write results there")


def test_a_config_path_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "conf.toml").mkdir()
    assert main(["run", str(tmp_path / "conf.toml"), "--out", str(tmp_path / "out")]) == 2
    _refused(capsys, f"config file {tmp_path / 'conf.toml'} is a folder")


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    assert _run(tmp_path, b"# caf\xe9\n[model]\nkind = 'tiny'\n") == 2
    _refused(capsys, "run.toml is not UTF-8 text", "save it as UTF-8")


def test_demo_refuses_samples_that_do_not_fit_before_training(tmp_path, capsys, monkeypatch):
    import tscope_widgets.cli.commands as commands

    monkeypatch.setattr(commands, "prepare_model", lambda *a, **k: pytest.fail("trained before the check"))
    code = main(["demo", "--samples", str(10**12), "--out", str(tmp_path / "demo"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tscope: error: --samples = 1000000000000 sequences")
    assert "lower --samples" in err and "Traceback" not in err


def test_ranks_checking_one_missing_out_folder_at_once_all_pass(tmp_path):
    """Every rank of a torchrun job checks ``--out`` before the first barrier; none may see another's cleanup."""
    from concurrent.futures import ThreadPoolExecutor

    from tscope_widgets.cli.limits import check_output_dir

    out = tmp_path / "missing" / "out"

    def check(_):
        check_output_dir(out, "--out")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(400)))
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []
