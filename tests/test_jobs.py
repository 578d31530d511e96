"""Job: progress, cancel, pause, errors, throttled subscribers, checkpoint/resume (incl. SIGKILL)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tscope_widgets.jobs import (
    Checkpoint,
    Job,
    JobError,
    Progress,
    check_num_threads,
    default_num_threads,
    load_checkpoint,
    save_checkpoint,
)
from tscope_widgets.kernels.welford import WelfordState

REPO = Path(__file__).resolve().parents[1]
ROWS, BATCH, SHAPE = 120, 10, (4, 3)
WAIT = 20.0  # generous upper bound for event waits; never reached unless something is broken


def make_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random rows ``[ROWS, 4, 3]`` with NaN padding where the mask is False."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, *SHAPE, generator=g, dtype=torch.float64) * 2 + 1
    mask = torch.rand(ROWS, *SHAPE, generator=g) < 0.8
    return torch.where(mask, x, float("nan")), mask


@dataclass(frozen=True)
class WelfordSnapshot:
    state: WelfordState
    done: int
    total: int

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state.state_dict()

    def meta(self) -> dict:
        return {"next_row": self.done, "batch": BATCH}


def welford_kernel(
    seed: int,
    *,
    resume: Checkpoint | None = None,
    before_unit: Callable[[int], None] | None = None,
    log: list | None = None,
):
    """Accumulate a WelfordState over ``make_data(seed)``, BATCH rows per unit of work."""
    x, mask = make_data(seed)
    state, start = WelfordState(SHAPE), 0
    if resume is not None:
        state.load_state_dict(resume.tensors)
        start = resume.meta["next_row"]
    try:
        for lo in range(start, ROWS, BATCH):
            unit = lo // BATCH
            if log is not None:
                log.append(unit)
            if before_unit is not None:
                before_unit(unit)
            state.update(x[lo : lo + BATCH], mask[lo : lo + BATCH])
            yield WelfordSnapshot(state.clone(), min(lo + BATCH, ROWS), ROWS)
    finally:
        if log is not None:
            log.append("closed")


def reference_state(seed: int, rows: int = ROWS) -> WelfordState:
    """The statistics of an uninterrupted run over the first ``rows`` rows."""
    snaps = [s for s in welford_kernel(seed) if s.done <= rows]
    return snaps[-1].state


def assert_bit_identical(a: WelfordState, b: WelfordState) -> None:
    da, db = a.state_dict(), b.state_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert torch.equal(da[k], db[k]), k


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for the job"


# ---------------------------------------------------------------- running, progress
def test_runs_to_done_with_progress():
    threads = []
    job = Job(welford_kernel, 0, before_unit=lambda u: threads.append(threading.current_thread()))
    final = job.result(timeout=WAIT)
    assert job.status == "done" and job.finished and job.error is None
    assert "done: 120 of 120" in job.message
    assert final is job.snapshot and final.done == ROWS
    assert_bit_identical(final.state, reference_state(0))
    p = job.progress
    assert isinstance(p, Progress)
    assert (p.done, p.total, p.fraction, p.eta_s) == (ROWS, ROWS, 1.0, 0.0)
    assert p.rate > 0 and p.elapsed_s > 0
    assert {t.name for t in threads} == {"tscope-job-welford_kernel"}
    assert all(t.daemon for t in threads) and threads[0] is not threading.current_thread()
    assert "status='done'" in repr(job)


def test_start_false_and_progress_before_start():
    job = Job(welford_kernel, 1, start=False, name="later")
    assert job.status == "pending" and job.snapshot is None
    p = job.progress
    assert (p.done, p.total, p.rate, p.eta_s, p.elapsed_s, p.fraction) == (0, None, 0.0, None, 0.0, None)
    with pytest.raises(RuntimeError, match="never started"):
        job.wait()
    job.start()
    with pytest.raises(RuntimeError, match="already started"):
        job.start()
    assert job.result(timeout=WAIT).done == ROWS


def test_progress_fields_while_running():
    reached, go = threading.Event(), threading.Event()

    def gate(unit):
        if unit == 6:
            reached.set()
            go.wait(WAIT)

    job = Job(welford_kernel, 2, before_unit=gate)
    wait_for(reached)
    p = job.progress
    assert (p.done, p.total) == (60, ROWS) and p.fraction == 0.5
    assert p.rate > 0 and p.eta_s is not None and p.eta_s > 0 and job.status == "running"
    go.set()
    job.wait(WAIT)


# ---------------------------------------------------------------- cancel, pause
def test_cancel_stops_between_units_and_keeps_partial_snapshot():
    reached, go = threading.Event(), threading.Event()
    log: list = []

    def gate(unit):
        if unit == 3:
            reached.set()
            go.wait(WAIT)

    job = Job(welford_kernel, 3, before_unit=gate, log=log)
    wait_for(reached)
    job.cancel()  # while unit 3 is in flight: it finishes, unit 4 never starts
    go.set()
    assert job.wait(WAIT)
    assert job.status == "cancelled" and "cancelled after 40 of 120" in job.message
    assert log == [0, 1, 2, 3, "closed"]  # generator closed, no further unit
    snap = job.result()
    assert snap.done == 40
    assert_bit_identical(snap.state, reference_state(3, rows=40))
    assert job.progress.eta_s is None
    job.cancel()  # no-op once ended
    assert job.status == "cancelled"


def test_cancel_before_start():
    calls = []
    job = Job(welford_kernel, 0, start=False)
    job.subscribe(lambda j, s: calls.append((j.status, s)))
    job.cancel()
    assert job.status == "cancelled" and job.wait(0) and job.result() is None
    assert calls == [("cancelled", None)]
    with pytest.raises(RuntimeError, match="already started or ended"):
        job.start()


def test_pause_holds_the_counter_and_resume_finishes():
    holder: list[Job] = []
    log: list = []
    parked = threading.Event()

    def gate(unit):
        if unit == 3:
            holder[0].pause()  # from inside unit 3: the job parks right after it

    def on_update(job, snap):
        if job.status == "paused" and snap is not None and snap.done == 40:
            parked.set()

    job = Job(welford_kernel, 4, before_unit=gate, log=log, start=False, throttle=10.0)
    holder.append(job)
    job.subscribe(on_update)
    job.start()
    wait_for(parked)
    time.sleep(0.1)
    assert job.status == "paused" and log == [0, 1, 2, 3]
    assert job.snapshot.done == 40 and job.progress.done == 40
    job.resume()
    final = job.result(timeout=WAIT)
    assert final.done == ROWS and job.status == "done"
    assert_bit_identical(final.state, reference_state(4))


def test_pause_from_outside_then_cancel_while_paused():
    parked = threading.Event()
    job = Job(welford_kernel, 5, start=False, throttle=10.0)
    job.pause()  # before start: it parks before the first unit
    assert job.status == "paused"
    job.subscribe(lambda j, s: parked.set() if j.status == "paused" else None)
    job.start()
    wait_for(parked)
    assert job.status == "paused" and job.snapshot is None
    job.cancel()
    assert job.wait(WAIT)
    assert job.status == "cancelled" and job.snapshot is None
    job.pause()
    job.resume()  # both no-ops once ended
    assert job.status == "cancelled"


# ---------------------------------------------------------------- errors
def test_kernel_error_keeps_partial_statistics():
    def gate(unit):
        if unit == 5:
            raise ValueError("boom at unit 5")

    job = Job(welford_kernel, 6, before_unit=gate)
    assert job.wait(WAIT)
    assert job.status == "error"
    assert "ValueError" in job.message and "boom at unit 5" in job.message
    assert isinstance(job.error, ValueError)
    with pytest.raises(JobError, match="boom at unit 5") as info:
        job.result()
    err = info.value
    assert isinstance(err, RuntimeError) and err.__cause__ is job.error and err.job is job
    assert err.snapshot.done == 50
    assert_bit_identical(err.snapshot.state, reference_state(6, rows=50))


@pytest.mark.parametrize(
    ("kernel", "match"),
    [
        (lambda: 42, "must return an iterator"),
        (lambda: iter([object()]), "`done: int`"),
        (lambda: iter([SimpleNamespace(done="many", total=None)]), "must be an int"),
    ],
)
def test_protocol_violations_end_in_error(kernel, match):
    job = Job(kernel)
    with pytest.raises(JobError, match=match):
        job.result(timeout=WAIT)
    assert job.status == "error"


def test_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        Job(42)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        Job(welford_kernel, 0, checkpoint_every=2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Job(welford_kernel, 0, checkpoint_dir="x", checkpoint_every=0)
    with pytest.raises(ValueError, match="throttle"):
        Job(welford_kernel, 0, throttle=-1)
    with pytest.raises(TypeError, match="callable"):
        Job(welford_kernel, 0, start=False).subscribe("not a function")


def test_result_timeout():
    go = threading.Event()
    job = Job(welford_kernel, 0, before_unit=lambda u: go.wait(WAIT))
    with pytest.raises(TimeoutError, match="still running"):
        job.result(timeout=0.01)
    job.cancel()
    go.set()
    assert job.wait(WAIT)


# ---------------------------------------------------------------- subscribers
def fast_counter(n: int, delay: float = 0.0):
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield SimpleNamespace(done=i + 1, total=n)


def test_subscribers_are_throttled_coalesced_and_see_the_end(caplog):
    throttle = 0.05
    calls: list[tuple[float, int, str]] = []

    def record(job, snap):
        calls.append((time.monotonic(), snap.done, job.status))

    def bad(job, snap):
        raise RuntimeError("subscriber bug")

    job = Job(fast_counter, 1000, 0.0003, throttle=throttle, start=False)
    job.subscribe(record)
    job.subscribe(bad)
    removed = []
    unsubscribe = job.subscribe(lambda j, s: removed.append(s))
    unsubscribe()
    unsubscribe()  # idempotent
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="tscope_widgets.jobs"):
        job.start()
        final = job.result(timeout=WAIT)
    elapsed = time.monotonic() - t0
    assert final.done == 1000 and job.status == "done"
    assert removed == []
    assert 2 <= len(calls) <= elapsed / throttle + 2 and len(calls) < 100
    assert calls[0][1] == 1  # the first snapshot is delivered at once
    assert calls[-1][1:] == (1000, "done")  # the final call sees the end state
    gaps = [b[0] - a[0] for a, b in zip(calls[:-2], calls[1:-1], strict=True)]
    assert all(g >= throttle * 0.99 for g in gaps)
    assert any("subscriber" in r.getMessage() and r.exc_info for r in caplog.records)

    late = []
    job.subscribe(lambda j, s: late.append(s.done))  # subscribing after the end: called once, now
    assert late == [1000]


def test_throttled_snapshot_is_delivered_during_a_long_stall():
    """Trailing edge: a snapshot held back by the throttle reaches subscribers ``throttle`` after the
    previous call, while the kernel is stalled in its next unit; several held back coalesce."""
    throttle = 0.2
    release = threading.Event()
    calls: list[tuple[float, int, threading.Thread]] = []
    seen_fast = threading.Event()

    def fast_then_stall():
        for i in range(1, 4):  # three snapshots within a few microseconds
            yield SimpleNamespace(done=i, total=4)
        assert release.wait(WAIT), "the test never released the stalled kernel"
        yield SimpleNamespace(done=4, total=4)

    waits_refused = []

    def record(job, snap):
        calls.append((time.monotonic(), snap.done, threading.current_thread()))
        if snap.done == 3:
            with pytest.raises(RuntimeError, match="in its own thread") as refused:
                job.wait(0)  # would deadlock: the final call waits for this one to return
            waits_refused.append(refused.value)
            seen_fast.set()

    job = Job(fast_then_stall, throttle=throttle, start=False)
    job.subscribe(record)
    t0 = time.monotonic()
    job.start()
    delivered = seen_fast.wait(WAIT)
    stalled_for = time.monotonic() - t0
    release.set()
    job.wait(WAIT)
    assert delivered, "the snapshot held back by the throttle was not delivered while the kernel stalled"
    # 2 was coalesced into 3; 4 came within the throttle of 3, so only the final call carries it.
    assert [done for _, done, _ in calls] == [1, 3, 4]
    assert calls[1][0] - calls[0][0] >= throttle * 0.99  # the trailing call still respects the throttle
    assert stalled_for < throttle + 5.0  # delivered about `throttle` after the first call, not at the end
    assert calls[1][2] is not calls[0][2]  # from the timer thread: the worker was stalled in the kernel
    assert job.status == "done" and len(waits_refused) == 1


def test_final_call_is_last_when_a_trailing_call_is_pending():
    seen = []
    job = Job(fast_counter, 5, throttle=30.0, start=False)  # every snapshot after the first is held back
    job.subscribe(lambda j, s: seen.append((s.done, j.status)))
    job.start()
    assert job.wait(WAIT)
    time.sleep(0.05)
    assert seen == [(1, "running"), (5, "done")]  # the pending trailing call gave way to the final one


def test_zero_throttle_delivers_every_snapshot():
    seen = []
    job = Job(fast_counter, 50, throttle=0, start=False)
    job.subscribe(lambda j, s: seen.append(s.done))
    job.start()
    job.wait(WAIT)
    assert seen == [*range(1, 51), 50]


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
from tests.test_jobs import welford_kernel
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


# ---------------------------------------------------------------- intra-op threads (num_threads)
def thread_count_kernel(seen: list, units: int = 3, gate=None, reached=None, fail_at: int | None = None):
    """Yield ``units`` snapshots, recording the job thread's intra-op thread count before each; with
    ``gate``, set ``reached`` after the first and wait for ``gate`` before the next; raise at ``fail_at``."""
    seen.append(("called", torch.get_num_threads()))  # the kernel call itself (before the first unit)
    for k in range(1, units + 1):
        if fail_at == k:
            raise RuntimeError("boom")
        seen.append(torch.get_num_threads())
        yield SimpleNamespace(done=k, total=units)
        if gate is not None and k == 1:
            reached.set()
            assert gate.wait(WAIT)


class LateKernel:
    """A kernel that is a plain callable (not a generator function): its own work at call time must
    already run with the job's thread count."""

    def __init__(self, seen: list):
        self.seen = seen
        self.__name__ = "late"

    def __call__(self):
        self.seen.append(("call", torch.get_num_threads()))
        return iter([SimpleNamespace(done=1, total=1)])


@pytest.fixture
def default_threads():
    """The process default of intra-op threads is 1 (tests/conftest.py); put it back after the test."""
    assert torch.get_num_threads() == 1 and default_num_threads() == 1
    yield 1
    torch.set_num_threads(1)


def test_check_num_threads():
    assert check_num_threads(None) is None
    assert check_num_threads(3) == 3 and type(check_num_threads(np.int64(2))) is int
    for bad in (1.5, "2", True, [2], np.True_):
        with pytest.raises(TypeError, match="num_threads must be a positive int or None"):
            check_num_threads(bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_threads must be a positive int or None"):
            check_num_threads(bad)
    with pytest.raises(TypeError, match="num_threads must be a positive int"):
        Job(welford_kernel, 0, num_threads=2.0)
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        Job(welford_kernel, 0, num_threads=0)


def test_check_num_threads_refuses_backends_without_per_thread_counts(monkeypatch):
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool")
    with pytest.raises(ValueError, match="OpenMP"):
        check_num_threads(2)
    assert check_num_threads(None) is None  # None never needs the backend


def test_num_threads_applies_to_the_job_thread_only_and_the_default_comes_back(default_threads):
    seen: list = []
    gate, reached = threading.Event(), threading.Event()
    job = Job(thread_count_kernel, seen, gate=gate, reached=reached, num_threads=3)
    wait_for(reached)
    assert torch.get_num_threads() == 1  # the calling thread keeps its count while the job runs with 3
    assert default_num_threads() == 3  # threads that first use torch now start with 3
    gate.set()
    assert job.wait(WAIT) and job.status == "done"
    assert seen == [("called", 3), 3, 3, 3]
    assert torch.get_num_threads() == 1 and default_num_threads() == 1  # put back before wait() returns

    seen.clear()
    assert Job(LateKernel(seen), num_threads=2).wait(WAIT) and seen == [("call", 2)]
    seen.clear()
    assert Job(thread_count_kernel, seen).wait(WAIT) and seen == [("called", 1), 1, 1, 1]  # None: untouched
    assert default_num_threads() == 1


def test_num_threads_leaves_a_default_changed_meanwhile(default_threads):
    seen: list = []
    gate, reached = threading.Event(), threading.Event()
    job = Job(thread_count_kernel, seen, gate=gate, reached=reached, num_threads=2)
    wait_for(reached)
    torch.set_num_threads(4)  # the user changes the default (and this thread's count) meanwhile
    gate.set()
    assert job.wait(WAIT) and seen[1:] == [2, 2, 2]
    assert default_num_threads() == 4 and torch.get_num_threads() == 4  # not clobbered


def test_num_threads_default_comes_back_after_cancel_error_and_never_started(default_threads):
    gate, reached = threading.Event(), threading.Event()
    log: list = []
    job = Job(welford_kernel, 0, before_unit=lambda u: u == 1 and (reached.set(), gate.wait(WAIT)), log=log,
              num_threads=2)
    wait_for(reached)
    assert default_num_threads() == 2
    job.cancel()
    gate.set()
    assert job.wait(WAIT) and job.status == "cancelled" and log[-1] == "closed"  # closed in the job's thread
    assert default_num_threads() == 1

    job = Job(thread_count_kernel, [], fail_at=2, num_threads=3)
    assert job.wait(WAIT) and job.status == "error" and job.message == "RuntimeError: boom"
    assert default_num_threads() == 1

    job = Job(thread_count_kernel, [], num_threads=3, start=False)
    job.cancel()  # never ran: nothing was set
    assert job.status == "cancelled" and default_num_threads() == 1


def test_overlapping_runs_with_num_threads_restore_the_default_once_the_last_ends(default_threads):
    gates = [threading.Event(), threading.Event()]
    reached = [threading.Event(), threading.Event()]
    seen: list[list] = [[], []]
    jobs = []
    for k, n in enumerate((2, 3)):
        jobs.append(Job(thread_count_kernel, seen[k], gate=gates[k], reached=reached[k], num_threads=n))
        wait_for(reached[k])
    assert default_num_threads() == 3  # the latest count set
    gates[0].set()
    assert jobs[0].wait(WAIT)
    assert default_num_threads() == 3  # the second run is still in flight
    gates[1].set()
    assert jobs[1].wait(WAIT)
    assert [s[1:] for s in seen] == [[2, 2, 2], [3, 3, 3]] and default_num_threads() == 1
