r"""Closed-form Hessian blocks of a single self-attention layer (Ormaniec, Dangel & Singh, ICLR 2025).

The setting of "What Does It Mean to Be a Transformer? Insights from a Theoretical Hessian Analysis":
one sequence ``X [L, d]``, one head, no mask,

.. math::

    Q = X W_Q,\; K = X W_K,\; V = X W_V,\quad
    S = \frac{Q K^\top}{\sqrt{d_K}},\quad
    A = \operatorname{softmax}_{\text{row}}(S) \;\text{(or } A = S \text{, linear attention)},\quad
    F = A V,\quad \ell = \tfrac12 \lVert F - Y \rVert_F^2 .

Parameters are flattened row-major (``W_Q[a, m]`` is entry ``a·d_K + m``). With ``R = F − Y`` the Hessian
splits (Gauss-Newton decomposition, the paper's eq. for ``H = H_o + H_f``) into

.. math::

    H = \underbrace{J^\top J}_{\text{GGN (outer product)}}
      + \underbrace{\textstyle\sum_{l,c} R_{lc}\, \nabla^2_\theta F_{lc}}_{\text{functional}},
    \qquad J = \partial \operatorname{vec} F / \partial \theta .

Everything is built from three explicit tensors per row ``l`` of the attention, with ``s = 1/\sqrt{d_K}``:

- the softmax derivatives :math:`D^{(1)}_{lpq} = \partial A_{lp} / \partial S_{lq} = A_{lp}(\delta_{pq} - A_{lq})`
  and :math:`D^{(2)}_{lpqr} = A_{lp}[(\delta_{pq} - A_{lq})(\delta_{pr} - A_{lr}) - A_{lq}(\delta_{qr} - A_{lr})]`
  (linear attention: :math:`D^{(1)} = \delta`, :math:`D^{(2)} = 0`);
- the score derivatives :math:`\partial S_{lq}/\partial W_Q[a,m] = s X_{la} K_{qm}`,
  :math:`\partial S_{lq}/\partial W_K[a,m] = s Q_{lm} X_{qa}` and the only non-zero second one,
  :math:`\partial^2 S_{lq}/\partial W_Q[a,m]\,\partial W_K[b,n] = s X_{la} X_{qb} \delta_{mn}`.

Jacobians (``B_{lcq} = \sum_p V_{pc} D^{(1)}_{lpq}``):

.. math::

    J^V_{(lc),(ac')} = (AX)_{la}\delta_{cc'} \;\Rightarrow\; J_V^\top J_V = (X^\top A^\top A X) \otimes I_{d_V},\qquad
    J^Q_{(lc),(am)} = s X_{la} \textstyle\sum_q B_{lcq} K_{qm},\qquad
    J^K_{(lc),(am)} = s Q_{lm} \textstyle\sum_q B_{lcq} X_{qa}.

For linear attention ``B_{lcq} = V_{qc}`` and these are Kronecker products (rows ``(l, c)``, columns
``(a, m)``): :math:`J^Q = s\, X \otimes (V^\top K)` and :math:`J^K = s\,(Q \otimes V^\top X)\, C`, with ``C``
the commutation matrix that reorders the columns from ``(m, a)`` to ``(a, m)``. The functional part
contracts the residual first,
:math:`\rho_{lp} = (R V^\top)_{lp}`, :math:`E^{(1)}_{lq} = \sum_p \rho_{lp} D^{(1)}_{lpq}` and
:math:`E^{(2)}_{lqr} = \sum_p \rho_{lp} D^{(2)}_{lpqr}`; for softmax, with :math:`u = \rho \odot A`,
:math:`g_l = \sum_p u_{lp}`: :math:`E^{(1)} = u - gA` and
:math:`E^{(2)}_{lqr} = \delta_{qr}(u_{lq} - g_l A_{lq}) - u_{lq}A_{lr} - A_{lq}u_{lr} + 2 g_l A_{lq} A_{lr}`
(no ``L⁴`` tensor is formed). Then

.. math::

    H^f_{QQ} = s^2 \textstyle\sum_{lqr} E^{(2)}_{lqr} X_{la} K_{qm} X_{lb} K_{rn},\quad
    H^f_{KK} = s^2 \textstyle\sum_{lqr} E^{(2)}_{lqr} Q_{lm} X_{qa} Q_{ln} X_{rb},

    H^f_{QK} = s^2 \textstyle\sum_{lqr} E^{(2)}_{lqr} X_{la} K_{qm} Q_{ln} X_{rb}
             + s \textstyle\sum_{lq} E^{(1)}_{lq} X_{la} X_{qb}\,\delta_{mn},

    H^f_{QV} = s \textstyle\sum_{lpq} X_{la} K_{qm} D^{(1)}_{lpq} X_{pb} R_{lc},\quad
    H^f_{KV} = s \textstyle\sum_{lpq} Q_{lm} X_{qa} D^{(1)}_{lpq} X_{pb} R_{lc},\quad
    H^f_{VV} = 0

(``F`` is linear in ``W_V``). The ``(k, q)``, ``(v, q)`` and ``(v, k)`` blocks are transposes.

Scalings with the input scale (``X → σX``, small ``σ``; the growth rates the paper derives for one layer):
softmax ``H_VV ∝ σ²``, ``GGN_QQ ∝ σ⁶``, ``H^f_QQ ∝ σ⁵`` (so ``H_QQ ∝ σ⁵``); linear attention
``GGN_QQ, GGN_VV ∝ σ⁶ = σ^{2·3}``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["self_attention_hessian", "ATTENTION_KINDS", "HESSIAN_PARTS"]

ATTENTION_KINDS = ("softmax", "linear")
HESSIAN_PARTS = ("hessian", "ggn", "functional")
NAMES = ("q", "k", "v")


def _check(X, W_Q, W_K, W_V, Y, attention, part) -> None:
    named = {"X": X, "W_Q": W_Q, "W_K": W_K, "W_V": W_V, "Y": Y}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"self_attention_hessian: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"self_attention_hessian: {name} must be a matrix, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"self_attention_hessian: {name} must be floating point, got {t.dtype}")
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) > 1:
        got = sorted(map(str, dtypes))
        raise TypeError(f"self_attention_hessian: X, W_Q, W_K, W_V, Y must share one dtype, got {got}")
    L, d = X.shape
    want = {"W_Q": (d, None), "W_K": (d, W_Q.shape[1]), "W_V": (d, None), "Y": (L, W_V.shape[1])}
    for name, (rows, cols) in want.items():
        r, c = named[name].shape
        if r != rows or (cols is not None and c != cols):
            expect = f"[{rows}, {cols if cols is not None else '*'}]"
            raise ValueError(
                f"self_attention_hessian: {name} must have shape {expect} for X [{L}, {d}], W_Q [{d}, "
                f"{W_Q.shape[1]}], W_V [{d}, {W_V.shape[1]}]; got {tuple(named[name].shape)}"
            )
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"self_attention_hessian: attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    if part not in HESSIAN_PARTS:
        raise ValueError(f"self_attention_hessian: part must be one of {HESSIAN_PARTS}, got {part!r}")


def _softmax_terms(A: Tensor, rho: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``D1 [L, L, L]``, ``E1 [L, L]`` and ``E2 [L, L, L]`` of row-wise softmax attention ``A [L, L]``."""
    L = A.shape[0]
    eye = torch.eye(L, dtype=A.dtype, device=A.device)
    D1 = A[:, :, None] * (eye - A[:, None, :])  # [l, p, q] = A_lp (δ_pq − A_lq)
    u = rho * A  # [l, p]
    g = u.sum(-1, keepdim=True)  # [l, 1]
    E1 = u - g * A  # [l, q]
    E2 = (torch.diag_embed(E1) - u[:, :, None] * A[:, None, :] - A[:, :, None] * u[:, None, :]
          + 2 * g[:, :, None] * A[:, :, None] * A[:, None, :])  # [l, q, r]
    return D1, E1, E2


def _ggn_blocks(J: dict[str, Tensor], AX: Tensor, d_V: int) -> dict[tuple[str, str], Tensor]:
    """``J_aᵀ J_b`` from Jacobians ``[L, d_V, d, n]``; ``V-V`` as the Kronecker product ``(AX)ᵀAX ⊗ I``."""
    eye = torch.eye(d_V, dtype=AX.dtype, device=AX.device)
    flat = {n: j.reshape(j.shape[0] * j.shape[1], -1) for n, j in J.items()}  # [L·d_V, P_n]
    out = {}
    for i, a in enumerate(NAMES):
        for b in NAMES[i:]:
            if a == b == "v":
                out[a, b] = torch.kron(AX.T @ AX, eye)
            else:
                out[a, b] = flat[a].T @ flat[b]
    return out


def self_attention_hessian(
    X: Tensor,
    W_Q: Tensor,
    W_K: Tensor,
    W_V: Tensor,
    Y: Tensor,
    *,
    attention: str = "softmax",
    part: str = "hessian",
) -> dict[tuple[str, str], Tensor]:
    r"""Dense blocks of the Hessian of ``ℓ = ½‖A X W_V − Y‖²_F`` over ``W_Q, W_K, W_V``, in closed form.

    The formulas (module docstring) follow Ormaniec, Dangel & Singh (2025): the Gauss-Newton part
    :math:`J^\top J` and the functional part :math:`\sum_{lc} R_{lc} \nabla^2 F_{lc}`, built from the
    softmax first/second derivative tensors and the (Kronecker-structured) score derivatives. No autograd.

    Args:
        X: Inputs ``[L, d]`` (one sequence), float32 or float64.
        W_Q: Query weights ``[d, d_K]``.
        W_K: Key weights ``[d, d_K]``.
        W_V: Value weights ``[d, d_V]``.
        Y: Targets ``[L, d_V]``.
        attention: ``"softmax"`` (``A = softmax(X W_Q W_Kᵀ Xᵀ / sqrt(d_K))`` row-wise, no mask) or
            ``"linear"`` (``A = X W_Q W_Kᵀ Xᵀ / sqrt(d_K)``).
        part: ``"hessian"`` (the full Hessian), ``"ggn"`` (``JᵀJ``) or ``"functional"`` (Hessian − GGN).

    Returns:
        ``{(a, b): block}`` for all nine ``a, b ∈ {"q", "k", "v"}``; ``block`` is ``[P_a, P_b]`` in the
        inputs' dtype with ``P_q = P_k = d·d_K``, ``P_v = d·d_V``; rows and columns index the weights
        flattened row-major; ``(b, a)`` is the transpose of ``(a, b)``.

    Raises:
        TypeError: If an input is not a floating-point tensor or the dtypes differ.
        ValueError: If shapes do not fit together, or ``attention``/``part`` is unknown.

    References:
        Ormaniec, Dangel & Singh (2025), "What Does It Mean to Be a Transformer? Insights from a
        Theoretical Hessian Analysis", ICLR.
    """
    _check(X, W_Q, W_K, W_V, Y, attention, part)
    L, d = X.shape
    d_K, d_V = W_Q.shape[1], W_V.shape[1]
    s = 1.0 / math.sqrt(d_K)
    Q, K, V = X @ W_Q, X @ W_K, X @ W_V  # [L, d_K], [L, d_K], [L, d_V]
    S = s * (Q @ K.T)  # [L, L]
    A = torch.softmax(S, dim=-1) if attention == "softmax" else S
    R = A @ V - Y  # [L, d_V]
    rho = R @ V.T  # [l, p]
    if attention == "softmax":
        D1, E1, E2 = _softmax_terms(A, rho)
    else:
        D1 = torch.eye(L, dtype=X.dtype, device=X.device).expand(L, L, L)  # [l, p, q] = δ_pq
        E1, E2 = rho, None

    blocks: dict[tuple[str, str], Tensor] = {}
    if part in ("hessian", "ggn"):
        B = torch.einsum("pc,lpq->lcq", V, D1)  # [l, c, q]
        eye_V = torch.eye(d_V, dtype=X.dtype, device=X.device)
        AX = A @ X  # [L, d]
        J = {
            "q": s * torch.einsum("la,lcq,qm->lcam", X, B, K),
            "k": s * torch.einsum("lcq,qa,lm->lcam", B, X, Q),
            "v": torch.einsum("la,cn->lcan", AX, eye_V),
        }
        blocks = _ggn_blocks(J, AX, d_V)
    if part in ("hessian", "functional"):
        Pq, Pv = d * d_K, d * d_V
        zero_qq = X.new_zeros(Pq, Pq)
        fun = {("v", "v"): X.new_zeros(Pv, Pv)}
        if E2 is None:  # linear attention: S ↦ A is the identity
            fun["q", "q"], fun["k", "k"] = zero_qq, zero_qq.clone()
            qk = X.new_zeros(d, d_K, d, d_K)
        else:
            fun["q", "q"] = (s * s * torch.einsum("la,lmn,lb->ambn", X, torch.einsum("qm,lqr,rn->lmn", K, E2, K), X)
                             ).reshape(Pq, Pq)
            U = torch.einsum("qa,lqr,rb->lab", X, E2, X)  # [l, a, b]
            fun["k", "k"] = (s * s * torch.einsum("lab,lm,ln->ambn", U, Q, Q)).reshape(Pq, Pq)
            qk = s * s * torch.einsum("la,lqr,qm,ln,rb->ambn", X, E2, K, Q, X)
        eye_K = torch.eye(d_K, dtype=X.dtype, device=X.device)
        qk = qk + s * torch.einsum("la,lq,qb,mn->ambn", X, E1, X, eye_K)
        fun["q", "k"] = qk.reshape(Pq, Pq)
        DK = torch.einsum("lpq,qm->lpm", D1, K)  # [l, p, m]
        fun["q", "v"] = (s * torch.einsum("la,lpm,pb,lc->ambc", X, DK, X, R)).reshape(Pq, Pv)
        DX = torch.einsum("lpq,qa->lpa", D1, X)  # [l, p, a]
        fun["k", "v"] = (s * torch.einsum("lm,lpa,pb,lc->ambc", Q, DX, X, R)).reshape(Pq, Pv)
        blocks = fun if not blocks else {key: blocks[key] + fun[key] for key in blocks}
    for i, a in enumerate(NAMES):
        blocks[a, a] = 0.5 * (blocks[a, a] + blocks[a, a].T)  # symmetric to the last bit
        for b in NAMES[:i]:
            blocks[a, b] = blocks[b, a].T
    return {(a, b): blocks[a, b] for a in NAMES for b in NAMES}
