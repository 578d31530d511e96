r"""Block norm map of a curvature matrix: :math:`\lVert H_{ab} \rVert_F` for every pair of parameter groups.

The parameters are split into groups ``a = 1..G`` (``adapter.param_groups()`` names such as
``block0.attn.q``), which splits the Hessian (or its Gauss–Newton or functional part) into blocks
:math:`H_{ab} = \partial^2 L / \partial\theta_a \partial\theta_b^\top \in R^{P_a \times P_b}`.
Comparing their sizes shows where curvature lives and how groups couple (Ormaniec et al., ICLR 2025,
compare query/key/value blocks this way).

One product of the operator with a vector ``z`` supported on group ``b`` returns the whole column
:math:`(H_{ab} z)_{a=1..G}`, so every unit of work is one *column group* ``b``:

- ``exact``: ``z`` runs over the ``P_b`` unit vectors of group ``b`` (chunked), which yields the
  columns :math:`H_{:,b}` and :math:`\lVert H_{ab} \rVert_F^2 = \sum_j \lVert H_{ab} e_j \rVert^2` exactly.
  The dense diagonal block :math:`H_{bb}` comes with it, and its spectral norm is taken from ``eigvalsh``.
- probes: ``K`` Rademacher vectors ``z`` on group ``b`` (zero elsewhere) in one ``matmat``. Since
  :math:`E[z z^\top] = I`,

  .. math:: E \lVert H_{ab} z \rVert^2 = \operatorname{tr}(H_{ab} E[z z^\top] H_{ab}^\top) = \lVert H_{ab} \rVert_F^2,

  so the mean :math:`m_{ab}` of the ``K`` values :math:`\lVert H_{ab} z_k \rVert^2` is unbiased for the
  *squared* norm (the reported :math:`\sqrt{m_{ab}}` is not unbiased for the norm; by Jensen it is low by
  about :math:`\operatorname{var}(m)/(8 F^3)`). Its standard error :math:`s = \operatorname{sd}/\sqrt{K}`
  carries over to the norm by the delta method: :math:`\operatorname{se}(\sqrt{m}) \approx s / (2\sqrt{m})`.
  A column group with at most ``K`` parameters is computed exactly instead (no more products).

Every curvature matrix here is symmetric, so :math:`\lVert H_{ab} \rVert_F = \lVert H_{ba} \rVert_F` is
estimated twice, from column group ``b`` and from ``a``. The map uses an exact value when either side
has one, else the mean of the two independent probe estimates (half the variance), so it fills in
symmetrically while streaming. In exact mode each entry ``(a, b)`` comes from its own column group
``b``, so the symmetry of the result checks the operator.

Spectral norms :math:`\lVert H_{aa} \rVert_2 = \max |\lambda(H_{aa})|` of the diagonal blocks of groups
computed by probes come from Lanczos (``which="both"``) on the restricted operator.

References:
    Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines. Communications in Statistics - Simulation and Computation 18(3).

    Ormaniec, W., Dangel, F. & Singh, S. P. (2025). What does it mean to be a transformer? Insights from a
    theoretical Hessian analysis. ICLR 2025.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..models.adapter import ModelAdapter
from .curvature import HessianOperator
from .lanczos import LanczosResult, iter_lanczos, lanczos
from .reservoir import set_generator_state
from .trace import random_probes

__all__ = [
    "BlockNorms",
    "block_norms",
    "iter_block_norms",
    "block_eigen_kernel",
    "AUTO_EXACT_MAX_PARAMS",
    "EXACT_CHUNK_COLUMNS",
]

# exact=None computes exactly (P products) up to this many parameters, and by probes above it.
AUTO_EXACT_MAX_PARAMS = 4096
# Exact mode multiplies unit vectors in chunks of this many columns (one vmapped product each).
EXACT_CHUNK_COLUMNS = 64


@dataclass
class BlockNorms:
    r"""Frobenius norms of the blocks :math:`H_{ab}` and spectral norms of the diagonal blocks.

    Entries not computed yet (while streaming) are NaN.

    Attributes:
        labels: Group names ``[G]``, the order of rows and columns.
        frobenius: :math:`\lVert H_{ab} \rVert_F` ``[G, G]``, float64, CPU.
        frobenius_stderr: Standard error of each entry ``[G, G]`` (0 where exact).
        spectral: :math:`\lVert H_{aa} \rVert_2 = \max |\lambda(H_{aa})|` ``[G]``, float64, CPU (NaN when not
            requested).
        exact: Whether every entry is exact (no probes).
        num_matvecs: Operator-vector products spent (block norms and Lanczos).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
        num_probes: Probes per column group ``K``.
        done: Units of work done: column groups, then Lanczos runs.
        total: Units of work in all.
        squared: Per column group estimate :math:`m_{ab}` of :math:`\lVert H_{ab} \rVert_F^2` from group
            ``b`` ``[G, G]`` (the mergeable state behind ``frobenius``).
        squared_var: Variance of each :math:`m_{ab}` ``[G, G]`` (0 where exact).
        column_done: Which column groups are done ``[G]`` bool.
        column_exact: Which column groups were computed exactly ``[G]`` bool.
        probe_rng: State of the probe generator after this unit (``uint8``), for resuming.
    """

    labels: list[str]
    frobenius: Tensor
    frobenius_stderr: Tensor
    spectral: Tensor
    exact: bool
    num_matvecs: int
    kind: str = "hessian"
    num_probes: int = 16
    done: int = 0
    total: int = 0
    squared: Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.float64))
    squared_var: Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.float64))
    column_done: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    column_exact: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    probe_rng: Tensor = field(default_factory=lambda: torch.Generator().get_state())

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for a checkpoint (everything a resumed run needs besides :meth:`meta`)."""
        return {
            "squared": self.squared.clone(),
            "squared_var": self.squared_var.clone(),
            "column_done": self.column_done.clone(),
            "column_exact": self.column_exact.clone(),
            "spectral": self.spectral.clone(),
            "probe_rng": self.probe_rng.clone(),
        }

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable settings and counters."""
        return {
            "kernel": "block_norms",
            "labels": list(self.labels),
            "kind": self.kind,
            "num_probes": self.num_probes,
            "exact": self.exact,
            "num_matvecs": self.num_matvecs,
            "done": self.done,
            "total": self.total,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain values for widgets and exports: lists, numbers and float64 NumPy arrays."""
        return {
            "labels": list(self.labels),
            "frobenius": self.frobenius.numpy().copy(),
            "frobenius_stderr": self.frobenius_stderr.numpy().copy(),
            "spectral": self.spectral.numpy().copy(),
            "exact": self.exact,
            "num_matvecs": self.num_matvecs,
            "kind": self.kind,
            "num_probes": self.num_probes,
            "done": self.done,
            "total": self.total,
        }


def block_norms(
    adapter: ModelAdapter | torch.nn.Module,
    data,
    groups: Sequence[str] | None = None,
    *,
    kind: str = "hessian",
    num_probes: int = 16,
    exact: bool | None = None,
    spectral: bool = True,
    tol: float = 1e-8,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    process_group=None,
) -> BlockNorms:
    r"""The block norm map :math:`\lVert H_{ab} \rVert_F` over parameter groups (see the module docstring).

    Args:
        adapter: The model or its adapter; analysed on a private copy (see ``HessianOperator``).
        data: A batch ``{"input_ids": [B, S], ...}`` or a list of batches; the loss is their mean.
        groups: Group names or glob patterns (``"block0.attn.*"``); ``None`` = every group.
        kind: ``"hessian"``, ``"ggn"`` (Gauss–Newton part) or ``"functional"`` (Hessian minus GGN).
        num_probes: Rademacher probes per column group ``K >= 2`` (probe mode).
        exact: ``True``: unit vectors, ``P`` products; ``False``: probes, about ``G·K`` products;
            ``None``: exact when ``P <= AUTO_EXACT_MAX_PARAMS``.
        spectral: Also compute the spectral norms of the diagonal blocks.
        tol: Lanczos tolerance for spectral norms of blocks computed by probes.
        dtype: Analysis dtype (``None``: the operator's default).
        generator: Seeded generator for probes and Lanczos starts (``None``: a fresh one seeded 0).
        process_group: Under ``torch.distributed``, the group whose ranks each pass a shard of ``data``
            (see ``HessianOperator``); every rank gets the single-process result.

    Returns:
        :class:`BlockNorms` with float64 CPU tensors.

    Raises:
        ValueError: For an unknown group (from the operator), ``num_probes < 2`` or an unknown ``kind``.

    Example:
        >>> from tscope_widgets.models import TinyConfig, TinyTransformer
        >>> cfg = TinyConfig(vocab_size=5, max_seq_len=4, d_model=4, n_head=1, n_layer=1, d_mlp=0)
        >>> model = TinyTransformer(cfg).double()
        >>> batch = {"input_ids": torch.tensor([[0, 1, 2, 3]])}
        >>> res = block_norms(model, batch, ["block0.attn.q", "block0.attn.k"], exact=True)
        >>> res.labels, tuple(res.frobenius.shape)
        (['block0.attn.q', 'block0.attn.k'], (2, 2))
    """
    result = None
    for snapshot in iter_block_norms(
        adapter,
        data,
        groups,
        kind=kind,
        num_probes=num_probes,
        exact=exact,
        spectral=spectral,
        tol=tol,
        dtype=dtype,
        generator=generator,
        process_group=process_group,
    ):
        result = snapshot
    return result


def iter_block_norms(
    adapter: ModelAdapter | torch.nn.Module,
    data,
    groups: Sequence[str] | None = None,
    *,
    kind: str = "hessian",
    num_probes: int = 16,
    exact: bool | None = None,
    spectral: bool = True,
    tol: float = 1e-8,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    resume=None,
    process_group=None,
) -> Iterator[BlockNorms]:
    """Stream :func:`block_norms`: yields a :class:`BlockNorms` after each column group, then after
    each Lanczos run (``done``/``total`` count these units), the last one being the result.

    Args:
        adapter: The model or its adapter; analysed on a private copy (as in :func:`block_norms`).
        data: A batch ``{"input_ids": [B, S], ...}`` or a list of batches; the loss is their mean.
        groups: Group names or glob patterns; ``None`` = every group.
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
        num_probes: Rademacher probes per column group ``K >= 2`` (probe mode).
        exact: Unit vectors (``True``), probes (``False``) or by size (``None``), as in :func:`block_norms`.
        spectral: Also compute the spectral norms of the diagonal blocks.
        tol: Lanczos tolerance for spectral norms of blocks computed by probes.
        dtype: Analysis dtype (``None``: the operator's default).
        generator: Seeded generator for probes and Lanczos starts (``None``: a fresh one seeded 0).
        resume: A :class:`~tscope_widgets.jobs.Checkpoint` of an earlier snapshot with the same
            settings: column groups and spectral norms done are kept, the probe generator continues
            from its saved state, so the result equals an uninterrupted run.
        process_group: Under ``torch.distributed``, the group whose ranks each pass a shard of ``data``;
            every rank gets the single-process result.

    Yields:
        :class:`BlockNorms` snapshots (independent copies).
    """
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 2:
        raise ValueError(f"num_probes must be an int >= 2 (a standard error needs two probes), got {num_probes!r}")
    if exact not in (None, True, False):
        raise ValueError(f"exact must be True, False or None (automatic), got {exact!r}")
    op = HessianOperator(adapter, data, groups=groups, kind=kind, dtype=dtype, process_group=process_group)
    labels = list(op.offsets)
    if exact is None:
        exact = op.shape[0] <= AUTO_EXACT_MAX_PARAMS
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    run = _Run(op, labels, kind, num_probes, bool(exact), spectral, tol, generator)
    if resume is not None:
        run.restore(resume)
    yield from run.snapshots()


def block_eigen_kernel(
    adapter, data, groups, k: int = 5, tol: float = 1e-6, *, loss=None, dtype=None, seed: int = 0
) -> Iterator[LanczosResult]:
    r"""Top ``k`` eigenpairs of a diagonal Hessian block :math:`H_{aa}` by Lanczos, streamed.

    A thin generator for a :class:`~tscope_widgets.jobs.Job` (the spectrum widget runs it on the block a
    user clicks): builds ``HessianOperator(adapter, data, groups=groups)`` and yields every
    :class:`~tscope_widgets.kernels.lanczos.LanczosResult` of ``iter_lanczos(op, k, "largest", tol=tol)``
    (``eigenvalues`` ascending, ``residual_norms``, ``done``/``total``).

    Args:
        adapter: A :class:`~tscope_widgets.models.ModelAdapter` (its weights must not change meanwhile).
        data: Batches the loss is averaged over.
        groups: The block's parameter groups: a name, a glob pattern or a list (see ``resolve_groups``).
        k: Number of eigenvalues (at most the block's size).
        tol: Relative residual tolerance.
        loss: The loss of a batch, as in ``HessianOperator`` (default: the adapter's LM loss).
        dtype: Analysis dtype, as in ``HessianOperator`` (default: the model's).
        seed: Seed of the Lanczos start vector.

    Yields:
        :class:`~tscope_widgets.kernels.lanczos.LanczosResult` after each Lanczos step, the last one final.
    """
    op = HessianOperator(adapter, data, groups=groups, loss=loss, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    yield from iter_lanczos(op, k=min(int(k), op.shape[0]), which="largest", tol=tol, generator=generator)


class _Run:
    """State of one block-norm computation: per column group estimates, then spectral norms."""

    def __init__(self, op, labels, kind, num_probes, exact, spectral, tol, generator):
        self.op, self.labels, self.kind = op, labels, kind
        self.num_probes, self.exact, self.spectral, self.tol = num_probes, exact, spectral, tol
        self.generator = generator
        G = len(labels)
        self.sizes = [op.offsets[g].stop - op.offsets[g].start for g in labels]
        self.squared = torch.zeros(G, G, dtype=torch.float64)
        self.squared_var = torch.zeros(G, G, dtype=torch.float64)
        self.column_done = torch.zeros(G, dtype=torch.bool)
        self.column_exact = torch.tensor([exact or n <= num_probes for n in self.sizes], dtype=torch.bool)
        self.spectral_norms = torch.full((G,), math.nan, dtype=torch.float64)
        self.base_matvecs = 0  # products of the run a checkpoint was taken from
        self.lanczos_matvecs = 0
        self.num_matvecs = 0
        # Lanczos runs: the blocks whose column group is estimated by probes.
        self.lanczos_blocks = [a for a in range(G) if spectral and not self.column_exact[a]]
        self.total = G + len(self.lanczos_blocks)
        self.done = 0

    def restore(self, checkpoint) -> None:
        meta, t = getattr(checkpoint, "meta", None), getattr(checkpoint, "tensors", None)
        if not isinstance(meta, Mapping) or not isinstance(t, Mapping):
            raise TypeError(f"resume must be a checkpoint with .tensors and .meta, got {type(checkpoint).__name__}")
        where = f"block norm checkpoint {getattr(checkpoint, 'path', '') or ''}".rstrip()
        missing = [k for k in ("column_exact", "squared", "squared_var", "column_done", "spectral", "probe_rng")
                   if not isinstance(t.get(k), Tensor)]
        missing += [k for k in ("num_matvecs", "done") if k not in meta]
        if missing:
            raise ValueError(f"{where} lacks the field(s) {missing}: it is damaged or from another kernel; "
                             "start a new run")
        for key in ("num_matvecs", "done"):
            value = meta[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: field {key} must be an integer >= 0, got {value!r}")
        mine = {"labels": self.labels, "kind": self.kind, "num_probes": self.num_probes}
        for key, value in mine.items():
            if meta.get(key) != value:
                raise ValueError(f"checkpoint has {key}={meta.get(key)!r}, this run {value!r}: start a new run")
        if not torch.equal(t["column_exact"].to(torch.bool), self.column_exact):
            raise ValueError("the checkpoint computed other column groups exactly (exact= differs): start a new run")
        self.squared = t["squared"].clone().to(torch.float64)
        self.squared_var = t["squared_var"].clone().to(torch.float64)
        self.column_done = t["column_done"].clone().to(torch.bool)
        self.spectral_norms = t["spectral"].clone().to(torch.float64)
        set_generator_state(self.generator, t["probe_rng"], f"{where}: field probe_rng")
        self.base_matvecs = self.num_matvecs = int(meta["num_matvecs"])
        self.done = int(meta["done"])

    def snapshots(self) -> Iterator[BlockNorms]:
        if self.done >= self.total:
            yield self._snapshot()
            return
        for b in range(len(self.labels)):
            if self.column_done[b]:
                continue
            self._column(b)
            self.done += 1
            yield self._snapshot()
        for a in self.lanczos_blocks:
            if not math.isnan(self.spectral_norms[a]):
                continue
            self._lanczos(a)
            self.done += 1
            yield self._snapshot()

    # ----- units of work ------------------------------------------------------------------
    def _column(self, b: int) -> None:
        """Column group ``b``: exact unit vectors in chunks, or ``K`` probes in one product."""
        op, cols = self.op, self.op.offsets[self.labels[b]]
        P, n = op.shape[0], self.sizes[b]
        if self.column_exact[b]:
            chunk = EXACT_CHUNK_COLUMNS
            sq = torch.zeros(len(self.labels), dtype=torch.float64)
            diag = torch.empty(n, n, dtype=torch.float64) if self.spectral else None
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                V = torch.zeros(P, stop - start, dtype=op.dtype, device=op.device)
                V[cols.start + start : cols.start + stop].copy_(torch.eye(stop - start, dtype=op.dtype))
                HV = op.matmat(V).detach().to("cpu", torch.float64)  # [P, chunk]
                sq += self._row_group_sums(HV.square()).sum(1)
                if diag is not None:
                    diag[:, start:stop] = HV[cols]
            self.squared[:, b] = sq
            self.squared_var[:, b] = 0.0
            if diag is not None:
                self.spectral_norms[b] = torch.linalg.eigvalsh((diag + diag.T) / 2).abs().max()
        else:
            K = self.num_probes
            Z = torch.zeros(P, K, dtype=op.dtype, device=op.device)
            Z[cols] = random_probes(n, K, dtype=op.dtype, device=op.device, generator=self.generator)
            HZ = op.matmat(Z).detach().to("cpu", torch.float64)  # [P, K]
            s = self._row_group_sums(HZ.square())  # [G, K]: ||H_ab z_k||^2
            self.squared[:, b] = s.mean(1)
            self.squared_var[:, b] = s.var(1, correction=1) / K
        self.num_matvecs = self._matvecs()
        self.column_done[b] = True

    def _lanczos(self, a: int) -> None:
        block = self.op.restrict([self.labels[a]])
        res = lanczos(block, k=1, which="both", tol=self.tol, generator=self.generator)
        self.spectral_norms[a] = float(res.eigenvalues.abs().max())
        self.lanczos_matvecs += res.num_matvecs
        self.num_matvecs = self._matvecs()

    def _matvecs(self) -> int:
        return self.base_matvecs + self.op.num_matvecs + self.lanczos_matvecs

    def _row_group_sums(self, X: Tensor) -> Tensor:
        """Sums of ``X [P, K]`` over the rows of each group: ``[G, K]``."""
        return torch.stack([X[self.op.offsets[g]].sum(0) for g in self.labels])

    # ----- results ------------------------------------------------------------------------
    def _snapshot(self) -> BlockNorms:
        mean, var = _symmetric_estimate(self.squared, self.squared_var, self.column_done, self.column_exact)
        norm = mean.clamp_min(0).sqrt()
        # Delta method: se(sqrt(m)) = se(m) / (2 sqrt(m)); an all-zero block has no spread.
        stderr = torch.where(norm > 0, var.sqrt() / (2 * norm), torch.zeros_like(norm))
        stderr = torch.where(torch.isnan(mean), mean, stderr)
        return BlockNorms(
            labels=list(self.labels),
            frobenius=norm,
            frobenius_stderr=stderr,
            spectral=self.spectral_norms.clone(),
            exact=bool(self.column_exact.all()),
            num_matvecs=self.num_matvecs,
            kind=self.kind,
            num_probes=self.num_probes,
            done=self.done,
            total=self.total,
            squared=self.squared.clone(),
            squared_var=self.squared_var.clone(),
            column_done=self.column_done.clone(),
            column_exact=self.column_exact.clone(),
            probe_rng=self.generator.get_state(),
        )


def _symmetric_estimate(squared: Tensor, var: Tensor, done: Tensor, exact: Tensor) -> tuple[Tensor, Tensor]:
    r"""Combine the estimates of :math:`\lVert H_{ab} \rVert_F^2` from column groups ``b`` and ``a``.

    ``squared[a, b]`` estimates :math:`\lVert H_{ab} \rVert_F^2` from column group ``b``, which by symmetry
    ``squared[b, a]`` also does from group ``a``. Priority: exact from ``b``, exact from ``a``, the mean of
    both probe estimates, the one probe estimate there is; NaN if neither column group is done.

    Returns:
        ``(mean [G, G], variance of the mean [G, G])``.
    """
    G = squared.shape[0]
    own_done = done[None, :].expand(G, G)  # column group b of entry (a, b)
    own_exact = (done & exact)[None, :].expand(G, G)
    mirror_done, mirror_exact = own_done.T, own_exact.T
    nan = torch.full_like(squared, math.nan)
    both = own_done & mirror_done
    mean = torch.where(both, (squared + squared.T) / 2, nan)
    variance = torch.where(both, (var + var.T) / 4, nan)
    only_own, only_mirror = own_done & ~mirror_done, mirror_done & ~own_done
    mean = torch.where(only_own, squared, torch.where(only_mirror, squared.T, mean))
    variance = torch.where(only_own, var, torch.where(only_mirror, var.T, variance))
    mean = torch.where(mirror_exact & ~own_exact, squared.T, mean)
    variance = torch.where(mirror_exact & ~own_exact, torch.zeros_like(var), variance)
    mean = torch.where(own_exact, squared, mean)
    variance = torch.where(own_exact, torch.zeros_like(var), variance)
    return mean, variance
