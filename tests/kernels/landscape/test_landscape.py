"""Loss-landscape directions and slices, float64, against plain loops and dense Hessians."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.func import functional_call

from tests.model_zoo import gpt2, random_batch, tiny
from tscope_widgets.kernels.landscape import (
    LandscapeSlice,
    checkpoint_direction,
    default_points_per_call,
    eigen_directions,
    evaluator,
    pca_directions,
    project_trajectory,
    quadratic_model,
    random_direction,
    slice_1d,
    slice_2d,
)
from tscope_widgets.models.registry import adapt

BUILDERS = {"tiny": tiny, "gpt2": gpt2}


def two_batches(model: nn.Module) -> list[dict]:
    """Two padded batches of different shapes (so their token counts differ)."""
    a = adapt(model)
    return [random_batch(a, 3, 6, seed=1), random_batch(a, 2, 5, seed=2)]


def num_targets(batch: dict) -> int:
    """Causal LM targets: position s predicts s+1, both real tokens."""
    m = batch["attention_mask"]
    return int(((m[:, 1:] == 1) & (m[:, :-1] == 1)).sum())


def reference_loss(model: nn.Module, data: list[dict]) -> tuple[float, float]:
    """Token-weighted mean loss and argmax accuracy by the adapter's loss, batch by batch."""
    a = adapt(model)
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for b in data:
            k = num_targets(b)
            total += a.loss(b).item() * k
            m = b["attention_mask"]
            pred = a.logits(b["input_ids"], m)[:, :-1].argmax(-1)
            valid = (m[:, 1:] == 1) & (m[:, :-1] == 1)
            correct += int(((pred == b["input_ids"][:, 1:]) & valid).sum())
            n += k
    return total / n, correct / n


def moved(model: nn.Module, steps: list[tuple[float, dict]]) -> nn.Module:
    """A deep copy of ``model`` with ``p.data += sum(c * d[name])``."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            for c, d in steps:
                p.data += c * d[name]
    return m


def model_state(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "attn": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "classes": [type(m) for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = model_state(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), k
    for key in ("requires_grad", "training", "attn", "classes"):
        assert after[key] == before[key], key


def pair_of_directions(model: nn.Module, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    return random_direction(model, generator=g), random_direction(model, generator=g)


# ----------------------------------------------------------------------------- slices vs plain loops
@pytest.mark.parametrize("points_per_call", [1, 4])
@pytest.mark.parametrize("name", ["tiny", "gpt2"])
def test_slice_2d_matches_plain_loop(name, points_per_call):
    model = BUILDERS[name]()
    data = two_batches(model)
    d1, d2 = pair_of_directions(model)
    alphas, betas = [-0.5, 0.0, 1.0], [0.0, 0.75]
    before = model_state(model)
    snaps = list(slice_2d(model, data, d1, d2, alphas, betas, points_per_call=points_per_call))
    assert_unchanged(model, before)

    origin, origin_acc = reference_loss(model, data)
    final = snaps[-1]
    assert final.loss.shape == (3, 2) and final.loss.dtype == torch.float64
    assert final.rows_done == final.done == final.total == 3
    assert [s.rows_done for s in snaps] == sorted({s.rows_done for s in snaps})  # progress increases
    for s in snaps:
        assert s.origin_loss == pytest.approx(origin, abs=1e-12)
        assert s.origin_accuracy == pytest.approx(origin_acc, abs=1e-12)
        # rows after rows_done that were not touched by the same call are still NaN
        assert not torch.isnan(s.loss[: s.rows_done]).any()
    if points_per_call == 1:
        assert [s.rows_done for s in snaps] == [1, 2, 3]
        assert torch.isnan(snaps[0].loss[1:]).all()
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            ref, acc = reference_loss(moved(model, [(a, d1), (b, d2)]), data)
            assert abs(final.loss[i, j].item() - ref) <= 1e-10, (a, b)
            assert final.accuracy[i, j].item() == pytest.approx(acc, abs=1e-12)
    assert abs(final.loss[1, 0].item() - origin) <= 1e-12  # (0, 0) is the origin


@pytest.mark.parametrize("limit", [16, 2])
def test_one_point_per_call_moves_along_rows_in_place_and_matches_plain(monkeypatch, limit):
    """With one point per call, a point in the same row as the last is reached by one in-place pass (``+= Δβ d2``),
    and rows are walked as a serpentine, so the first point of a row is one pass (``+= Δα d1``) from the last
    point of the row before; the buffer is rewritten from θ after ``MAX_UPDATES_IN_PLACE`` such passes; results
    equal the plain loop."""
    from tscope_widgets.kernels.landscape import evaluator
    monkeypatch.setattr(evaluator, "MAX_UPDATES_IN_PLACE", limit)
    updates, visited = [], []
    original = evaluator._GridEvaluator._move_to
    monkeypatch.setattr(evaluator._GridEvaluator, "_move_to",
                        lambda self, point: (original(self, point), updates.append(self._updates),
                                             visited.append(tuple(point))))
    model = BUILDERS["gpt2"]()
    data = two_batches(model)
    d1, d2 = pair_of_directions(model)
    alphas, betas = [-0.5, 0.0, 1.0], [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0]
    final = list(slice_2d(model, data, d1, d2, alphas, betas, points_per_call=1))[-1]
    # row α = -0.5: fresh at β = -1, in place to -0.5, fresh at 0 (one pass either way), in place after
    expected_row = [0, 1, 0, 1, 2, 3, 4] if limit == 16 else [0, 1, 0, 1, 2, 0, 1]
    assert updates[:7] == expected_row
    assert max(updates) <= limit
    # row α = 0 backwards (the origin skipped; each point is one fresh pass θ + β d2), then row α = 1 forwards,
    # whose first point (1, -1) is one in-place pass from (0, -1)
    assert visited[7:13] == [(0.0, b) for b in (1.0, 0.75, 0.5, 0.25, -0.5, -1.0)]
    assert visited[13:] == [(1.0, b) for b in betas]
    assert updates[7:13] == [0] * 6 and updates[13] == 1
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            ref, _ = reference_loss(moved(model, [(a, d1), (b, d2)]), data)
            assert abs(final.loss[i, j].item() - ref) <= 1e-10, (a, b)


@pytest.mark.parametrize("points_per_call", [1, 3])
def test_slice_1d_matches_plain_loop(points_per_call):
    model = tiny()
    data = two_batches(model)
    (d, _) = pair_of_directions(model, seed=3)
    alphas = torch.tensor([-1.0, -0.25, 0.0, 0.5, 2.0])
    before = model_state(model)
    snaps = list(slice_1d(adapt(model), data, d, alphas, points_per_call=points_per_call))
    assert_unchanged(model, before)
    final = snaps[-1]
    assert final.betas is None and final.loss.shape == (5,) and final.total == 5
    assert [s.rows_done for s in snaps] == (list(range(1, 6)) if points_per_call == 1 else [3, 5])
    origin, _ = reference_loss(model, data)
    assert abs(final.loss[2].item() - origin) <= 1e-12
    for i, a in enumerate(alphas.tolist()):
        ref, acc = reference_loss(moved(model, [(a, d)]), data)
        assert abs(final.loss[i].item() - ref) <= 1e-10
        assert final.accuracy[i].item() == pytest.approx(acc, abs=1e-12)


def test_grid_points_at_the_origin_reuse_its_evaluation(monkeypatch):
    """A grid point at (0, 0) takes the origin's values, bit for bit, without another forward pass."""
    model = tiny()
    data = two_batches(model)
    d1, d2 = pair_of_directions(model)
    calls = []
    forward = evaluator._BatchObjective.forward
    monkeypatch.setattr(evaluator._BatchObjective, "forward", lambda self, *a: calls.append(1) or forward(self, *a))
    final = list(slice_2d(model, data, d1, d2, [-1.0, 0.0], [0.0, 0.5], points_per_call=1))[-1]
    assert len(calls) == len(data) * 4  # the origin, then the three other points
    assert final.loss[1, 0].item() == final.origin_loss
    assert final.accuracy[1, 0].item() == final.origin_accuracy
    assert not torch.isnan(final.loss).any()


@pytest.mark.parametrize("points_per_call", [1, 4])
def test_directions_zero_in_some_or_all_parameters(points_per_call):
    """Parameters that no direction moves stay at θ (and are not copied); an all-zero d2 repeats the line."""
    model = tiny()
    data = two_batches(model)
    d1, _ = pair_of_directions(model)
    zero = {n: torch.zeros_like(t) for n, t in d1.items()}
    only_head = {n: t if n == "head.weight" else torch.zeros_like(t) for n, t in d1.items()}
    alphas = [-1.0, 0.5, 2.0]
    before = model_state(model)
    plane = list(slice_2d(model, data, only_head, zero, alphas, [0.0, 1.0, -3.0], points_per_call=points_per_call))
    assert_unchanged(model, before)
    for i, a in enumerate(alphas):
        ref, _ = reference_loss(moved(model, [(a, only_head)]), data)
        assert (plane[-1].loss[i] - ref).abs().max().item() <= 1e-10
    line = list(slice_1d(model, data, zero, alphas, points_per_call=points_per_call))[-1]
    assert torch.all(line.loss == line.origin_loss)


def test_points_per_call_on_a_cpu_stays_within_the_parameter_budget(monkeypatch):
    """Beyond CPU_PARAMETER_COPIES_BUDGET bytes of parameter copies a call evaluates fewer points (1 at most)."""
    model = tiny()
    a = adapt(model).analysis()
    batches = evaluator._batches(a, two_batches(model))
    assert default_points_per_call(a, batches) == 16
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    monkeypatch.setattr(evaluator, "CPU_PARAMETER_COPIES_BUDGET", 3 * nbytes)
    assert default_points_per_call(a, batches) == 3
    monkeypatch.setattr(evaluator, "CPU_PARAMETER_COPIES_BUDGET", nbytes - 1)
    assert default_points_per_call(a, batches) == 1


def test_non_finite_loss_is_stored_not_raised():
    model = tiny()
    data = two_batches(model)
    d = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    final = list(slice_1d(model, data, d, [0.0, 1e306], points_per_call=2))[-1]
    assert math.isfinite(final.loss[0].item()) and not math.isfinite(final.loss[1].item())


def test_checkpoint_direction_interpolates():
    a = tiny()
    b = moved(a, [(0.3, pair_of_directions(a, seed=5)[0])])
    data = two_batches(a)
    d = checkpoint_direction(a, b)
    assert set(d) == {n for n, _ in a.named_parameters()}
    d_sd = checkpoint_direction(a.state_dict(), b.state_dict())
    assert all(torch.equal(d[n], d_sd[n]) for n in d)
    final = list(slice_1d(a, data, d, [0.0, 0.5, 1.0]))[-1]
    mid = copy.deepcopy(a)
    with torch.no_grad():
        for p, q in zip(mid.parameters(), b.parameters(), strict=True):
            p.copy_(0.5 * (p + q))
    for i, m in enumerate([a, mid, b]):
        assert abs(final.loss[i].item() - reference_loss(m, data)[0]) <= 1e-10


def test_checkpoint_direction_tied_gpt2_state_dicts():
    a = gpt2()
    b = moved(a, [(0.1, pair_of_directions(a)[0])])
    names = [n for n, _ in a.named_parameters()]
    assert "lm_head.weight" in a.state_dict() and "lm_head.weight" not in names  # tied to wte
    d = checkpoint_direction(a.state_dict(), b.state_dict())  # live state dicts: the tied copy is dropped
    assert list(d) == names
    sd_b = {k: v for k, v in b.state_dict().items() if k != "transformer.wte.weight"}  # kept under the head name
    d_ref = checkpoint_direction(a.state_dict(), sd_b, reference=a)
    assert list(d_ref) == names and torch.equal(d_ref["transformer.wte.weight"], d["transformer.wte.weight"])
    with pytest.raises(ValueError, match="transformer.wte.weight"):
        checkpoint_direction(a.state_dict(), sd_b)


# ----------------------------------------------------------------------------- filter normalization
def filters(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.movedim(axis, 0).reshape(t.shape[axis], -1) if t.ndim > 1 else t.reshape(1, -1)


@pytest.mark.parametrize("name", ["tiny", "gpt2"])
def test_filter_normalization(name):
    model = BUILDERS[name]()
    params = dict(model.named_parameters())
    # a zero filter of the weight: a row of a Linear (tiny) / a column of GPT-2's Conv1D c_attn
    zero_name, axis0 = (
        ("blocks.0.mlp.fc_in.weight", 0) if name == "tiny" else ("transformer.h.0.attn.c_attn.weight", 1)
    )
    with torch.no_grad():
        params[zero_name].select(axis0, 3).zero_()
    before = model_state(model)
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    assert_unchanged(model, before)
    assert list(d) == list(params)
    for n, p in params.items():
        assert d[n].shape == p.shape and d[n].dtype == torch.float64 and torch.isfinite(d[n]).all(), n
        if p.ndim == 1:  # biases and LayerNorm gains/shifts: ignored
            assert (d[n] == 0).all(), n
            continue
        conv1d = name == "gpt2" and ".h." in n and n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        axis = 1 if conv1d else 0
        torch.testing.assert_close(filters(d[n], axis).norm(dim=1), filters(p, axis).norm(dim=1), rtol=1e-12, atol=0)
    zero = filters(d[zero_name], axis0)[3]
    nonzero = filters(d[zero_name], axis0).norm(dim=1).count_nonzero()
    assert (zero == 0).all() and nonzero == d[zero_name].shape[axis0] - 1
    # GPT-2's Conv1D filters are columns: a row-wise normalization would not give these norms
    if name == "gpt2":
        w = params["transformer.h.1.mlp.c_fc.weight"]  # [8, 32]
        assert not torch.allclose(d["transformer.h.1.mlp.c_fc.weight"].norm(dim=1), w.norm(dim=1))


def test_layer_and_no_normalization_and_ignore():
    model = tiny()
    params = dict(model.named_parameters())
    d = random_direction(model, normalization="layer", ignore=(), generator=torch.Generator().manual_seed(1))
    for n, p in params.items():
        assert d[n].norm().item() == pytest.approx(p.norm().item(), rel=1e-12), n
    raw = random_direction(model, normalization="none", ignore=(), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    for n, p in params.items():
        assert torch.equal(raw[n], torch.randn(p.shape, generator=g, dtype=torch.float64)), n
    only_pos = random_direction(model, ignore=("wpe",), generator=torch.Generator().manual_seed(1))
    assert (only_pos["wpe.weight"] == 0).all() and (only_pos["blocks.0.ln1.weight"] != 0).all()
    with pytest.raises(ValueError, match="normalization"):
        random_direction(model, normalization="filters")


# ----------------------------------------------------------------------------- curvature along eigenvectors
def small_model() -> nn.Module:
    return tiny(vocab_size=7, d_model=4, n_head=1, n_layer=1, d_mlp=8)


class _Loss(nn.Module):
    """The adapter's loss of a float64 eager-attention copy (sdpa has no double backward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.adapter = adapt(model).analysis(torch.float64)
        self.net = self.adapter.model

    def forward(self, batch):
        return self.adapter.loss(batch)


def dense_hessian(model: nn.Module, data: list[dict]) -> tuple[torch.Tensor, list[str], list[torch.Size]]:
    """Dense Hessian of the token-weighted loss over all parameters (flat, named_parameters order)."""
    wrapper = _Loss(model)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    weights = [num_targets(b) for b in data]

    def loss(theta):
        params, pos = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[f"net.{n}"] = theta[pos : pos + s.numel()].view(s)
            pos += s.numel()
        return sum(w * functional_call(wrapper, params, (b,)) for w, b in zip(weights, data, strict=True)) / sum(
            weights
        )

    H = torch.autograd.functional.hessian(loss, theta0, vectorize=True)
    return H, names, shapes


def unflatten(v: torch.Tensor, names, shapes) -> dict:
    out, pos = {}, 0
    for n, s in zip(names, shapes, strict=True):
        out[n] = v[pos : pos + s.numel()].view(s).clone()
        pos += s.numel()
    return out


@pytest.fixture(scope="module")
def hessian_case():
    model = small_model()
    data = two_batches(model)
    H, names, shapes = dense_hessian(model, data)
    evals, evecs = torch.linalg.eigh(H)
    return SimpleNamespace(model=model, data=data, H=H, names=names, shapes=shapes, evals=evals, evecs=evecs)


def test_eigenvector_slice_curvature(hessian_case):
    c = hessian_case
    h = 1e-5  # truncation error ~ (h/1e-3)^2 * 6e-3 relative here; rounding ~ eps * L / h^2 ~ 5e-6 absolute
    for idx in (-1, 0):  # the largest and the smallest (negative) eigenvalue
        lam = c.evals[idx].item()
        v = unflatten(c.evecs[:, idx], c.names, c.shapes)
        final = list(slice_1d(c.model, c.data, v, [-h, 0.0, h]))[-1]
        lm, l0, lp = final.loss.tolist()
        assert l0 == final.origin_loss
        curvature = (lp - 2 * l0 + lm) / h**2
        assert curvature == pytest.approx(lam, rel=1e-5, abs=1e-6), idx
        # the gradient term cancels in the even part; the rest is the quadratic model
        even = 0.5 * (lp + lm)
        assert even == pytest.approx(quadratic_model([h], lam, l0).item(), abs=1e-13)
    assert c.evals[0] < 0 < c.evals[-1]


def test_quadratic_model_values():
    q = quadratic_model(torch.tensor([-2.0, 0.0, 1.0]), 3.0, 0.5)
    assert q.dtype == torch.float64 and q.tolist() == [6.5, 0.5, 2.0]


def test_eigen_directions_match_dense(hessian_case):
    c = hessian_case
    before = model_state(c.model)
    dirs, lam = eigen_directions(c.model, c.data, k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert_unchanged(c.model, before)
    torch.testing.assert_close(lam, c.evals[-2:].flip(0), rtol=1e-8, atol=1e-10)
    for d, idx in zip(dirs, (-1, -2), strict=True):
        assert list(d) == c.names
        flat = torch.cat([d[n].reshape(-1) for n in c.names])
        assert flat.norm().item() == pytest.approx(1.0, abs=1e-10)
        assert abs(flat @ c.evecs[:, idx]).item() == pytest.approx(1.0, abs=1e-8)
    dirs, lam = eigen_directions(c.model, c.data, k=1, which="smallest", tol=1e-10, generator=torch.Generator())
    assert lam.item() == pytest.approx(c.evals[0].item(), rel=1e-8)


def test_eigen_directions_fused_group_gpt2():
    """Directions of GPT-2's key block land in the key columns of the fused c_attn; all else is zero."""
    model = gpt2()
    data = two_batches(model)
    a = adapt(model)
    slices = a.param_groups()["block0.attn.k"]
    params = dict(model.named_parameters())
    shapes = [s.view(params).shape for s in slices]

    def loss(theta):
        ps, pos = {n: p.detach() for n, p in params.items()}, 0
        for s, shape in zip(slices, shapes, strict=True):
            full = ps[s.name].clone()
            full[s.index] = theta[pos : pos + shape.numel()].view(shape)
            ps[s.name] = full
            pos += shape.numel()
        named = {f"net.{n}": t for n, t in ps.items()}
        w = [num_targets(b) for b in data]
        return sum(wi * functional_call(wrapper, named, (b,)) for wi, b in zip(w, data, strict=True)) / sum(w)

    wrapper = _Loss(model)
    theta0 = torch.cat([s.view(params).detach().reshape(-1) for s in slices])
    H = torch.autograd.functional.hessian(loss, theta0, vectorize=True)
    evals, evecs = torch.linalg.eigh(H)
    dirs, lam = eigen_directions(model, data, k=1, groups="block0.attn.k", tol=1e-10,
                                 generator=torch.Generator().manual_seed(0))
    assert lam.item() == pytest.approx(evals[-1].item(), rel=1e-8)
    d = dirs[0]
    piece = torch.cat([s.view(d).reshape(-1) for s in slices])
    assert abs(piece @ evecs[:, -1]).item() == pytest.approx(1.0, abs=1e-8)
    D = a.d_model
    w = d["transformer.h.0.attn.c_attn.weight"]
    assert (w[:, :D] == 0).all() and (w[:, 2 * D :] == 0).all() and w[:, D : 2 * D].abs().sum() > 0
    others = [n for n in d if n not in {s.name for s in slices}]
    assert all((d[n] == 0).all() for n in others)


# ----------------------------------------------------------------------------- PCA, projection
class CountingStateDict(Mapping):
    """A lazy state dict in memory: hands out a fresh copy per read, counts reads, describes tensors unread."""

    def __init__(self, tensors: dict):
        self._tensors = tensors
        self.reads: dict[str, int] = {}

    def __getitem__(self, key):
        self.reads[key] = self.reads.get(key, 0) + 1
        return self._tensors[key].clone()

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def __contains__(self, key):
        return key in self._tensors

    def shape_and_dtype(self, key):
        return tuple(self._tensors[key].shape), self._tensors[key].dtype


def plane_trajectory(T: int = 6, seed: int = 0):
    """Checkpoints theta_t = o + a_t u + b_t v with orthonormal (flat) u, v; the last one is o."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"w": (4, 5), "b": (7,), "e": (3, 2, 2)}
    P = sum(math.prod(s) for s in shapes.values())
    Q, _ = torch.linalg.qr(torch.randn(P, 2, generator=g, dtype=torch.float64))

    def unflat(v):
        out, pos = {}, 0
        for n, s in shapes.items():
            out[n] = v[pos : pos + math.prod(s)].view(s).clone()
            pos += math.prod(s)
        return out

    o = torch.randn(P, generator=g, dtype=torch.float64)
    coef = torch.randn(T, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    coef[-1] = 0
    traj = [unflat(o + Q @ c) for c in coef]
    return SimpleNamespace(traj=traj, u=unflat(Q[:, 0]), v=unflat(Q[:, 1]), coef=coef, origin=unflat(o), Q=Q,
                           unflat=unflat, flat=lambda d: torch.cat([d[n].reshape(-1) for n in shapes]))


def test_pca_directions_find_the_plane():
    c = plane_trajectory()
    dirs, ratio = pca_directions(c.traj, k=2)
    D = torch.stack([c.flat(d) for d in dirs], 1)  # [P, 2]
    torch.testing.assert_close(D.T @ D, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(D @ D.T, c.Q @ c.Q.T, rtol=0, atol=1e-12)  # same plane
    assert ratio.sum().item() == pytest.approx(1.0, abs=1e-12) and ratio[0] >= ratio[1]
    # the first checkpoint sits on the positive side of each direction
    assert ((c.flat(c.traj[0]) - c.flat(c.origin)) @ D >= 0).all()
    # from lazy state dicts: the same directions, each tensor read exactly twice (Gram pass, assembly pass)
    lazy = [CountingStateDict(sd) for sd in c.traj]
    dirs_f, ratio_f = pca_directions(lazy, k=2)
    torch.testing.assert_close(ratio_f, ratio, rtol=0, atol=1e-14)
    for d, e in zip(dirs, dirs_f, strict=True):
        torch.testing.assert_close(c.flat(d), c.flat(e), rtol=0, atol=1e-13)
    assert all(sd.reads == {n: 2 for n in c.traj[0]} for sd in lazy)
    with pytest.raises(ValueError, match="spans 2 dimension"):
        pca_directions(c.traj, k=3)
    with pytest.raises(ValueError, match="at least 2"):
        pca_directions(c.traj[:1])


def test_pca_centered_line():
    """A line not through the origin: centered PCA finds its direction, uncentered mixes in the offset."""
    c = plane_trajectory()
    u, w = c.Q[:, 0], c.Q[:, 1]
    o = c.flat(c.origin)
    traj = [c.unflat(o + 2 * w + t * u) for t in range(5)]
    (d,), ratio = pca_directions(traj, k=1, origin=c.origin, center=True)
    assert abs(c.flat(d) @ u).item() == pytest.approx(1.0, abs=1e-12) and ratio.item() == pytest.approx(1.0)
    (d,), _ = pca_directions(traj, k=1, origin=c.origin)
    assert abs(c.flat(d) @ u).item() < 0.99


def test_project_trajectory_recovers_coordinates():
    c = plane_trajectory()
    # non-orthogonal, non-unit directions: u + v/2 and 2v
    d1 = {n: c.u[n] + 0.5 * c.v[n] for n in c.u}
    d2 = {n: 2 * c.v[n] for n in c.v}
    xy = project_trajectory(c.traj, d1, d2, origin=c.origin)
    a, b = c.coef[:, 0], c.coef[:, 1]
    torch.testing.assert_close(xy, torch.stack([a, (b - 0.5 * a) / 2], 1), rtol=0, atol=1e-12)
    lazy, lazy_origin = [CountingStateDict(sd) for sd in c.traj], CountingStateDict(c.origin)
    assert torch.equal(project_trajectory(lazy, d1, d2, origin=lazy_origin), xy)
    assert all(sd.reads == {n: 1 for n in c.origin} for sd in [*lazy, lazy_origin])  # one pass, one read each
    dirs, _ = pca_directions(c.traj)
    xy = project_trajectory(c.traj, dirs[0], dirs[1], origin=c.traj[-1])
    recon = [c.flat(c.origin) + xy[t, 0] * c.flat(dirs[0]) + xy[t, 1] * c.flat(dirs[1]) for t in range(len(c.traj))]
    for t, r in enumerate(recon):
        torch.testing.assert_close(r, c.flat(c.traj[t]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        project_trajectory(c.traj, d1, {n: 3 * t for n, t in d1.items()}, origin=c.origin)


# ----------------------------------------------------------------------------- checkpoint / resume
def test_resume_from_checkpoint_equals_uninterrupted():
    model = tiny()
    data = two_batches(model)
    d1, d2 = pair_of_directions(model)
    alphas, betas = [-1.0, 0.0, 1.0], [-0.5, 0.5]
    full = list(slice_2d(model, data, d1, d2, alphas, betas, points_per_call=2))[-1]
    first = next(iter(slice_2d(model, data, d1, d2, alphas, betas, points_per_call=2)))
    assert first.rows_done == 1
    meta = json.loads(json.dumps(first.meta(), allow_nan=False))
    ckpt = SimpleNamespace(tensors={k: v.clone() for k, v in first.state_dict().items()}, meta=meta)
    restored = LandscapeSlice.from_state(ckpt.tensors, ckpt.meta)
    assert restored.rows_done == 1 and restored.origin_loss == first.origin_loss
    rest = list(slice_2d(model, data, d1, d2, alphas, betas, points_per_call=2, resume=ckpt))
    assert [s.rows_done for s in rest] == [2, 3]
    torch.testing.assert_close(rest[-1].loss, full.loss, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="another grid"):
        slice_2d(model, data, d1, d2, [0.0, 1.0, 2.0], betas, resume=ckpt)
    other = moved(model, [(0.5, d1)])
    with pytest.raises(ValueError, match="another model"):
        next(iter(slice_2d(other, data, d1, d2, alphas, betas, resume=ckpt)))


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    model = tiny()
    data = two_batches(model)
    d1, d2 = pair_of_directions(model)
    with pytest.raises(ValueError, match="alphas is empty"):
        slice_1d(model, data, d1, [])
    with pytest.raises(ValueError, match="betas is empty"):
        slice_2d(model, data, d1, d2, [0.0], torch.tensor([]))
    with pytest.raises(ValueError, match="non-finite"):
        slice_1d(model, data, d1, [0.0, math.inf])
    missing = {n: t for n, t in d1.items() if n != "blocks.1.attn.k.weight"}
    with pytest.raises(ValueError, match=r"lacks parameter.*blocks\.1\.attn\.k\.weight"):
        slice_1d(model, data, missing, [0.0])
    with pytest.raises(ValueError, match=r"extra_thing"):
        slice_2d(model, data, d1, {**d2, "extra_thing": torch.zeros(2)}, [0.0], [0.0])
    bad_shape = {**d1, "head.weight": d1["head.weight"].T.contiguous()}
    with pytest.raises(ValueError, match=r"head\.weight.*shape"):
        slice_1d(model, data, bad_shape, [0.0])
    nan = {n: t.clone() for n, t in d1.items()}
    nan["wpe.weight"][1, 1] = math.nan
    with pytest.raises(ValueError, match=r"wpe\.weight.*non-finite"):
        slice_2d(model, data, d1, nan, [0.0], [0.0])
    inf = {n: t.clone() for n, t in d1.items()}
    inf["blocks.0.mlp.fc_in.weight"][0, 0] = -math.inf
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc_in\.weight.*non-finite"):
        slice_1d(model, data, inf, [0.0])
    with pytest.raises(ValueError, match="points_per_call"):
        slice_1d(model, data, d1, [0.0], points_per_call=0)
    with pytest.raises(ValueError, match="no batches"):
        slice_1d(model, [], d1, [0.0])
    with pytest.raises(ValueError, match=r"blocks\.0\.ln1\.weight.*shape"):
        checkpoint_direction(model, {**model.state_dict(), "blocks.0.ln1.weight": torch.zeros(3)})
    with pytest.raises(TypeError, match=r"checkpoint b.*str.*open_state_dict"):
        checkpoint_direction(model, "ckpt.safetensors")  # files are read by tscope_widgets.export
    with pytest.raises(TypeError, match=r"trajectory\[1\].*'head\.weight' must be a tensor"):
        pca_directions([model.state_dict(), {**model.state_dict(), "head.weight": [0.0]}], reference=model)
