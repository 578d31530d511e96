"""The landscape widget's value checks as pure functions, with hostile values."""

import math
import re

import numpy as np
import pytest
import torch

from tscope_widgets.kernels.landscape import direction_norm
from tscope_widgets.widgets._landscape_state import (
    BROWSER_TRAITS,
    check_direction_kind,
    check_eigenvalues,
    check_given_directions,
    check_grid,
    check_grid_options,
    check_grids,
    check_point,
    check_trajectory_steps,
    check_view_state,
    direction_labels,
    nearest_index,
    quadratic_curves,
)

ALPHAS = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)  # step 0.5
BETAS = torch.tensor([0.0, 1.0], dtype=torch.float64)


def test_grid_options():
    assert check_grid_options(np.int64(5), None, 0) == (5, None, 0)
    assert check_grid_options(2, np.float32(0.5), np.int32(3)) == (2, 0.5, 3)
    for resolution in (1, 0, -3, 2.0, True, "5", None):
        with pytest.raises(ValueError, match="resolution must be an int >= 2"):
            check_grid_options(resolution, None, 0)
    for span in (0, -1.0, math.nan, math.inf, 10**400, True, "1"):
        with pytest.raises(ValueError, match="span must be a positive number"):
            check_grid_options(5, span, 0)
    for seed in (1.0, True, "0", None):
        with pytest.raises(TypeError, match="seed must be an int"):
            check_grid_options(5, None, seed)


def test_explicit_grids_and_defaults():
    t = check_grid([0, 1, 3], 1.0, 5, "alphas")
    assert t.dtype == torch.float64 and t.tolist() == [0.0, 1.0, 3.0]
    assert check_grid(None, 2.0, 3, "alphas").tolist() == [-2.0, 0.0, 2.0]
    alphas, betas = check_grids("checkpoints", None, 5, None, None)
    assert alphas.tolist() == betas.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]  # the model at 0, a checkpoint at 1
    alphas, _ = check_grids("checkpoints", None, 3, [0.0, 1.0], None)  # explicit coordinates: plain defaults
    assert alphas.tolist() == [0.0, 1.0]
    assert check_grids("random", None, 3, None, None)[1].tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "values, error, match",
    [
        ([], ValueError, "non-empty 1-D"),
        ([[0.0, 1.0]], ValueError, "non-empty 1-D"),
        ([0.0, math.nan], ValueError, "finite numbers"),
        ([0.0, math.inf], ValueError, "finite numbers"),
        ([0.0, 0.0], ValueError, "strictly increasing"),
        ([1.0, 0.0], ValueError, "strictly increasing"),
        (["a", "b"], TypeError, "alphas must be a 1-D sequence of numbers"),
        ({"a": 1}, TypeError, "alphas must be a 1-D sequence of numbers"),
        (object(), TypeError, "alphas must be a 1-D sequence of numbers"),
    ],
)
def test_bad_grids_are_refused(values, error, match):
    with pytest.raises(error, match=match):
        check_grid(values, 1.0, 5, "alphas")


def test_direction_kinds_and_given_directions():
    assert check_direction_kind("eigen", [1.0, 2.0]) == "eigen"
    with pytest.raises(ValueError, match="use one of"):
        check_direction_kind("hessian", None)
    with pytest.raises(ValueError, match="eigenvalues describe Hessian eigenvector"):
        check_direction_kind("random", [1.0, 2.0])
    d = {"w": torch.ones(2)}
    d1, d2 = check_given_directions((d, d))
    assert d1 == d and d1 is not d  # copies of the dicts, the same tensors
    for bad in ([d], (d, d, d), "d", None, d):
        with pytest.raises(TypeError, match=r"pair \(d1, d2\)"):
            check_given_directions(bad)
    with pytest.raises(TypeError, match="d2 must be a dict"):
        check_given_directions((d, {"w": [1.0]}))
    with pytest.raises(TypeError, match="d1 must be a dict"):
        check_given_directions((torch.ones(2), d))


def test_eigenvalues():
    assert check_eigenvalues(None) is None
    assert check_eigenvalues(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]
    values = check_eigenvalues([None, np.float32(3.0)])
    assert values.dtype == torch.float64 and math.isnan(values[0]) and values[1] == 3.0
    for bad in (
        [1.0],
        [1.0, 2.0, 3.0],
        [1.0, math.inf],
        [math.nan, 1.0],
        [True, 1.0],
        ["1", 2.0],
        [10**400, 1.0],
        5,
        "12",
    ):
        with pytest.raises(ValueError, match="eigenvalues must be two finite numbers"):
            check_eigenvalues(bad)


def test_trajectory_steps():
    assert check_trajectory_steps(None, 3).tolist() == [0, 1, 2]
    steps = check_trajectory_steps(np.array([0, 5, 9], dtype=np.uint8), 3)
    assert steps.dtype == np.int64 and steps.tolist() == [0, 5, 9]
    for bad in ([0, 1], [0.0, 1.0, 2.0], ["a", "b", "c"], [[0, 1, 2]], 3, [0, None, 2]):
        with pytest.raises(ValueError, match="trajectory_steps must be 3 ints"):
            check_trajectory_steps(bad, 3)


def test_direction_labels_name_norms_and_eigenvalues():
    d1, d2 = {"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([1.0, 0.0])}
    assert direction_norm(d1) == 5.0
    random = direction_labels("random", d1, d2, seed=7)
    assert random[0] == "random direction 1 (filter-normalised, seed 7, ‖d1‖ = 5)"
    eigen = direction_labels("eigen", d1, d2, eigenvalues=torch.tensor([2.5, 1.0]))
    assert eigen == ["Hessian eigenvector 1 (λ1 = 2.5)", "Hessian eigenvector 2 (λ2 = 1)"]
    pca = direction_labels("pca", d1, d2, explained=torch.tensor([0.75, 0.25]))
    assert pca[1] == "PCA direction 2 (25.0% of the trajectory's variance)"
    points = direction_labels("checkpoints", d1, d2)
    assert points == ["toward checkpoint a (θa − θ, ‖d1‖ = 5)", "toward checkpoint b (θb − θ, ‖d2‖ = 1)"]
    given = direction_labels("given", d1, d2, eigenvalues=torch.tensor([2.0, math.nan], dtype=torch.float64))
    assert given == ["direction 1 (‖d1‖ = 5, λ1 = 2)", "direction 2 (‖d2‖ = 1)"]


def test_quadratic_curves_scale_by_the_direction_norm():
    assert quadratic_curves(ALPHAS, BETAS, None, (1.0, 1.0), 0.5) is None
    curves = quadratic_curves(ALPHAS, BETAS, torch.tensor([2.0, math.nan], dtype=torch.float64), (3.0, 1.0), 0.5)
    np.testing.assert_allclose(curves["alpha"], 0.5 + 0.5 * 2.0 * (3.0 * ALPHAS.numpy()) ** 2, rtol=1e-15)
    assert curves["beta"] is None and curves["eigenvalues"][0] == 2.0 and math.isnan(curves["eigenvalues"][1])


@pytest.mark.parametrize(
    "value, canonical",
    [
        (None, None),
        ([0.3, 0.9], [0.5, 1.0]),  # snapped to the nearest grid point
        ((-1.24, np.float32(0.0)), [-1.0, 0.0]),  # half a step beyond the end is inside
        ([1, 0], [1.0, 0.0]),
    ],
)
def test_a_point_inside_the_grid_snaps_to_it(value, canonical):
    assert check_point(value, ALPHAS, BETAS) == (True, canonical, "")
    assert check_view_state("selected_point", value, alphas=ALPHAS, betas=BETAS) == (True, canonical, "")


@pytest.mark.parametrize(
    "value",
    [
        [1.3, 0.0],
        [0.0, -0.6],
        [math.nan, 0.0],
        [math.inf, 0.0],
        [True, 0.0],
        ["0", 0.0],
        [0.0],
        [0.0, 0.0, 0.0],
        "0,0",
        {"alpha": 0.0},
        [1e308, 0.0],
        [10**400, 0.0],
    ],
)
def test_a_point_outside_the_grid_or_not_a_point_is_refused(value):
    ok, canonical, why = check_point(value, ALPHAS, BETAS)
    assert not ok and canonical is None and why.startswith("must be null or [alpha, beta]")


def test_flags_and_menus_of_the_view_state():
    grid = dict(alphas=ALPHAS, betas=BETAS)
    assert check_view_state("log_scale", np.bool_(True), **grid) == (True, True, "")
    assert check_view_state("show_contours", 1, **grid) == (False, None, "must be true or false")
    assert check_view_state("view", "3d", **grid) == (True, "3d", "")
    assert re.search("choose one of", check_view_state("view", "4d", **grid)[2])
    assert check_view_state("quantity", "accuracy", **grid) == (True, "accuracy", "")
    assert not check_view_state("quantity", ["loss"], **grid)[0]
    assert set(BROWSER_TRAITS) == {"selected_point", "log_scale", "view", "quantity", "show_contours"}
    with pytest.raises(KeyError, match="not a view-state trait"):
        check_view_state("colour", "red", **grid)
    assert nearest_index(ALPHAS, 0.26) == 3
