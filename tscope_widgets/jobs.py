"""Jobs: run an analysis kernel in a background thread, with progress, pause/cancel and checkpoints.

This is the only module of the package that knows about threads. Widgets and the CLI start a
:class:`Job` on a *kernel*; the Job keeps the latest snapshot, progress and status, stops between
units of work when asked to, keeps partial results on error, and can checkpoint to disk and resume.

Kernel protocol
---------------
A kernel is a callable ``kernel(*args, resume=None, **kwargs) -> Iterator[snapshot]``, typically a
generator function. It yields one snapshot after each unit of work (a batch, a Lanczos step, a grid
row). ``resume=`` is passed only when the job resumes from a checkpoint, so kernels that cannot
resume need not accept it.

A snapshot is any object with

- ``done: int`` and ``total: int | None``: progress in units the kernel chooses (e.g. samples).
  ``done`` is absolute: after a resume it counts the work done before the checkpoint too.
- for checkpointing jobs only: ``state_dict() -> dict[str, Tensor]`` (everything needed to continue,
  tensors only) and ``meta() -> dict`` (JSON-serialisable: where to continue, settings, ...).

A snapshot must not change after it was yielded (yield a copy such as ``state.clone()``, not the
live accumulator): the Job hands it to other threads, and on error or cancel it is the partial
result that is kept and checkpointed.

``resume`` is a :class:`Checkpoint` loaded from disk: ``resume.tensors`` is the ``state_dict()`` and
``resume.meta`` the ``meta()`` of the snapshot that was saved. The kernel restores its state from
it and continues with the first unit of work after that snapshot, skipping the data already
processed, so that an interrupted and resumed run ends with the same statistics as an
uninterrupted one.

Example:
    >>> from types import SimpleNamespace
    >>> def count_to(n, resume=None):
    ...     start = 0 if resume is None else resume.meta["done"]
    ...     for i in range(start, n):
    ...         yield SimpleNamespace(done=i + 1, total=n)
    >>> job = Job(count_to, 5)
    >>> job.result().done, job.status
    (5, 'done')

Checkpoints
-----------
:func:`save_checkpoint` writes a directory holding ``meta.json`` (format, version, ``done``,
``total``, the kernel's ``meta()``) and ``state-<id>.safetensors`` (the tensors). Files are written
to temporary names, flushed and moved into place with ``os.replace``; ``meta.json`` is replaced last
and names the tensors file, so a process killed at any moment leaves either the previous checkpoint
or the new one, never a mix. No pickle is written or read. One writer per directory.

Threads
-------
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

import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "Checkpoint",
    "Job",
    "JobError",
    "Progress",
    "STATUSES",
    "check_num_threads",
    "default_num_threads",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "paused", "cancelled", "done", "error")
_TERMINAL = frozenset({"cancelled", "done", "error"})

CHECKPOINT_FORMAT = "tscope_widgets.checkpoint"
CHECKPOINT_VERSION = 1
_META_FILE = "meta.json"
_STATE_FILE = re.compile(r"state-[0-9a-f]{32}\.safetensors")
_TMP_PREFIX = ".tmp-"


# ---------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as loaded from disk and passed to a kernel as ``resume=``.

    Attributes:
        tensors: The snapshot's ``state_dict()`` (CPU tensors).
        meta: The snapshot's ``meta()`` (JSON values).
        done: The snapshot's ``done`` when it was saved.
        total: The snapshot's ``total`` when it was saved.
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    done: int = 0
    total: int | None = None


@dataclass(frozen=True)
class Progress:
    """Progress of a job.

    Attributes:
        done: Units of work done (from the latest snapshot; absolute, including resumed work).
        total: Units in all, or None if the kernel does not know.
        rate: Units per second in this run, over the time the job was actually running (pauses
            excluded); 0.0 before the first snapshot.
        eta_s: Estimated seconds to completion; None if unknown (no total, no rate yet, or the job was
            cancelled or failed), 0.0 once done.
        elapsed_s: Wall-clock seconds since the job started (until it ended), pauses included.
        fraction: ``done / total`` (1.0 when ``total`` is 0), or None without a total.
    """

    done: int
    total: int | None
    rate: float
    eta_s: float | None
    elapsed_s: float
    fraction: float | None


class JobError(RuntimeError):
    """A job's kernel (or its checkpointing) failed.

    Raised by :meth:`Job.result` ``from`` the original exception.

    Attributes:
        snapshot: The last snapshot before the failure (partial statistics), or None.
        job: The failed :class:`Job`.
    """

    def __init__(self, message: str, snapshot: Any = None, job: Job | None = None):
        super().__init__(message)
        self.snapshot = snapshot
        self.job = job


# ---------------------------------------------------------------------------- snapshot access
def _progress_of(snapshot: Any) -> tuple[int, int | None]:
    try:
        done, total = snapshot.done, snapshot.total
    except AttributeError:
        raise TypeError(
            f"a kernel snapshot needs attributes `done: int` and `total: int | None`; "
            f"got a {type(snapshot).__name__} without them"
        ) from None
    try:
        return int(done), None if total is None else int(total)
    except (TypeError, ValueError):
        raise TypeError(
            f"snapshot.done must be an int and snapshot.total an int or None, got {done!r} and {total!r}"
        ) from None


def _check_checkpointable(snapshot: Any) -> None:
    for name in ("state_dict", "meta"):
        if not callable(getattr(snapshot, name, None)):
            raise TypeError(
                f"a checkpointing job needs snapshots with state_dict() and meta(); "
                f"{type(snapshot).__name__} has no {name}()"
            )


def _snapshot_tensors(snapshot: Any) -> dict[str, Tensor]:
    tensors = snapshot.state_dict()
    if not isinstance(tensors, Mapping):
        raise TypeError(f"snapshot.state_dict() must return a dict of tensors, got {type(tensors).__name__}")
    out = {}
    for key, t in tensors.items():
        if not isinstance(key, str) or not isinstance(t, Tensor):
            raise TypeError(f"snapshot.state_dict() must map str to Tensor, got {key!r}: {type(t).__name__}")
        # A private contiguous CPU copy: safetensors rejects views that share storage.
        out[key] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


def _snapshot_meta(snapshot: Any) -> dict[str, Any]:
    meta = snapshot.meta()
    if not isinstance(meta, dict):
        raise TypeError(f"snapshot.meta() must return a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"snapshot.meta() must be JSON-serialisable: {e}") from e
    return meta


# ---------------------------------------------------------------------------- checkpoint files
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # directories cannot be opened for fsync on Windows
        _fsync_path(path)


def save_checkpoint(path_dir: str | os.PathLike, snapshot: Any, *, job_name: str | None = None) -> Path:
    """Write ``snapshot`` (its ``state_dict()``, ``meta()``, ``done`` and ``total``) to a directory.

    The directory is created if needed; an earlier checkpoint in it is replaced atomically (see the
    module docstring). Older tensors files are removed once the new ``meta.json`` is in place.

    Args:
        path_dir: Checkpoint directory.
        snapshot: A kernel snapshot with ``done``, ``total``, ``state_dict()`` and ``meta()``.
        job_name: Recorded in ``meta.json`` for humans.

    Returns:
        The checkpoint directory.

    Raises:
        TypeError: If the snapshot lacks a part of the protocol, ``state_dict()`` is not a dict of
            tensors, or ``meta()`` is not JSON-serialisable.
    """
    done, total = _progress_of(snapshot)
    _check_checkpointable(snapshot)
    tensors = _snapshot_tensors(snapshot)
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "job": job_name,
        "done": done,
        "total": total,
        "saved_unix_s": time.time(),
        "tensors_file": "",
        "tensor_keys": sorted(tensors),
        "meta": _snapshot_meta(snapshot),
    }
    directory = Path(path_dir)
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    state_name = f"state-{token}.safetensors"
    record["tensors_file"] = state_name

    tmp_state = directory / f"{_TMP_PREFIX}{state_name}"
    save_file(tensors, tmp_state, metadata={"format": CHECKPOINT_FORMAT})
    _fsync_path(tmp_state)
    os.replace(tmp_state, directory / state_name)

    tmp_meta = directory / f"{_TMP_PREFIX}{token}-{_META_FILE}"
    with open(tmp_meta, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_meta, directory / _META_FILE)  # the commit point
    _fsync_dir(directory)

    for old in directory.iterdir():
        stale_state = _STATE_FILE.fullmatch(old.name) and old.name != state_name
        if stale_state or old.name.startswith(_TMP_PREFIX):
            old.unlink(missing_ok=True)
    return directory


def load_checkpoint(path_dir: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors + JSON; no pickle).

    Args:
        path_dir: Checkpoint directory.

    Returns:
        The :class:`Checkpoint` (tensors on the CPU).

    Raises:
        FileNotFoundError: If the directory holds no checkpoint.
        ValueError: If ``meta.json`` is not a checkpoint of this format and version, or it does not
            match the tensors file.
    """
    directory = Path(path_dir)
    meta_path = directory / _META_FILE
    for attempt in range(2):
        try:
            record = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no checkpoint in {directory}: {_META_FILE} not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path} is not valid JSON: {e}") from e
        if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{meta_path} is not a {CHECKPOINT_FORMAT} file")
        if record.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{meta_path} has checkpoint version {record.get('version')!r}; this code reads "
                f"version {CHECKPOINT_VERSION}"
            )
        state_name = record.get("tensors_file")
        if not isinstance(state_name, str) or not _STATE_FILE.fullmatch(state_name):
            raise ValueError(f"{meta_path}: bad tensors_file entry {state_name!r}")
        try:
            tensors = load_file(directory / state_name, device="cpu")
            break
        except FileNotFoundError:
            if attempt:  # a concurrent writer may have replaced the checkpoint in between: retry once
                raise FileNotFoundError(f"{meta_path} names missing file {state_name}") from None
    keys = record.get("tensor_keys")
    if keys is not None and sorted(tensors) != keys:
        raise ValueError(f"{meta_path} lists tensors {keys}, but the tensors file has {sorted(tensors)}")
    meta = record.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: 'meta' must be a JSON object")
    done, total = record.get("done"), record.get("total")
    if not isinstance(done, int) or not (total is None or isinstance(total, int)):
        raise ValueError(f"{meta_path}: bad done/total entries {done!r}, {total!r}")
    return Checkpoint(tensors=tensors, meta=meta, done=done, total=total)


# ---------------------------------------------------------------------------- intra-op threads
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


def _claim_threads(num_threads: int) -> None:
    """Set ``num_threads`` intra-op threads in the calling thread (a job's, before its run)."""
    with _ThreadDefault.lock:
        before = default_num_threads() if _ThreadDefault.active == 0 else _ThreadDefault.before
        torch.set_num_threads(num_threads)
        _ThreadDefault.before = before
        _ThreadDefault.active += 1
        _ThreadDefault.last_set = num_threads


def _release_threads() -> None:
    """End of a run of :func:`_claim_threads`: the last run in flight puts the default back, unless
    something else changed it meanwhile."""
    with _ThreadDefault.lock:
        _ThreadDefault.active -= 1
        if _ThreadDefault.active == 0 and default_num_threads() == _ThreadDefault.last_set:
            torch.set_num_threads(_ThreadDefault.before)


# ---------------------------------------------------------------------------- Job
@dataclass
class _Timing:
    started: float | None = None
    ended: float | None = None
    active_s: float = 0.0
    active_since: float | None = None


@dataclass
class _Notifier:
    """Subscriber bookkeeping: throttled deliveries, leading edge plus a coalesced trailing one."""

    throttle: float
    last: float = -math.inf  # time.monotonic() of the latest delivery
    subscribers: dict[int, Callable[[Job, Any], None]] = field(default_factory=dict)
    next_token: int = 0
    final_delivered: bool = False
    # Serialises deliveries (worker thread and trailing timer), so subscribers see snapshots in order.
    delivering: threading.RLock = field(default_factory=threading.RLock)
    pending: Any = None  # the latest snapshot not yet delivered, when has_pending
    has_pending: bool = False
    timer: threading.Timer | None = None  # delivers `pending` at last + throttle
    in_callback: threading.local = field(default_factory=threading.local)


class Job:
    """Run a kernel generator in a named daemon thread; see the module docstring for the protocol.

    Args:
        kernel: ``kernel(*args, **kwargs)`` returning an iterator of snapshots.
        *args: Positional arguments for the kernel.
        name: Name for messages and the thread (``tscope-job-<name>``); default: the kernel's name.
        checkpoint_dir: Directory for checkpoints. When set, the job saves the latest snapshot when it
            ends (done, cancelled or failed), and every ``checkpoint_every`` snapshots.
        checkpoint_every: Save every N snapshots (needs ``checkpoint_dir``).
        resume_from: A checkpoint directory (or a loaded :class:`Checkpoint`); it is loaded now and
            passed to the kernel as ``resume=``.
        throttle: Minimum seconds between subscriber calls (0 delivers every snapshot).
        start: Start the thread now; otherwise call :meth:`start`.
        num_threads: PyTorch intra-op threads of the job's thread while the kernel runs (a positive
            int), or None to leave the count alone (the job's thread then starts with the process
            default). Set before the kernel is called; the process default is put back when the run
            ends (see "Threads" in the module docstring).
        **kwargs: Keyword arguments for the kernel.

    Status goes ``pending`` -> ``running`` (<-> ``paused``) -> ``done`` | ``cancelled`` | ``error``.
    :meth:`pause` and :meth:`cancel` act between units of work: the unit in flight finishes and its
    snapshot is kept.

    Raises:
        TypeError: If ``kernel`` is not callable, or ``num_threads`` is not an int or None.
        ValueError: On a bad ``throttle`` or ``checkpoint_every``, ``checkpoint_every`` without
            ``checkpoint_dir``, or a ``num_threads`` that :func:`check_num_threads` refuses.
        FileNotFoundError: If ``resume_from`` holds no checkpoint.
    """

    def __init__(
        self,
        kernel: Callable[..., Iterator[Any]],
        *args: Any,
        name: str | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume_from: str | os.PathLike | Checkpoint | None = None,
        throttle: float = 0.1,
        start: bool = True,
        num_threads: int | None = None,
        **kwargs: Any,
    ):
        if not callable(kernel):
            raise TypeError(f"kernel must be callable (a generator function), got {type(kernel).__name__}")
        if checkpoint_every is not None:
            if type(checkpoint_every) is not int or checkpoint_every < 1:
                raise ValueError(f"checkpoint_every must be a positive int or None, got {checkpoint_every!r}")
            if checkpoint_dir is None:
                raise ValueError("checkpoint_every needs checkpoint_dir (where to write the checkpoints)")
        if not isinstance(throttle, (int, float)) or not math.isfinite(throttle) or throttle < 0:
            raise ValueError(f"throttle must be a finite number of seconds >= 0, got {throttle!r}")
        self._num_threads = check_num_threads(num_threads)

        self.name = str(name) if name is not None else getattr(kernel, "__name__", type(kernel).__name__)
        self._kernel, self._args, self._kwargs = kernel, args, kwargs
        self._checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._checkpoint_every = checkpoint_every
        if resume_from is None or isinstance(resume_from, Checkpoint):
            self._resume = resume_from
        else:
            self._resume = load_checkpoint(resume_from)
        self._done0 = self._resume.done if self._resume is not None else 0

        self._lock = threading.Lock()
        self._status = "pending"
        self._message = ""
        self._error: BaseException | None = None
        self._snapshot: Any = None
        self._done, self._total = self._done0, (self._resume.total if self._resume is not None else None)
        self._last_checkpoint: int | None = None
        self._timing = _Timing()
        self._notifier = _Notifier(float(throttle))
        self._cancel_requested = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> str:
        """One of ``pending``, ``running``, ``paused``, ``cancelled``, ``done``, ``error``."""
        return self._status

    @property
    def message(self) -> str:
        """Human-readable end note: the error with its type, a cancel note, or a done note."""
        return self._message

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the job, or None."""
        return self._error

    @property
    def snapshot(self) -> Any:
        """The latest snapshot yielded by the kernel, or None before the first."""
        return self._snapshot

    @property
    def last_checkpoint(self) -> int | None:
        """``done`` of the last checkpoint this job wrote, or None."""
        return self._last_checkpoint

    @property
    def finished(self) -> bool:
        """True once the job has ended (done, cancelled or error) and its final callbacks ran."""
        return self._finished.is_set()

    @property
    def progress(self) -> Progress:
        """Done/total, rate, ETA and elapsed time (see :class:`Progress`)."""
        with self._lock:
            done, total, status = self._done, self._total, self._status
            t = _Timing(**vars(self._timing))
        now = time.monotonic()
        elapsed = 0.0 if t.started is None else (t.ended if t.ended is not None else now) - t.started
        active = t.active_s + (now - t.active_since if t.active_since is not None else 0.0)
        rate = (done - self._done0) / active if active > 0 and done > self._done0 else 0.0
        if status == "done":
            eta = 0.0
        elif total is None or rate <= 0 or status in _TERMINAL:
            eta = None
        else:
            eta = max(total - done, 0) / rate
        fraction = None if total is None else (done / total if total else 1.0)
        return Progress(done=done, total=total, rate=rate, eta_s=eta, elapsed_s=elapsed, fraction=fraction)

    def __repr__(self) -> str:
        p = self.progress
        return f"Job({self.name!r}, status={self.status!r}, done={p.done}, total={p.total})"

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the worker thread (for jobs created with ``start=False``).

        Raises:
            RuntimeError: If the job was already started or cancelled.
        """
        with self._lock:
            if self._thread is not None or self._status in _TERMINAL:
                raise RuntimeError(
                    f"job {self.name!r} was already started or ended (status {self._status!r})"
                )
            self._thread = threading.Thread(target=self._run, name=f"tscope-job-{self.name}", daemon=True)
            self._timing.started = time.monotonic()
            if self._status == "pending":
                self._status = "running"
        self._thread.start()

    def pause(self) -> None:
        """Ask the job to stop after the unit of work in flight, until :meth:`resume`. No-op once ended."""
        with self._lock:
            if self._status in ("pending", "running") and not self._cancel_requested.is_set():
                self._unpaused.clear()
                self._status = "paused"

    def resume(self) -> None:
        """Continue a paused job. No-op unless paused."""
        with self._lock:
            if self._status == "paused":
                self._status = "running" if self._thread is not None else "pending"
                self._unpaused.set()

    def cancel(self) -> None:
        """Stop the job after the unit of work in flight (also when paused); the generator is closed.

        The latest snapshot stays available (and is checkpointed if the job checkpoints). No-op once
        ended. Does not wait: use :meth:`wait`.
        """
        with self._lock:
            if self._status in _TERMINAL:
                return
            if self._thread is None:  # never started: end right here
                self._status, self._message = "cancelled", "cancelled before it started"
                self._timing.started = self._timing.ended = time.monotonic()
                not_started = True
            else:
                self._cancel_requested.set()
                self._unpaused.set()
                not_started = False
        if not_started:
            self._deliver(self._snapshot, final=True)
            self._finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended and its final callbacks ran.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True if the job has ended, False on timeout.

        Raises:
            RuntimeError: If the job was never started, or when called from the job's own thread
                (a subscriber), which would deadlock.
        """
        if self._finished.is_set():
            return True
        if self._thread is None:
            raise RuntimeError(f"job {self.name!r} was never started; call start() first")
        if threading.current_thread() is self._thread or getattr(self._notifier.in_callback, "active", False):
            raise RuntimeError(f"cannot wait for job {self.name!r} in its own thread (e.g. in a subscriber)")
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its final snapshot (the partial one if it was cancelled).

        Raises:
            JobError: If the job failed; ``.snapshot`` holds the partial statistics and the original
                exception is chained as ``__cause__``.
            TimeoutError: If the job is still running after ``timeout`` seconds.
            RuntimeError: See :meth:`wait`.
        """
        if not self.wait(timeout):
            raise TimeoutError(f"job {self.name!r} still {self._status} after {timeout} s")
        if self._status == "error":
            message = f"job {self.name!r} failed: {self._message}"
            raise JobError(message, self._snapshot, self) from self._error
        return self._snapshot

    def subscribe(self, callback: Callable[[Job, Any], None]) -> Callable[[], None]:
        """Call ``callback(job, snapshot)`` as snapshots arrive.

        Calls are throttled and coalesced: at most one per ``throttle`` seconds, always with the latest
        snapshot. A snapshot that arrives sooner than ``throttle`` after the previous call is not
        dropped: it (or a newer one that replaced it) is delivered ``throttle`` after that call, even
        while the kernel is busy with a slow unit of work, so a view never lags a unit behind. Then
        one call when the job parks on :meth:`pause`, and a final call once the job has ended
        (``snapshot`` may be None if the kernel never yielded), after which there are no more calls,
        so that a view always ends on the end state. Calls never overlap and come in order, from the
        worker thread or from a short-lived timer thread (trailing calls). Subscribing to an ended job
        calls ``callback`` once, right away, in the calling thread. Exceptions from callbacks are
        logged and ignored.

        Returns:
            A function that unsubscribes ``callback`` (idempotent).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        n = self._notifier
        with self._lock:
            ended = n.final_delivered
            if not ended:
                token = n.next_token
                n.next_token += 1
                n.subscribers[token] = callback
        if ended:
            self._call(callback, self._snapshot)
            return lambda: None

        def unsubscribe() -> None:
            with self._lock:
                n.subscribers.pop(token, None)

        return unsubscribe

    # ------------------------------------------------------------------ worker
    def _call(self, callback: Callable[[Job, Any], None], snapshot: Any) -> None:
        try:
            callback(self, snapshot)
        except Exception:
            logger.exception("subscriber %r of job %r raised; ignored", callback, self.name)

    def _deliver(self, snapshot: Any, *, final: bool = False, force: bool = False) -> None:
        """Hand ``snapshot`` to the subscribers now, or schedule the trailing call if throttled.

        ``final``: the last call (later ones are dropped); ``force``: ignore the throttle (pause).
        """
        n = self._notifier
        with n.delivering:
            if n.final_delivered:
                return
            wait = n.last + n.throttle - time.monotonic()
            if wait > 0 and not (final or force):
                n.pending, n.has_pending = snapshot, True
                if n.timer is None:
                    n.timer = threading.Timer(wait, self._flush_pending)
                    n.timer.name = f"tscope-job-{self.name}-notify"
                    n.timer.daemon = True
                    n.timer.start()
                return
            self._deliver_now(snapshot, final)

    def _flush_pending(self) -> None:
        """Trailing edge (timer thread): deliver the snapshot that the throttle held back."""
        n = self._notifier
        with n.delivering:
            if n.timer is not threading.current_thread():
                return  # a delivery in between took the pending snapshot and cancelled this timer
            n.timer = None
            if n.has_pending and not n.final_delivered:
                self._deliver_now(n.pending, final=False)

    def _deliver_now(self, snapshot: Any, final: bool) -> None:
        n = self._notifier  # caller holds n.delivering
        n.pending, n.has_pending = None, False
        if n.timer is not None:
            n.timer.cancel()
            n.timer = None
        n.last = time.monotonic()
        with self._lock:
            callbacks = list(n.subscribers.values())
            if final:
                n.final_delivered = True
                n.subscribers.clear()
        outer = getattr(n.in_callback, "active", False)
        n.in_callback.active = True
        try:
            for cb in callbacks:
                self._call(cb, snapshot)
        finally:
            n.in_callback.active = outer

    def _set_active(self, active: bool) -> None:
        with self._lock:
            t = self._timing
            now = time.monotonic()
            if active:
                t.active_since = now
            elif t.active_since is not None:
                t.active_s += now - t.active_since
                t.active_since = None

    def _park(self) -> None:
        self._set_active(False)
        self._deliver(self._snapshot, force=True)
        self._unpaused.wait()
        self._set_active(True)

    def _save(self, snapshot: Any) -> None:
        save_checkpoint(self._checkpoint_dir, snapshot, job_name=self.name)
        self._last_checkpoint = self._done

    def _run(self) -> None:
        gen = None
        outcome, error = "done", None
        n_snapshots = saved_at = 0
        claimed = False
        self._set_active(True)
        try:
            if self._num_threads is not None:
                _claim_threads(self._num_threads)
                claimed = True
            kwargs = dict(self._kwargs)
            if self._resume is not None:
                kwargs["resume"] = self._resume
            gen = self._kernel(*self._args, **kwargs)
            if not isinstance(gen, Iterator):
                raise TypeError(
                    f"kernel {self.name!r} must return an iterator of snapshots (e.g. be a generator "
                    f"function), got {type(gen).__name__}"
                )
            while True:
                if not self._unpaused.is_set():
                    self._park()
                if self._cancel_requested.is_set():
                    outcome = "cancelled"
                    break
                try:
                    snapshot = next(gen)
                except StopIteration:
                    break
                done, total = _progress_of(snapshot)
                if self._checkpoint_dir is not None:
                    _check_checkpointable(snapshot)
                with self._lock:
                    self._snapshot, self._done, self._total = snapshot, done, total
                n_snapshots += 1
                if self._checkpoint_every and n_snapshots % self._checkpoint_every == 0:
                    self._save(snapshot)
                    saved_at = n_snapshots
                self._deliver(snapshot)
        except BaseException as e:  # noqa: BLE001 - every failure must end in status "error"
            outcome, error = "error", e

        if self._checkpoint_dir is not None and self._snapshot is not None and saved_at != n_snapshots:
            try:
                self._save(self._snapshot)
            except Exception as e:
                logger.exception("job %r: writing the final checkpoint failed", self.name)
                if error is None:
                    outcome, error = "error", e
        if gen is not None and hasattr(gen, "close"):
            try:
                gen.close()
            except Exception:
                logger.exception("kernel of job %r raised while being closed", self.name)
        if claimed:
            _release_threads()

        self._set_active(False)
        with self._lock:
            done, total = self._done, self._total
            of_total = f" of {total}" if total is not None else ""
            if outcome == "error":
                self._message = f"{type(error).__name__}: {error}"
                self._error = error
            elif outcome == "cancelled":
                self._message = f"cancelled after {done}{of_total} units"
            else:
                self._message = f"done: {done}{of_total} units"
            self._status = outcome
            self._timing.ended = time.monotonic()
        if outcome == "error":
            logger.debug("job %r failed", self.name, exc_info=error)
        self._deliver(self._snapshot, final=True)
        self._finished.set()
