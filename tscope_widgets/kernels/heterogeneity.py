r"""Block heterogeneity of the Hessian: Jensen–Shannon distances between the spectra of its diagonal blocks.

Zhang et al. ("Why Transformers Need Adam: A Hessian Perspective", NeurIPS 2024) measure how different the
spectra of the diagonal blocks :math:`H_{aa}` are by the average Jensen–Shannon distance between the block
densities (their :math:`JS^0`, at initialisation): large for transformers, small for CNNs. The densities are
first put on a common, scale-free footing. What we do, exactly (``rank = 10``, ``floor = 1e-4`` and
``sigma = 0.1`` by default):

1. **Scale.** Each block's quadrature (:class:`~.density.SpectralDensity`: nodes :math:`\theta_{lk}` and
   weights :math:`w_{lk}` of probe ``l``) is divided by :math:`s_a`, the mean over probes of the
   ``rank``-th largest :math:`|\theta_{lk}|` of that probe (its 10th-largest Ritz value in magnitude, which
   Lanczos resolves early and which approximates the 10th-largest :math:`|\lambda|` of :math:`H_{aa}`;
   ``min(rank, m)`` for a block with fewer nodes; :math:`s_a = 1` for a zero block). The largest few
   eigenvalues are outliers whose size varies most between blocks; the 10th is a robust scale.
2. **Log scale with a floor.** Each scaled node :math:`x = \theta / s_a` goes to the signed log
   :math:`u = \operatorname{sign}(x) \log_{10}(\max(|x|, f) / f)` with ``f = floor``: magnitudes below
   ``floor`` (relative to :math:`s_a`) collapse to 0, the sign of negative curvature is kept, and decades of
   positive and negative eigenvalues are resolved alike.
3. **Common grid.** ``num_points`` equally spaced points from the smallest ``u`` of all blocks minus
   5 ``sigma`` to the largest plus 5 ``sigma``.
4. **Densities.** :math:`p_a(u_j) \propto \frac1{n_v}\sum_{l,k} w_{lk}\, \mathcal N(u_j; u_{lk}, \sigma^2)`,
   normalised to sum to 1 over the grid (a probability vector per block).
5. **Distances.** :math:`JS(p, q) = \sqrt{\tfrac12 KL(p \Vert m) + \tfrac12 KL(q \Vert m)}`,
   :math:`m = (p + q)/2`, natural logarithm (so :math:`0 \le JS \le \sqrt{\ln 2}`; the value of
   ``scipy.spatial.distance.jensenshannon(p, q)``), for every pair of blocks, and
   :math:`JS^0 = \frac{2}{G(G-1)} \sum_{a<b} JS(p_a, p_b)`.

References:
    Zhang, Chen, Ding, Li, Sun & Luo (2024), NeurIPS, arXiv 2402.16788; Lin (1991), "Divergence measures
    based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1); Endres & Schindelin (2003), IEEE Trans.
    Inf. Theory 49(7) (the square root is a metric).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .block_density import BlockDensities
from .density import SpectralDensity

__all__ = ["SpectralHeterogeneity", "js_distance_matrix", "normalized_block_densities", "spectral_heterogeneity"]

SCALE_RANK = 10
LOG_FLOOR = 1e-4
LOG_SIGMA = 0.1
GRID_PAD_SIGMAS = 5.0


@dataclass
class SpectralHeterogeneity:
    """Jensen–Shannon distances between block spectra (see the module docstring for every step).

    Attributes:
        labels: The ``G`` blocks.
        distances: ``[G, G]`` float64 symmetric, zero diagonal: :math:`JS(p_a, p_b)` (natural log).
        mean: :math:`JS^0`, the mean of the ``G (G - 1) / 2`` distances above the diagonal (NaN for one block).
        grid: Common grid ``[X]`` float64 of signed log-magnitudes :math:`u`.
        densities: ``[G, X]`` float64, each row a probability vector on ``grid``.
        scales: ``[G]`` float64, :math:`s_a` (the mean ``rank``-th largest :math:`|\\theta|`).
        rank, floor, sigma: The settings used.
    """

    labels: list[str]
    distances: Tensor
    mean: float
    grid: Tensor
    densities: Tensor
    scales: Tensor
    rank: int
    floor: float
    sigma: float


def js_distance_matrix(P: Tensor) -> Tensor:
    r"""Jensen–Shannon distances between all pairs of rows of ``P [G, X]`` (non-negative, each normalised to 1).

    :math:`JS(p, q) = \sqrt{\tfrac12 \sum_j p_j \ln(p_j / m_j) + \tfrac12 \sum_j q_j \ln(q_j / m_j)}`,
    :math:`m = (p + q)/2` (``0 ln 0 = 0``), as ``scipy.spatial.distance.jensenshannon``; all pairs at once.

    Args:
        P: ``[G, X]`` non-negative, rows are normalised here to sum to 1.

    Returns:
        ``[G, G]`` float64 (same device), symmetric with zero diagonal.

    Raises:
        ValueError: For a tensor that is not 2-D, has negative or non-finite entries, or a zero row.
    """
    if not isinstance(P, Tensor) or P.ndim != 2:
        raise ValueError(f"P must be a [G, X] tensor of densities, got {getattr(P, 'shape', type(P).__name__)}")
    P = P.to(torch.float64)
    if not torch.isfinite(P).all() or (P < 0).any():
        raise ValueError("densities must be finite and non-negative")
    total = P.sum(1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("every density must have positive mass (a row of P sums to 0)")
    P = P / total
    S = P[:, None, :] + P[None, :, :]  # [G, G, X]: 2 m (m itself can underflow to 0 where p is subnormal)
    # KL(p_a || m_ab) = sum p ln p - sum p ln(p + q) + ln 2, with 0 ln 0 = 0 (p + q > 0 wherever p > 0)
    kl = torch.xlogy(P, P).sum(1)[:, None] - torch.xlogy(P[:, None, :], S).sum(2) + math.log(2.0)  # [G, G]
    js = 0.5 * (kl + kl.T)
    D = js.clamp_min(0).sqrt()
    D.fill_diagonal_(0.0)
    return D


def normalized_block_densities(
    densities: BlockDensities | Mapping[str, SpectralDensity],
    *,
    rank: int = SCALE_RANK,
    floor: float = LOG_FLOOR,
    sigma: float = LOG_SIGMA,
    num_points: int = 1024,
) -> tuple[list[str], Tensor, Tensor, Tensor]:
    """Steps 1–4 of the module docstring: every block's density on the common signed-log grid.

    Args:
        densities: :class:`BlockDensities` or ``{label: SpectralDensity}``.
        rank: Scale each block by its ``rank``-th largest Ritz value in magnitude (mean over probes).
        floor: Relative magnitude below which eigenvalues collapse to 0 on the log scale (``0 < floor < 1``).
        sigma: Kernel width on the log scale (decades).
        num_points: Grid size ``X``.

    Returns:
        ``(labels, grid [X], densities [G, X], scales [G])``, float64 CPU; each density row sums to 1.

    Raises:
        ValueError: For no densities or bad settings.
    """
    dens = dict(densities.densities if isinstance(densities, BlockDensities) else densities)
    if not dens:
        raise ValueError("no block densities given")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive int (Zhang et al.: 10), got {rank!r}")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1), e.g. 1e-4, got {floor!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (decades on the log scale), got {sigma!r}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}")
    labels, logs, weights, scales = [], [], [], []
    for label, d in dens.items():
        if not isinstance(d, SpectralDensity):
            raise TypeError(f"block {label!r}: expected a SpectralDensity, got {type(d).__name__}")
        nodes, w = d.nodes.to(torch.float64), d.weights.to(torch.float64)  # [L, m]
        r = min(rank, nodes.shape[1])
        scale = nodes.abs().topk(r, dim=1).values[:, -1].mean().item()
        scale = scale if scale > 0 else 1.0
        x = nodes / scale
        u = torch.sign(x) * torch.log10(x.abs().clamp_min(floor) / floor)
        labels.append(str(label))
        logs.append(u)
        weights.append(w / nodes.shape[0])  # mean over probes
        scales.append(scale)
    lo = min(u.min().item() for u in logs) - GRID_PAD_SIGMAS * sigma
    hi = max(u.max().item() for u in logs) + GRID_PAD_SIGMAS * sigma
    grid = torch.linspace(lo, hi, num_points, dtype=torch.float64)
    rows = []
    for u, w in zip(logs, weights, strict=True):
        z = (grid[:, None] - u.reshape(1, -1)) / sigma  # [X, L·m]
        rows.append(torch.exp(-0.5 * z.square()) @ w.reshape(-1))
    P = torch.stack(rows)  # [G, X]; the Gaussian's constant cancels in the normalisation
    P = P / P.sum(1, keepdim=True)
    return labels, grid, P, torch.tensor(scales, dtype=torch.float64)


def spectral_heterogeneity(
    densities: BlockDensities | Mapping[str, SpectralDensity],
    *,
    rank: int = SCALE_RANK,
    floor: float = LOG_FLOOR,
    sigma: float = LOG_SIGMA,
    num_points: int = 1024,
) -> SpectralHeterogeneity:
    """Jensen–Shannon distances between the block spectra and their mean :math:`JS^0` (Zhang et al. 2024).

    Args:
        densities: :class:`BlockDensities` (from :func:`~.block_density.block_densities`) or
            ``{label: SpectralDensity}``.
        rank: Scale rank (10: each block divided by its 10th-largest Ritz value in magnitude).
        floor: Floor of the log scale, relative to the block's scale.
        sigma: Kernel width on the log scale (decades).
        num_points: Points of the common grid.

    Returns:
        :class:`SpectralHeterogeneity` (distances ``[G, G]``, ``mean`` = :math:`JS^0`).

    Raises:
        ValueError: For no densities or bad settings.
    """
    labels, grid, P, scales = normalized_block_densities(densities, rank=rank, floor=floor, sigma=sigma,
                                                         num_points=num_points)
    D = js_distance_matrix(P)
    G = len(labels)
    upper = D[torch.triu(torch.ones(G, G, dtype=torch.bool), diagonal=1)]
    mean = upper.mean().item() if upper.numel() else math.nan
    return SpectralHeterogeneity(labels, D, mean, grid, P, scales, rank, float(floor), float(sigma))
