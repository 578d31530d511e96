"""Job: progress, cancel, pause, errors, throttled subscribers."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest

from tests.jobs.helpers import (
    ROWS,
    WAIT,
    assert_bit_identical,
    fast_counter,
    reference_state,
    wait_for,
    welford_kernel,
)
from tscope_widgets.jobs import (
    Job,
    JobError,
    Progress,
)


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
    with caplog.at_level(logging.ERROR, logger="tscope_widgets.jobs.job"):
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
