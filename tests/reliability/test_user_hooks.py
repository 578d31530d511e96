"""Finding 12: hooks on the user's model are not run by the analyses (they run a private copy inside
``torch.func`` transforms), and the user's model keeps them.

Before, ``copy.deepcopy`` carried the hooks into the analysis copy: a hook that records ``.numpy()`` broke
``position_sensitivity`` ("Cannot access data pointer of Tensor that doesn't have storage"), and a hook that
edits outputs silently changed every result.
"""

from __future__ import annotations

import pytest
import torch

from tests.model_zoo import gpt2, tiny
from tscope_widgets.kernels import HessianOperator, position_sensitivity
from tscope_widgets.kernels.landscape import landscape_grid, random_direction, slice_1d
from tscope_widgets.models.registry import adapt


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 6), generator=torch.Generator().manual_seed(0))


def _hook_everything(model: torch.nn.Module) -> tuple[list, list]:
    """A recording hook (``.numpy()``) on every module, an editing hook (output * 3) on every block, a
    forward-pre hook that edits inputs, a backward hook and a state-dict hook."""
    recorded: list = []
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_hook(lambda m, i, o: recorded.append(
            o.detach().numpy() if isinstance(o, torch.Tensor) else None)))
    for block in adapt(model).blocks:
        handles.append(block.register_forward_hook(
            lambda m, i, o: (o[0] * 3, *o[1:]) if isinstance(o, tuple) else o * 3))
        handles.append(block.register_forward_pre_hook(lambda m, args: tuple(
            a * 2 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)))
        handles.append(block.register_full_backward_hook(lambda m, gi, go: tuple(
            None if g is None else g * 5 for g in gi)))
    handles.append(model.register_state_dict_post_hook(lambda *a: recorded.append("state_dict")))
    return recorded, handles


@pytest.mark.parametrize("build", [tiny, gpt2], ids=["tiny", "gpt2"])
def test_sensitivity_is_unchanged_by_user_hooks_and_the_model_keeps_them(build):
    model = build()
    ids = _ids(adapt(model).vocab_size)
    clean = position_sensitivity(model, ids, layers=[0, "final"], dtype=torch.float64)
    recorded, handles = _hook_everything(model)
    hooked = position_sensitivity(model, ids, layers=[0, "final"], dtype=torch.float64)
    for layer in clean:
        torch.testing.assert_close(hooked[layer], clean[layer], rtol=0, atol=0)
    assert recorded == []  # the analysis ran no user hook
    with torch.no_grad():
        model(ids)  # the user's model still runs its hooks
    assert len(recorded) > 0
    for h in handles:
        h.remove()


def test_hessian_and_landscape_are_unchanged_by_user_hooks():
    model = tiny()
    ids = _ids(11)
    batch = {"input_ids": ids, "labels": ids}
    v = torch.randn(HessianOperator(model, batch).shape[0], generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    d = random_direction(adapt(model), generator=torch.Generator().manual_seed(2))
    grid = landscape_grid(0.5, 3)
    clean_hv = HessianOperator(model, batch, dtype=torch.float64).matvec(v)
    clean_loss = list(slice_1d(model, batch, d, grid, dtype=torch.float64))[-1].loss
    recorded, _ = _hook_everything(model)
    hooked_hv = HessianOperator(model, batch, dtype=torch.float64).matvec(v)
    hooked_loss = list(slice_1d(model, batch, d, grid, dtype=torch.float64))[-1].loss
    torch.testing.assert_close(hooked_hv, clean_hv, rtol=0, atol=0)
    torch.testing.assert_close(hooked_loss, clean_loss, rtol=0, atol=0)
    assert recorded == []


def test_the_analysis_copy_has_no_hooks_and_the_model_keeps_its_own():
    model = tiny()
    _, handles = _hook_everything(model)
    copy = adapt(model).analysis(torch.float64).model
    for module in copy.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert not copy._state_dict_hooks
    assert len(model._state_dict_hooks) == 1
    assert sum(len(m._forward_hooks) for m in model.modules()) == len(list(model.modules())) + 2
    assert sum(len(m._backward_hooks) for m in model.modules()) == 2
