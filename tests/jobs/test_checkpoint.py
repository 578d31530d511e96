"""Checkpoints: safe files, resume after cancel, error and SIGKILL (bit-identical), load errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from tests.jobs.helpers import (
    BATCH,
    REPO,
    ROWS,
    WAIT,
    assert_bit_identical,
    fast_counter,
    reference_state,
    welford_kernel,
)
from tscope_widgets.jobs import (
    Checkpoint,
    Job,
    JobError,
    load_checkpoint,
    save_checkpoint,
)


# ---------------------------------------------------------------- checkpoints
def assert_checkpoint_files_are_safe(directory: Path) -> None:
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 2 and names[0] == "meta.json" and names[1].startswith("state-"), names
    assert names[1].endswith(".safetensors")
    record = json.loads((directory / "meta.json").read_text())
    assert record["format"] == "tscope_widgets.checkpoint" and record["tensors_file"] == names[1]
    raw = (directory / names[1]).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(record["tensor_keys"])
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch.save zip
    with safe_open(directory / names[1], framework="pt") as f:
        assert sorted(f.keys()) == record["tensor_keys"]


@pytest.mark.parametrize("interruption", ["cancel", "error"])
def test_interrupted_job_resumes_bit_identical(tmp_path, interruption):
    seed, ckpt = 7, tmp_path / "ckpt"
    holder: list[Job] = []

    def gate(unit):
        if unit == 4:
            if interruption == "cancel":
                holder[0].cancel()
            else:
                raise RuntimeError("disk on fire")

    job = Job(welford_kernel, seed, before_unit=gate, checkpoint_dir=ckpt, checkpoint_every=3, start=False)
    holder.append(job)
    job.start()
    job.wait(WAIT)
    # cancel: unit 4 finishes (5 snapshots); error: unit 4 fails (4 snapshots). Saved at the end either way.
    expected_done = 50 if interruption == "cancel" else 40
    assert job.status == ("cancelled" if interruption == "cancel" else "error")
    assert job.last_checkpoint == expected_done
    assert_checkpoint_files_are_safe(ckpt)
    saved = load_checkpoint(ckpt)
    assert saved.done == expected_done and saved.total == ROWS and saved.meta["next_row"] == expected_done

    log: list = []
    resumed = Job(welford_kernel, seed, resume_from=ckpt, checkpoint_dir=ckpt, checkpoint_every=3, log=log)
    final = resumed.result(timeout=WAIT)
    assert log[0] == expected_done // BATCH  # the data already processed was skipped
    assert final.done == ROWS and resumed.progress.rate > 0
    assert_bit_identical(final.state, reference_state(seed))
    assert load_checkpoint(ckpt).done == ROWS
    assert_checkpoint_files_are_safe(ckpt)


def test_resume_from_checkpoint_object():
    partial = reference_state(8, rows=30)
    ckpt = Checkpoint(partial.state_dict(), {"next_row": 30}, done=30, total=ROWS)
    job = Job(welford_kernel, 8, resume_from=ckpt)
    assert_bit_identical(job.result(timeout=WAIT).state, reference_state(8))
    assert job.progress.rate > 0


_CHILD = """
import sys, threading, time
from tests.jobs.helpers import welford_kernel
from tscope_widgets.jobs import Job

def gate(unit):
    if unit == 11:  # never finish on its own: the parent kills this process
        threading.Event().wait()
    time.sleep(0.02)  # slow enough that the kill lands while checkpoints are being written

Job(welford_kernel, 9, before_unit=gate, checkpoint_dir=sys.argv[1], checkpoint_every=1).wait()
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(ckpt)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:  # kill as soon as a checkpoint past unit 2 exists; the child may be mid-write
            assert child.poll() is None, "child exited early"
            assert time.monotonic() < deadline, "no checkpoint from the child"
            try:
                if json.loads((ckpt / "meta.json").read_text())["done"] >= 30:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(WAIT) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    saved = load_checkpoint(ckpt)
    assert 30 <= saved.done <= 110
    log: list = []
    job = Job(welford_kernel, 9, resume_from=ckpt, log=log)
    assert_bit_identical(job.result(timeout=WAIT).state, reference_state(9))
    assert log[0] == saved.done // BATCH


def test_checkpoint_needs_the_protocol(tmp_path):
    job = Job(fast_counter, 3, checkpoint_dir=tmp_path)
    with pytest.raises(JobError, match="state_dict"):
        job.result(timeout=WAIT)
    with pytest.raises(TypeError, match="JSON"):
        bad_meta = SimpleNamespace(done=1, total=None, state_dict=dict, meta=lambda: {"x": object()})
        save_checkpoint(tmp_path, bad_meta)
    with pytest.raises(TypeError, match="str to Tensor"):
        bad_tensors = SimpleNamespace(done=1, total=None, state_dict=lambda: {"x": 1}, meta=dict)
        save_checkpoint(tmp_path, bad_tensors)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Job(welford_kernel, 0, resume_from=tmp_path)
    snap = SimpleNamespace(
        done=2, total=None, state_dict=lambda: {"a": torch.arange(3)}, meta=lambda: {"k": 1}
    )
    save_checkpoint(tmp_path, snap, job_name="t")
    ckpt = load_checkpoint(tmp_path)
    assert torch.equal(ckpt.tensors["a"], torch.arange(3)) and ckpt.meta == {"k": 1} and ckpt.done == 2
    meta_path = tmp_path / "meta.json"
    record = json.loads(meta_path.read_text())
    for patch, match in [
        ({"format": "other"}, "not a tscope_widgets.checkpoint"),
        ({"version": 99}, "version 99"),
        ({"tensors_file": "../../etc/passwd"}, "bad tensors_file"),
        ({"tensor_keys": ["a", "b"]}, "lists tensors"),
        ({"meta": [1]}, "'meta' must be a JSON object"),
    ]:
        meta_path.write_text(json.dumps({**record, **patch}))
        with pytest.raises(ValueError, match=match):
            load_checkpoint(tmp_path)
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A write that fails midway (a full disk) leaves the previous checkpoint whole and no temporary file."""
    from tscope_widgets import _atomic

    def snap(k: int) -> SimpleNamespace:
        return SimpleNamespace(done=k, total=9, state_dict=lambda: {"a": torch.full((3,), float(k))},
                               meta=lambda: {"k": k})

    save_checkpoint(tmp_path, snap(1))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 5)
        raise OSError("disk full (injected)")

    monkeypatch.setattr(_atomic, "save_file", full_disk)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, snap(2))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.done == 1 and ckpt.meta == {"k": 1} and torch.equal(ckpt.tensors["a"], torch.full((3,), 1.0))


def test_a_checkpoint_written_the_old_way_loads(tmp_path):
    """The files as the writer before the shared atomic writer made them (save_file, json.dump indent=1)."""
    from safetensors.torch import save_file

    name = "state-" + "ab" * 16 + ".safetensors"
    tensors = {"count": torch.arange(4, dtype=torch.float64), "rows": torch.tensor(4)}
    save_file(tensors, tmp_path / name, metadata={"format": "tscope_widgets.checkpoint"})
    record = {"format": "tscope_widgets.checkpoint", "version": 1, "job": "old", "done": 4, "total": 8,
              "saved_unix_s": 0.0, "tensors_file": name, "tensor_keys": sorted(tensors), "meta": {"next": 4}}
    with open(tmp_path / "meta.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.done == 4 and ckpt.total == 8 and ckpt.meta == {"next": 4}
    assert all(torch.equal(ckpt.tensors[k], tensors[k]) for k in tensors)
    again = tmp_path / "again"
    save_checkpoint(again, SimpleNamespace(done=4, total=8, state_dict=lambda: tensors, meta=lambda: {"next": 4}),
                    job_name="old")
    new_record = json.loads((again / "meta.json").read_text())
    assert (again / new_record["tensors_file"]).read_bytes() == (tmp_path / name).read_bytes()
    assert {k: v for k, v in new_record.items() if k not in ("saved_unix_s", "tensors_file")} == {
        k: v for k, v in record.items() if k not in ("saved_unix_s", "tensors_file")}
