"""Closed forms from transformer theory: normalisation derivatives and self-attention Hessian blocks.

Every function here is a pure computation from explicit formulas (no autograd), checked in float64
against autograd in ``tests/kernels/theory/``.
"""

from .attention import self_attention_hessian
from .norms import layernorm_hessian, layernorm_jacobian, rmsnorm_hessian, rmsnorm_jacobian

__all__ = [
    # LayerNorm / RMSNorm
    "layernorm_jacobian",
    "layernorm_hessian",
    "rmsnorm_jacobian",
    "rmsnorm_hessian",
    # self-attention (Ormaniec, Dangel & Singh 2025)
    "self_attention_hessian",
]
