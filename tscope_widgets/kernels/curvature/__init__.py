"""Curvature of a transformer's loss: operators over parameter groups, their routes and the dense reference.

- :mod:`.groups`: parameter groups and the flat vector over them (:class:`ParamLayout`).
- :mod:`.losses`: losses on the logits (``"ce"``, ``"mse"``, a subset of positions, any callable) that the
  GGN/functional split works for (:class:`LogitLoss`).
- :mod:`.problem`: the loss being differentiated (model copy, batches, weights, reductions over ranks).
- :mod:`.hessian`: :class:`HessianOperator` (Hessian, GGN, functional part; exact and finite-difference routes).
- :mod:`.finite_difference`: step choice and error estimate of central-difference products.
- :mod:`.dense`: :func:`dense_hessian` behind a memory guard.
"""

from .dense import DENSE_CHUNK_COLUMNS, DENSE_HESSIAN_MAX_BYTES, dense_hessian
from .groups import GroupSpec, ParamLayout, resolve_groups
from .hessian import EXACT_ROUTES, KINDS, ROUTES, HessianOperator
from .losses import LOGIT_LOSSES, LogitLoss
from .problem import CurvatureProblem, LossFn

__all__ = [
    "HessianOperator",
    "dense_hessian",
    "resolve_groups",
    "ParamLayout",
    "CurvatureProblem",
    "GroupSpec",
    "LossFn",
    "LogitLoss",
    "LOGIT_LOSSES",
    "KINDS",
    "ROUTES",
    "EXACT_ROUTES",
    "DENSE_HESSIAN_MAX_BYTES",
    "DENSE_CHUNK_COLUMNS",
]
