"""Issue 12, findings 1 and 2: a resume checks the checkpoint's model, settings and data, and its state.

Every test reproduces a finding: before the fix, each of these resumes ran (often to "done") with wrong
statistics, or loaded a damaged checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.model_zoo import random_batch, tiny
from tscope_widgets.jobs import Checkpoint, Job, load_checkpoint, save_checkpoint
from tscope_widgets.kernels.sensitivity import iter_sensitivity
from tscope_widgets.models import adapt

KW = dict(layers=[0, "final"], method="exact", batch_size=2, reservoir_size=3, seed=5)


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def ids(model):
    return random_batch(adapt(model), 8, 5, pad=False, seed=3)["input_ids"]


@pytest.fixture
def ckpt(model, ids, tmp_path) -> Path:
    """A checkpoint after 2 of 4 batches of ``ids``."""
    run = iter_sensitivity(model, ids, **KW)
    next(run)
    save_checkpoint(tmp_path / "ck", next(run))
    return tmp_path / "ck"


def resume(model, data, checkpoint, **changes):
    return list(iter_sensitivity(model, data, resume=checkpoint, **{**KW, **changes}))


# ----- finding 1: a checkpoint of another model, other settings or other data ------------------------------
def test_job_resume_with_another_model_fails_and_says_the_values_differ(model, ids, tmp_path):
    other = tiny()
    with torch.no_grad():
        next(other.parameters()).add_(0.5)  # same architecture, other values
    job = Job(iter_sensitivity, other, ids, checkpoint_dir=tmp_path / "ck", **KW)
    assert job.wait(60) and job.status == "done"
    resumed = Job(iter_sensitivity, model, ids, resume_from=tmp_path / "ck", **KW)
    assert resumed.wait(60)
    assert resumed.status == "error"
    assert isinstance(resumed.error, ValueError)
    assert "another model: parameter values differ (checkpoint sha256" in str(resumed.error)


def test_resume_with_another_architecture_is_refused(ids, ckpt):
    with pytest.raises(ValueError, match="another model: other parameter names or shapes"):
        resume(tiny(d_model=16), ids, load_checkpoint(ckpt))


def test_resume_with_another_model_class_is_refused(model, ids, ckpt):
    class Renamed(type(model)):
        pass

    other = tiny()
    other.__class__ = Renamed
    with pytest.raises(ValueError, match="another model: another architecture"):
        resume(other, ids, load_checkpoint(ckpt))


def test_resume_with_other_data_of_the_same_shape_is_refused(model, ids, ckpt):
    other = (ids + 1) % adapt(model).vocab_size
    with pytest.raises(ValueError, match="other data: its first 4 samples have sha256"):
        resume(model, other, load_checkpoint(ckpt))


def test_resume_with_a_smaller_data_set_is_refused(model, ids, ckpt):
    with pytest.raises(ValueError, match="other data: it has done=4 samples, this data set only 3"):
        resume(model, ids[:3], load_checkpoint(ckpt))
    batches = [ids[:2], ids[2:3]]  # an iterable of batches: no size known up front
    with pytest.raises(ValueError, match="other data"):
        resume(model, batches, load_checkpoint(ckpt))


@pytest.mark.parametrize(
    "change, what",
    [({"dtype": torch.float32}, "dtype="), ({"batch_size": 4}, "batch_size="), ({"max_seq_len": 4}, "max_seq_len=")],
)
def test_resume_with_other_settings_is_refused(model, ids, ckpt, change, what):
    with pytest.raises(ValueError, match=what):
        resume(model, ids, load_checkpoint(ckpt), **change)


def test_the_same_model_and_data_still_resume_bit_for_bit(model, ids, ckpt):
    uninterrupted = list(iter_sensitivity(model, ids, **KW))[-1]
    final = resume(model, ids.clone(), load_checkpoint(ckpt))[-1]
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(final.state_dict()[key], value), key
    fp = final.meta()["fingerprint"]
    assert fp["data_samples"] == 8 and len(fp["model"]["params_sha256"]) == 64


def test_a_checkpoint_without_fingerprint_is_refused(model, ids, ckpt):
    old = load_checkpoint(ckpt)
    meta = {k: v for k, v in old.meta.items() if k not in ("fingerprint", "dtype", "max_seq_len")}
    with pytest.raises(ValueError, match="no model and data fingerprint"):
        resume(model, ids, Checkpoint(old.tensors, meta, old.done, old.total))


def test_cli_resume_with_another_model_is_a_config_error(tmp_path, capsys):
    from tests.test_cli import FAST, TINY, write_config
    from tscope_widgets.cli import main

    out, again = tmp_path / "out", tmp_path / "again"
    assert main(["run", str(write_config(tmp_path, TINY)), "--out", str(out), *FAST]) == 0
    shutil.copytree(out / "checkpoint", again / "checkpoint")
    other = TINY.replace("steps = 60", "steps = 30")
    capsys.readouterr()
    assert main(["run", str(write_config(tmp_path, other)), "--out", str(again), "--resume", *FAST]) == 2
    assert "another model: parameter values differ" in capsys.readouterr().err


# ----- finding 2: the resumed state is checked --------------------------------------------------------------
def edit_meta(ckpt: Path, **values) -> None:
    record = json.loads((ckpt / "meta.json").read_text())
    record.update({k: v for k, v in values.items() if k in ("done", "total")})
    record["meta"].update(values)
    (ckpt / "meta.json").write_text(json.dumps(record))


def edited(ckpt: Path, **tensors) -> Checkpoint:
    c = load_checkpoint(ckpt)
    return dataclasses.replace(c, tensors={**c.tensors, **tensors})


@pytest.mark.parametrize("done", [7, 10**30])
def test_a_wrong_done_is_refused(model, ids, ckpt, done):
    edit_meta(ckpt, done=done)
    with pytest.raises(ValueError, match=f"{ckpt}.*(done|rows)"):
        resume(model, ids, load_checkpoint(ckpt))


def test_missing_done_or_probe_rng_is_refused(model, ids, ckpt):
    c = load_checkpoint(ckpt)
    meta = {k: v for k, v in c.meta.items() if k != "done"}
    with pytest.raises(ValueError, match="meta.done"):
        resume(model, ids, dataclasses.replace(c, meta=meta))
    tensors = {k: v for k, v in c.tensors.items() if k != "probe_rng"}
    with pytest.raises(ValueError, match="probe_rng is missing"):
        resume(model, ids, dataclasses.replace(c, tensors=tensors))


def test_a_malformed_probe_rng_is_refused(model, ids, ckpt):
    with pytest.raises(ValueError, match="field probe_rng"):
        resume(model, ids, edited(ckpt, probe_rng=torch.zeros(7, dtype=torch.uint8)))


def stat(ckpt: Path, key: str) -> torch.Tensor:
    return load_checkpoint(ckpt).tensors[f"stats.0.{key}"].clone()


def test_a_nan_mean_is_refused(model, ids, ckpt):
    mean = stat(ckpt, "mean")
    mean[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"field stats.0.mean: not finite"):
        resume(model, ids, edited(ckpt, **{"stats.0.mean": mean}))


def test_a_huge_count_is_refused(model, ids, ckpt):
    count = stat(ckpt, "count")
    count[0, 0] = 1e30
    with pytest.raises(ValueError, match=r"field stats.0.count: a count of 1e\+30 exceeds meta.done=4"):
        resume(model, ids, edited(ckpt, **{"stats.0.count": count}))


def test_min_above_max_is_refused(model, ids, ckpt):
    lo, hi = stat(ckpt, "min"), stat(ckpt, "max")
    with pytest.raises(ValueError, match=r"stats.0.min/mean/max"):
        resume(model, ids, edited(ckpt, **{"stats.0.min": hi + 1, "stats.0.max": lo - 1}))


def test_reservoir_ids_outside_the_vocabulary_are_refused(model, ids, ckpt):
    res = load_checkpoint(ckpt).tensors["reservoir.input_ids"].clone()
    res[0, 0] = 10**6
    with pytest.raises(ValueError, match=r"reservoir.input_ids .*outside the model's vocabulary \[0, 11\)"):
        resume(model, ids, edited(ckpt, **{"reservoir.input_ids": res}))


def test_a_negative_reservoir_seen_is_refused(model, ids, ckpt):
    with pytest.raises(ValueError, match=r"reservoir.seen=-1"):
        resume(model, ids, edited(ckpt, **{"reservoir.seen": torch.tensor(-1)}))


def test_a_changed_tensors_file_is_refused_on_load(ckpt):
    name = json.loads((ckpt / "meta.json").read_text())["tensors_file"]
    tensors = load_file(ckpt / name)
    tensors["stats.0.mean"] = tensors["stats.0.mean"] * 2
    save_file(tensors, ckpt / name)
    with pytest.raises(ValueError, match="field tensors_file.*changed after it was saved"):
        load_checkpoint(ckpt)
