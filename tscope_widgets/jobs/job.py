"""Job: run an analysis kernel in a background thread, with progress, pause/cancel and checkpoints.

:mod:`tscope_widgets.jobs` is the only part of the package that knows about threads. Widgets and the
CLI start a :class:`Job` on a *kernel*; the Job keeps the latest snapshot, progress and status, stops
between units of work when asked to, keeps partial results on error, and can checkpoint to disk and
resume. (This module is a little over 500 lines because it is one class, :class:`Job`, whose worker,
throttled delivery and control methods share one lock and one state; splitting them would spread that
state over modules.)

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

Checkpoints are written by :mod:`tscope_widgets.jobs.checkpoint`; intra-op threads are set as
described in :mod:`tscope_widgets.jobs.threads`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, check_checkpointable, load_checkpoint, progress_of, save_checkpoint
from .threads import check_num_threads, claim_threads, release_threads

__all__ = ["STATUSES", "Job", "JobError", "Progress"]

logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "paused", "cancelled", "done", "error")
_TERMINAL = frozenset({"cancelled", "done", "error"})


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
            ends (see :mod:`tscope_widgets.jobs.threads`).
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
                claim_threads(self._num_threads)
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
                done, total = progress_of(snapshot)
                if self._checkpoint_dir is not None:
                    check_checkpointable(snapshot)
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
            release_threads()

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
