"""Finding 10: requests too large for memory are refused before anything is allocated, naming the parameter,
the estimate and what to do instead (one guard, :func:`tscope_widgets.kernels.cost.check_memory`).

Before, each of these reached torch's allocator: ``DefaultCPUAllocator: can't allocate memory``.
"""

from __future__ import annotations

import json

import pytest
import torch

import tscope_widgets.kernels.cost as cost
import tscope_widgets.training as training
from tests.model_zoo import tiny
from tscope_widgets.kernels import HessianOperator, hutchpp_trace
from tscope_widgets.kernels.landscape import grid_memory, landscape_grid, random_direction, slice_1d, slice_2d
from tscope_widgets.models import TinyConfig, TinyTransformer
from tscope_widgets.models.registry import adapt
from tscope_widgets.training import load_model, save_model
from tscope_widgets.widgets.landscape import LandscapeWidget

GiB = 2**30


@pytest.fixture(autouse=True)
def eight_gib(monkeypatch):
    """The guard sees 8 GiB free, whatever the machine has."""
    monkeypatch.setattr(cost, "available_memory", lambda device: 8 * GiB)


@pytest.fixture
def allocations_fail(monkeypatch):
    """Any grid-sized allocation of the landscape fails the test (the guard must come first)."""
    real_full = torch.full

    def full(size, *args, **kwargs):
        n = 1
        for s in size:
            n *= s
        assert n < 10**8, f"allocated {tuple(size)} before refusing"
        return real_full(size, *args, **kwargs)

    monkeypatch.setattr(torch, "full", full)


def _batch():
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def test_hutchpp_with_three_billion_products_is_refused():
    H = HessianOperator(tiny(), _batch())
    N = H.shape[0]
    with pytest.raises(MemoryError, match=rf"hutchpp_trace\(num_matvecs=3000000000\) on an operator of size {N} "
                                          r"\(a sketch of 1000000000 columns\) would need about [\d.e+]+ GiB .*"
                                          r"8 GiB is available.*nothing was allocated.*lower num_matvecs.*"
                                          r"hutchinson_trace"):
        hutchpp_trace(H, 3 * 10**9)


def test_hutchpp_within_memory_still_runs():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 20, generator=g, dtype=torch.float64)
    A = X @ X.T
    est = hutchpp_trace(A, 60, generator=g)  # the sketch spans the space: exact
    assert est.value == pytest.approx(float(A.trace()), rel=1e-10)


def test_grid_memory_counts_six_float64_values_per_point():
    assert grid_memory(10, 20) == 8 * 6 * 200
    assert grid_memory(7) == 8 * 6 * 7


def test_a_1e5_by_1e5_slice_2d_is_refused_before_allocating(allocations_fail):
    model = tiny()
    d1 = random_direction(adapt(model), generator=torch.Generator().manual_seed(0))
    d2 = random_direction(adapt(model), generator=torch.Generator().manual_seed(1))
    grid = landscape_grid(1.0, 10**5)
    with pytest.raises(MemoryError, match=r"a landscape grid of 100000 x 100000 points \(alphas, betas\) would "
                                          r"need about 447 GiB.*nothing was allocated.*fewer grid points"):
        slice_2d(model, _batch(), d1, d2, grid, grid)


def test_a_modest_grid_is_not_refused():
    model = tiny()
    d1 = random_direction(adapt(model), generator=torch.Generator().manual_seed(0))
    rows = list(slice_1d(model, _batch(), d1, landscape_grid(0.5, 5)))
    assert rows[-1].loss.shape == (5,) and torch.isfinite(rows[-1].loss).all()


def test_the_landscape_widget_refuses_resolution_1e5_naming_it(allocations_fail):
    with pytest.raises(MemoryError, match=r"100000 x 100000 points \(resolution=100000\).*fewer grid points"):
        LandscapeWidget(tiny(), _batch()["input_ids"], resolution=10**5, start=False)


def test_a_model_json_with_vocab_size_1e15_is_refused_before_building(tmp_path, monkeypatch):
    save_model(tmp_path, TinyTransformer(TinyConfig(vocab_size=11, max_seq_len=8, d_model=8, n_layer=1, n_head=2)))
    info = json.loads((tmp_path / "model.json").read_text())
    info["tiny_config"]["vocab_size"] = 10**15
    (tmp_path / "model.json").write_text(json.dumps(info))
    monkeypatch.setattr(training, "TinyTransformer", lambda *a, **k: pytest.fail("built before checking"))
    with pytest.raises(ValueError, match=r"model.json describes a model of [\d,]+ parameters, but .* holds"):
        load_model(tmp_path)
