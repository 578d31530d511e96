r"""Extreme eigenpairs of a symmetric operator by Lanczos with partial or full reorthogonalization.

The Lanczos recurrence builds an orthonormal basis :math:`Q_j = [q_0, \dots, q_{j-1}]` of the Krylov space
:math:`\mathcal K_j(A, q_0)` in which ``A`` is tridiagonal:

.. math::

    A Q_j = Q_j T_j + \beta_j q_j e_j^\top, \qquad
    \beta_j q_j = A q_{j-1} - \alpha_{j-1} q_{j-1} - \beta_{j-1} q_{j-2}

Eigenpairs :math:`T_j s_i = \theta_i s_i` give Ritz pairs :math:`(\theta_i, y_i = Q_j s_i)` whose residuals
are :math:`\lVert A y_i - \theta_i y_i \rVert = \beta_j |e_j^\top s_i|`; the extreme ones converge first.
By default the basis is kept semi-orthogonal (:math:`|q_i^\top q_k| \le \sqrt{\varepsilon}`) by partial
reorthogonalization (Simon 1984): each new vector is Gram-Schmidt-orthogonalized against the whole basis only
at the steps where Simon's recurrence estimates that orthogonality is about to be lost, which keeps the Ritz
values as accurate as full reorthogonalization and free of spurious copies, at the cost of about one product
per step. ``reorthogonalize="full"`` orthogonalizes every new vector against the whole basis (twice when
needed: "twice is enough", Kahan; Parlett 1998, §6.9), so the basis stays orthonormal to working precision.
:class:`~.krylov.LanczosRecurrence` runs the recurrence for ``B`` start vectors at once (one ``[N, B]`` product
per step); :func:`iter_lanczos` uses it with one vector, and stochastic Lanczos
quadrature (:mod:`.density`) with one per probe.

References:
    Lanczos (1950), J. Res. Nat. Bur. Standards 45; Paige (1972), IMA J. Appl. Math. 10;
    Parlett (1998), "The Symmetric Eigenvalue Problem", SIAM, ch. 6 and 13; Simon (1984), Math. Comp. 42(165).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from .krylov import LanczosBasis, LanczosRecurrence
from .operator import LinearOperator, as_operator, inner
from .trace import random_probes

__all__ = [
    "LanczosResult",
    "iter_lanczos",
    "lanczos",
    "CurvatureSummary",
    "curvature_summary",
    "WARM_START_NOISE",
    "ILL_CONDITIONED_RATIO",
]

WHICH = ("largest", "smallest", "both")
CRITERIA = ("residual", "eigenvalue")
# A warm start adds a random unit vector scaled by this to the normalized sum of the given vectors, so that
# eigenvectors the previous ones missed still have a component in the start vector.
WARM_START_NOISE = 1e-3
# curvature_summary warns that the condition number is ill-defined when |λ_min| <= this·|λ_max|.
ILL_CONDITIONED_RATIO = 1e-8
# Convergence tolerances are clamped to at least this many machine epsilons of the operator's dtype.
_TOL_EPS_FACTOR = 10


@dataclass
class LanczosResult:
    """Ritz pairs of a symmetric operator after some Lanczos iterations.

    Attributes:
        eigenvalues: Wanted Ritz values ``[m]``, ascending, float64 on the CPU (from the tridiagonal ``T``).
        residual_norms: ``||A y_i - θ_i y_i||`` ``[m]`` for the unit Ritz vectors, float64 CPU, from the
            Lanczos identity :math:`\\beta_j |e_j^\\top s_i|`: equal to the explicit residual up to rounding
            with full reorthogonalization, and up to about :math:`\\sqrt{\\varepsilon} \\lVert A \\rVert` with
            partial (the components below :math:`\\sqrt{\\varepsilon}` that a partial pass removes are not in
            ``T``); the eigenvalues are accurate to working precision either way (Simon 1984).
        error_estimates: Estimated eigenvalue errors ``[m]``: :math:`\\min(r_i, r_i^2 / \\delta_i)` with
            :math:`r_i` the residual and :math:`\\delta_i` the distance of :math:`\\theta_i` to the nearest other
            Ritz value (see :func:`iter_lanczos`).
        num_matvecs: Products with ``A`` this run used.
        num_iterations: Lanczos steps done (order of ``T``).
        converged: Whether every wanted pair met the tolerance (see :func:`iter_lanczos`), or the Krylov
            space exhausted ``R^N`` (then the pairs are exact).
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        k: Pairs requested per end.
        done: Iterations done (same as ``num_iterations``), for a Job's progress.
        total: Iterations at most (``max_iter``).
        reorthogonalized_steps: Steps at which the new vector was orthogonalized against the whole basis (every
            step with ``reorthogonalize="full"``; with ``"partial"`` only where Simon's estimate asked for it).
        eigenvectors: Ritz vectors ``[N, m]`` in the operator's dtype and device, computed on first access as
            ``Q S`` (a property, not a constructor argument); their columns are orthonormal to working precision
            with full reorthogonalization and to about :math:`\\sqrt{\\varepsilon}` with partial.
    """

    eigenvalues: Tensor
    residual_norms: Tensor
    error_estimates: Tensor
    num_matvecs: int
    num_iterations: int
    converged: bool
    which: str
    k: int
    done: int
    total: int
    _basis: LanczosBasis = field(repr=False, compare=False)  # n Lanczos vectors as rows
    _coefficients: Tensor = field(repr=False, compare=False)  # [n, m] eigenvectors of T for the wanted pairs
    reorthogonalized_steps: int = 0

    @cached_property
    def eigenvectors(self) -> Tensor:
        """Ritz vectors ``[N, m]``: ``Q S`` for the wanted columns ``S`` of ``T``'s eigenvectors, each scaled to
        unit norm (with a semi-orthogonal basis ``||Q s||`` differs from 1 by up to about ``sqrt(eps)``)."""
        Y = self._basis.combine(self._coefficients)
        for i in range(Y.shape[1]):
            column = Y[:, i].contiguous()  # a view when m = 1
            Y[:, i].div_(inner(column[None, None], column[None]).clamp_min(torch.finfo(Y.dtype).tiny).sqrt().item())
        return Y


def _check_tol(tol: float) -> float:
    """``tol`` as a float; a ``ValueError`` unless it is a finite number > 0 (NaN would never converge)."""
    try:
        value = float(tol) if not isinstance(tol, (bool, str)) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"tol must be a finite number > 0 (a relative tolerance such as 1e-6), got {tol!r}")
    return value


def iter_lanczos(
    A: LinearOperator | Tensor,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float = 1e-6,
    criterion: str = "residual",
    max_iter: int | None = None,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    reorthogonalize: str = "partial",
) -> Iterator[LanczosResult]:
    r"""Lanczos iterations towards the ``k`` extreme eigenpairs of a symmetric operator, one result per step.

    After every step (one product with ``A``) the tridiagonal ``T`` is diagonalized and the wanted Ritz pairs
    are yielded. The run stops after the first step at which the result is converged, or when ``max_iter``
    steps are done. With ``criterion="residual"`` (the default: eigenvectors accurate too) a result is
    converged when

    .. math::

        r_i = \lVert A y_i - \theta_i y_i \rVert \le \mathrm{tol} \cdot \max_l |\theta_l|
        \quad \text{for every wanted pair } i

    (``max_l |θ_l|`` over all current Ritz values is a lower estimate of :math:`\lVert A \rVert_2` that is
    accurate early, because extreme values converge first). A converged eigenvalue is then within :math:`r_i`
    of an eigenvalue of ``A`` and, when the gap :math:`\delta_i` between :math:`\theta_i` and the rest of
    the spectrum is larger than :math:`r_i`, within :math:`r_i^2 / \delta_i` (Kato–Temple; Parlett 1998,
    §11.7). ``criterion="eigenvalue"`` asks only for the eigenvalues: it stops when the estimate
    :math:`\min(r_i, r_i^2 / \delta_i) \le \mathrm{tol} \cdot \max_l |\theta_l|`, with :math:`\delta_i`
    the distance to the nearest other Ritz value. For a well separated :math:`\lambda_{max}` that needs a
    residual of only about :math:`\sqrt{\mathrm{tol} \cdot \lambda \cdot \delta}`, so far fewer products; the
    estimate is the one eigensolvers use (ARPACK's and PRIMME's Ritz estimates), not a guaranteed bound: the
    Ritz gap can exceed the true gap while the neighbouring eigenvalue has not yet been found. ``tol`` is
    clamped to at least 10 machine epsilons of ``A``'s dtype.

    Single-vector Lanczos sees each eigenvalue once: a repeated eigenvalue shows up with multiplicity one
    (copies appear only after a breakdown restart). When the Krylov space becomes invariant the run restarts
    with a random vector orthogonal to the basis; when it reaches ``R^N`` the pairs are exact.

    Args:
        A: Symmetric operator ``[N, N]`` (or a matrix), float32 or float64; symmetry is assumed, not checked.
        k: Pairs per end, ``1 <= k <= N``.
        which: ``"largest"`` (the ``k`` algebraically largest), ``"smallest"`` (the ``k`` algebraically smallest,
            i.e. most negative) or ``"both"`` (``k`` of each, all ``min(2k, N)`` together, ascending).
        tol: Relative tolerance (see above).
        criterion: ``"residual"`` (Ritz pairs) or ``"eigenvalue"`` (eigenvalues only; see above).
        max_iter: Steps at most (capped at ``N``); default ``min(N, 20·m + 100)`` with ``m`` the number of
            wanted pairs (``k``, or ``min(2k, N)`` for ``"both"``). Memory is ``max_iter·N`` entries of the basis.
        v0: Start: ``None`` (random Gaussian), a vector ``[N]``, or a matrix ``[N, c]`` for a warm start (e.g. the
            eigenvectors of a previous, slightly different operator): its columns are normalized and summed,
            the sum normalized, and a random unit vector times :data:`WARM_START_NOISE` added.
        generator: Seeded generator for the random start and restart vectors.
        reorthogonalize: ``"partial"`` (Simon 1984: the basis semi-orthogonal, most steps cost one product) or
            ``"full"`` (every step orthogonalized against the whole basis: orthonormal to working precision,
            each step also reads the whole basis, which at GPT-2-small size costs about as much as a product).

    Yields:
        A :class:`LanczosResult` after each step; the last one is the final result. Before ``m`` steps are
        done fewer than ``m`` pairs are available and all Ritz pairs of ``T`` are reported.

    Raises:
        ValueError: On a non-square operator, unknown ``which`` or ``criterion``, ``k`` outside ``[1, N]``,
            ``max_iter`` below the number of wanted pairs, a ``tol`` that is not a finite number > 0,
            or a ``v0`` of the wrong shape or zero.
    """
    op = as_operator(A)
    N = op.shape[0]
    if op.shape[1] != N:
        raise ValueError(f"Lanczos needs a square operator, got shape {op.shape}")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= N:
        raise ValueError(f"k must be an int in [1, N={N}], got {k!r}")
    num_wanted = min(2 * k, N) if which == "both" else k
    if max_iter is None:
        max_iter = min(N, 20 * num_wanted + 100)
    elif isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < num_wanted:
        raise ValueError(f"max_iter must be an int >= the number of wanted pairs ({num_wanted}), got {max_iter!r}")
    max_iter = min(max_iter, N)
    tol = _check_tol(tol)
    tol = max(tol, _TOL_EPS_FACTOR * torch.finfo(op.dtype).eps)

    recurrence = LanczosRecurrence(op, _start_vector(op, v0, generator)[:, None], max_iter, generator, reorthogonalize)
    while True:
        recurrence.step()
        n = recurrence.size
        theta, S = (x[0] for x in recurrence.ritz())
        wanted = _wanted_indices(n, k, which)
        residuals = recurrence.last_beta[0] * S[-1, wanted].abs()
        errors = _eigenvalue_errors(theta, wanted, residuals)
        scale = theta.abs().max().item()
        measured = residuals if criterion == "residual" else errors
        converged = n == N or (wanted.numel() == num_wanted and bool(torch.all(measured <= tol * scale)))
        yield LanczosResult(
            eigenvalues=theta[wanted],
            residual_norms=residuals,
            error_estimates=errors,
            num_matvecs=recurrence.num_matvecs,
            num_iterations=n,
            converged=converged,
            which=which,
            k=k,
            done=n,
            total=max_iter,
            _basis=recurrence.basis(),
            _coefficients=S[:, wanted],
            reorthogonalized_steps=recurrence.reorthogonalized_steps,
        )
        if converged or n >= max_iter:
            return


def lanczos(
    A: LinearOperator | Tensor,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float = 1e-6,
    criterion: str = "residual",
    max_iter: int | None = None,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    reorthogonalize: str = "partial",
) -> LanczosResult:
    """The ``k`` extreme eigenpairs of a symmetric operator: the final result of :func:`iter_lanczos`.

    Args:
        A: Symmetric operator ``[N, N]`` (or a matrix), float32 or float64.
        k: Pairs per end.
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        tol: Relative tolerance.
        criterion: ``"residual"`` or ``"eigenvalue"`` (see :func:`iter_lanczos`).
        max_iter: Steps at most.
        v0: Start vector ``[N]`` or warm-start vectors ``[N, c]``.
        generator: Seeded generator.
        reorthogonalize: ``"partial"`` or ``"full"`` (see :func:`iter_lanczos`).

    Returns:
        The final :class:`LanczosResult` (check ``converged``).

    Example:
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> r = lanczos(A, k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
        >>> [round(x, 6) for x in r.eigenvalues.tolist()], r.converged
        ([99.0, 100.0], True)
    """
    run = iter_lanczos(A, k, which, tol=tol, criterion=criterion, max_iter=max_iter, v0=v0, generator=generator,
                       reorthogonalize=reorthogonalize)
    return deque(run, maxlen=1)[0]


@dataclass
class CurvatureSummary:
    """Scalar summaries of a (Hessian) spectrum from both ends of a Lanczos run.

    Attributes:
        sharpness: Largest eigenvalue :math:`\\lambda_{max}`.
        lambda_min: Smallest (most negative) eigenvalue :math:`\\lambda_{min}`.
        condition_number: :math:`|\\lambda_{max} / \\lambda_{min}|`; ``inf`` when :math:`\\lambda_{min} = 0`.
        negative_fraction: Spectral mass below zero from a stochastic Lanczos quadrature density, or None
            when no density was given.
    """

    sharpness: float
    lambda_min: float
    condition_number: float
    negative_fraction: float | None


def curvature_summary(result: LanczosResult, density=None) -> CurvatureSummary:
    """Sharpness, smallest eigenvalue, condition number and negative mass of a spectrum.

    Args:
        result: A :class:`LanczosResult` from ``which="both"``.
        density: Optional :class:`~.density.SpectralDensity` of the same operator; its
            ``mass_below(0.0)`` gives ``negative_fraction``.

    Returns:
        A :class:`CurvatureSummary`. Warns (``UserWarning``) when :math:`|\\lambda_{min}| \\le`
        :data:`ILL_CONDITIONED_RATIO` :math:`\\cdot |\\lambda_{max}|`: the condition number is then dominated by
        rounding and the (nearly) zero eigenvalue, and is ill-defined.

    Raises:
        ValueError: If ``result`` does not hold both ends of the spectrum.
    """
    if result.which != "both":
        raise ValueError(
            "curvature_summary needs both ends of the spectrum: run lanczos(A, k, which='both'), "
            f"got which={result.which!r}"
        )
    lam_max, lam_min = result.eigenvalues.max().item(), result.eigenvalues.min().item()
    if abs(lam_min) <= ILL_CONDITIONED_RATIO * abs(lam_max):
        warnings.warn(
            f"condition number is ill-defined: |lambda_min| = {abs(lam_min):.3g} <= {ILL_CONDITIONED_RATIO:g} * "
            f"|lambda_max| = {abs(lam_max):.3g}",
            stacklevel=2,
        )
    condition = math.inf if lam_min == 0 else abs(lam_max / lam_min)
    negative = None if density is None else float(density.mass_below(0.0))
    return CurvatureSummary(lam_max, lam_min, condition, negative)


def _wanted_indices(n: int, k: int, which: str) -> Tensor:
    """Indices into ``n`` ascending Ritz values of the wanted ones (all of them while ``n`` is too small)."""
    if which == "largest":
        return torch.arange(max(n - k, 0), n)
    if which == "smallest":
        return torch.arange(min(k, n))
    if 2 * k >= n:
        return torch.arange(n)
    return torch.cat([torch.arange(k), torch.arange(n - k, n)])


def _eigenvalue_errors(theta: Tensor, wanted: Tensor, residuals: Tensor) -> Tensor:
    """``min(r, r² / δ)`` per wanted Ritz value, ``δ`` its distance to the nearest other Ritz value."""
    if theta.numel() == 1:
        return residuals.clone()
    distance = (theta[wanted, None] - theta[None, :]).abs()
    distance[torch.arange(wanted.numel()), wanted] = math.inf
    gap = distance.min(1).values
    return torch.where(gap > 0, torch.minimum(residuals, residuals.square() / gap), residuals)


def _start_vector(op: LinearOperator, v0: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The start vector ``[N]`` (not normalized) from ``v0`` as documented in :func:`iter_lanczos`."""
    N = op.shape[0]
    if v0 is None:
        return random_probes(N, 1, distribution="gaussian", dtype=op.dtype, device=op.device, generator=generator)[:, 0]
    if not isinstance(v0, Tensor) or v0.ndim not in (1, 2) or v0.shape[0] != N:
        shape = tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__
        raise ValueError(f"v0 must be a vector [{N}] or a matrix [{N}, c], got {shape}")
    v0 = v0.to(device=op.device, dtype=op.dtype)
    if v0.ndim == 1:
        if not v0.norm() > 0:
            raise ValueError("v0 must be a nonzero, finite vector")
        return v0
    norms = v0.norm(dim=0)
    if not torch.all(norms > 0):
        raise ValueError("every column of v0 must be nonzero and finite")
    combined = (v0 / norms).sum(1)
    combined = combined / combined.norm()
    noise = random_probes(N, 1, distribution="gaussian", dtype=op.dtype, device=op.device, generator=generator)[:, 0]
    start = combined + WARM_START_NOISE * noise / noise.norm()
    if not torch.isfinite(start).all() or not start.norm() > 0:
        raise ValueError("the columns of v0 cancel out or are not finite; pass them without sign flips or use v0=None")
    return start
