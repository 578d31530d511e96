"""Span choice of landscape grids: from the curvature of eigenvector planes and from the loss rise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tscope_widgets.kernels.landscape import DEFAULT_RISE, eigen_span, quadratic_model, rise_span


def test_eigen_span_is_where_the_quadratic_model_of_the_sharpest_direction_rises_by_the_set_amount():
    lam = [2808.0, 35.0]  # the plane: |alpha| of interest about 0.03
    span = eigen_span(lam)
    assert span == pytest.approx(math.sqrt(2 * DEFAULT_RISE / 2808.0)) and 0.026 < span < 0.027
    # the quadratic model at the edge has risen by exactly the set amount along v1, less along v2
    edge = quadratic_model(torch.tensor([span], dtype=torch.float64), lam[0], 0.0)
    assert float(edge) == pytest.approx(DEFAULT_RISE, rel=1e-12)
    assert eigen_span(torch.tensor([2.0, float("nan")]), rise=0.25) == pytest.approx(0.5)
    assert eigen_span([-3.0, 8.0, None], rise=1.0) == pytest.approx(0.5)  # negative curvature is skipped
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        eigen_span([-1.0, 0.0])
    with pytest.raises(ValueError, match="rise must be a positive"):
        eigen_span([1.0], rise=0.0)


def test_rise_span_finds_the_nearer_crossing_by_linear_interpolation():
    a = torch.linspace(-1, 1, 21, dtype=torch.float64)  # step 0.1
    loss0 = 2.0
    # steep on the left (rise 4 alpha^2), gentle on the right (rise alpha^2)
    losses = loss0 + torch.where(a < 0, 4 * a**2, a**2)
    span = rise_span(a, losses, loss0, rise=1.0)
    # left side: 4 a^2 crosses 1 between a = 0.5 (1.0 exactly) -> the first point at or above is 0.5
    assert span == pytest.approx(0.5, abs=1e-12)
    # between probe points: linear interpolation of the rise
    span = rise_span(a, losses, loss0, rise=0.3)  # left: 4*0.2^2 = 0.16, 4*0.3^2 = 0.36
    assert span == pytest.approx(0.2 + 0.1 * (0.3 - 0.16) / (0.36 - 0.16), rel=1e-12)
    # never reached: the largest probed |alpha|; NaN points are skipped
    flat = torch.full_like(a, loss0)
    flat[3] = float("nan")
    assert rise_span(a, flat, loss0) == pytest.approx(1.0)
    # a one-sided probe works, and the origin may be absent
    assert rise_span(np.array([0.25, 0.5, 1.0]), np.array([0.1, 0.4, 2.0]) + 1.0, 1.0, rise=1.0) == pytest.approx(
        0.5 + 0.5 * (1.0 - 0.4) / (2.0 - 0.4)
    )
    with pytest.raises(ValueError, match="same shape"):
        rise_span(a, losses[:-1], loss0)
    with pytest.raises(ValueError, match="alpha != 0"):
        rise_span([0.0], [1.0], 1.0)


def _perturbed_loss(model, batch, direction, alpha: float) -> float:
    """The reference: the ordinary loss of a deep copy of the model moved by ``alpha * direction``."""
    import copy

    from tscope_widgets.models.registry import adapt

    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p += alpha * direction[name].to(p.dtype)
        return float(adapt(m).loss(batch))


def test_probe_span_is_the_rise_span_of_the_sharper_direction_measured_on_perturbed_copies():
    from tests.model_zoo import tiny
    from tscope_widgets.kernels.landscape import PROBE_ALPHAS, probe_span, random_direction

    model = tiny()
    batch = {"input_ids": torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(2))}
    gen = torch.Generator().manual_seed(5)
    flat = random_direction(model, generator=gen)
    sharp = {k: 400.0 * v for k, v in random_direction(model, generator=gen).items()}  # rises within |a| < 1
    loss0 = _perturbed_loss(model, batch, flat, 0.0)
    spans = []
    for d in (flat, sharp):
        reference = [_perturbed_loss(model, batch, d, a) for a in PROBE_ALPHAS]
        spans.append(rise_span(PROBE_ALPHAS, reference, loss0))
    assert spans[1] < spans[0] <= 1.0 and spans[1] < 0.25  # the sharp direction crosses early
    assert probe_span(model, batch, [flat, sharp]) == pytest.approx(min(spans), rel=1e-9)
    assert probe_span(model, batch, [flat]) == pytest.approx(spans[0], rel=1e-9)
    # the loss at the chosen edge has risen by about the set amount (linear interpolation between probes)
    edge = probe_span(model, batch, [sharp], rise=0.5)
    rises = [_perturbed_loss(model, batch, sharp, s * edge) - loss0 for s in (-1.0, 1.0)]
    assert 0.25 < max(rises) < 1.0, rises
    with pytest.raises(ValueError, match="at least one direction"):
        probe_span(model, batch, [])
    with pytest.raises(ValueError, match="rise must be a positive"):
        probe_span(model, batch, [flat], rise=-1.0)
