"""Intra-op threads of a job's thread: checks, the process default, and its bookkeeping.

``Job(..., num_threads=n)`` runs the kernel with ``n`` PyTorch intra-op threads in the job's thread
(on small models one thread is often fastest: a second one can slow a job 5-10x on a busy machine).
The job's thread calls ``torch.set_num_threads(n)`` before it calls the kernel. With PyTorch's OpenMP
backend (the CPU wheels'), that sets the count of the calling thread and the process default, which
threads that first use PyTorch later start with, but not the count of threads that already did (the
notebook's main thread keeps its count). When the run ends (exhausted, failed, or closed after a
cancel), the job's thread puts the default back to what it was before the first of the overlapping
runs with ``num_threads`` started, once the last of them ends, unless something else changed it in
the meantime (then it is left alone). Other backends have one process-wide pool that cannot be
resized once used, so ``num_threads`` is refused there (:func:`check_num_threads`).
"""

from __future__ import annotations

import threading
from numbers import Integral
from typing import Any

import torch

__all__ = ["check_num_threads", "claim_threads", "default_num_threads", "release_threads"]


def _openmp_backend() -> bool:
    """True if PyTorch's intra-op parallelism runs on OpenMP (per-thread counts; see the module docstring)."""
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


def check_num_threads(num_threads: Any) -> int | None:
    """``num_threads`` as an int, or None; refused if it is not a positive int or PyTorch cannot honour it.

    Args:
        num_threads: PyTorch intra-op threads for a job's thread (see the module docstring), or None.

    Returns:
        ``int(num_threads)``, or None.

    Raises:
        TypeError: If it is not an int (``bool`` included) or None.
        ValueError: If it is below 1, or PyTorch's parallel backend is not OpenMP.
    """
    if num_threads is None:
        return None
    if not isinstance(num_threads, Integral) or isinstance(num_threads, bool):
        raise TypeError(f"num_threads must be a positive int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads}")
    if not _openmp_backend():
        raise ValueError(
            "num_threads needs PyTorch's OpenMP parallel backend (see torch.__config__.parallel_info()); "
            "with this build call torch.set_num_threads once, before any work, instead"
        )
    return int(num_threads)


def default_num_threads() -> int:
    """The intra-op thread count a thread that first uses PyTorch now would get (the process default).

    A fresh thread initialises its count from the default on its first call; the probe thread ends at once.
    """
    out: list[int] = []
    probe = threading.Thread(target=lambda: out.append(torch.get_num_threads()), name="tscope-thread-probe")
    probe.start()
    probe.join()
    return out[0]


class _ThreadDefault:
    """Bookkeeping of the process default of intra-op threads while jobs run with their own count."""

    lock = threading.Lock()
    active = 0  # runs with their own count, in flight
    before: int | None = None  # the default before the first of them started
    last_set: int | None = None  # the count the latest of them set


def claim_threads(num_threads: int) -> None:
    """Set ``num_threads`` intra-op threads in the calling thread (a job's, before its run)."""
    with _ThreadDefault.lock:
        before = default_num_threads() if _ThreadDefault.active == 0 else _ThreadDefault.before
        torch.set_num_threads(num_threads)
        _ThreadDefault.before = before
        _ThreadDefault.active += 1
        _ThreadDefault.last_set = num_threads


def release_threads() -> None:
    """End of a run of :func:`claim_threads`: the last run in flight puts the default back, unless
    something else changed it meanwhile."""
    with _ThreadDefault.lock:
        _ThreadDefault.active -= 1
        if _ThreadDefault.active == 0 and default_num_threads() == _ThreadDefault.last_set:
            torch.set_num_threads(_ThreadDefault.before)
