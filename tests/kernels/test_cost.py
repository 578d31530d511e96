"""Cost estimates: the memory refusal happens before anything is allocated and says what to do instead."""

from __future__ import annotations

import pytest
import torch

from tests import model_zoo as mz
from tscope_widgets import HessianOperator
from tscope_widgets.kernels import cost
from tscope_widgets.models.adapter import ModelAdapter
from tscope_widgets.models.registry import adapt


def test_products_too_large_for_memory_are_refused_before_the_copy(monkeypatch):
    model = mz.gpt2()
    data = mz.random_batch(adapt(model), 3, 6, seed=1)
    monkeypatch.setattr(cost, "available_memory", lambda device: 2**10)  # 1 KiB free

    def no_copy(*args, **kwargs):
        raise AssertionError("the analysis copy was made before the memory check")

    monkeypatch.setattr(ModelAdapter, "analysis", no_copy)
    with pytest.raises(MemoryError) as info:
        HessianOperator(model, data, dtype=torch.float32)
    message = str(info.value)
    assert "would need about" in message and "1 KiB is available" in message and "nothing was allocated" in message
    assert "fewer or shorter sequences" in message and "route='finite_difference'" in message
    with pytest.raises(MemoryError, match="float32 instead of float64"):
        HessianOperator(model, data, dtype=torch.float64)


def test_the_estimate_grows_with_tokens_and_parameters_and_small_problems_pass():
    model = mz.gpt2()
    adapter = adapt(model)
    short, long = mz.random_batch(adapter, 2, 4), mz.random_batch(adapter, 8, 8)
    f32 = cost.product_memory(adapter, [short], torch.float32)
    assert cost.product_memory(adapter, [long], torch.float32) > f32
    assert cost.product_memory(adapter, [short], torch.float64) == 2 * f32
    P = sum(p.numel() for p in model.parameters())
    assert f32 >= 4 * cost.PARAM_COPIES * P
    assert cost.product_memory(adapter, [short], torch.float32, activation_copies=2) < f32
    cost.check_memory(f32, "cpu", "a small product", ["nothing"])  # fits on any machine that runs the tests
    cost.check_memory(10**30, "meta", "unknown free memory", ["nothing"])  # unknown: not refused


def test_cost_estimate_reads_as_a_sentence():
    e = cost.CostEstimate("Hessian-vector product", 120, 4.2, 5.1, 3 * 2**30, 20 * 2**30)
    assert e.seconds == pytest.approx(5.1 + 120 * 4.2)
    assert str(e) == ("up to 120 Hessian-vector products of 4.2 s each (measured): about 8.49 min, "
                      "memory about 3 GiB of 20 GiB available")
