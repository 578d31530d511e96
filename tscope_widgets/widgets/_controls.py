"""Job controls shared by the widgets that run one kernel in a background :class:`~tscope_widgets.jobs.Job`.

:class:`JobControls` gives such a widget ``start``/``pause``/``resume``/``stop``/``wait``, the job's status
traits kept up to date, and a fresh job (on a fresh kernel run) when ``start`` follows a job that ended.
"""

from __future__ import annotations

import math
from typing import ClassVar

from ..jobs import Job, JobError
from ._display import TERMINAL

__all__ = ["JobControls", "job_progress", "IDLE_PROGRESS"]

# The status traits of a widget without a job (SpectrumWidget before a block is clicked).
IDLE_PROGRESS = {"status": "idle", "message": "", "done": 0, "total": None, "rate": 0.0, "eta": None, "elapsed": 0.0}


def job_progress(job: Job) -> dict:
    """``{status, message, done, total, rate, eta, elapsed}`` of a job as the status traits hold them (an
    infinite or unknown rate or ETA as ``0.0`` / None: JSON has no infinity)."""
    p = job.progress
    return {
        "status": job.status,
        "message": job.message,
        "done": p.done,
        "total": p.total,
        "rate": p.rate if math.isfinite(p.rate) else 0.0,
        "eta": p.eta_s if p.eta_s is not None and math.isfinite(p.eta_s) else None,
        "elapsed": p.elapsed_s,
    }


class JobControls:
    """Mixin (put before :class:`~._display.PicturedWidget`) for a widget watching one kernel job.

    The widget sets ``_job_name`` (the job's thread name) and ``_work_unit`` (what the kernel does between
    two snapshots, e.g. ``"batch"``: the job pauses and stops after the one in flight), declares the synced
    traits ``status``, ``message``, ``done``, ``total``, ``rate``, ``eta``, ``elapsed``, and writes
    :meth:`_new_run` (a fresh kernel generator), :meth:`_clear_data` (the data traits of a new job) and
    :meth:`_sync_data` (the latest snapshot into the traits). Before ``super().__init__()`` it sets
    ``_lock`` (an ``RLock``), ``_job = None``, ``_unsubscribe = lambda: None``, ``_stop_requested = False``,
    ``_throttle`` (seconds) and ``_num_threads``; after it, it calls ``self._new_job(run)``.
    """

    _job_name: ClassVar[str] = "job"
    _work_unit: ClassVar[str] = "step"

    # ------------------------------------------------------------------ what widgets provide
    def _new_run(self):
        """Abstract hook every widget overrides: a fresh kernel generator (its arguments are checked here)."""
        raise NotImplementedError

    def _clear_data(self) -> None:
        """Abstract hook every widget overrides: reset the data traits for a new job (inside ``hold_sync``)."""
        raise NotImplementedError

    def _sync_data(self) -> None:
        """Abstract hook every widget overrides: push the latest snapshot into the data traits."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    @property
    def job(self) -> Job:
        """The :class:`~tscope_widgets.jobs.Job` running the kernel (a new one after a restart)."""
        return self._job

    def start(self) -> None:
        """Start the job; after it ended (done, stopped or failed), start a fresh run from scratch.

        Raises:
            RuntimeError: If the job is running or paused (use :meth:`resume`, or :meth:`stop` first).
        """
        with self._lock:
            if self._job.status in ("running", "paused"):
                raise RuntimeError(f"the job is {self._job.status}; stop() it before starting again")
            if self._job.status in TERMINAL:
                self._new_job(self._new_run())
            self._stop_requested = False
            self._job.start()
            self._sync_status()

    def pause(self) -> None:
        """Pause after the batch (or row) in flight; what is computed so far stays on screen."""
        with self._lock:
            self._job.pause()
            self._sync_status()

    def resume(self) -> None:
        """Continue a paused job."""
        with self._lock:
            self._job.resume()
            self._sync_status()

    def stop(self) -> None:
        """Stop after the batch (or row) in flight; what is computed so far stays. Does not wait (see
        :meth:`wait`)."""
        with self._lock:
            if self._job.status not in TERMINAL:
                self._stop_requested = True
            self._job.cancel()
            self._sync_status()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended and the widget shows its final state.

        Once the job has ended, the static pictures in the outputs that show this widget are refreshed
        once more, addressed to the cell that calls ``wait`` (runners such as nbclient take output for the
        running cell only; see ``_display``).

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True if the job has ended (done or stopped), False on timeout.

        Raises:
            JobError: If the job failed (a ``RuntimeError`` naming the error; the original exception is
                its ``__cause__``, the partial statistics stay in the widget and in ``.snapshot``), so a
                script does not run on with missing statistics.
            RuntimeError: If the job was never started.
        """
        job = self._job
        ended = self._wait_for(job, timeout)
        if ended and job.status == "error":
            raise JobError(
                f"the {self._job_name} job failed: {job.message}; the widget keeps what was computed before "
                "the error (fix the cause and call start() for a fresh run)",
                job.snapshot,
                job,
            ) from job.error
        return ended

    def close(self) -> None:
        """Stop the job and close the widget (its views disappear from the page)."""
        job = getattr(self, "_job", None)  # None when the constructor failed (close() runs from __del__)
        if job is not None:
            self._unsubscribe()
            job.cancel()
        super().close()

    # ------------------------------------------------------------------ job plumbing
    def _new_job(self, run) -> None:
        """A fresh (not started) job on the generator ``run``, subscribed to this widget."""
        self._unsubscribe()
        job = Job(
            lambda: run, name=self._job_name, throttle=self._throttle, start=False, num_threads=self._num_threads
        )
        self._job = job
        self._unsubscribe = job.subscribe(self._on_snapshot)
        with self.hold_sync():
            self._clear_data()
            self._sync_status()

    def _on_snapshot(self, job: Job, snapshot) -> None:
        """Job subscriber (job threads, throttled): push the job's state to the traits; at the end,
        refresh the static pictures in the outputs."""
        with self._lock:
            if job is not self._job:
                return
            with self.hold_sync():
                self._sync_status()
                self._sync_data()
        self._after_job_update(job)

    def _sync_status(self) -> None:
        progress = job_progress(self._job)
        if self._stop_requested and progress["status"] not in TERMINAL:
            progress["message"] = f"stopping after the {self._work_unit} in flight"
        for key, value in progress.items():
            setattr(self, key, value)
