r"""Per-cell comparison of two runs' streaming statistics: Welch or paired t-tests, FDR control, effect sizes.

Two runs (two models, two data sets, two checkpoints) each leave a
:class:`~tscope_widgets.kernels.welford.WelfordState` per layer: count :math:`n`, mean :math:`\bar x` and
:math:`M_2` per cell. :func:`compare_statistics` tests, cell by cell, whether the population means differ:

- **Welch's t** with the unbiased (Bessel) variances :math:`s^2 = M_2 / (n - 1)`:

  .. math::

      t = \frac{\bar x_a - \bar x_b}{\sqrt{s_a^2/n_a + s_b^2/n_b}},\qquad
      \nu = \frac{(s_a^2/n_a + s_b^2/n_b)^2}{\frac{(s_a^2/n_a)^2}{n_a - 1} + \frac{(s_b^2/n_b)^2}{n_b - 1}}

  (Welch 1947; Satterthwaite 1946), two-sided :math:`p = P(|T_\nu| \ge |t|)` (:mod:`.student_t`).
- **q-values**: Benjamini–Hochberg over the ``m`` valid cells,
  :math:`q_{(k)} = \min_{j \ge k} \min(1, m\,p_{(j)} / j)` (Benjamini & Hochberg 1995; the adjusted p-values
  of ``scipy.stats.false_discovery_control``), so ``q < alpha`` controls the false discovery rate at
  ``alpha`` for independent (or positively dependent) tests; or Bonferroni :math:`\min(1, m p)` (family-wise
  error); or none (``q = p``).
- **Hedges' g**: :math:`g = J(\nu_p)\,(\bar x_a - \bar x_b)/s_p` with the pooled standard deviation
  :math:`s_p = \sqrt{(M_{2,a} + M_{2,b})/(n_a + n_b - 2)}` and the exact small-sample correction
  :math:`J(\nu) = \Gamma(\nu/2) / (\sqrt{\nu/2}\,\Gamma((\nu-1)/2))`, :math:`\nu_p = n_a + n_b - 2`
  (Hedges 1981, eq. 6e; :math:`J(\nu) \approx 1 - 3/(4\nu - 1)`).
- **log ratio** :math:`\ln(\bar x_a / \bar x_b)` of positive quantities such as :math:`\lVert J_{ij}\rVert_F^2`.

:func:`paired_statistics` is the paired test for two models run on the same samples: the per-sample
differences :math:`d = s_a - s_b`, streamed into their own WelfordState
(:func:`~tscope_widgets.kernels.sensitivity.iter_paired_sensitivity`), get a one-sample t-test,
:math:`t = \bar d / (s_d / \sqrt n)`, :math:`\nu = n - 1`, and the effect size :math:`g_z = J(n-1)\,\bar d / s_d`
(Cohen's :math:`d_z` with Hedges' correction). Pairing removes the between-sample variance that both
models share, so it finds much smaller differences than Welch's test on the same data.

Cells where either side counted fewer than 2 values are invalid: every field is NaN there (``significant``
False) and they are left out of the correction. A valid cell where both variances are 0 (e.g. the exact
zeros above the diagonal of a causal model) has ``t = 0, p = 1`` when the means agree, ``t = ±inf, p = 0``
when they differ, and NaN ``df`` and effect size (0/0).

References:
    Welch, B. L. (1947). The generalization of "Student's" problem when several different population
    variances are involved. Biometrika 34(1/2), 28-35.

    Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance components.
    Biometrics Bulletin 2(6), 110-114.

    Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate: a practical and powerful
    approach to multiple testing. J. R. Stat. Soc. B 57(1), 289-300.

    Hedges, L. V. (1981). Distribution theory for Glass's estimator of effect size and related estimators.
    Journal of Educational Statistics 6(2), 107-128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .student_t import t_two_sided_p
from .welford import WelfordState

__all__ = [
    "CORRECTIONS",
    "Comparison",
    "adjust_p_values",
    "compare_statistics",
    "hedges_correction",
    "paired_statistics",
]

CORRECTIONS = ("fdr_bh", "bonferroni", None)


@dataclass(frozen=True, eq=False)
class Comparison:
    """Per-cell test of run ``a`` against run ``b``; every tensor has the cells' shape, float64 unless noted.

    Attributes:
        difference: :math:`\\bar x_a - \\bar x_b` (paired: the mean per-sample difference).
        log_ratio: :math:`\\ln(\\bar x_a / \\bar x_b)`; NaN where either mean is ``<= 0`` or unknown.
        t: Welch's (or the paired) t statistic.
        df: Welch–Satterthwaite degrees of freedom (paired: ``n - 1``).
        p: Two-sided p-value.
        q: Adjusted p-value (:attr:`correction`), over the valid cells.
        significant: bool, ``q < alpha`` (False where invalid).
        effect_size: Hedges' g (pooled standard deviation, small-sample corrected; paired: :math:`g_z`).
        mean_a: Mean of run ``a`` per cell (NaN where unknown, e.g. a paired test without the runs' states).
        mean_b: Mean of run ``b`` per cell.
        count_a: Values per cell in run ``a`` (paired: pairs).
        count_b: Values per cell in run ``b`` (paired: pairs).
        valid: bool, cells with at least 2 values on either side: the tested cells.
        alpha: The level of :attr:`significant`.
        correction: ``"fdr_bh"``, ``"bonferroni"`` or ``None``.
        paired: Whether this is the paired test.
        num_tests: Number of valid cells (``m`` of the correction).
    """

    difference: Tensor
    log_ratio: Tensor
    t: Tensor
    df: Tensor
    p: Tensor
    q: Tensor
    significant: Tensor
    effect_size: Tensor
    mean_a: Tensor
    mean_b: Tensor
    count_a: Tensor
    count_b: Tensor
    valid: Tensor
    alpha: float
    correction: str | None
    paired: bool
    num_tests: int

    TENSORS = (
        "difference", "log_ratio", "t", "df", "p", "q", "significant", "effect_size",
        "mean_a", "mean_b", "count_a", "count_b", "valid",
    )  # fmt: skip

    @property
    def shape(self) -> tuple[int, ...]:
        """The cells' shape."""
        return tuple(self.difference.shape)

    @property
    def num_significant(self) -> int:
        """Number of significant cells."""
        return int(self.significant.sum())

    def tensors(self) -> dict[str, Tensor]:
        """``{field: tensor}`` of every per-cell field (e.g. to save them), CPU copies."""
        return {name: getattr(self, name).detach().cpu().clone() for name in self.TENSORS}

    def meta(self) -> dict:
        """JSON description: ``alpha``, ``correction``, ``paired``, ``num_tests``, ``num_significant``, ``shape``."""
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "paired": self.paired,
            "num_tests": self.num_tests,
            "num_significant": self.num_significant,
            "shape": list(self.shape),
        }


# ---------------------------------------------------------------------------- checks
def _check_state(state, name: str) -> WelfordState:
    if not isinstance(state, WelfordState):
        raise TypeError(f"{name} must be a WelfordState, got {type(state).__name__}")
    return state


def _check_options(alpha, correction) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), e.g. 0.05; got {alpha!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}")
    return float(alpha)


def _moments(state: WelfordState) -> tuple[Tensor, Tensor, Tensor]:
    """``(n, mean, m2)`` in float64 on the CPU; the mean 0 where the count is 0 (masked out later)."""
    sd = state.state_dict()
    n = sd["count"].to("cpu", torch.float64)
    return n, sd["mean"].to("cpu", torch.float64), sd["m2"].to("cpu", torch.float64)


# ---------------------------------------------------------------------------- building blocks
def hedges_correction(df: Tensor) -> Tensor:
    r"""Hedges' exact small-sample factor :math:`J(\nu) = \Gamma(\nu/2) / (\sqrt{\nu/2}\,\Gamma((\nu-1)/2))`.

    Multiplying Cohen's d by :math:`J` makes it unbiased for normal data (Hedges 1981, eq. 6e).

    Args:
        df: Degrees of freedom :math:`\nu`, any shape, float64.

    Returns:
        :math:`J(\nu)`, same shape (``J(1) = 0``); NaN where :math:`\nu \le 0`.
    """
    ok = df > 0
    d = torch.where(ok, df, 2.0)
    j = torch.exp(torch.lgamma(d / 2) - torch.lgamma((d - 1) / 2) - 0.5 * torch.log(d / 2))
    return torch.where(ok, j, torch.nan)


def adjust_p_values(p: Tensor, valid: Tensor, correction: str | None = "fdr_bh") -> Tensor:
    r"""Multiple-testing adjusted p-values over the ``valid`` cells; NaN elsewhere.

    ``"fdr_bh"``: Benjamini–Hochberg, :math:`q_{(k)} = \min_{j \ge k} \min(1, m\,p_{(j)}/j)` over the sorted
    valid p-values (one sort, a reversed cumulative minimum); ``"bonferroni"``: :math:`\min(1, m p)`;
    ``None``: ``p`` itself.

    Args:
        p: p-values, any shape, float64.
        valid: bool mask of the same shape; ``m`` = its number of True cells.
        correction: ``"fdr_bh"``, ``"bonferroni"`` or ``None``.

    Returns:
        Adjusted p-values, same shape.

    Raises:
        ValueError: For another correction, or a NaN p-value in a valid cell.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}")
    pv = p[valid]
    if bool(torch.isnan(pv).any()):
        raise ValueError("p holds NaN in a valid cell; mark such cells invalid")
    m = pv.numel()
    out = torch.full_like(p, torch.nan)
    if m == 0:
        return out
    if correction is None:
        q = pv.clone()
    elif correction == "bonferroni":
        q = (pv * m).clamp_max(1.0)
    else:
        order = torch.argsort(pv)
        ranks = torch.arange(1, m + 1, dtype=p.dtype, device=p.device)
        scaled = pv[order] * m / ranks
        q_sorted = scaled.flip(0).cummin(0).values.flip(0).clamp_max(1.0)
        q = torch.empty_like(pv)
        q[order] = q_sorted
    out[valid] = q
    return out


def _finish(difference, t, df, effect, valid, alpha, correction, paired, mean_a, mean_b, n_a, n_b) -> Comparison:
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    p = torch.where(valid, t_two_sided_p(t, torch.where(torch.isnan(df), 1.0, df)), nan)
    p = torch.where(valid & torch.isnan(df), torch.where(t == 0, 1.0, 0.0), p)  # zero variance: p from the means
    q = adjust_p_values(p, valid, correction)
    positive = (mean_a > 0) & (mean_b > 0)
    ratio = torch.where(positive, mean_a, 1.0) / torch.where(positive, mean_b, 1.0)
    log_ratio = torch.where(positive, torch.log(ratio), nan)
    return Comparison(
        difference=torch.where(valid, difference, nan),
        log_ratio=log_ratio,
        t=torch.where(valid, t, nan),
        df=torch.where(valid, df, nan),
        p=p,
        q=q,
        significant=valid & (q < alpha),
        effect_size=torch.where(valid, effect, nan),
        mean_a=mean_a,
        mean_b=mean_b,
        count_a=n_a,
        count_b=n_b,
        valid=valid,
        alpha=alpha,
        correction=correction,
        paired=paired,
        num_tests=int(valid.sum()),
    )


def _t_from(difference: Tensor, se2: Tensor) -> Tensor:
    """``difference / sqrt(se2)``; where ``se2 == 0``: 0 for equal means, ``±inf`` otherwise."""
    zero = se2 == 0
    t = difference / torch.where(zero, 1.0, se2).sqrt()
    return torch.where(zero, torch.where(difference == 0, 0.0, difference.sign() * math.inf), t)


# ---------------------------------------------------------------------------- the tests
def compare_statistics(
    a: WelfordState, b: WelfordState, *, alpha: float = 0.05, correction: str | None = "fdr_bh"
) -> Comparison:
    r"""Welch's t-test of run ``a`` against run ``b`` in every cell, with FDR control and Hedges' g.

    .. math:: t = \frac{\bar x_a - \bar x_b}{\sqrt{s_a^2/n_a + s_b^2/n_b}}, \quad s^2 = \frac{M_2}{n - 1}

    with Welch–Satterthwaite degrees of freedom; the formulas and conventions are in the module docstring.
    For independent samples (two data sets, or two models on different samples); when both runs saw the
    same samples, :func:`paired_statistics` is far more powerful.

    Args:
        a: Statistics of run ``a``, any cell shape (e.g. ``[S, S]``), any float dtype (tests run in float64).
        b: Statistics of run ``b``, the same cell shape.
        alpha: Level of :attr:`Comparison.significant`, in ``(0, 1)``.
        correction: ``"fdr_bh"`` (Benjamini–Hochberg), ``"bonferroni"`` or ``None``.

    Returns:
        A :class:`Comparison` (``difference`` is ``a - b``).

    Raises:
        TypeError: If ``a`` or ``b`` is not a :class:`WelfordState`.
        ValueError: For cell shapes that differ, ``alpha`` outside ``(0, 1)`` or an unknown correction.

    Example:
        >>> a, b = WelfordState((2,)), WelfordState((2,))
        >>> a.update(torch.tensor([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]]))
        >>> b.update(torch.tensor([[1.5, 1.0], [2.5, 1.5], [2.0, 2.0]]))
        >>> c = compare_statistics(a, b)
        >>> c.difference.tolist(), c.significant.tolist()
        ([0.0, 4.5], [False, True])
    """
    a, b = _check_state(a, "a"), _check_state(b, "b")
    alpha = _check_options(alpha, correction)
    if a.shape != b.shape:
        raise ValueError(
            f"cannot compare statistics of different cell shapes: a has {list(a.shape)}, b has {list(b.shape)}; "
            "compare runs with the same sequence length (max_seq_len) and the same layers"
        )
    n_a, mean_a, m2_a = _moments(a)
    n_b, mean_b, m2_b = _moments(b)
    valid = (n_a >= 2) & (n_b >= 2)
    na, nb = torch.where(valid, n_a, 2.0), torch.where(valid, n_b, 2.0)
    va, vb = m2_a / (na - 1) / na, m2_b / (nb - 1) / nb  # squared standard errors s²/n
    se2 = va + vb
    difference = mean_a - mean_b
    t = _t_from(difference, se2)
    denom = va * va / (na - 1) + vb * vb / (nb - 1)
    df = torch.where(denom > 0, se2 * se2 / torch.where(denom > 0, denom, 1.0), torch.nan)
    pooled_df = na + nb - 2
    sp = ((m2_a + m2_b) / pooled_df).sqrt()
    effect = torch.where(sp > 0, hedges_correction(pooled_df) * difference / torch.where(sp > 0, sp, 1.0), torch.nan)
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    return _finish(difference, t, df, effect, valid, alpha, correction, False,
                   torch.where(n_a > 0, mean_a, nan), torch.where(n_b > 0, mean_b, nan), n_a, n_b)


def paired_statistics(
    differences: WelfordState,
    *,
    alpha: float = 0.05,
    correction: str | None = "fdr_bh",
    a: WelfordState | None = None,
    b: WelfordState | None = None,
) -> Comparison:
    r"""The paired t-test in every cell: a one-sample t-test of the per-sample differences :math:`d = x_a - x_b`.

    .. math:: t = \frac{\bar d}{s_d / \sqrt n}, \quad \nu = n - 1, \quad g_z = J(n - 1)\,\frac{\bar d}{s_d}

    (Student 1908; the same statistic as ``scipy.stats.ttest_rel``). The differences must be taken sample
    by sample on the same samples (:func:`~tscope_widgets.kernels.sensitivity.iter_paired_sensitivity`).

    Args:
        differences: Statistics of the per-sample differences ``a - b``, any cell shape.
        alpha: Level of :attr:`Comparison.significant`, in ``(0, 1)``.
        correction: ``"fdr_bh"`` (Benjamini–Hochberg), ``"bonferroni"`` or ``None``.
        a: Optional statistics of run ``a`` on the same samples (for ``mean_a`` and ``log_ratio``).
        b: Optional statistics of run ``b`` (likewise).

    Returns:
        A :class:`Comparison` with ``paired=True``; ``count_a`` and ``count_b`` are the pairs per cell.

    Raises:
        TypeError: If a state is not a :class:`WelfordState`.
        ValueError: For cell shapes that differ, ``alpha`` outside ``(0, 1)`` or an unknown correction.
    """
    differences = _check_state(differences, "differences")
    alpha = _check_options(alpha, correction)
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    means = []
    for name, state in (("a", a), ("b", b)):
        if state is None:
            means.append(torch.full(differences.shape, torch.nan, dtype=torch.float64))
            continue
        _check_state(state, name)
        if state.shape != differences.shape:
            raise ValueError(
                f"{name} has cell shape {list(state.shape)}, the differences {list(differences.shape)}; pass the "
                "states of the same paired run"
            )
        n, mean, _ = _moments(state)
        means.append(torch.where(n > 0, mean, nan))
    n, mean, m2 = _moments(differences)
    valid = n >= 2
    n_safe = torch.where(valid, n, 2.0)
    sd = (m2 / (n_safe - 1)).sqrt()
    t = _t_from(mean, sd * sd / n_safe)
    df = torch.where(sd > 0, n_safe - 1, torch.nan)
    effect = torch.where(sd > 0, hedges_correction(n_safe - 1) * mean / torch.where(sd > 0, sd, 1.0), torch.nan)
    return _finish(mean, t, df, effect, valid, alpha, correction, True, means[0], means[1], n, n.clone())
