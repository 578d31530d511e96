r"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a unit probe ``v`` the spectral measure :math:`\mu_v = \sum_i (u_i^\top v)^2 \delta_{\lambda_i}` (``u_i``
the eigenvectors of ``A``) has :math:`\int f \, d\mu_v = v^\top f(A) v`. ``m`` Lanczos steps from ``v`` give
its ``m``-point Gauss quadrature (Golub & Meurant 2010): nodes :math:`\theta_k` are the eigenvalues of the
tridiagonal ``T`` and weights :math:`\tau_k^2` the squared first components of its eigenvectors, exact for
polynomials of degree ``<= 2m - 1``. For Rademacher or Gaussian probes normalized to unit length,
:math:`E[\mu_v] = \frac1N \sum_i \delta_{\lambda_i}`, the spectral density. Averaging over ``n_v`` probes and
smoothing with a Gaussian kernel :math:`g_\sigma`:

.. math::

    \phi(t) \approx \frac{1}{n_v} \sum_{l=1}^{n_v} \sum_{k=1}^{m} (\tau_k^{(l)})^2 \, g_\sigma(t - \theta_k^{(l)})

All probes run through one Lanczos recurrence (:class:`~.krylov.LanczosRecurrence`), one ``[N, n_v]``
product per step.

References:
    Golub & Meurant (2010), "Matrices, Moments and Quadrature with Applications", Princeton;
    Ubaru, Chen & Saad (2017), SIAM J. Matrix Anal. Appl. 38(4);
    Ghorbani, Krishnan & Xiao (2019), "An Investigation into Neural Net Optimization via Hessian Eigenvalue
    Density", ICML.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .krylov import LanczosRecurrence
from .operator import LinearOperator, as_operator
from .trace import random_probes

__all__ = ["SpectralDensity", "iter_slq", "slq_density", "DEFAULT_RELATIVE_SIGMA", "GRID_PADDING_SIGMAS"]

# Default kernel width: this fraction of the spread of the quadrature nodes, max θ - min θ.
DEFAULT_RELATIVE_SIGMA = 0.01
# The default grid reaches this many kernel widths beyond the extreme nodes (the tails it cuts hold < 1e-9).
GRID_PADDING_SIGMAS = 6.0


@dataclass
class SpectralDensity:
    """A smoothed spectral density and the Gauss quadrature it comes from.

    Attributes:
        grid: Evaluation points ``[P]``, float64 CPU.
        density: :math:`\\phi` on the grid ``[P]``, float64 CPU; it integrates to about 1 on the default grid.
        nodes: Quadrature nodes (Ritz values) per probe ``[num_probes, m]``, ascending, float64 CPU.
        weights: Quadrature weights ``[num_probes, m]`` (each row sums to 1), float64 CPU.
        sigma: Width of the Gaussian kernel.
        num_matvecs: Products with ``A`` so far.
        done: Probe-steps done (``num_probes`` per Lanczos step; equal to ``num_matvecs``), for a Job's progress.
        total: Probe-steps in all (``num_probes · m``).
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    num_matvecs: int
    done: int
    total: int

    def mass_below(self, x: float, smoothed: bool = False) -> float:
        """Spectral mass below ``x``: an estimate of the fraction of eigenvalues ``< x``.

        Args:
            x: Threshold.
            smoothed: False (default): the quadrature's mass, the mean over probes of the weights of nodes
                ``< x``. True: the mass of the smoothed density :math:`\\phi` below ``x`` (Gaussian CDFs), which
                also counts half of the eigenvalues within about ``sigma`` of ``x``.

        Returns:
            Mass in ``[0, 1]``.
        """
        if smoothed:
            cdf = 0.5 * torch.erfc((self.nodes - x) / (self.sigma * math.sqrt(2.0)))
            return (self.weights * cdf).sum(1).mean().item()
        return (self.weights * (self.nodes < x)).sum(1).mean().item()

    def moment(self, p: int) -> float:
        """Quadrature estimate of :math:`\\frac1N \\operatorname{tr}(A^p)`: mean over probes of
        :math:`\\sum_k \\tau_k^2 \\theta_k^p` (exact per probe for ``p <= 2m - 1``).

        Args:
            p: Non-negative power.

        Returns:
            The moment of the (unsmoothed) quadrature measure.
        """
        return (self.weights * self.nodes**p).sum(1).mean().item()


def iter_slq(
    A: LinearOperator | Tensor,
    num_probes: int = 8,
    num_steps: int = 30,
    *,
    num_points: int = 512,
    sigma: float | None = None,
    grid: Tensor | None = None,
    distribution: str = "rademacher",
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[SpectralDensity]:
    """Stochastic Lanczos quadrature, yielding the running density after every Lanczos step.

    Each yield is the SLQ density of all probes after the steps done so far (an ``m'``-point quadrature
    per probe, sharpening as ``m'`` grows); the last one, after ``min(num_steps, N)`` steps, is final.

    Args:
        A: Symmetric operator ``[N, N]`` (or a matrix), float32 or float64.
        num_probes: Number of random probes ``n_v``.
        num_steps: Lanczos steps per probe ``m`` (capped at ``N``; with ``m = N`` the nodes are the eigenvalues).
        num_points: Grid size ``P`` when no ``grid`` is given.
        sigma: Kernel width; default :data:`DEFAULT_RELATIVE_SIGMA` times the spread of the current nodes
            (1% of the estimated spectral range; if all nodes coincide, 1% of their magnitude, or 0.01 at 0).
        grid: Evaluation points ``[P]``; default ``P = num_points`` points from the smallest node minus
            :data:`GRID_PADDING_SIGMAS` ``· sigma`` to the largest plus as much.
        distribution: ``"rademacher"`` or ``"gaussian"`` probes (normalized to unit length).
        probes: Explicit probes ``[N, num_probes]`` instead of random ones (normalized inside).
        generator: Seeded generator for probes and breakdown restarts.

    Yields:
        A :class:`SpectralDensity` after each step.

    Raises:
        ValueError: On a non-square operator, non-positive counts or ``sigma``, a ``grid`` that is not 1-D, or
            ``probes`` of the wrong shape or with a zero column.
    """
    op = as_operator(A)
    N = op.shape[0]
    if op.shape[1] != N:
        raise ValueError(f"SLQ needs a square operator, got shape {op.shape}")
    for name, value in (("num_probes", num_probes), ("num_steps", num_steps), ("num_points", num_points)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if grid is None and num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number or None, got {sigma!r}")
    if grid is not None:
        if not isinstance(grid, Tensor) or grid.ndim != 1 or grid.numel() < 1:
            raise ValueError("grid must be a non-empty 1-D tensor of evaluation points")
        grid = grid.detach().to(device="cpu", dtype=torch.float64)
    if probes is None:
        probes = random_probes(N, num_probes, distribution=distribution, dtype=op.dtype, device=op.device,
                               generator=generator)
    elif not isinstance(probes, Tensor) or probes.shape != (N, num_probes):
        shape = tuple(probes.shape) if isinstance(probes, Tensor) else type(probes).__name__
        raise ValueError(f"probes must have shape [{N}, {num_probes}] (N, num_probes), got {shape}")

    num_steps = min(num_steps, N)
    recurrence = LanczosRecurrence(op, probes, num_steps, generator)
    for _ in range(num_steps):
        recurrence.step()
        nodes, vectors = recurrence.ritz()
        weights = vectors[:, 0, :].square()
        width = _default_sigma(nodes) if sigma is None else float(sigma)
        points = _default_grid(nodes, width, num_points) if grid is None else grid
        yield SpectralDensity(
            grid=points,
            density=_smoothed_density(points, nodes, weights, width),
            nodes=nodes,
            weights=weights,
            sigma=width,
            num_matvecs=recurrence.num_matvecs,
            done=recurrence.num_matvecs,
            total=num_probes * num_steps,
        )


def slq_density(
    A: LinearOperator | Tensor,
    num_probes: int = 8,
    num_steps: int = 30,
    *,
    num_points: int = 512,
    sigma: float | None = None,
    grid: Tensor | None = None,
    distribution: str = "rademacher",
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature: the final result of :func:`iter_slq`.

    Args:
        A: Symmetric operator ``[N, N]`` (or a matrix), float32 or float64.
        num_probes: Number of random probes.
        num_steps: Lanczos steps per probe.
        num_points: Grid size when no ``grid`` is given.
        sigma: Kernel width (default 1% of the spread of the nodes).
        grid: Evaluation points ``[P]``.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        probes: Explicit probes ``[N, num_probes]``.
        generator: Seeded generator.

    Returns:
        The final :class:`SpectralDensity`.

    Example:
        >>> A = torch.diag(torch.linspace(-1, 1, 50, dtype=torch.float64))
        >>> d = slq_density(A, num_probes=4, num_steps=50, generator=torch.Generator().manual_seed(0))
        >>> round(d.mass_below(0.0), 2)
        0.5
    """
    snapshots = iter_slq(A, num_probes, num_steps, num_points=num_points, sigma=sigma, grid=grid,
                         distribution=distribution, probes=probes, generator=generator)
    return deque(snapshots, maxlen=1)[0]


def _default_sigma(nodes: Tensor) -> float:
    spread = (nodes.max() - nodes.min()).item()
    if spread > 0:
        return DEFAULT_RELATIVE_SIGMA * spread
    magnitude = nodes.abs().max().item()
    return DEFAULT_RELATIVE_SIGMA * (magnitude if magnitude > 0 else 1.0)


def _default_grid(nodes: Tensor, sigma: float, num_points: int) -> Tensor:
    pad = GRID_PADDING_SIGMAS * sigma
    return torch.linspace(nodes.min().item() - pad, nodes.max().item() + pad, num_points, dtype=torch.float64)


def _smoothed_density(grid: Tensor, nodes: Tensor, weights: Tensor, sigma: float) -> Tensor:
    """``mean_l sum_k w_lk N(grid; θ_lk, σ²)`` ``[P]`` for nodes and weights ``[L, m]``."""
    z = (grid[:, None] - nodes.reshape(1, -1)) / sigma  # [P, L·m]
    kernel = torch.exp(-0.5 * z.square()) / (sigma * math.sqrt(2 * math.pi))
    return kernel @ weights.reshape(-1) / nodes.shape[0]
