"""LinearOperator base class: products, shape checks, matvec counting, the SciPy view."""

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh

from tscope_widgets.kernels.operator import DenseOperator, LinearOperator, as_operator


def _matrix(M=6, N=4, seed=0):
    return torch.randn(M, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_products_match_the_matrix_and_count_vectors():
    A = _matrix()
    op = DenseOperator(A)
    v, V = _matrix(4, 1, 1)[:, 0], _matrix(4, 3, 2)
    torch.testing.assert_close(op.matvec(v), A @ v, rtol=0, atol=0)
    torch.testing.assert_close(op @ V, A @ V, rtol=0, atol=0)
    assert op.num_matvecs == 4
    assert op.shape == (6, 4) and op.dtype == torch.float64


def test_inputs_are_cast_to_the_operator_dtype():
    op = DenseOperator(_matrix())
    assert op.matvec(torch.ones(4, dtype=torch.float32)).dtype == torch.float64


@pytest.mark.parametrize("bad", [torch.ones(5), torch.ones(4, 2, 1), torch.ones(3, 2)])
def test_wrong_shapes_are_refused_with_the_expected_shape(bad):
    with pytest.raises(ValueError, match=r"\[4"):
        DenseOperator(_matrix()) @ bad


def test_scipy_view_agrees_with_dense_eigenvalues():
    A = _matrix(8, 8)
    A = A + A.T
    top = eigsh(as_operator(A).to_scipy(), k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), torch.linalg.eigvalsh(A)[-2:].numpy(), rtol=1e-10)
    out = as_operator(A).to_scipy() @ np.ones((8, 2))
    np.testing.assert_allclose(out, (A @ torch.ones(8, 2, dtype=torch.float64)).numpy(), rtol=1e-14)


def test_as_operator_and_bad_construction():
    op = DenseOperator(_matrix())
    assert as_operator(op) is op
    with pytest.raises(TypeError, match="LinearOperator or a matrix"):
        as_operator([[1.0]])
    with pytest.raises(ValueError, match="matrix"):
        DenseOperator(torch.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        DenseOperator(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError):
        LinearOperator((2, 2), torch.float64, "cpu")  # abstract: subclasses write _matmat


def test_inner_products_of_long_float32_vectors_are_accurate():
    """BLAS float32 dot products and Tensor.norm lose addends over tens of millions of entries (1.8% at
    124M); `inner` sums slices in float64."""
    from tscope_widgets.kernels.operator import inner

    x = torch.rand(2, 2**24, generator=torch.Generator().manual_seed(0))
    want = (x.double() @ x.double().T)  # [2, 2]
    got = inner(x[None].expand(2, 2, -1), x)  # [B=2, r=2]
    assert got.dtype == torch.float32
    assert float(((got.double() - want) / want).abs().max()) < 1e-6
