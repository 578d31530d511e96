r"""Power laws :math:`y = c\,x^a` fitted on log-log axes, with a bootstrap confidence interval over seeds.

:func:`fit_power_law` is least squares on :math:`(\log x, \log y)`; the interval resamples whole seeds (a
cluster bootstrap, Efron & Tibshirani 1993, ch. 8; Davison & Hinkley 1997, §3.8), because the runs of one
seed share their data and initialisation and are not independent points. All replicates are solved at once
as weighted least squares (a replicate's weights count how often each seed was drawn), with no loop over
replicates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PowerLawFit", "fit_power_law"]


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    r"""A fitted power law :math:`y = c\,x^a`.

    Attributes:
        exponent: :math:`a`, the least-squares slope of :math:`\log y` on :math:`\log x` over all points.
        prefactor: :math:`c = e^{b}` with :math:`b` the intercept.
        ci_low, ci_high: Percentile bootstrap interval of :math:`a` at ``confidence``; ``nan`` with fewer
            than 2 seeds (no spread between seeds to resample).
        confidence: Coverage of the interval, e.g. 0.95.
        r_squared: :math:`R^2` of the fit in log space.
        residuals: ``[N]`` float64 :math:`\log y - \log \hat y` (natural log), in the order of the input.
        num_points: :math:`N`.
        num_seeds: Distinct seeds resampled (:math:`N` when no seeds were given: the points are resampled).
        num_bootstrap: Bootstrap replicates drawn.
    """

    exponent: float
    prefactor: float
    ci_low: float
    ci_high: float
    confidence: float
    r_squared: float
    residuals: np.ndarray
    num_points: int
    num_seeds: int
    num_bootstrap: int

    def predict(self, x) -> np.ndarray:
        r""":math:`c\,x^a` at ``x`` (array-like of positive values), float64."""
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.exponent


def _checked(values, name: str, n: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"fit_power_law: {name} must be a sequence of numbers, got {type(values).__name__}") from None
    if array.ndim != 1:
        raise ValueError(f"fit_power_law: {name} must be one-dimensional [N], got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"fit_power_law: {name} has {array.shape[0]} values, x has {n}")
    bad = ~(np.isfinite(array) & (array > 0))
    if bad.any():
        raise ValueError(
            f"fit_power_law: {name} must be positive and finite (a power law is fitted on log {name}); "
            f"{int(bad.sum())} of {array.size} values are not, e.g. {array[bad][0]!r}: drop those points first"
        )
    return array


def _slopes(lx: np.ndarray, ly: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares slopes of ``ly`` on ``lx`` ``[N]`` for every row of ``weights`` ``[R, N]``."""
    total = weights.sum(1, keepdims=True)
    mx = (weights * lx).sum(1, keepdims=True) / total
    my = (weights * ly).sum(1, keepdims=True) / total
    dx = lx - mx
    var = (weights * dx * dx).sum(1)
    cov = (weights * dx * (ly - my)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 1e-300, cov / var, np.nan)


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    seeds: Sequence | np.ndarray | None = None,
    *,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PowerLawFit:
    r"""Fit :math:`y = c\,x^a` by least squares on :math:`(\log x, \log y)`, with a bootstrap interval for :math:`a`.

    .. math:: \hat a = \frac{\sum_n (u_n - \bar u)(v_n - \bar v)}{\sum_n (u_n - \bar u)^2},
        \quad u = \log x,\ v = \log y,\ \hat c = \exp(\bar v - \hat a \bar u).

    The interval: draw ``num_bootstrap`` resamples of the :math:`G` seeds with replacement (every point of a
    drawn seed comes along, as often as the seed was drawn), refit each as weighted least squares, and take
    the :math:`(1 \pm \text{confidence})/2` percentiles of the slopes (Efron & Tibshirani 1993). Without
    ``seeds`` the points themselves are resampled (pairs bootstrap). Resamples whose points all share one
    :math:`x` have no slope and are left out.

    Args:
        x: ``[N]`` positive values of the swept quantity (width, depth, samples, steps).
        y: ``[N]`` positive values of the summary.
        seeds: ``[N]`` the seed of each point (any hashable values), or ``None``.
        num_bootstrap: Replicates, ``>= 1``.
        confidence: Coverage of the interval, in ``(0, 1)``.
        seed: Seed of the resampling generator (the interval is reproducible).

    Returns:
        A :class:`PowerLawFit`.

    Raises:
        ValueError: for values that are not positive and finite, lengths that differ, fewer than two distinct
            ``x``, or a bad ``num_bootstrap``/``confidence``; the message names the argument.

    Example:
        >>> fit = fit_power_law([1, 2, 4, 8], [3.0, 1.5, 0.75, 0.375])
        >>> round(fit.exponent, 12), round(fit.prefactor, 12)
        (-1.0, 3.0)
    """
    xs = _checked(x, "x")
    ys = _checked(y, "y", xs.shape[0])
    if np.unique(xs).size < 2:
        raise ValueError(f"fit_power_law: x needs at least two distinct values to fit a slope, got {np.unique(xs)}")
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, int) or num_bootstrap < 1:
        raise ValueError(f"fit_power_law: num_bootstrap must be an integer >= 1, got {num_bootstrap!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"fit_power_law: confidence must be in (0, 1), got {confidence!r}")
    n = xs.shape[0]
    if seeds is None:
        groups = np.arange(n)
    else:
        labels = list(seeds)
        if len(labels) != n:
            raise ValueError(f"fit_power_law: seeds has {len(labels)} values, x has {n}")
        index: dict = {}
        groups = np.array([index.setdefault(s, len(index)) for s in labels])
    num_groups = int(groups.max()) + 1

    lx, ly = np.log(xs), np.log(ys)
    slope = float(_slopes(lx, ly, np.ones((1, n)))[0])
    intercept = float(ly.mean() - slope * lx.mean())
    residuals = ly - (intercept + slope * lx)
    spread = float(((ly - ly.mean()) ** 2).sum())
    r_squared = 1.0 - float((residuals**2).sum()) / spread if spread > 0 else 1.0

    low = high = math.nan
    if num_groups >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, num_groups, size=(num_bootstrap, num_groups))  # [R, G] seeds drawn
        counts = np.zeros((num_bootstrap, num_groups))
        np.add.at(counts, (np.arange(num_bootstrap)[:, None], draws), 1.0)
        slopes = _slopes(lx, ly, counts[:, groups])  # [R]: each point weighted by its seed's count
        slopes = slopes[np.isfinite(slopes)]
        if slopes.size:
            tail = (1 - confidence) / 2
            low, high = (float(v) for v in np.quantile(slopes, [tail, 1 - tail]))
    return PowerLawFit(
        exponent=slope,
        prefactor=math.exp(intercept),
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
        r_squared=r_squared,
        residuals=residuals,
        num_points=n,
        num_seeds=num_groups,
        num_bootstrap=num_bootstrap,
    )
