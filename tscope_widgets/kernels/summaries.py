r"""Scalar summaries of one run that can be compared, and fitted, across model and data sizes.

Each function turns one result (a spectrum, a block-norm map, a mean sensitivity map, a loss slice) into
one number whose meaning does not depend on the size of the model, so that a sweep can put it on a log-log
axis against width, depth, data or training time. Every definition is stated in the function's docstring;
``tscope sweep`` writes them into its table under the names given there.

Pure functions over tensors (any float dtype, CPU or GPU); they return Python floats, ``nan`` where the
quantity is undefined (no mass, no matching group, too few eigenvalues).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "block_norm_ratio",
    "bulk_outlier_mass_ratio",
    "diagonal_mass_fraction",
    "diagonal_offdiagonal_ratio",
    "receptive_field",
    "sharpness_ratio",
    "slice_curvature",
    "top_eigengap",
]


def _matrix(values: Tensor, what: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(values).__name__}")
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"{what} must be a square matrix [S, S], got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise ValueError(f"{what} must hold floats, got {values.dtype}")
    return values


def sharpness_ratio(lambda_max: float, trace: float) -> float:
    r"""How much of the curvature sits in the top direction: :math:`\lambda_{max} / \operatorname{tr}(H)`.

    For a positive semi-definite matrix this lies in :math:`[1/P, 1]`: 1 when one direction carries all
    the curvature, :math:`1/P` for a flat spectrum (the "effective rank" of the curvature is its inverse).
    Ghorbani, Krishnan & Xiao (ICML 2019) and Papyan (2019) describe Hessians of deep networks as a few
    outliers over a bulk; this ratio is the simplest measure of that split.

    Args:
        lambda_max: The largest eigenvalue (Lanczos).
        trace: The trace (Hutch++).

    Returns:
        The ratio, ``nan`` when the trace is 0 or either value is not finite.
    """
    if not (math.isfinite(lambda_max) and math.isfinite(trace)) or trace == 0:
        return math.nan
    return float(lambda_max / trace)


def bulk_outlier_mass_ratio(grid: Tensor, density: Tensor, edge: float) -> float:
    r"""Spectral mass of the bulk over that of the outliers: :math:`M_{bulk} / M_{out}` of a density.

    Hessians of deep networks have a bulk of eigenvalues near zero and a few outliers far from it (Sagun et al.
    2017; Ghorbani, Krishnan & Xiao, ICML 2019; Papyan 2019). With the bulk taken as :math:`|t| \le` ``edge``,

    .. math:: M_{bulk} = \int_{|t| \le e} \phi(t)\,dt, \qquad M_{out} = \int_{|t| > e} \phi(t)\,dt,

    both over the grid's range, by the trapezoid rule on the piecewise-linear interpolant of ``density``
    (the points :math:`\pm e` are inserted into the grid, so a density linear between grid points is
    integrated exactly). The ratio does not depend on how :math:`\phi` is normalised. ``tscope sweep`` uses
    ``edge = 0.1·λ_max`` (``bulk_outlier_ratio`` in its table): outliers are eigenvalues beyond a tenth of
    the largest.

    Args:
        grid: ``[G]`` increasing evaluation points (float).
        density: ``[G]`` :math:`\phi \ge 0` on the grid (e.g. ``SpectralDensity.density`` from SLQ).
        edge: The bulk's half-width :math:`e > 0`.

    Returns:
        The ratio (float); ``nan`` when there is no outlier mass or no mass at all.

    Raises:
        ValueError: For shapes that differ, a grid that is not increasing, fewer than two points, negative or
            non-finite density values, or an ``edge`` that is not a positive finite number.

    Example:
        >>> t = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
        >>> bulk_outlier_mass_ratio(t, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64), 1.0)  # 1 / 0.5
        2.0
        >>> bulk_outlier_mass_ratio(t, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64), 1.0)
        nan
        >>> bulk_outlier_mass_ratio(t, torch.ones(5, dtype=torch.float64), 1.0)
        0.3333333333333333
    """
    if not isinstance(grid, Tensor) or not isinstance(density, Tensor):
        raise TypeError("bulk_outlier_mass_ratio: grid and density must be torch.Tensors")
    x, y = grid.detach().to("cpu", torch.float64).reshape(-1), density.detach().to("cpu", torch.float64).reshape(-1)
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"bulk_outlier_mass_ratio: grid and density must both be [G] with G >= 2, got "
                         f"{tuple(grid.shape)} and {tuple(density.shape)}")
    if not bool((x[1:] > x[:-1]).all()):
        raise ValueError("bulk_outlier_mass_ratio: grid must be strictly increasing")
    if not bool(torch.isfinite(y).all()) or bool((y < 0).any()):
        raise ValueError("bulk_outlier_mass_ratio: density must be finite and >= 0 (a spectral density)")
    if isinstance(edge, bool) or not isinstance(edge, (int, float)) or not math.isfinite(edge) or edge <= 0:
        raise ValueError(f"bulk_outlier_mass_ratio: edge must be a positive finite number, got {edge!r}")
    cuts = torch.tensor([-edge, edge], dtype=torch.float64)
    cuts = cuts[(cuts > x[0]) & (cuts < x[-1]) & ~torch.isin(cuts, x)]
    xs = torch.cat([x, cuts]).sort().values  # [G'] with the edges inserted
    idx = torch.searchsorted(x, xs).clamp(1, x.numel() - 1)
    x0, x1 = x[idx - 1], x[idx]
    ys = y[idx - 1] + (y[idx] - y[idx - 1]) * (xs - x0) / (x1 - x0)  # linear interpolant at xs
    areas = 0.5 * (ys[1:] + ys[:-1]) * (xs[1:] - xs[:-1])  # [G' - 1]
    mid = 0.5 * (xs[1:] + xs[:-1])
    bulk = float(areas[mid.abs() <= edge].sum())
    out = float(areas[mid.abs() > edge].sum())
    return bulk / out if out > 0 else math.nan


def top_eigengap(eigenvalues: Tensor, k: int = 1) -> float:
    r"""Relative gap below the :math:`k`-th largest eigenvalue: :math:`(\lambda_k - \lambda_{k+1}) / |\lambda_1|`.

    Eigenvalues are sorted in descending order :math:`\lambda_1 \ge \lambda_2 \ge \dots`. A large gap after
    :math:`k` outliers means a clean top-:math:`k` subspace (Lanczos converges fast, the outliers separate from
    the bulk; Papyan 2019 ties :math:`k` to the number of classes); a gap near 0 means the top directions
    are not individually meaningful.

    Args:
        eigenvalues: ``[m]`` eigenvalues, any order (e.g. the top ``k`` Ritz values of a Lanczos run),
            ``m >= k + 1``.
        k: Position of the gap, ``>= 1``.

    Returns:
        The relative gap; ``nan`` when there are fewer than ``k + 1`` eigenvalues or :math:`\lambda_1 = 0`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_eigengap: k must be an integer >= 1, got {k!r}")
    values = torch.as_tensor(eigenvalues).reshape(-1).double().sort(descending=True).values
    if values.numel() < k + 1 or values[0] == 0:
        return math.nan
    return float((values[k - 1] - values[k]) / values[0].abs())


def block_norm_ratio(
    labels: Sequence[str], frobenius: Tensor, numerator: str | Sequence[str], denominator: str | Sequence[str]
) -> float:
    r"""Ratio of the Frobenius norms of two principal sub-blocks of a block-norm map.

    With :math:`N` the parameter groups whose labels match ``numerator`` and :math:`D` those matching
    ``denominator`` (``fnmatch`` patterns such as ``"*.attn.q"``),

    .. math:: r = \frac{\lVert H_{NN} \rVert_F}{\lVert H_{DD} \rVert_F}, \qquad
        \lVert H_{NN} \rVert_F^2 = \sum_{a, b \in N} \lVert H_{ab} \rVert_F^2,

    the norm of the Hessian restricted to the groups of :math:`N` (all their diagonal and cross blocks).
    ``"*.attn.q"`` over ``"*.attn.v"`` gives the query/value ratio whose growth with the embedding scale
    Ormaniec, Dangel & Singh (ICLR 2025) derive (:math:`Q \propto \sigma^5`, :math:`V \propto \sigma^2` for
    one layer); ``"*.attn.*"`` over ``"*.mlp.*"`` the attention/MLP ratio.

    Args:
        labels: Group names ``[G]`` (the rows and columns of ``frobenius``).
        frobenius: :math:`\lVert H_{ab} \rVert_F` ``[G, G]`` (:class:`~tscope_widgets.kernels.BlockNorms`).
        numerator: Pattern(s) selecting :math:`N`.
        denominator: Pattern(s) selecting :math:`D`.

    Returns:
        :math:`r`; ``nan`` when no group matches either side, the denominator is 0 or a block is NaN.
    """
    F = _matrix(frobenius, "frobenius")
    if len(labels) != F.shape[0]:
        raise ValueError(f"block_norm_ratio: {len(labels)} labels for a [{F.shape[0]}, {F.shape[1]}] map")

    def norm(patterns: str | Sequence[str]) -> float:
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        mask = torch.tensor([any(fnmatch.fnmatchcase(s, p) for p in pats) for s in labels], device=F.device)
        if not mask.any():
            return math.nan
        return float(F[mask][:, mask].double().square().sum().sqrt())

    top, bottom = norm(numerator), norm(denominator)
    if not (math.isfinite(top) and math.isfinite(bottom)) or bottom == 0:
        return math.nan
    return top / bottom


def diagonal_mass_fraction(mean_map: Tensor) -> float:
    r"""Share of a mean sensitivity map on its diagonal: :math:`\sum_i \bar s_{ii} / \sum_{ij} \bar s_{ij}`.

    :math:`\bar s_{ij}` is the population mean of :math:`\lVert \partial h_i / \partial e_j \rVert_F^2`. The
    diagonal carries the residual path from a position to itself; the rest is what attention moved
    between positions. NaN cells (positions without data) are left out.

    Args:
        mean_map: ``[S, S]`` mean map (rows: output positions, columns: input positions).

    Returns:
        The fraction in :math:`[0, 1]`; ``nan`` when the map has no mass.
    """
    s = _matrix(mean_map, "mean_map").double().nan_to_num(0.0)
    total = s.sum()
    return float(s.diagonal().sum() / total) if total > 0 else math.nan


def diagonal_offdiagonal_ratio(mean_map: Tensor, causal: bool = True) -> float:
    r"""Mean diagonal cell over mean off-diagonal cell of a mean sensitivity map.

    .. math:: \rho = \frac{\tfrac1S \sum_i \bar s_{ii}}{\tfrac1{|O|} \sum_{(i, j) \in O} \bar s_{ij}},

    with :math:`O = \{(i, j): j < i\}` for a causal model (cells above the diagonal are zero by
    construction and would only dilute the mean) or :math:`\{(i, j): j \ne i\}` otherwise. NaN cells are
    left out of both means.

    Args:
        mean_map: ``[S, S]`` mean map.
        causal: Off-diagonal cells are those below the diagonal only.

    Returns:
        :math:`\rho`; ``nan`` when there is no off-diagonal mass.
    """
    s = _matrix(mean_map, "mean_map").double()
    S = s.shape[0]
    i = torch.arange(S, device=s.device)
    off = (i[None, :] < i[:, None]) if causal else (i[None, :] != i[:, None])
    off = off & ~s.isnan()
    diag = s.diagonal()
    diag = diag[~diag.isnan()]
    if not off.any() or diag.numel() == 0:
        return math.nan
    off_mean = s[off].mean()
    return float(diag.mean() / off_mean) if off_mean > 0 else math.nan


def receptive_field(mean_map: Tensor, mass: float = 0.9) -> Tensor:
    r"""Effective receptive field of every output position: the offset that holds ``mass`` of its row.

    Row :math:`i` spreads its sensitivity over offsets :math:`d = |i - j|`,
    :math:`m_i(d) = \sum_{j: |i - j| = d} \bar s_{ij}`; its receptive field is the smallest :math:`d` with

    .. math:: \sum_{d' \le d} m_i(d') \ge \text{mass} \cdot \sum_{d'} m_i(d').

    0 means the position mostly sees itself (the residual path); :math:`d` means the nearest :math:`d + 1`
    positions hold ``mass`` of the row (for a causal model, the last :math:`d + 1`). The sweep summary is
    the mean over rows (``sens_erf90`` with ``mass = 0.9``).

    Args:
        mean_map: ``[S, S]`` mean map, rows = output positions (NaN cells count as 0).
        mass: Fraction of the row's mass, in ``(0, 1]``.

    Returns:
        ``[S]`` float64 offsets, NaN for rows without mass.
    """
    if not (isinstance(mass, (int, float)) and 0 < mass <= 1):
        raise ValueError(f"receptive_field: mass must be a fraction in (0, 1], got {mass!r}")
    s = _matrix(mean_map, "mean_map").double().nan_to_num(0.0).clamp_min(0.0)
    S = s.shape[0]
    i = torch.arange(S, device=s.device)
    offset = (i[None, :] - i[:, None]).abs()  # [S, S]: |i - j|
    by_offset = torch.zeros_like(s).scatter_add_(1, offset, s)  # [S, S]: row i, offset d
    cumulative = by_offset.cumsum(1)
    total = cumulative[:, -1:]
    # The first offset reaching the mass (a tiny slack for rounding of the cumulative sum).
    reached = cumulative >= mass * total * (1 - 1e-12)
    field = reached.double().argmax(1).double()
    return torch.where(total[:, 0] > 0, field, torch.full_like(field, math.nan))


def slice_curvature(alphas: Tensor, losses: Tensor) -> float:
    r"""Curvature of a loss slice at its origin by the central second difference.

    With :math:`h` the grid step next to :math:`\alpha = 0`,
    :math:`\kappa = (L(h) - 2 L(0) + L(-h)) / h^2`. Along a unit Hessian eigenvector this tends to its
    eigenvalue as :math:`h \to 0` (the :math:`\tfrac12 \lambda \alpha^2` of Li et al., NeurIPS 2018), with
    error :math:`O(h^2)` from the loss's fourth derivative: the landscape's own sharpness, at the scale of
    the grid.

    Args:
        alphas: ``[A]`` increasing grid, symmetric about 0 with 0 on it (odd ``A``).
        losses: ``[A]`` losses along the direction at those points.

    Returns:
        :math:`\kappa`; ``nan`` when 0 is not a grid point with a neighbour on each side at the same distance.
    """
    a = torch.as_tensor(alphas).double().reshape(-1)
    y = torch.as_tensor(losses).double().reshape(-1)
    if a.shape != y.shape:
        raise ValueError(f"slice_curvature: alphas {tuple(a.shape)} and losses {tuple(y.shape)} differ in shape")
    zero = (a == 0).nonzero()
    if zero.numel() != 1:
        return math.nan
    c = int(zero[0, 0])
    if c == 0 or c == a.numel() - 1:
        return math.nan
    h = float(a[c + 1])
    if not math.isclose(-float(a[c - 1]), h, rel_tol=1e-9):
        return math.nan
    return float((y[c + 1] - 2 * y[c] + y[c - 1]) / (h * h))
