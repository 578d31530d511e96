r"""The Lanczos recurrence with full or partial reorthogonalization, and the basis it keeps: the engine under
:func:`~.lanczos.iter_lanczos` (one start vector) and :func:`~.density.slq_density` (one per probe).

One step multiplies the operator by the newest basis vector of every sequence, subtracts the three-term
recurrence's components and then the projection on the whole basis (classical Gram–Schmidt, a second pass
when the first removed much: Daniel, Gragg, Kaufman & Stewart 1976), and normalizes. With partial
reorthogonalization (Simon 1984) the projection on the whole basis is subtracted only at the steps where a
recurrence for the inner products :math:`\omega_{jk} \approx q_j^\top q_k` says that the basis is about to
lose semi-orthogonality (:math:`\max_k |\omega_{j+1,k}| > \sqrt{\varepsilon}`), and at the step after; the
basis then stays orthogonal to :math:`\sqrt{\varepsilon}`, which keeps ``T`` the projection of the operator on
the Krylov space to working precision (Simon 1984, Theorem 4), so its Ritz values are as accurate as with full
reorthogonalization and no spurious copies appear; most steps then cost about one product. At GPT-2-small size a
basis vector is 0.5 GB: the basis is held in blocks that are never copied (:class:`LanczosBasis`), every
allocation is checked against the free memory first, and the Gram–Schmidt passes over one-row blocks are
swept slice by slice so that the new vector is read once per pass (:func:`_swept_projection`).

References:
    Paige (1972), IMA J. Appl. Math. 10; Parlett (1998), "The Symmetric Eigenvalue Problem", SIAM, ch. 6;
    Simon (1984), "The Lanczos algorithm with partial reorthogonalization", Math. Comp. 42(165).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cost import check_memory
from .operator import INNER_SLICE, LinearOperator, inner
from .trace import random_probes

__all__ = ["LanczosRecurrence", "LanczosBasis", "BASIS_BLOCK_BYTES", "SWEEP", "REORTHOGONALIZATION"]

REORTHOGONALIZATION = ("full", "partial")

# Rows of the basis are allocated in blocks of about this size (at least one row): see LanczosRecurrence.
BASIS_BLOCK_BYTES = 64 * 2**20
# Entries of a vector that one slice of a Gram–Schmidt sweep keeps in cache (see _swept_projection).
SWEEP = 2**18
# A new Lanczos vector whose norm after reorthogonalization is below this·(estimate of ||A||) is treated as a
# breakdown: the Krylov space is (numerically) invariant.
_BREAKDOWN_RATIO = 10 * torch.finfo(torch.float64).eps


class LanczosRecurrence:
    """The Lanczos three-term recurrence with full or partial reorthogonalization for ``B`` start vectors.

    Column ``b`` of every ``[N, B]`` product belongs to its own Krylov sequence. On breakdown
    (:math:`\\beta \\approx 0`: the Krylov space is invariant) the sequence restarts with a random vector
    orthogonal to its basis and the coupling entry of ``T`` is set to exactly 0, so ``T`` becomes block
    diagonal and the new block's Ritz vectors have a zero first component (zero quadrature weight).

    With ``reorthogonalize="partial"`` every new vector is orthogonalized against the whole basis only when
    Simon's estimate of the lost orthogonality exceeds :math:`\\sqrt{\\varepsilon}` (``ε`` of the operator's
    dtype), and at the step after such a step (Simon 1984, §5); ``reorthogonalized_steps`` counts those steps.
    The other steps touch only the three vectors of the recurrence, in one sweep that also gives the new norm
    (:func:`_subtract`).

    Attributes:
        size: Number of steps done, i.e. basis vectors used and the order of ``T``.
        reorthogonalize: ``"full"`` or ``"partial"``.
        reorthogonalized_steps: Steps at which the new vectors were orthogonalized against the whole basis.
        max_steps: Steps at most (``<= N``); no vector beyond those is kept.
        num_matvecs: Products with the operator so far (``B`` per step).
        last_beta: Norm ``[B]`` (float64, CPU) of the latest new vector before normalization; the Ritz
            residuals are ``last_beta * |last row of the eigenvectors of T|``.
    """

    def __init__(self, op: LinearOperator, start: Tensor, max_steps: int, generator: torch.Generator | None,
                 reorthogonalize: str = "full"):
        N = op.shape[0]
        if not 1 <= max_steps <= N:
            raise ValueError(f"max_steps must be in [1, {N}], got {max_steps}")
        if reorthogonalize not in REORTHOGONALIZATION:
            raise ValueError(f"reorthogonalize must be one of {REORTHOGONALIZATION}, got {reorthogonalize!r}")
        self.reorthogonalize = reorthogonalize
        self.reorthogonalized_steps = 0
        eps = torch.finfo(op.dtype).eps
        self._eps, self._semi = eps, eps**0.5
        # Simon's estimates of q_j·q_k for the newest two vectors, [B, j+1] and [B, j], float64 CPU.
        self._omega = torch.ones(start.shape[1], 1, dtype=torch.float64)
        self._omega_prev = torch.zeros(start.shape[1], 0, dtype=torch.float64)
        self._force_next = False
        self.op, self.N, self.B = op, N, start.shape[1]
        self.max_steps = max_steps
        self.generator = generator
        self.size = 0
        self.num_matvecs = 0
        self.scale = 0.0  # running max of |alpha| and beta: a lower estimate of ||A||_2
        self._alphas: list[Tensor] = []
        self._offdiag: list[Tensor] = []
        self.last_beta = torch.zeros(self.B, dtype=torch.float64)
        # The basis lives in blocks [B, rows, N] that are added as needed and never copied: at GPT-2-small
        # size one vector is 0.5 GB, and growing one array by doubling held two copies at once.
        self._block_rows = int(min(64, max(1, BASIS_BLOCK_BYTES // (self.B * N * op.dtype.itemsize))))
        self._blocks: list[Tensor] = []
        self._next: Tensor | None = None  # the next basis vector [B, N], until the next step stores it
        start = start.to(device=op.device, dtype=op.dtype).T
        norms = inner(start[:, None], start).clamp_min(0).sqrt()  # [B, 1]
        if not torch.all(norms > 0):
            raise ValueError("Lanczos start vectors must be nonzero")
        self._set_row(0, start / norms)

    def basis(self, b: int = 0) -> LanczosBasis:
        """Basis of sequence ``b``, ``size`` rows (views of the blocks; rows already written never change)."""
        return LanczosBasis([blk[b] for blk in self._blocks], self.size)

    def step(self) -> None:
        """One Lanczos step for every sequence: one ``[N, B]`` product.

        Raises:
            FloatingPointError: When the product holds NaN or inf (said here, not as an ill-conditioned
                ``eigh`` later).
        """
        if self.size >= self.max_steps:
            raise RuntimeError(f"the recurrence already did its {self.max_steps} steps")
        j = self.size
        if self._next is not None:  # stored only now, so a refusal to allocate comes after the last result
            self._set_row(j, self._next)
            self._next = None
        q = self._row(j)  # [B, N]
        w = self.op.matmat(q.T).T.contiguous()  # [B, N], ours: updated in place from here on
        self.num_matvecs += self.B
        alpha = inner(q[:, None], w).view(self.B)
        # In place throughout: at GPT-2-small size each new [N] tensor is 0.5 GB of freshly mapped memory,
        # and allocating one per update made a step take several times the product.
        terms = [(alpha, q)] + ([(self._offdiag[-1].to(w), self._row(j - 1))] if j > 0 else [])
        if self.reorthogonalize == "full":
            _subtract(w, terms)
            self._orthogonalize(w, j + 1)
            self.reorthogonalized_steps += 1
            beta = inner(w[:, None], w).view(self.B).clamp_min(0).sqrt()
        else:
            beta = _subtract(w, terms, norm=True).clamp_min(0).sqrt()
        alpha64, beta64 = alpha.double().cpu(), beta.double().cpu()
        if not (torch.isfinite(alpha64).all() and torch.isfinite(beta64).all()):
            raise FloatingPointError(
                f"the operator produced non-finite values (NaN or inf) at Lanczos step {j + 1}: A q is not finite "
                "for a finite q; check the model's loss and parameters on this data (e.g. adapter.loss(batch)), "
                "or use float64"
            )
        self.scale = max(self.scale, alpha64.abs().max().item(), beta64.max().item())
        self._alphas.append(alpha64)
        if self.reorthogonalize == "partial" and self._needs_full_pass(beta64):
            self._orthogonalize(w, j + 1)
            beta = inner(w[:, None], w).view(self.B).clamp_min(0).sqrt()
            beta64 = beta.double().cpu()
        self.size = j + 1
        self.last_beta = beta64
        if self.size == self.max_steps:
            return
        broken = beta64 <= _BREAKDOWN_RATIO * self.scale
        if broken.any():
            fresh = random_probes(self.N, self.B, distribution="gaussian", dtype=self.op.dtype, device=self.op.device,
                                  generator=self.generator).T.contiguous()
            self._orthogonalize(fresh, self.size)
            mask = broken.to(self.op.device)[:, None]
            w = torch.where(mask, fresh, w)
            beta = torch.where(mask[:, 0], inner(fresh[:, None], fresh).view(self.B).clamp_min(0).sqrt(), beta)
            self._omega[broken, :-1] = self._eps  # the fresh vector is orthogonal to the whole basis
        self._offdiag.append(torch.where(broken, 0.0, beta64))
        self._next = w.div_(beta[:, None])

    def tridiagonal(self) -> Tensor:
        """``T`` of every sequence, ``[B, size, size]`` float64 on the CPU."""
        alphas = torch.stack(self._alphas, 1)  # [B, n]
        T = torch.diag_embed(alphas)
        if self.size > 1:
            off = torch.stack(self._offdiag[: self.size - 1], 1)  # [B, n-1]
            T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        return T

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values ``[B, size]`` (ascending) and eigenvectors of ``T`` ``[B, size, size]``, float64 CPU."""
        return torch.linalg.eigh(self.tridiagonal())

    def _needs_full_pass(self, beta: Tensor) -> bool:
        r"""Advance Simon's recurrence for :math:`\omega_{j+1,k} \approx q_{j+1}^\top q_k` (``beta [B]`` the new
        norm) and say whether the new vectors must be orthogonalized against the whole basis.

        .. math::

            \beta_{j+1}\omega_{j+1,k} = \beta_{k+1}\omega_{j,k+1} + (\alpha_k - \alpha_j)\omega_{jk}
            + \beta_k\omega_{j,k-1} - \beta_j\omega_{j-1,k} \pm \varepsilon \lVert A \rVert

        (``β_k`` couples ``q_{k-1}`` and ``q_k``); the ``±ε||A||`` term, with the sign that increases
        :math:`|\omega|`, bounds the rounding of one step, and :math:`\omega_{j+1,j} = \varepsilon \lVert A
        \rVert / \beta_{j+1}` after the local pass. After a full pass the estimates are reset to that level.
        """
        j = len(self._alphas) - 1
        omega, prev = self._omega, self._omega_prev  # [B, j+1], [B, j]
        a = torch.stack(self._alphas, 1)  # [B, j+1]
        b = torch.stack(self._offdiag, 1) if self._offdiag else torch.zeros(self.B, 0, dtype=torch.float64)  # [B, j]
        safe = beta.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        noise = self._eps * self.scale / safe  # [B, 1]
        new = torch.empty(self.B, j + 2, dtype=torch.float64)
        if j > 0:
            rec = b * omega[:, 1:] + (a[:, :j] - a[:, j : j + 1]) * omega[:, :j] - b[:, j - 1 : j] * prev
            rec[:, 1:] += b[:, :-1] * omega[:, : j - 1]
            rec = rec / safe
            new[:, :j] = rec + torch.where(rec < 0, -noise, noise)
        new[:, j] = noise[:, 0]
        new[:, j + 1] = 1.0
        forced = self._force_next
        lost = j > 0 and bool((new[:, :j].abs().amax(1) > self._semi).any())
        self._force_next = lost and not forced
        if lost or forced:
            self.reorthogonalized_steps += 1
            new[:, : j + 1] = noise
        self._omega_prev, self._omega = omega, new
        return lost or forced

    def _orthogonalize(self, w: Tensor, n: int) -> None:
        """Subtract from ``w [B, N]`` (contiguous, in place) its projection on the first ``n`` basis vectors
        of each sequence (classical Gram–Schmidt over all ``n`` at once, block by block); a second pass only
        when the first removed more than half of ``||w||²`` (Daniel, Gragg, Kaufman & Stewart 1976: then
        rounding may have left components along the basis; otherwise one pass is orthogonal to working
        precision). At GPT-2-small size every pass reads the whole basis, 0.5 GB a vector."""
        before = inner(w[:, None], w)  # [B, 1]
        views = self._views(n)
        for _ in range(2):
            if self._block_rows == 1 and self.N >= 2 * SWEEP:
                coeffs = _swept_projection(views, w)  # [B, n, 1]: w read once, not once per vector
            else:
                coeffs = [inner(Q, w)[:, :, None] for Q in views]  # [B, rows, 1] each
                for Q, c in zip(views, coeffs, strict=True):
                    w[:, None].baddbmm_(c.transpose(1, 2), Q, alpha=-1)
                coeffs = torch.cat(coeffs, 1)
            removed = coeffs.square().sum(1)  # [B, 1]: ||w||² lost (Q orthonormal)
            if not bool((removed > 0.5 * before).any()):
                return
            before = before - removed

    def _views(self, n: int) -> list[Tensor]:
        """The first ``n`` rows of the basis as ``[B, rows, N]`` views, block by block."""
        R = self._block_rows
        return [blk[:, : min(R, n - i * R)] for i, blk in enumerate(self._blocks) if i * R < n]

    def _row(self, j: int) -> Tensor:
        return self._blocks[j // self._block_rows][:, j % self._block_rows]

    def _set_row(self, j: int, value: Tensor) -> None:
        if j // self._block_rows == len(self._blocks):
            rows = min(self._block_rows, self.max_steps - j)
            check_memory(
                rows * self.B * self.N * self.op.dtype.itemsize, self.op.device,
                f"Lanczos vectors {j + 1} to {j + rows} (of {self.N:,} entries each, after {j} steps)",
                ["take the result of the steps done (each step yields one)", "a looser tol or a smaller max_iter",
                 "a block of parameter groups (shorter vectors)", "float32 instead of float64"],
            )
            if rows == 1 and value.is_contiguous():  # the vector itself becomes the block: no copy
                self._blocks.append(value.view(self.B, 1, self.N))
                return
            self._blocks.append(torch.empty(self.B, rows, self.N, dtype=self.op.dtype, device=self.op.device))
        self._row(j).copy_(value)


def _subtract(w: Tensor, terms: list[tuple[Tensor, Tensor]], norm: bool = False) -> Tensor | None:
    """``w -= Σ c q`` in place for ``terms = [(c [B], q [B, N]), ...]``; with ``norm`` also ``||w||² [B]`` after.

    Vectors of at least ``2 * SWEEP`` entries are swept slice by slice, so that ``w`` is read and written once
    for all terms and its squared norm (accumulated in float64 as by :func:`~.operator.inner`) costs no
    further pass: at GPT-2-small size a pass over a vector is 0.5 GB of memory traffic, and the steps of a
    Lanczos run without a full reorthogonalization are bound by these passes besides the product.
    """
    B, N = w.shape
    if N < 2 * SWEEP:
        for c, q in terms:
            w[:, None].baddbmm_(c.view(-1, 1, 1), q[:, None], alpha=-1)
        return inner(w[:, None], w).view(B) if norm else None
    coefficients = [c.tolist() for c, _ in terms]
    total = torch.zeros(B, dtype=torch.float64, device=w.device)
    S = INNER_SLICE
    for b in range(B):
        for start in range(0, N, SWEEP):
            end = min(start + SWEEP, N)
            piece = w[b, start:end]
            for (_, q), c in zip(terms, coefficients, strict=True):
                piece.sub_(q[b, start:end], alpha=c[b])
            if norm:
                k = (end - start) // S
                mid = start + k * S
                head = w[b, start:mid].view(k, 1, S)
                total[b] += torch.bmm(head, head.transpose(1, 2)).sum(dtype=torch.float64)
                if mid < end:
                    total[b] += (w[b, mid:end] @ w[b, mid:end]).double()
    return total.to(w.dtype) if norm else None


def _swept_projection(views: list[Tensor], w: Tensor) -> Tensor:
    """Classical Gram–Schmidt of ``w [B, N]`` (in place) against one-row blocks ``views`` (``[B, 1, N]`` each),
    slice by slice: the coefficients ``[B, n, 1]`` (accumulated in float64 over slices of
    :data:`~.operator.INNER_SLICE`), then ``w -= Σ c_i q_i``.

    The same arithmetic as :func:`~.operator.inner` and ``baddbmm_`` per vector, in another order: each slice of
    :data:`SWEEP` entries of ``w`` (1 MiB in float32) stays in cache while every basis vector passes, so a pass
    reads ``w`` once instead of once per vector. At GPT-2-small size (0.5 GB a vector) that halves the memory
    traffic of a Lanczos step with a dozen vectors, which is what bounds it.
    """
    B, N = w.shape
    n = len(views)
    out = torch.zeros(B, n, dtype=torch.float64, device=w.device)
    S = INNER_SLICE
    for b in range(B):
        rows = [Q[b, 0] for Q in views]
        for start in range(0, N, SWEEP):
            end = min(start + SWEEP, N)
            k = (end - start) // S
            mid = start + k * S
            wk = w[b, start:mid].view(k, S, 1)
            for i, q in enumerate(rows):
                part = torch.bmm(q[start:mid].view(k, 1, S), wk).sum(dtype=torch.float64)
                out[b, i] += part + (q[mid:end] @ w[b, mid:end]).double() if mid < end else part
    coeffs = out.to(w.dtype)
    values = coeffs.tolist()
    for b in range(B):
        rows = [Q[b, 0] for Q in views]
        for start in range(0, N, SWEEP):
            piece = w[b, start : start + SWEEP]
            for q, c in zip(rows, values[b], strict=True):
                piece.add_(q[start : start + SWEEP], alpha=-c)
    return coeffs[:, :, None]


class LanczosBasis:
    """The Lanczos vectors of one sequence as rows, held in blocks: ``Q [size, N]`` without a copy."""

    def __init__(self, blocks: list[Tensor], size: int):
        self.blocks, self.size = blocks, size

    def combine(self, coefficients: Tensor) -> Tensor:
        """``Q^T S`` for ``S [size, m]``: ``[N, m]`` in the basis' dtype, accumulated block by block."""
        out, start = None, 0
        for blk in self.blocks:
            rows = blk[: min(blk.shape[0], self.size - start)]
            if rows.shape[0] == 0:
                break
            part = rows.T @ coefficients[start : start + rows.shape[0]].to(dtype=rows.dtype, device=rows.device)
            out = part if out is None else out + part
            start += rows.shape[0]
        return out
