"""Checks shared by the widgets' value checks (``_spectrum_state``, ``_sensitivity_state``, ``_landscape_state``).

Pure functions: each takes a value from Python or from the browser (untrusted) and either returns its
canonical form or says why it is refused. View-state checks return ``(ok, canonical value, reason if not
ok)`` (what :meth:`~._display.PicturedWidget._check` returns); argument checks raise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["MIN_THROTTLE_S", "is_int", "is_real", "is_finite", "check_throttle", "check_flag", "flag", "choice"]

MIN_THROTTLE_S = 0.05  # at most 20 data updates per second reach the browser

Check = tuple[bool, Any, str]


def is_int(x: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``Integral`` too)."""
    return isinstance(x, Integral) and not isinstance(x, (bool, np.bool_))


def is_real(x: Any) -> bool:
    """A real number that is not a bool (may be NaN or infinite: test ``math.isfinite`` where it matters)."""
    return isinstance(x, Real) and not isinstance(x, (bool, np.bool_))


def is_finite(x: Any) -> bool:
    """A finite real number, not a bool (an int too large for a float, which JSON allows, is not)."""
    if not is_real(x):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def check_throttle(throttle: Any, minimum: float = MIN_THROTTLE_S) -> float:
    """``throttle`` as seconds between two data updates sent to the browser.

    Raises:
        ValueError: For a bool, a non-number, NaN, infinity or a number below ``minimum``.
    """
    if not isinstance(throttle, (int, float)) or not is_finite(throttle) or throttle < minimum:
        raise ValueError(f"throttle must be a number of seconds >= {minimum}, got {throttle!r}")
    return float(throttle)


def check_flag(value: Any, name: str) -> bool:
    """A constructor's boolean argument.

    Raises:
        TypeError: For anything but ``True``/``False`` (``numpy.bool_`` included); ``0``/``1`` are refused.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def flag(value: Any) -> Check:
    """A boolean view-state value (a checkbox)."""
    if isinstance(value, (bool, np.bool_)):
        return True, bool(value), ""
    return False, None, "must be true or false"


def choice(value: Any, options: Sequence[str]) -> Check:
    """One of the string ``options`` (a menu)."""
    if isinstance(value, str) and value in options:
        return True, value, ""
    return False, None, f"choose one of {list(options)}"
