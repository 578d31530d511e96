"""Jobs: run an analysis kernel in a background thread, with progress, pause/cancel, checkpoints and resume.

The only part of the package that knows about threads. Its modules, top to bottom:

- :mod:`~tscope_widgets.jobs.job`: :class:`Job`, :class:`Progress`, :class:`JobError` and the kernel protocol;
- :mod:`~tscope_widgets.jobs.checkpoint`: :class:`Checkpoint`, :func:`save_checkpoint`, :func:`load_checkpoint`
  (a snapshot's tensors and meta as safetensors plus JSON, written atomically);
- :mod:`~tscope_widgets.jobs.threads`: :func:`check_num_threads`, :func:`default_num_threads` and the
  bookkeeping of the process default of intra-op threads while jobs run with their own count.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .job import STATUSES, Job, JobError, Progress
from .threads import check_num_threads, default_num_threads

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
