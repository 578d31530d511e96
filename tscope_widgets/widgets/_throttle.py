"""A throttle for values pushed from another thread (e.g. a training loop) to a widget.

:class:`Throttle` calls ``deliver(value)`` at most once per ``interval`` seconds, always with the
latest value: the first value after a quiet period goes out at once (leading edge); values that come
sooner are coalesced, and the newest of them is delivered ``interval`` after the previous call by a
short-lived timer thread (trailing edge), even if no further value ever comes. So the last value is
never lost and a view never lags behind by more than ``interval``. This is the rule
:meth:`tscope_widgets.jobs.Job.subscribe` follows for job snapshots, for producers that are not jobs.

Deliveries never overlap and come in submission order. Exceptions raised by ``deliver`` are logged
and dropped, so a failing view cannot break the producer.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Throttle"]

logger = logging.getLogger(__name__)


class Throttle:
    """Coalescing rate limiter with leading and trailing edges.

    Args:
        deliver: Called as ``deliver(value)`` from the submitting thread (leading edge, :meth:`flush`)
            or from a timer thread (trailing edge).
        interval: Least seconds between two calls (``>= 0``; 0 delivers every value at once).
        name: Name of the timer threads (for debugging).

    Raises:
        ValueError: For a negative or non-finite ``interval``.
    """

    def __init__(self, deliver: Callable[[Any], None], interval: float, *, name: str = "tscope-throttle"):
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval):
            raise ValueError(f"interval must be a finite number of seconds, got {interval!r}")
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self._deliver = deliver
        self.interval = float(interval)
        self.name = name
        self._lock = threading.RLock()  # held while delivering: calls never overlap, stay in order
        self._last = -math.inf  # time.monotonic() of the latest delivery
        self._pending: Any = None
        self._has_pending = False
        self._timer: threading.Timer | None = None
        self._closed = False
        self.deliveries = 0  # calls of `deliver` so far

    @property
    def pending(self) -> bool:
        """True while a coalesced value waits for its trailing delivery."""
        return self._has_pending

    def __call__(self, value: Any) -> None:
        """Submit ``value``: delivered now if the last delivery is ``interval`` old, else coalesced."""
        with self._lock:
            if self._closed:
                return
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0:
                self._deliver_now(value)
                return
            self._pending, self._has_pending = value, True
            if self._timer is None:
                self._timer = threading.Timer(wait, self._trailing)
                self._timer.name = f"{self.name}-trailing"
                self._timer.daemon = True
                self._timer.start()

    def flush(self, *value: Any) -> None:
        """Deliver now, ignoring the interval: ``value`` if given, else the pending value if any."""
        if len(value) > 1:
            raise TypeError("flush() takes at most one value")
        with self._lock:
            if self._closed:
                return
            if value:
                self._deliver_now(value[0])
            elif self._has_pending:
                self._deliver_now(self._pending)

    def close(self) -> None:
        """Drop the pending value and stop delivering (idempotent)."""
        with self._lock:
            self._closed = True
            self._pending, self._has_pending = None, False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _trailing(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # a delivery in between took the pending value and cancelled this timer
            self._timer = None
            if self._has_pending and not self._closed:
                self._deliver_now(self._pending)

    def _deliver_now(self, value: Any) -> None:
        # Caller holds self._lock.
        self._pending, self._has_pending = None, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = time.monotonic()
        self.deliveries += 1
        try:
            self._deliver(value)
        except Exception:
            logger.exception("throttled delivery %r raised; ignored", self.name)
