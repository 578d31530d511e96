"""Finding 11: bad arguments and damaged resumed state are refused with errors naming the argument or field,
instead of "'float' object is not iterable", "ill-conditioned" from ``eigh``, ``KeyError`` or torch's
``RuntimeError``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.model_zoo import tiny
from tscope_widgets.kernels import HessianOperator, lanczos, position_sensitivity
from tscope_widgets.kernels.blocks import iter_block_norms
from tscope_widgets.kernels.operator import DenseOperator
from tscope_widgets.kernels.reservoir import SampleReservoir


def _ids() -> torch.Tensor:
    return torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layers", [1.0, None, object()])
def test_layers_of_the_wrong_type_are_named(layers):
    with pytest.raises(TypeError, match=r"layers must be 'all', an int in \[-2, 2\), 'final' or a list of them"):
        position_sensitivity(tiny(), _ids(), layers=layers)


def test_layers_as_lists_still_work():
    out = position_sensitivity(tiny(), _ids(), layers=[0, "final"], dtype=torch.float64)
    assert set(out) == {0, "final"}


@pytest.mark.parametrize("groups", [3, 2.5])
def test_groups_of_the_wrong_type_are_named(groups):
    with pytest.raises(TypeError, match=r"groups must be None \(all\), a group name or pattern, or a list"):
        HessianOperator(tiny(), {"input_ids": _ids(), "labels": _ids()}, groups=groups)


def test_a_nan_operator_is_named_as_such_not_as_ill_conditioned():
    A = torch.eye(12, dtype=torch.float64)
    A[3, 5] = A[5, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"the operator produced non-finite values .* at Lanczos step 1"):
        lanczos(DenseOperator(A), k=2)


# ----- resumed state ---------------------------------------------------------------------------------------


def _block_checkpoint():
    model = tiny()
    batch = {"input_ids": _ids(), "labels": _ids()}
    snaps = list(iter_block_norms(model, batch, ["block0.attn.q", "block0.attn.k"], num_probes=2, exact=False,
                                  spectral=False, generator=torch.Generator().manual_seed(0)))
    first = snaps[0]
    return model, batch, first.state_dict(), first.meta()


def _resume(model, batch, tensors, meta):
    ckpt = SimpleNamespace(tensors=tensors, meta=meta, path="ckpt")
    return list(iter_block_norms(model, batch, ["block0.attn.q", "block0.attn.k"], num_probes=2, exact=False,
                                 spectral=False, resume=ckpt))


@pytest.mark.parametrize("field", ["done", "num_matvecs"])
def test_block_norm_checkpoint_without_meta_fields(field):
    model, batch, tensors, meta = _block_checkpoint()
    meta.pop(field)
    with pytest.raises(ValueError, match=rf"block norm checkpoint ckpt lacks the field\(s\) \['{field}'\]"):
        _resume(model, batch, tensors, meta)


def test_block_norm_checkpoint_without_probe_rng():
    model, batch, tensors, meta = _block_checkpoint()
    tensors.pop("probe_rng")
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['probe_rng'\]"):
        _resume(model, batch, tensors, meta)


@pytest.mark.parametrize("bad", [torch.zeros(7, dtype=torch.uint8), torch.zeros(5056, dtype=torch.float32)])
def test_block_norm_checkpoint_with_a_bad_probe_rng(bad):
    model, batch, tensors, meta = _block_checkpoint()
    tensors["probe_rng"] = bad
    with pytest.raises(ValueError, match=r"field probe_rng: a CPU generator state is uint8"):
        _resume(model, batch, tensors, meta)


def test_block_norm_checkpoint_resumes_to_the_same_result():
    model, batch, tensors, meta = _block_checkpoint()
    full = list(iter_block_norms(model, batch, ["block0.attn.q", "block0.attn.k"], num_probes=2, exact=False,
                                 spectral=False, generator=torch.Generator().manual_seed(0)))[-1]
    resumed = _resume(model, batch, tensors, meta)[-1]
    torch.testing.assert_close(resumed.frobenius, full.frobenius, rtol=0, atol=0)


def _reservoir_state():
    r = SampleReservoir(4, 6, [0])
    r.add(_ids(), None, {0: torch.rand(2, 6, 6)})
    return r.state_dict()


@pytest.mark.parametrize("seen", [torch.tensor(-5), torch.tensor(2.5), torch.tensor([1, 2])])
def test_reservoir_refuses_a_bad_seen(seen):
    state = _reservoir_state()
    state["seen"] = seen
    with pytest.raises(ValueError, match=r"reservoir state 'seen' must be one integer >= 0"):
        SampleReservoir(4, 6, [0]).load_state_dict(state)


def test_reservoir_refuses_a_bad_rng_state():
    state = _reservoir_state()
    state["rng_state"] = torch.zeros(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"reservoir state 'rng_state': a CPU generator state is uint8"):
        SampleReservoir(4, 6, [0]).load_state_dict(state)
