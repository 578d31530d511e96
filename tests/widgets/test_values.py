"""Checks shared by the widgets: ints, reals, throttle, flags and menu choices, with hostile values."""

import math
from fractions import Fraction

import numpy as np
import pytest

from tscope_widgets.widgets._values import (
    MIN_THROTTLE_S,
    check_flag,
    check_throttle,
    choice,
    flag,
    is_finite,
    is_int,
    is_real,
)


def test_bools_are_neither_ints_nor_reals():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(np.bool_(True))
    assert not is_int(3.0) and not is_int("3") and not is_int(None)
    assert is_real(0.5) and is_real(np.float32(0.5)) and is_real(Fraction(1, 2)) and is_real(math.nan)
    assert not is_real(False) and not is_real("0.5") and not is_real(None) and not is_real(1j)
    assert is_finite(0.5) and is_finite(10**300) and is_finite(np.float32(1.0))
    for bad in (math.nan, math.inf, -math.inf, 10**400, True, "1", None):  # 10**400: valid JSON, no float
        assert not is_finite(bad)


def test_throttle():
    assert check_throttle(0.1) == 0.1 and check_throttle(1) == 1.0 and type(check_throttle(1)) is float
    assert check_throttle(MIN_THROTTLE_S) == MIN_THROTTLE_S
    for bad in (0.0, 0.01, -1, math.nan, math.inf, 10**400, True, "0.1", None, [0.1]):
        with pytest.raises(ValueError, match="throttle must be a number of seconds >= 0.05"):
            check_throttle(bad)


def test_flags():
    assert check_flag(np.bool_(True), "log_y") is True
    for bad in (0, 1, "true", None):
        with pytest.raises(TypeError, match="log_y must be True or False"):
            check_flag(bad, "log_y")
    assert flag(True) == (True, True, "") and flag(1) == (False, None, "must be true or false")


def test_choices():
    assert choice("b", ("a", "b")) == (True, "b", "")
    for bad in ("c", None, ["a"], 0, b"a"):
        assert choice(bad, ("a", "b")) == (False, None, "choose one of ['a', 'b']")
