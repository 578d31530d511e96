"""make_directions: one dispatcher by kind, each kind equal to its own function called directly."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.landscape.test_landscape import moved, pair_of_directions, plane_trajectory, two_batches
from tests.model_zoo import tiny
from tscope_widgets.kernels.landscape import (
    DIRECTION_KINDS,
    DirectionSet,
    checkpoint_direction,
    eigen_directions,
    make_directions,
    pca_directions,
    random_direction,
)
from tscope_widgets.models.registry import adapt


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def test_kinds_are_the_four_documented_ones():
    assert DIRECTION_KINDS == ("random", "eigen", "pca", "checkpoints")


@pytest.mark.parametrize("count", [1, 2])
def test_random_draws_from_one_seeded_generator(count):
    model = tiny()
    made = make_directions("random", model, count=count, seed=7)
    assert isinstance(made, DirectionSet) and made.kind == "random" and len(made.directions) == count
    g = torch.Generator().manual_seed(7)
    for d in made.directions:
        assert_same(d, random_direction(model, generator=g))
    assert made.eigenvalues is None and made.explained_variance_ratio is None
    assert made.how == {"kind": "random", "normalization": "filter", "ignore": ["bias", "norm"], "seed": 7}
    # an adapter gives the same directions as its model
    assert_same(make_directions("random", adapt(model), count=count, seed=7).directions[0], made.directions[0])


def test_random_with_a_dtype_draws_on_the_analysis_copy():
    model = tiny().float()
    made = make_directions("random", model, seed=1, dtype=torch.float64, normalization="layer", ignore="bias")
    g = torch.Generator().manual_seed(1)
    copy = adapt(model).analysis(torch.float64)
    for d in made.directions:
        assert_same(d, random_direction(copy, normalization="layer", ignore="bias", generator=g))
        assert all(t.dtype == torch.float64 for t in d.values())
    assert made.how["normalization"] == "layer" and made.how["ignore"] == ["bias"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is not converted


@pytest.mark.parametrize("count", [1, 2])
def test_eigen_matches_eigen_directions(count):
    model = tiny()
    data = two_batches(model)
    made = make_directions("eigen", model, count=count, data=data, seed=3, tol=1e-10)
    dirs, values = eigen_directions(model, data, count, tol=1e-10, generator=torch.Generator().manual_seed(3))
    assert made.kind == "eigen" and len(made.directions) == count
    for d, e in zip(made.directions, dirs, strict=True):
        assert_same(d, e)
    assert made.eigenvalues.dtype == torch.float64 and torch.equal(made.eigenvalues, values)
    if count == 2:
        assert made.eigenvalues[0] >= made.eigenvalues[1]  # the largest first
    assert made.how == {"kind": "eigen", "which": "largest", "eigenvalues": values.tolist(), "seed": 3}
    with pytest.raises(ValueError, match="needs data"):
        make_directions("eigen", model)


@pytest.mark.parametrize("count", [1, 2])
def test_pca_is_around_the_model(count):
    model = tiny()
    d1, d2 = pair_of_directions(model, seed=4)
    trajectory = [moved(model, [(0.3, d1), (0.1, d2)]), moved(model, [(-0.2, d1), (0.4, d2)]), model]
    made = make_directions("pca", model, count=count, trajectory=trajectory)
    dirs, ratio = pca_directions(trajectory, k=count, origin=model, reference=model)
    assert made.kind == "pca" and len(made.directions) == count
    for d, e in zip(made.directions, dirs, strict=True):
        assert_same(d, e)
    assert torch.equal(made.explained_variance_ratio, ratio) and made.eigenvalues is None
    assert made.how == {"kind": "pca", "explained_variance_ratio": ratio.tolist()}
    for bad in (None, trajectory[:1]):
        with pytest.raises(ValueError, match="needs trajectory"):
            make_directions("pca", model, trajectory=bad)


def test_pca_of_state_dicts():
    c = plane_trajectory()
    origin = torch.nn.Module()
    for name, t in c.traj[-1].items():
        origin.register_parameter(name, torch.nn.Parameter(t.clone()))
    made = make_directions("pca", origin, trajectory=c.traj)
    dirs, _ = pca_directions(c.traj, origin=origin, reference=origin)
    for d, e in zip(made.directions, dirs, strict=True):
        assert_same(d, e)


@pytest.mark.parametrize("count", [1, 2])
def test_checkpoints_point_from_the_model_to_each_checkpoint(count):
    model = tiny()
    d1, d2 = pair_of_directions(model, seed=5)
    a = {n: p.detach() + 0.3 * d1[n] for n, p in model.named_parameters()}
    b = {n: p.detach() - 0.2 * d2[n] for n, p in model.named_parameters()}
    checkpoints = (a, b)[:count]
    made = make_directions("checkpoints", model, count=count, checkpoints=checkpoints)
    assert made.kind == "checkpoints" and len(made.directions) == count and made.how == {"kind": "checkpoints"}
    for d, c in zip(made.directions, checkpoints, strict=True):
        assert_same(d, checkpoint_direction(model, c, reference=model))
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="checkpoint a equals the model's parameters"):
        make_directions("checkpoints", model, count=count, checkpoints=(theta, b)[:count])
    want = r"checkpoints=\(a, b\)" if count == 2 else r"checkpoints=\(a,\)"
    for bad in (None, (a, b, a), a):
        with pytest.raises(ValueError, match=want):
            make_directions("checkpoints", model, count=count, checkpoints=bad)


@pytest.mark.parametrize("kind", ["hessian", "Random", "", None, 3])
def test_an_unknown_kind_names_the_allowed_kinds(kind):
    with pytest.raises(ValueError, match="allowed kinds: random, eigen, pca, checkpoints") as info:
        make_directions(kind, tiny())
    assert repr(kind) in str(info.value)


def test_bad_count_and_seed():
    model = tiny()
    for count in (0, 3, True, 2.0):
        with pytest.raises(ValueError, match="count must be 1"):
            make_directions("random", model, count=count)
    with pytest.raises(TypeError, match="seed must be an int"):
        make_directions("random", model, seed=1.5)
