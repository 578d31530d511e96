"""Dense symmetric test matrices with known spectra, and an operator that records its products."""

from __future__ import annotations

import torch

from tscope_widgets.kernels.operator import LinearOperator

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def symmetric(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    """``Q diag(λ) Q^T`` with a random orthogonal ``Q``."""
    n = eigenvalues.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=eigenvalues.dtype))
    return (Q * eigenvalues) @ Q.T


class Recording(LinearOperator):
    """A dense operator that records the number of columns of every product."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__(tuple(matrix.shape), matrix.dtype, matrix.device)
        self.matrix = matrix
        self.columns: list[int] = []

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.columns.append(V.shape[1])
        return self.matrix @ V
