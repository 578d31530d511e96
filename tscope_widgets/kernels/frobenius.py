r"""Squared Frobenius norms of operators seen only through products, by Hutchinson's estimator.

For ``A [M, N]`` and random ``v`` with :math:`E[v v^\top] = I` (Rademacher or standard Gaussian),

.. math::

    E\,\lVert A v \rVert^2 = E\, v^\top A^\top A v = \operatorname{tr}(A^\top A) = \lVert A \rVert_F^2,

so the mean of :math:`\lVert A v_l \rVert^2` over ``n`` independent probes is unbiased (Hutchinson 1989,
applied to :math:`A^\top A`, which is never formed). One sample has variance
:math:`2 \lVert A^\top A \rVert_F^2` for Gaussian probes and
:math:`2 (\lVert A^\top A \rVert_F^2 - \sum_i (A^\top A)_{ii}^2)` for Rademacher ones, so the relative error
falls like ``1/sqrt(n)``. This is how the norm of a Hessian block ``H_ab`` is estimated from
block-restricted Hessian-vector products without materialising it (Ormaniec, Dangel & Singh, ICLR 2025).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .operator import LinearOperator
from .trace import PROBE_CHUNK_BYTES, PROBE_CHUNK_COLUMNS, random_probes

__all__ = ["FrobeniusEstimate", "hutchinson_frobenius"]


@dataclass
class FrobeniusEstimate:
    """An estimate of :math:`\\lVert A \\rVert_F^2`.

    Attributes:
        value: The estimate (exact up to rounding when ``exact``).
        stderr: Its standard error (sample standard deviation of :math:`\\lVert A v_l \\rVert^2` over the
            square root of ``num_matvecs``); ``0.0`` when ``exact``, ``nan`` with a single probe.
        num_matvecs: Products with ``A`` (a block of ``K`` vectors counts ``K``).
        exact: Whether ``value`` came from the ``N`` unit vectors instead of random probes.
    """

    value: float
    stderr: float
    num_matvecs: int
    exact: bool


def _block_product(matvec, dim: int, blocks: bool) -> tuple[Callable[[Tensor], Tensor], torch.device | None]:
    """A function ``[N, K] -> [M, K]`` for ``matvec`` and the device its probes should live on."""
    if isinstance(matvec, LinearOperator):
        if matvec.shape[1] != dim:
            raise ValueError(f"hutchinson_frobenius: dim={dim} but the operator has shape {matvec.shape}")
        return matvec.matmat, matvec.device
    if isinstance(matvec, Tensor):
        if matvec.ndim != 2 or matvec.shape[1] != dim:
            raise ValueError(
                f"hutchinson_frobenius: a matrix operand must have shape [M, {dim}], got {tuple(matvec.shape)}"
            )
        return (lambda V: matvec @ V.to(matvec.dtype)), matvec.device
    if not callable(matvec):
        raise TypeError(
            "hutchinson_frobenius: matvec must be a LinearOperator, a matrix or a callable "
            f"v [N] -> A v [M], got {type(matvec).__name__}"
        )
    if blocks:
        return matvec, None
    # one vectorised call over the probe columns (torch.func.vmap), not a Python loop
    return torch.func.vmap(matvec, in_dims=1, out_dims=1), None


def hutchinson_frobenius(
    matvec: LinearOperator | Tensor | Callable[[Tensor], Tensor],
    dim: int,
    num_samples: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    distribution: str = "rademacher",
    blocks: bool = False,
    exact: bool = False,
    chunk_size: int | None = None,
) -> FrobeniusEstimate:
    r"""Unbiased estimate of :math:`\lVert A \rVert_F^2 = E \lVert A v \rVert^2`, with its standard error.

    .. math::

        \lVert A \rVert_F^2 \approx \frac1n \sum_{l=1}^{n} \lVert A v_l \rVert^2, \qquad
        \mathrm{stderr} = \operatorname{std}_l \lVert A v_l \rVert^2 / \sqrt n

    Probes are multiplied as blocks ``V [N, K]``: a :class:`~.operator.LinearOperator` through its
    ``matmat``, a matrix by one matmul, a callable either directly (``blocks=True``: it takes ``[N, K]``
    and returns ``[M, K]``) or vectorised with ``torch.func.vmap`` over the columns.

    Args:
        matvec: ``A`` as a :class:`~.operator.LinearOperator` ``[M, N]``, a matrix ``[M, N]``, or a callable
            ``v [N] -> A v [M]`` (pure torch, so that ``vmap`` applies) or, with ``blocks=True``,
            ``V [N, K] -> A V [M, K]``.
        dim: ``N``, the length of the input vectors.
        num_samples: Number of probes ``n >= 1`` (ignored when ``exact``).
        generator: Seeded generator for reproducible probes (drawn on its device, moved to the operator's).
        dtype: Floating dtype of the probes (a :class:`~.operator.LinearOperator` casts them to its own).
        distribution: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        blocks: Whether a callable ``matvec`` takes a block of vectors ``[N, K]``.
        exact: Multiply the ``N`` unit vectors instead (exact, ``N`` products; for small ``N``, e.g. to
            check an estimate).
        chunk_size: Probes per product; by default as many as fit in 64 MiB of probes, at most 64.

    Returns:
        A :class:`FrobeniusEstimate`.

    Raises:
        TypeError: If ``matvec`` is none of the three kinds or ``dtype`` is not floating.
        ValueError: If ``dim``, ``num_samples`` or ``chunk_size`` is not a positive int, ``dim`` does not
            match the operator, ``distribution`` is unknown, or a product returns the wrong shape.

    Example:
        >>> A = torch.arange(6.0).reshape(2, 3)
        >>> hutchinson_frobenius(A, 3, 1, exact=True).value  # 0 + 1 + 4 + 9 + 16 + 25
        55.0
        >>> est = hutchinson_frobenius(A, 3, 2000, generator=torch.Generator().manual_seed(0))
        >>> abs(est.value - 55.0) < 4 * est.stderr
        True

    References:
        Hutchinson (1989), Communications in Statistics - Simulation and Computation 18(3); Ormaniec,
        Dangel & Singh (2025), ICLR (block-norm estimates of transformer Hessians).
    """
    dim = _positive_int(dim, "dim")
    n = _positive_int(num_samples, "num_samples")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"hutchinson_frobenius: dtype must be a floating torch.dtype, got {dtype!r}")
    product, device = _block_product(matvec, dim, blocks)
    device = device if device is not None else (generator.device if generator is not None else torch.device("cpu"))
    if chunk_size is None:
        chunk = max(1, min(PROBE_CHUNK_COLUMNS, PROBE_CHUNK_BYTES // (dim * dtype.itemsize)))
    else:
        chunk = _positive_int(chunk_size, "chunk_size")

    def squared_norms(V: Tensor) -> Tensor:
        AV = product(V)
        if not isinstance(AV, Tensor) or AV.ndim != 2 or AV.shape[1] != V.shape[1]:
            got = tuple(AV.shape) if isinstance(AV, Tensor) else type(AV).__name__
            raise ValueError(f"hutchinson_frobenius: a product of [{dim}, {V.shape[1]}] probes returned {got}, "
                             f"expected [M, {V.shape[1]}]")
        return AV.double().square().sum(0)  # [K], float64

    if exact:
        total = 0.0
        for start in range(0, dim, chunk):
            cols = torch.arange(start, min(start + chunk, dim), device=device)
            E = torch.zeros(dim, len(cols), dtype=dtype, device=device)
            E[cols, cols - start] = 1
            total += squared_norms(E).sum().item()
        return FrobeniusEstimate(total, 0.0, dim, exact=True)
    samples = torch.cat([
        squared_norms(random_probes(dim, min(chunk, n - start), distribution=distribution, dtype=dtype,
                                    device=device, generator=generator)).cpu()
        for start in range(0, n, chunk)
    ])  # [n]
    stderr = samples.std().item() / math.sqrt(n) if n > 1 else math.nan
    return FrobeniusEstimate(samples.mean().item(), stderr, n, exact=False)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"hutchinson_frobenius: {name} must be a positive int, got {value!r}")
    return value
