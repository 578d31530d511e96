"""Intra-op threads of a job (num_threads): the job thread's count, and the process default coming back."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.jobs.helpers import (
    WAIT,
    wait_for,
    welford_kernel,
)
from tscope_widgets.jobs import (
    Job,
    check_num_threads,
    default_num_threads,
)


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
