"""Bad inputs are refused with a message naming the argument (issue 12, findings 8 and 11).

Labels are checked like token ids (integer, the ids' shape, values in ``[0, vocab)`` or ``-100``) by one
function, :meth:`ModelAdapter.check_labels`, on the path that the Hessian, the landscape slices and the
spectrum tracker share; before, torch's ``IndexError: Target 99 is out of bounds`` came from deep inside.
"""

from __future__ import annotations

import pytest
import torch

from tests.model_zoo import tiny
from tscope_widgets.kernels import HessianOperator, lanczos
from tscope_widgets.kernels.landscape import random_direction, slice_1d
from tscope_widgets.kernels.operator import DenseOperator
from tscope_widgets.models.registry import adapt
from tscope_widgets.tracking import SpectrumTracker

VOCAB = 11  # tests.model_zoo.tiny


def _batch(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, VOCAB, (2, 6), generator=g), "labels": labels}


def _bad_at(value: int) -> torch.Tensor:
    labels = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    labels[1, 3] = value
    return labels


# ----- labels: HessianOperator -------------------------------------------------------------------


def test_hessian_refuses_labels_above_the_vocabulary():
    with pytest.raises(ValueError, match=r"labels\[1, 3\] = 99 .*\[0, 11\).*-100"):
        HessianOperator(tiny(), _batch(_bad_at(99)))


def test_hessian_refuses_labels_all_out_of_range():
    with pytest.raises(ValueError, match=r"labels\[0, 0\] = 99"):
        HessianOperator(tiny(), _batch(torch.full((2, 6), 99)))


def test_hessian_refuses_negative_labels_other_than_the_ignore_index():
    with pytest.raises(ValueError, match=r"labels\[1, 3\] = -1 .*-100"):
        HessianOperator(tiny(), _batch(_bad_at(-1)))


def test_hessian_refuses_float_labels():
    with pytest.raises(TypeError, match=r"labels must hold integer token ids.*float"):
        HessianOperator(tiny(), _batch(_bad_at(3).double()))


def test_hessian_accepts_the_ignore_index():
    labels = _bad_at(-100)
    H = HessianOperator(tiny(), _batch(labels))
    assert H.shape[0] == H.shape[1] > 0


# ----- labels: landscape slice ---------------------------------------------------------------------


def test_slice_1d_refuses_labels_above_the_vocabulary():
    model = tiny()
    direction = random_direction(adapt(model), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"labels\[1, 3\] = 99 .*\[0, 11\)"):
        list(slice_1d(model, _batch(_bad_at(99)), direction, [0.0, 0.5]))


def test_slice_1d_refuses_negative_labels():
    model = tiny()
    direction = random_direction(adapt(model), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"labels\[1, 3\] = -5 "):
        list(slice_1d(model, _batch(_bad_at(-5)), direction, [0.0, 0.5]))


# ----- labels: spectrum tracker --------------------------------------------------------------------


def test_tracker_step_refuses_labels_above_the_vocabulary():
    model = tiny()
    tracker = SpectrumTracker(model, every=1, max_iter=20, trace_matvecs=0)
    with pytest.raises(ValueError, match=r"labels\[1, 3\] = 99 .*\[0, 11\)"):
        tracker.step(model, batch=_batch(_bad_at(99)))


def test_tracker_step_refuses_float_labels():
    model = tiny()
    tracker = SpectrumTracker(model, every=1, max_iter=20, trace_matvecs=0)
    with pytest.raises(TypeError, match=r"labels must hold integer token ids"):
        tracker.step(model, batch=_batch(_bad_at(2).float()))


# ----- lanczos tol ---------------------------------------------------------------------------------


def _dense() -> DenseOperator:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 30, generator=g, dtype=torch.float64)
    return DenseOperator(X + X.T)


@pytest.mark.parametrize("tol", [float("nan"), float("inf"), 0.0, -1e-6])
def test_lanczos_refuses_a_tolerance_that_is_not_finite_and_positive(tol):
    with pytest.raises(ValueError, match=r"tol must be a finite number > 0"):
        lanczos(_dense(), k=1, tol=tol)


def test_lanczos_still_accepts_a_positive_tolerance():
    assert lanczos(_dense(), k=1, tol=1e-8).converged


# ----- operator products ---------------------------------------------------------------------------


def test_matvec_refuses_a_list_naming_the_shape():
    A = _dense()
    with pytest.raises(TypeError, match=r"matvec expects a torch.Tensor of shape \[30\], got list"):
        A.matvec([1.0] * 30)


def test_matmat_refuses_a_list_naming_the_shape():
    A = _dense()
    with pytest.raises(TypeError, match=r"matmat expects a torch.Tensor of shape \[30, K\], got list"):
        A.matmat([[1.0]] * 30)


def test_hessian_matvec_refuses_a_list():
    H = HessianOperator(tiny(), _batch(_bad_at(3)))
    with pytest.raises(TypeError, match=rf"matvec expects a torch.Tensor of shape \[{H.shape[1]}\], got list"):
        H.matvec([0.0] * H.shape[1])
