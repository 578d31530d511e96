r"""Randomized trace and diagonal estimators for a square :class:`~.operator.LinearOperator`.

All three estimators see ``A`` only through products with probe matrices ``[N, K]``:

- :func:`hutchinson_trace`: :math:`\operatorname{tr}(A) \approx \frac1n \sum_l z_l^\top A z_l`
  (Hutchinson 1989), with a standard error from the sample variance.
- :func:`hutchpp_trace`: Hutch++ (Meyer, Musco, Musco & Woodruff 2021): the trace of a low-rank
  sketch of ``A`` exactly, plus Hutchinson on what the sketch leaves.
- :func:`diagonal`: :math:`\operatorname{diag}(A) \approx \frac1n \sum_l z_l \odot A z_l` (Bekas,
  Kokiopoulou & Saad 2007), exact from unit vectors once the budget reaches ``N``.

:func:`random_probes` draws the Rademacher or Gaussian probe vectors they (and the Lanczos kernels) use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .cost import check_memory
from .operator import INNER_SLICE, LinearOperator, as_operator

__all__ = [
    "TraceEstimate",
    "DiagonalEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "diagonal",
    "random_probes",
    "PROBE_CHUNK_BYTES",
    "PROBE_CHUNK_COLUMNS",
]

DISTRIBUTIONS = ("rademacher", "gaussian")
# Without an explicit chunk_size, probes are multiplied in blocks of at most this many bytes of probe vectors.
PROBE_CHUNK_BYTES = 64 * 2**20
# ... and of at most this many columns: a HessianOperator's batched double backward costs the same per
# vector from 8 to 100 columns but about 2x more at 300 (benchmarks/curvature.py, 110k-parameter GPT-2).
PROBE_CHUNK_COLUMNS = 64
# Hutch++ keeps its sketch in one piece up to this size; above it (e.g. 33 columns of a 124M-parameter
# model: 16 GB in float32) only one [N, s] matrix is held (see `_large_sketch`).
SKETCH_IN_ONE_PIECE_BYTES = 256 * 2**20
SKETCH_ROW_BLOCK_BYTES = 64 * 2**20


@dataclass
class TraceEstimate:
    """A stochastic estimate of :math:`\\operatorname{tr}(A)`.

    Attributes:
        value: The estimate.
        stderr: Its standard error (sample standard deviation of the random part over the square root of
            its sample count); ``nan`` when the random part has a single sample, ``0.0`` when it vanished.
        num_matvecs: Products with ``A`` used (a ``[N, K]`` product counts ``K``).
        method: ``"hutchinson"`` or ``"hutch++"``.
    """

    value: float
    stderr: float
    num_matvecs: int
    method: str


@dataclass
class DiagonalEstimate:
    """An estimate of :math:`\\operatorname{diag}(A)`.

    Attributes:
        values: Estimated diagonal ``[N]``, the operator's dtype and device.
        stderr: Per-entry standard error ``[N]`` (zeros when ``exact``; ``nan`` with a single probe).
        num_matvecs: Products with ``A`` used.
        exact: Whether ``values`` came from unit vectors (exact up to rounding).
    """

    values: Tensor
    stderr: Tensor
    num_matvecs: int
    exact: bool


def random_probes(
    num_rows: int,
    num_probes: int,
    *,
    distribution: str = "rademacher",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random probe vectors as the columns of a ``[num_rows, num_probes]`` matrix.

    Args:
        num_rows: Vector length ``N``.
        num_probes: Number of vectors ``K``.
        distribution: ``"rademacher"`` (entries ±1 with probability 1/2) or ``"gaussian"`` (standard normal).
            Both have :math:`E[z z^\\top] = I`.
        dtype: Floating dtype of the result.
        device: Device of the result.
        generator: Source of randomness; numbers are drawn on the generator's device and moved to ``device``,
            so a seeded CPU generator gives the same probes on every device.

    Returns:
        Probes ``[N, K]`` in ``dtype`` on ``device``.

    Raises:
        ValueError: If ``distribution`` is not one of the two.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    draw_device = generator.device if generator is not None else torch.device(device)
    size = (int(num_rows), int(num_probes))
    if distribution == "gaussian":
        Z = torch.randn(size, generator=generator, device=draw_device, dtype=dtype)
    else:
        Z = torch.randint(0, 2, size, generator=generator, device=draw_device).to(dtype).mul_(2).sub_(1)
    return Z.to(device)


def hutchinson_trace(
    A: LinearOperator | Tensor,
    num_matvecs: int,
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> TraceEstimate:
    r"""Hutchinson's trace estimator.

    .. math::

        \operatorname{tr}(A) \approx \frac1n \sum_{l=1}^{n} z_l^\top A z_l,
        \qquad \mathrm{stderr} = \operatorname{std}_l(z_l^\top A z_l) / \sqrt{n}

    Unbiased because :math:`E[z z^\top] = I`. The variance of one sample is
    :math:`2 \sum_{i \ne j} A_{ij}^2` for Rademacher probes and :math:`2 \lVert A \rVert_F^2` for Gaussian
    ones (symmetric ``A``).

    Args:
        A: Square operator ``[N, N]`` (or a matrix), float32 or float64.
        num_matvecs: Number of probes ``n`` (one product each).
        distribution: ``"rademacher"`` or ``"gaussian"``.
        generator: Seeded generator for reproducible probes.
        chunk_size: Probes multiplied at once (one ``[N, chunk_size]`` product); by default as many as fit in
            :data:`PROBE_CHUNK_BYTES`, at most :data:`PROBE_CHUNK_COLUMNS`.

    Returns:
        A :class:`TraceEstimate` with ``method="hutchinson"``.

    Raises:
        ValueError: If ``A`` is not square or ``num_matvecs < 1``.

    References:
        Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
        smoothing splines", Communications in Statistics - Simulation and Computation 18(3).
    """
    op = _square_operator(A)
    n = _positive_int(num_matvecs, "num_matvecs")
    samples = _quadratic_forms(op, n, distribution, generator, chunk_size, projector=None)
    return TraceEstimate(samples.mean().item(), _stderr(samples), n, "hutchinson")


def hutchpp_trace(
    A: LinearOperator | Tensor,
    num_matvecs: int,
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> TraceEstimate:
    r"""Hutch++: exact trace of a sketched low-rank part plus Hutchinson on the rest.

    With a budget of ``m`` products: ``s = m // 3`` random probes ``S`` give ``Q = orth(A S)`` (``s``
    products; directions with singular value below ``max(N, s)·eps·σ_max`` are dropped, so ``Q`` has
    ``r <= s`` columns), ``A Q`` costs ``r`` more, and the remaining ``n = m - s - r`` probes ``G`` estimate
    the deflated rest:

    .. math::

        \operatorname{tr}(A) \approx \operatorname{tr}(Q^\top A Q)
            + \frac1n \sum_{l=1}^{n} g_l^\top (I - QQ^\top) A (I - QQ^\top) g_l

    Given ``Q`` the first term has no sampling error and the second is Hutchinson's estimator of
    :math:`\operatorname{tr}((I - QQ^\top) A (I - QQ^\top)) = \operatorname{tr}(A) - \operatorname{tr}(Q^\top A Q)`,
    so the estimate is unbiased; ``stderr`` is the second term's sample standard error. For a matrix of rank
    ``<= m // 3`` the range is captured and the estimate is exact. The variance falls like ``1/m²`` instead
    of ``1/m`` when the spectrum decays, but with a flat spectrum and a small budget the ``2m/3`` products
    spent on the sketch make it noisier than plain Hutchinson.

    Args:
        A: Square symmetric operator ``[N, N]`` (or a matrix), float32 or float64.
        num_matvecs: Budget ``m >= 3``; the returned ``num_matvecs`` equals it.
        distribution: Distribution of ``S`` and ``G``, ``"rademacher"`` or ``"gaussian"``.
        generator: Seeded generator for reproducible probes.
        chunk_size: Probes multiplied at once in the Hutchinson part (default as in :func:`hutchinson_trace`).

    Returns:
        A :class:`TraceEstimate` with ``method="hutch++"``.

    Raises:
        ValueError: If ``A`` is not square or ``num_matvecs < 3``.
        MemoryError: If the sketch (three ``[N, m // 3]`` matrices) would not fit on the operator's device,
            before anything is allocated.

    References:
        Meyer, Musco, Musco & Woodruff (2021), "Hutch++: Optimal Stochastic Trace Estimation", SOSA.
    """
    op = _square_operator(A)
    m = _positive_int(num_matvecs, "num_matvecs")
    if m < 3:
        raise ValueError(f"hutchpp_trace needs num_matvecs >= 3 (a third sketches A), got {m}")
    N = op.shape[0]
    s = m // 3
    # The probes S, the sketch Y = A S and its basis Q: three [N, s] matrices.
    check_memory(
        3 * N * s * op.dtype.itemsize,
        op.device,
        f"hutchpp_trace(num_matvecs={m}) on an operator of size {N} (a sketch of {s} columns)",
        [f"lower num_matvecs (at num_matvecs = {3 * N} the sketch spans the whole space and the trace is exact)",
         "or use hutchinson_trace, which holds no sketch"],
    )
    if N * s * op.dtype.itemsize <= SKETCH_IN_ONE_PIECE_BYTES:
        S = random_probes(N, s, distribution=distribution, dtype=op.dtype, device=op.device, generator=generator)
        Y = op.matmat(S)
        U, sv, _ = torch.linalg.svd(Y, full_matrices=False)
        rank_tol = _rank_tolerance(s, op.dtype) * sv.max()
        Q = U[:, sv > rank_tol]
        low_rank = (Q * op.matmat(Q)).sum().item() if Q.shape[1] else 0.0
    else:
        Q, low_rank = _large_sketch(op, s, distribution, generator, chunk_size)
    r = Q.shape[1]
    n = m - s - r
    samples = _quadratic_forms(op, n, distribution, generator, chunk_size, projector=Q)
    return TraceEstimate(low_rank + samples.mean().item(), _stderr(samples), m, "hutch++")


def diagonal(
    A: LinearOperator | Tensor,
    num_probes: int,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> DiagonalEstimate:
    r"""The diagonal of ``A``, estimated from Rademacher probes or computed exactly.

    .. math::

        \operatorname{diag}(A) \approx \frac1n \sum_{l=1}^{n} z_l \odot A z_l

    Entry ``i`` of one sample is :math:`A_{ii} + \sum_{j \ne i} A_{ij} z_i z_j`, unbiased with variance
    :math:`\sum_{j \ne i} A_{ij}^2`; ``stderr`` is the per-entry sample standard error. When
    ``num_probes >= N`` the ``N`` unit vectors give the diagonal exactly for the same cost.

    Args:
        A: Square operator ``[N, N]`` (or a matrix), float32 or float64.
        num_probes: Number of probes (products).
        generator: Seeded generator for reproducible probes.
        chunk_size: Probes multiplied at once (default as in :func:`hutchinson_trace`).

    Returns:
        A :class:`DiagonalEstimate`; ``num_matvecs`` is ``min(num_probes, N)``.

    Raises:
        ValueError: If ``A`` is not square or ``num_probes < 1``.

    References:
        Bekas, Kokiopoulou & Saad (2007), "An estimator for the diagonal of a matrix", Applied Numerical
        Mathematics 57(11-12).
    """
    op = _square_operator(A)
    n = _positive_int(num_probes, "num_probes")
    N = op.shape[0]
    chunk = _chunk_size(op, chunk_size)
    if n >= N:
        values = torch.empty(N, dtype=op.dtype, device=op.device)
        for start in range(0, N, chunk):
            stop = min(start + chunk, N)
            cols = torch.arange(start, stop, device=op.device)
            E = torch.zeros(N, stop - start, dtype=op.dtype, device=op.device)
            E[cols, cols - start] = 1
            values[start:stop] = op.matmat(E)[cols, cols - start]
        return DiagonalEstimate(values, torch.zeros_like(values), N, exact=True)
    total = torch.zeros(N, dtype=torch.float64, device=op.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, n, chunk):
        Z = random_probes(N, min(chunk, n - start), dtype=op.dtype, device=op.device, generator=generator)
        samples = (Z * op.matmat(Z)).double()
        total += samples.sum(1)
        total_sq += samples.square().sum(1)
    mean = total / n
    if n > 1:
        var = ((total_sq - n * mean.square()) / (n - 1)).clamp_min(0)
        stderr = (var / n).sqrt()
    else:
        stderr = torch.full_like(mean, math.nan)
    return DiagonalEstimate(mean.to(op.dtype), stderr.to(op.dtype), n, exact=False)


def _square_operator(A: LinearOperator | Tensor) -> LinearOperator:
    op = as_operator(A)
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"expected a square operator, got shape {op.shape}")
    return op


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _large_sketch(op: LinearOperator, s: int, distribution: str, generator, chunk_size: int | None):
    """Hutch++'s ``Q = orth(A S)`` and ``tr(Q^T A Q)`` holding one ``[N, s]`` matrix (no ``S``, ``U`` or
    ``A Q`` beside it): ``S`` is drawn and multiplied a chunk of columns at a time, and ``A S`` is
    orthonormalised in place by two rounds of Gram-matrix orthonormalisation (CholeskyQR2 with an
    eigendecomposition, so rank-deficient sketches work): ``Y <- Y V Λ^{-1/2}`` over the eigenpairs with
    ``λ > s·eps·λ_max`` (:func:`_rank_tolerance`; singular values above ``sqrt(s·eps)·σ_max``: the Gram
    matrix squares the condition number, and rounding leaves about ``eps·λ_max`` in each of its eigenvalues),
    applied to row blocks in place. The second round makes the kept directions orthonormal to working
    precision."""
    N, dtype = op.shape[0], op.dtype
    chunk = _chunk_size(op, chunk_size)
    Y = torch.empty(N, s, dtype=dtype, device=op.device)
    for start in range(0, s, chunk):
        stop = min(start + chunk, s)
        Y[:, start:stop] = op.matmat(random_probes(N, stop - start, distribution=distribution, dtype=dtype,
                                                   device=op.device, generator=generator))
    for _ in range(2):
        gram = sum((Y[a : a + INNER_SLICE].T @ Y[a : a + INNER_SLICE]).double() for a in range(0, N, INNER_SLICE))
        lam, V = torch.linalg.eigh(gram)
        keep = lam > _rank_tolerance(s, dtype) * lam.max()  # rounding leaves about eps·λ_max in every λ
        W = (V[:, keep] / lam[keep].sqrt()).to(dtype)  # [s, r]
        rows = max(1, SKETCH_ROW_BLOCK_BYTES // (s * dtype.itemsize))
        for a in range(0, N, rows):
            Y[a : a + rows, : W.shape[1]] = Y[a : a + rows] @ W
        Y = Y[:, : W.shape[1]]
    low_rank = sum(float(Y[:, j] @ op.matvec(Y[:, j])) for j in range(Y.shape[1]))
    return Y, low_rank


def _rank_tolerance(s: int, dtype: torch.dtype) -> float:
    """Relative singular value ``s·eps`` below which a column of the sketch ``A S [N, s]`` is dropped.

    The rounding of ``A S`` (each entry to about ``eps``) perturbs its singular values by about ``eps·σ_max``
    times a small factor in ``s``, not in ``N``: the usual ``max(N, s)·eps`` rank tolerance exceeds 1 for
    ``N > 1/eps`` (8.4M entries in float32, below GPT-2-small's 124M) and would drop every column. Dropping
    a direction only moves its trace to the Hutchinson part: the estimate stays unbiased.
    """
    return max(s, 1) * torch.finfo(dtype).eps


def _chunk_size(op: LinearOperator, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return _positive_int(chunk_size, "chunk_size")
    itemsize = torch.finfo(op.dtype).bits // 8
    return max(1, min(PROBE_CHUNK_COLUMNS, PROBE_CHUNK_BYTES // (op.shape[0] * itemsize)))


def _quadratic_forms(
    op: LinearOperator,
    n: int,
    distribution: str,
    generator: torch.Generator | None,
    chunk_size: int | None,
    projector: Tensor | None,
) -> Tensor:
    """``z_l^T P A P z_l`` for ``n`` random probes (``P = I - QQ^T`` with ``Q = projector [N, r]``), float64 ``[n]``."""
    N = op.shape[0]
    chunk = _chunk_size(op, chunk_size)
    out = []
    for start in range(0, n, chunk):
        Z = random_probes(N, min(chunk, n - start), distribution=distribution, dtype=op.dtype, device=op.device,
                          generator=generator)
        if projector is not None and projector.shape[1]:
            Z = Z - projector @ (projector.T @ Z)
        out.append((Z * op.matmat(Z)).sum(0).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _stderr(samples: Tensor) -> float:
    n = samples.numel()
    return samples.std().item() / math.sqrt(n) if n > 1 else math.nan
