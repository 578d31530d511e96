"""landscape_grid: the one grid builder of the widget and the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tscope_widgets.kernels.landscape import landscape_grid


@pytest.mark.parametrize("resolution", [2, 3, 4, 5, 10, 11, 24, 25, 101])
@pytest.mark.parametrize("span", [1.0, 0.5, 0.1, 3.7, 1e-3, 2.5e4])
def test_grid_is_symmetric_float64_with_exact_endpoints(span, resolution):
    t = landscape_grid(span, resolution)
    assert t.dtype == torch.float64 and t.device.type == "cpu" and t.shape == (resolution,)
    assert t[0].item() == -span and t[-1].item() == span  # the endpoints exactly
    assert torch.equal(t, -t.flip(0))  # symmetric about 0 bit for bit
    assert (t[1:] > t[:-1]).all()
    steps = t.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 2 * span / (resolution - 1)), rtol=1e-12, atol=0)
    torch.testing.assert_close(t, torch.linspace(-span, span, resolution, dtype=torch.float64), rtol=0,
                               atol=4 * span * torch.finfo(torch.float64).eps)


@pytest.mark.parametrize("resolution", [3, 5, 11, 25, 101])
def test_an_odd_resolution_contains_zero_exactly(resolution):
    t = landscape_grid(0.3, resolution)
    mid = t[(resolution - 1) // 2].item()
    assert mid == 0.0 and math.copysign(1.0, mid) == 1.0  # +0.0, not -0.0 or 5.6e-17
    assert (t == 0).sum().item() == 1


@pytest.mark.parametrize("resolution", [2, 4, 10, 24])
def test_an_even_resolution_straddles_zero(resolution):
    t = landscape_grid(1.0, resolution)
    assert (t != 0).all() and t[resolution // 2 - 1].item() == -t[resolution // 2].item() < 0


def test_known_values_and_a_center():
    assert landscape_grid(1.0, 5).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert landscape_grid(0.5, 5).tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert landscape_grid(2, 3).tolist() == [-2.0, 0.0, 2.0]  # an int span is a number too
    # a checkpoint plane: centred on 0.5, the model at 0 and the checkpoint at 1 exactly
    t = landscape_grid(1.0, 25, center=0.5)
    assert t[0].item() == -0.5 and t[-1].item() == 1.5 and t[6].item() == 0.0 and t[18].item() == 1.0
    assert landscape_grid(np.float32(0.5), np.int64(3)).tolist() == [-0.5, 0.0, 0.5]


@pytest.mark.parametrize(
    "span, resolution, kwargs, match",
    [
        (1.0, 1, {}, "resolution must be an int >= 2"),
        (1.0, 0, {}, "resolution must be an int >= 2"),
        (1.0, 5.0, {}, "resolution must be an int >= 2"),
        (1.0, True, {}, "resolution must be an int >= 2"),
        (0.0, 5, {}, "span must be a finite positive number"),
        (-1.0, 5, {}, "span must be a finite positive number"),
        (math.inf, 5, {}, "span must be a finite positive number"),
        (math.nan, 5, {}, "span must be a finite positive number"),
        ("1", 5, {}, "span must be a finite positive number"),
        (1.0, 5, {"center": math.nan}, "center must be a finite number"),
    ],
)
def test_bad_arguments_are_refused(span, resolution, kwargs, match):
    with pytest.raises(ValueError, match=match):
        landscape_grid(span, resolution, **kwargs)
