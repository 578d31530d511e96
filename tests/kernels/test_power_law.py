"""Power-law fits: the planted exponent comes back, the interval covers it as often as it claims, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tscope_widgets import PowerLawFit, fit_power_law


def planted(exponent: float, prefactor: float, seeds: int, noise: float, rng: np.random.Generator):
    """y = c x^a, each seed's runs scaled by one lognormal factor and each run by its own."""
    x = np.array([16.0, 32.0, 64.0, 128.0])
    xs = np.tile(x, seeds)
    group = np.repeat(np.arange(seeds), x.size)
    seed_effect = rng.normal(0, noise, seeds)[group]
    run_effect = rng.normal(0, noise / 2, xs.size)
    return xs, prefactor * xs**exponent * np.exp(seed_effect + run_effect), group


def test_exact_power_law_is_recovered_to_rounding():
    x = np.geomspace(1, 1000, 7)
    fit = fit_power_law(x, 2.5 * x**-0.75, seeds=[0, 1, 0, 1, 0, 1, 0])
    assert isinstance(fit, PowerLawFit)
    assert fit.exponent == pytest.approx(-0.75, abs=1e-13) and fit.prefactor == pytest.approx(2.5, rel=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12) and np.abs(fit.residuals).max() < 1e-12
    assert fit.ci_low == pytest.approx(-0.75, abs=1e-12) and fit.ci_high == pytest.approx(-0.75, abs=1e-12)
    np.testing.assert_allclose(fit.predict([10.0]), 2.5 * 10.0**-0.75, rtol=1e-12)


def test_slope_equals_scipy_linregress_on_logs():
    rng = np.random.default_rng(3)
    x, y, group = planted(0.6, 0.2, 3, 0.3, rng)
    fit = fit_power_law(x, y, seeds=group)
    ref = stats.linregress(np.log(x), np.log(y))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-12)
    assert math.log(fit.prefactor) == pytest.approx(ref.intercept, rel=1e-12)
    assert fit.r_squared == pytest.approx(ref.rvalue**2, rel=1e-12)
    np.testing.assert_allclose(fit.residuals, np.log(y) - (ref.intercept + ref.slope * np.log(x)), atol=1e-12)
    assert fit.num_points == 12 and fit.num_seeds == 3


def test_bootstrap_resamples_whole_seeds():
    # One seed's runs all lie on a line of slope 1, the other's on slope 3: a seed bootstrap either draws
    # a slope of 1, 3 or a mix, so its interval spans [1, 3]; it never shrinks to the pooled slope 2.
    x = np.array([1.0, 2.0, 4.0, 8.0])
    xs, ys = np.concatenate([x, x]), np.concatenate([x**1, x**3])
    fit = fit_power_law(xs, ys, seeds=["a"] * 4 + ["b"] * 4, num_bootstrap=4000)
    assert fit.exponent == pytest.approx(2.0, abs=1e-12)
    assert fit.ci_low == pytest.approx(1.0, abs=1e-9) and fit.ci_high == pytest.approx(3.0, abs=1e-9)


def test_planted_exponent_within_its_interval_at_the_claimed_rate():
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    trials = 200
    for t in range(trials):
        x, y, group = planted(-0.5, 3.0, 8, 0.1, rng)
        fit = fit_power_law(x, y, seeds=group, num_bootstrap=400, seed=t)
        covered += fit.ci_low <= -0.5 <= fit.ci_high
        widths.append(fit.ci_high - fit.ci_low)
        assert abs(fit.exponent + 0.5) < 0.1
    # A 95% percentile bootstrap over 8 seeds undercovers a little; a wrong interval (points instead of
    # seeds resampled, or a wrong quantile) would fall far below.
    assert 0.85 <= covered / trials <= 0.99
    # More seeds, narrower interval (about 1/sqrt(seeds)).
    x, y, group = planted(-0.5, 3.0, 32, 0.1, rng)
    wide = np.median(widths)
    assert fit_power_law(x, y, seeds=group, num_bootstrap=400).ci_high - fit_power_law(
        x, y, seeds=group, num_bootstrap=400
    ).ci_low < 0.75 * wide


def test_one_seed_has_no_interval_and_no_seeds_resamples_points():
    x = np.array([1.0, 2.0, 4.0])
    fit = fit_power_law(x, x**2, seeds=[7, 7, 7])
    assert fit.exponent == pytest.approx(2.0) and math.isnan(fit.ci_low) and math.isnan(fit.ci_high)
    fit = fit_power_law(x, x**2 * np.array([1.0, 1.1, 0.9]))
    assert fit.num_seeds == 3 and fit.ci_low <= fit.exponent <= fit.ci_high


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        ([1, 2, 3], [1, 0, 2], {}, "y must be positive and finite"),
        ([1, -2, 3], [1, 1, 2], {}, "x must be positive and finite"),
        ([1, 2, 3], [1, 2], {}, "y has 2 values, x has 3"),
        ([2, 2, 2], [1, 2, 3], {}, "at least two distinct values"),
        ([1, 2, 3], [1, 2, 3], {"seeds": [0, 1]}, "seeds has 2 values"),
        ([1, 2, 3], [1, 2, 3], {"confidence": 1.5}, "confidence must be in"),
        ([1, 2, 3], [1, 2, 3], {"num_bootstrap": 0}, "num_bootstrap must be"),
        ([[1, 2]], [[1, 2]], {}, "one-dimensional"),
    ],
)
def test_bad_input_names_the_argument(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y, **kwargs)
