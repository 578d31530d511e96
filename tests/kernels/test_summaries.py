"""Scalar summaries of one run, each against a direct (loop or dense) computation of its definition."""

from __future__ import annotations

import math

import pytest
import torch

from tscope_widgets.kernels import BlockNorms, block_norms, dense_hessian, lanczos
from tscope_widgets.kernels.curvature import HessianOperator
from tscope_widgets.kernels.summaries import (
    block_norm_ratio,
    bulk_outlier_mass_ratio,
    diagonal_mass_fraction,
    diagonal_offdiagonal_ratio,
    receptive_field,
    sharpness_ratio,
    slice_curvature,
    top_eigengap,
)
from tscope_widgets.models import TinyConfig, TinyTransformer

G = torch.Generator().manual_seed(0)


def random_map(S: int, causal: bool = True) -> torch.Tensor:
    s = torch.rand(S, S, generator=G, dtype=torch.float64) ** 3
    return s.tril() if causal else s


def erf_by_loops(s: torch.Tensor, mass: float) -> list[float]:
    S = s.shape[0]
    out = []
    for i in range(S):
        by_offset = [0.0] * S
        for j in range(S):
            by_offset[abs(i - j)] += float(s[i, j])
        total = sum(by_offset)
        if total == 0:
            out.append(math.nan)
            continue
        run = 0.0
        for d, m in enumerate(by_offset):
            run += m
            if run >= mass * total * (1 - 1e-12):
                out.append(float(d))
                break
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mass", [0.5, 0.9, 1.0])
def test_receptive_field_matches_the_definition_row_by_row(causal, mass):
    s = random_map(11, causal)
    s[3] = 0.0  # a row without mass
    got = receptive_field(s, mass)
    want = torch.tensor(erf_by_loops(s, mass), dtype=torch.float64)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


def test_receptive_field_of_known_maps():
    eye = torch.eye(6, dtype=torch.float64)
    assert receptive_field(eye).tolist() == [0.0] * 6  # each position sees only itself
    prev = torch.diag(torch.ones(5, dtype=torch.float64), -1) * 9 + eye  # 90% of each row one step back
    field = receptive_field(prev, 0.9)
    assert field[0] == 0 and field[1:].tolist() == [1.0] * 5
    assert receptive_field(prev, 0.05)[1:].tolist() == [0.0] * 5


def test_diagonal_summaries_match_sums_over_cells():
    s = random_map(9)
    s[2, 0] = float("nan")  # a cell without data is left out
    clean = s.nan_to_num(0.0)
    total = sum(float(clean[i, j]) for i in range(9) for j in range(9))
    diag = sum(float(clean[i, i]) for i in range(9))
    assert diagonal_mass_fraction(s) == pytest.approx(diag / total, rel=1e-14)
    below = [float(s[i, j]) for i in range(9) for j in range(i) if not math.isnan(float(s[i, j]))]
    expected = (diag / 9) / (sum(below) / len(below))
    assert diagonal_offdiagonal_ratio(s, causal=True) == pytest.approx(expected, rel=1e-14)
    full = random_map(7, causal=False)
    off = [float(full[i, j]) for i in range(7) for j in range(7) if i != j]
    expected = float(full.diagonal().mean()) / (sum(off) / len(off))
    assert diagonal_offdiagonal_ratio(full, causal=False) == pytest.approx(expected, rel=1e-14)
    assert math.isnan(diagonal_mass_fraction(torch.zeros(4, 4, dtype=torch.float64)))
    assert math.isnan(diagonal_offdiagonal_ratio(torch.eye(4, dtype=torch.float64)))


def test_sharpness_ratio_and_eigengap():
    evals = torch.tensor([0.5, -0.1, 4.0, 1.0], dtype=torch.float64)
    assert top_eigengap(evals, 1) == pytest.approx((4.0 - 1.0) / 4.0, rel=1e-15)
    assert top_eigengap(evals, 2) == pytest.approx((1.0 - 0.5) / 4.0, rel=1e-15)
    assert math.isnan(top_eigengap(evals, 4))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        top_eigengap(evals, 0)
    assert sharpness_ratio(3.0, 12.0) == 0.25
    assert math.isnan(sharpness_ratio(3.0, 0.0)) and math.isnan(sharpness_ratio(math.nan, 1.0))


def test_block_norm_ratio_equals_the_norm_of_the_dense_sub_hessian():
    torch.manual_seed(0)
    model = TinyTransformer(TinyConfig(vocab_size=7, max_seq_len=5, d_model=4, n_layer=1, n_head=2, d_mlp=4))
    model = model.double()
    ids = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": ids}]
    blocks = block_norms(model, batches, exact=True, dtype=torch.float64)
    assert isinstance(blocks, BlockNorms)
    op = HessianOperator(model, batches, dtype=torch.float64)
    H = dense_hessian(model, batches)

    def sub_norm(names):  # the dense Hessian restricted to these groups (rows and columns)
        return float(dense_hessian(model, batches, groups=names).norm())

    labels = blocks.labels
    q = [n for n in labels if n.endswith(".attn.q")]
    v = [n for n in labels if n.endswith(".attn.v")]
    attn = [n for n in labels if ".attn." in n]
    mlp = [n for n in labels if ".mlp." in n]
    assert q and v and attn and mlp
    assert block_norm_ratio(labels, blocks.frobenius, "*.attn.q", "*.attn.v") == pytest.approx(
        sub_norm(q) / sub_norm(v), rel=1e-10
    )
    assert block_norm_ratio(labels, blocks.frobenius, "*.attn.*", "*.mlp.*") == pytest.approx(
        sub_norm(attn) / sub_norm(mlp), rel=1e-10
    )
    assert math.isnan(block_norm_ratio(labels, blocks.frobenius, "*.attn.q", "nothing.*"))
    # And the eigengap of the same Hessian's top Ritz values equals the dense one's.
    exact = torch.linalg.eigvalsh(H)
    ritz = lanczos(op, 2, "largest", tol=1e-10, generator=torch.Generator().manual_seed(0)).eigenvalues
    assert top_eigengap(ritz, 1) == pytest.approx(float((exact[-1] - exact[-2]) / exact[-1].abs()), rel=1e-6)


def test_slice_curvature_is_the_second_difference_and_recovers_a_quadratic():
    alphas = torch.linspace(-1, 1, 5, dtype=torch.float64)
    assert slice_curvature(alphas, 0.5 * 3.0 * alphas**2 + 2.0) == pytest.approx(3.0, rel=1e-12)
    quartic = 1.5 * alphas**2 + alphas**4  # kappa = 3 + 2 h^2 at h = 0.5
    assert slice_curvature(alphas, quartic) == pytest.approx(3.0 + 2 * 0.25, rel=1e-12)
    assert math.isnan(slice_curvature(torch.linspace(-1, 1, 4, dtype=torch.float64), torch.zeros(4)))
    with pytest.raises(ValueError, match="differ in shape"):
        slice_curvature(alphas, torch.zeros(3))


def test_bad_maps_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"square matrix \[S, S\], got shape \(3, 4\)"):
        receptive_field(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mass must be a fraction"):
        receptive_field(torch.eye(3), 0.0)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        diagonal_mass_fraction([[1.0]])


def _gaussian(t, mean, std):
    return torch.exp(-0.5 * ((t - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_bulk_outlier_ratio_recovers_known_masses_of_a_mixture():
    """A bulk N(0, 0.05²) of mass 0.9 and outliers N(±5, 0.1²) of mass 0.06 and 0.04: the ratio is 0.9 / 0.1."""
    t = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    phi = 0.9 * _gaussian(t, 0.0, 0.05) + 0.06 * _gaussian(t, 5.0, 0.1) + 0.04 * _gaussian(t, -5.0, 0.1)
    assert bulk_outlier_mass_ratio(t, phi, 2.5) == pytest.approx(9.0, rel=1e-6)
    assert bulk_outlier_mass_ratio(t, 7.0 * phi, 2.5) == pytest.approx(9.0, rel=1e-6)  # normalisation cancels
    assert bulk_outlier_mass_ratio(t.float(), phi.float(), 2.5) == pytest.approx(9.0, rel=1e-4)


def test_bulk_outlier_ratio_is_exact_for_a_piecewise_linear_density_split_between_grid_points():
    t = torch.arange(-2.0, 2.01, 0.5, dtype=torch.float64)
    phi = t.abs()  # mass inside |t| <= 1.25: 1.25², outside: 2² - 1.25²
    assert bulk_outlier_mass_ratio(t, phi, 1.25) == pytest.approx(1.25**2 / (4 - 1.25**2), rel=1e-14)
    assert bulk_outlier_mass_ratio(t, phi, 1.0) == pytest.approx(1 / 3, rel=1e-14)  # an edge on the grid
    assert math.isnan(bulk_outlier_mass_ratio(t, phi, 3.0))  # no outlier mass


@pytest.mark.parametrize(
    ("grid", "density", "edge", "message"),
    [
        (torch.arange(3.0), torch.ones(4), 1.0, "both be"),
        (torch.tensor([0.0, 2.0, 1.0]), torch.ones(3), 1.0, "strictly increasing"),
        (torch.arange(3.0), torch.tensor([1.0, -1.0, 1.0]), 1.0, ">= 0"),
        (torch.arange(3.0), torch.tensor([1.0, math.nan, 1.0]), 1.0, "finite"),
        (torch.arange(3.0), torch.ones(3), 0.0, "edge must be"),
        (torch.arange(3.0), torch.ones(3), math.inf, "edge must be"),
    ],
)
def test_bulk_outlier_ratio_refuses_bad_input(grid, density, edge, message):
    with pytest.raises(ValueError, match=message):
        bulk_outlier_mass_ratio(grid, density, edge)
