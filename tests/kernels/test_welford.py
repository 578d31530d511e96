"""WelfordState against numpy references, merge properties (hypothesis), persistence and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from tscope_widgets.kernels.welford import WelfordState

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(x: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-cell statistics by looping over cells with plain numpy (the dense reference)."""
    if mask is None:
        mask = np.ones(x.shape, dtype=bool)
    mask = np.broadcast_to(mask, x.shape)
    cells = x.shape[1:]
    out = {k: np.full(cells, np.nan) for k in ("mean", "var", "min", "max")}
    out["count"] = np.zeros(cells)
    for idx in np.ndindex(*cells):
        v = x[(slice(None), *idx)][mask[(slice(None), *idx)]]
        out["count"][idx] = v.size
        if v.size:
            out["mean"][idx], out["min"][idx], out["max"][idx] = v.mean(), v.min(), v.max()
        if v.size >= 2:
            out["var"][idx] = np.var(v, ddof=1)
    out["std"] = np.sqrt(out["var"])
    return out


def _assert_matches(state: WelfordState, ref: dict[str, np.ndarray], rtol=1e-12, atol=0.0) -> None:
    np.testing.assert_array_equal(state.count.numpy(), ref["count"])
    for k in ("min", "max"):
        np.testing.assert_array_equal(getattr(state, k).numpy(), ref[k], err_msg=k)
    for k in ("mean", "var", "std"):
        np.testing.assert_allclose(getattr(state, k).numpy(), ref[k], rtol=rtol, atol=atol, err_msg=k)


def _bits_equal(a: WelfordState, b: WelfordState) -> bool:
    da, db = a.state_dict(), b.state_dict()
    return da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)


# ---------------------------------------------------------------- numbers vs numpy
def test_unmasked_batches_of_varying_size_match_numpy():
    x = torch.randn(101, 3, 4, generator=_gen(0), dtype=F64) * 3 + 2
    state = WelfordState((3, 4))
    sizes = [1, 0, 7, 2, 30, 1, 60]
    assert sum(sizes) == x.shape[0]
    for chunk in torch.split(x, sizes):
        state.update(chunk)
    _assert_matches(state, _reference(x.numpy()))
    assert state.total_count == 101
    assert state.shape == (3, 4) and state.dtype == F64 and state.device == torch.device("cpu")
    assert state.count.dtype == F64
    np.testing.assert_allclose(state.m2.numpy(), 100 * np.var(x.numpy(), 0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(state.sem.numpy(), np.std(x.numpy(), 0, ddof=1) / math.sqrt(101), rtol=1e-12)
    cv_ref = np.std(x.numpy(), 0, ddof=1) / np.abs(x.numpy().mean(0))
    np.testing.assert_allclose(state.cv.numpy(), cv_ref, rtol=1e-12)


def test_many_batches_equal_one_pass():
    x = torch.rand(500, 6, generator=_gen(1), dtype=F64) * 10 - 3
    one = WelfordState(6)
    one.update(x)
    many = WelfordState(6)
    sizes = torch.randint(0, 20, (200,), generator=_gen(2)).tolist()
    start = 0
    for n in sizes:
        many.update(x[start : start + n])
        start = min(start + n, x.shape[0])
    many.update(x[start:])
    assert many.total_count == one.total_count == 500
    torch.testing.assert_close(many.mean, one.mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(many.var, one.var, rtol=1e-12, atol=0)
    assert torch.equal(many.min, one.min) and torch.equal(many.max, one.max)


@pytest.mark.parametrize("batch", [1000, 37])
def test_large_offset_keeps_variance(batch):
    x = 1e8 + torch.randn(1000, 3, generator=_gen(3), dtype=F64)
    state = WelfordState(3)
    for chunk in x.split(batch):
        state.update(chunk)
    xn = x.numpy()
    np.testing.assert_allclose(state.var.numpy(), np.var(xn, 0, ddof=1), rtol=1e-7)
    # x - 1e8 is exact in float64 (Sterbenz), so this is the variance of the data to full precision.
    np.testing.assert_allclose(state.var.numpy(), np.var(xn - 1e8, 0, ddof=1), rtol=1e-7)
    np.testing.assert_allclose(state.mean.numpy(), 1e8 + (xn - 1e8).mean(0), rtol=1e-15)
    # The naive sum-of-squares formula loses the variance entirely here, so the test has teeth.
    naive = (xn**2).sum(0) / 999 - xn.mean(0) ** 2 * 1000 / 999
    assert np.max(np.abs(naive / np.var(xn, 0, ddof=1) - 1)) > 1e-3


def test_masks_give_per_cell_counts():
    g = _gen(4)
    x = torch.randn(40, 5, 5, generator=g, dtype=F64)
    mask = torch.rand(40, 5, 5, generator=g) < 0.6
    mask[:, 0, 0] = False  # fully masked cell
    mask[:, 0, 1] = False
    mask[7, 0, 1] = True  # exactly one value
    mask[:, 0, 2] = False
    mask[[3, 9], 0, 2] = True  # exactly two values
    x = torch.where(mask, x, float("nan"))  # padding NaNs are fine when masked
    state = WelfordState((5, 5))
    for xs, ms in zip(x.split(9), mask.split(9), strict=True):
        state.update(xs, ms)
    ref = _reference(np.nan_to_num(x.numpy()), mask.numpy())
    _assert_matches(state, ref)
    assert state.count[0, 0] == 0 and state.count[0, 1] == 1 and state.count[0, 2] == 2
    for k in ("mean", "min", "max", "var", "std", "cv", "sem"):
        assert torch.isnan(getattr(state, k)[0, 0]), k
    assert state.mean[0, 1] == x[7, 0, 1] and state.min[0, 1] == state.max[0, 1] == x[7, 0, 1]
    assert torch.isnan(state.std[0, 1]) and torch.isnan(state.var[0, 1])
    assert torch.isfinite(state.std[0, 2])
    assert state.total_count == 40
    # Counts differ across cells.
    assert len(torch.unique(state.count)) > 5


def test_mask_broadcasts_over_trailing_dims():
    x = torch.randn(12, 4, generator=_gen(5), dtype=F64)
    row_mask = torch.arange(12) % 3 != 0
    a = WelfordState(4)
    a.update(x, row_mask[:, None])
    b = WelfordState(4)
    b.update(x[row_mask])
    assert torch.equal(a.count, b.count)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(a.var, b.var, rtol=1e-13, atol=0)
    assert a.total_count == 12 and b.total_count == 8


def test_scalar_cells_and_input_dtypes():
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    st_int = WelfordState(())
    st_int.update(torch.tensor(values))
    st_f32 = WelfordState(())
    st_f32.update(torch.tensor(values, dtype=torch.float32))
    for s in (st_int, st_f32):
        assert s.mean.dtype == F64
        assert s.mean.item() == pytest.approx(np.mean(values), rel=1e-15)
        assert s.var.item() == pytest.approx(np.var(values, ddof=1), rel=1e-14)
        assert s.min.item() == 1 and s.max.item() == 9 and s.count.item() == 8


def test_float32_state():
    x = torch.randn(64, 3, generator=_gen(6), dtype=F64)
    s = WelfordState(3, dtype=torch.float32)
    s.update(x)
    assert s.mean.dtype == torch.float32 and s.count.dtype == F64
    np.testing.assert_allclose(s.var.numpy(), np.var(x.numpy(), 0, ddof=1), rtol=1e-5)


def test_empty_batch_is_noop_and_fresh_state_is_nan():
    s = WelfordState((2, 3))
    before = s.state_dict()
    s.update(torch.empty(0, 2, 3))
    s.update(torch.empty(0, 2, 3), torch.empty(0, 2, 3, dtype=torch.bool))
    assert all(torch.equal(before[k], v) for k, v in s.state_dict().items())
    assert s.total_count == 0
    assert torch.isnan(s.mean).all() and torch.isnan(s.min).all() and torch.isnan(s.std).all()
    assert torch.equal(s.count, torch.zeros(2, 3, dtype=F64))


# ---------------------------------------------------------------- merging
def test_merge_identity_and_copy_are_bit_exact():
    x = torch.randn(20, 4, generator=_gen(7), dtype=F64)
    mask = torch.rand(20, 4, generator=_gen(8)) < 0.5
    a = WelfordState(4)
    a.update(x, mask)
    a_before = a.clone()
    assert a.merge(WelfordState(4)) is a
    assert _bits_equal(a, a_before)
    empty = WelfordState(4)
    empty.merge(a)
    assert _bits_equal(empty, a)


def test_merge_all_and_inputs_untouched():
    x = torch.randn(30, 2, generator=_gen(9), dtype=F64)
    parts = []
    for chunk in x.split(7):
        s = WelfordState(2)
        s.update(chunk)
        parts.append(s)
    snapshots = [p.clone() for p in parts]
    total = WelfordState.merge_all(parts)
    assert all(_bits_equal(p, q) for p, q in zip(parts, snapshots, strict=True))
    _assert_matches(total, _reference(x.numpy()), rtol=1e-13)
    assert total.total_count == 30


def _merge_tree(states: list[WelfordState], data: st.DataObject) -> WelfordState:
    """Merge ``states`` in an association order drawn by hypothesis (a random binary tree)."""
    if len(states) == 1:
        return states[0].clone()
    k = data.draw(st.integers(1, len(states) - 1))
    return _merge_tree(states[:k], data).merge(_merge_tree(states[k:], data))


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=3, max_size=3), min_size=1, max_size=40
    ),
    data=st.data(),
)
def test_merge_any_split_any_order_equals_one_pass(values, data):
    x = torch.tensor(values, dtype=F64)
    n = x.shape[0]
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=3 * n, max_size=3 * n))).view(n, 3)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    shards = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        s = WelfordState(3)
        s.update(x[lo:hi], mask[lo:hi])
        shards.append(s)
    merged = _merge_tree(shards, data)
    one = WelfordState(3)
    one.update(x, mask)

    scale = max(1.0, float(x.abs().max()))
    assert merged.total_count == one.total_count == n
    assert torch.equal(merged.count, one.count)
    assert torch.equal(merged.min.nan_to_num(7.5), one.min.nan_to_num(7.5))
    assert torch.equal(merged.max.nan_to_num(7.5), one.max.nan_to_num(7.5))
    torch.testing.assert_close(merged.mean, one.mean, rtol=1e-12, atol=1e-12 * scale, equal_nan=True)
    torch.testing.assert_close(merged.var, one.var, rtol=1e-12, atol=1e-12 * scale**2, equal_nan=True)
    _assert_matches(merged, _reference(x.numpy(), mask.numpy()), rtol=1e-12, atol=1e-12 * scale**2)


# ---------------------------------------------------------------- persistence
def test_state_dict_round_trip_through_safetensors(tmp_path):
    x = torch.randn(25, 3, 3, generator=_gen(10), dtype=F64)
    mask = torch.rand(25, 3, 3, generator=_gen(11)) < 0.7
    mask[:, 1, 1] = False  # a cell with count 0 (min/max stored as +-inf)
    s = WelfordState((3, 3))
    s.update(x[:20], mask[:20])
    sd = s.state_dict()
    assert set(sd) == {"count", "mean", "m2", "min", "max", "rows"}
    assert all(isinstance(t, torch.Tensor) and t.is_contiguous() for t in sd.values())
    assert sd["rows"].dtype == torch.int64 and sd["rows"].numel() == 1
    save_file(sd, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)

    r = WelfordState.from_state_dict(loaded)
    assert _bits_equal(r, s) and r.total_count == 20 and r.shape == (3, 3)
    q = WelfordState((3, 3))
    q.load_state_dict(loaded)
    assert _bits_equal(q, s)
    # Continuing after a reload is bit-identical to continuing the original.
    s.update(x[20:], mask[20:])
    r.update(x[20:], mask[20:])
    assert _bits_equal(r, s)
    # state_dict is a copy: later updates do not change it.
    assert torch.equal(sd["count"], loaded["count"])


def test_clone_and_to():
    s = WelfordState(2)
    s.update(torch.ones(3, 2))
    c = s.clone()
    c.update(torch.zeros(1, 2))
    assert s.total_count == 3 and c.total_count == 4
    assert s.to("cpu") is s
    assert "WelfordState(shape=(2,)" in repr(s)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    s = WelfordState((2, 3))
    with pytest.raises(ValueError, match=r"\[N, 2, 3\].*got \[4, 3, 2\]"):
        s.update(torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="got \\[2, 3\\]"):
        s.update(torch.zeros(2, 3))
    x = torch.zeros(4, 2, 3)
    x[0, 0, 0] = float("nan")
    x[1, 0, 0] = float("inf")
    x[2, 1, 2] = float("-inf")
    with pytest.raises(ValueError, match="3 unmasked non-finite value.*in 2 of 6 cell"):
        s.update(x)
    mask = torch.ones(4, 2, 3, dtype=torch.bool)
    mask[0, 0, 0] = False
    with pytest.raises(ValueError, match="2 unmasked non-finite"):
        s.update(x, mask)
    assert s.total_count == 0  # failed updates leave the state untouched
    with pytest.raises(TypeError, match="bool"):
        s.update(torch.zeros(4, 2, 3), torch.ones(4, 2, 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        s.update(torch.zeros(4, 2, 3), torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.Tensor"):
        s.update(np.zeros((4, 2, 3)))
    with pytest.raises(TypeError, match="real"):
        s.update(torch.zeros(4, 2, 3, dtype=torch.complex128))
    with pytest.raises(TypeError, match="floating"):
        WelfordState(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="non-negative"):
        WelfordState((2, -1))


def test_bad_merge_and_state_dict_raise():
    s = WelfordState(3)
    with pytest.raises(ValueError, match=r"shapes: expected \(3,\), got \(4,\)"):
        s.merge(WelfordState(4))
    with pytest.raises(ValueError, match="dtypes"):
        s.merge(WelfordState(3, dtype=torch.float32))
    with pytest.raises(TypeError, match="WelfordState"):
        s.merge(torch.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        WelfordState.merge_all([])
    good = WelfordState(3).state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['m2'\]"):
        s.load_state_dict({k: v for k, v in good.items() if k != "m2"})
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        s.load_state_dict({**good, "extra": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"state\['mean'\] has shape \[4\], expected \[3\]"):
        s.load_state_dict({**good, "mean": torch.zeros(4, dtype=F64)})
    with pytest.raises(ValueError, match="count"):
        s.load_state_dict({**good, "count": torch.tensor([1.0, -1.0, 0.0], dtype=F64)})
    with pytest.raises(ValueError, match="count"):
        s.load_state_dict({**good, "count": torch.tensor([0.5, 0.0, 0.0], dtype=F64)})
    with pytest.raises(ValueError, match="m2"):
        s.load_state_dict({**good, "m2": torch.tensor([-1.0, 0.0, 0.0], dtype=F64)})
    with pytest.raises(ValueError, match="rows"):
        s.load_state_dict({**good, "rows": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match="rows"):
        s.load_state_dict({**good, "rows": torch.tensor(-1)})
    with pytest.raises(ValueError, match="mean"):
        WelfordState.from_state_dict({"count": torch.zeros(3)})


# ---------------------------------------------------------------- flat packing and growing (for distributed merges)
def _old_pack(state: WelfordState) -> torch.Tensor:
    """The packing distributed.py used before WelfordState.to_flat (through the state_dict keys)."""
    sd = state.state_dict()
    parts = [sd[k].reshape(-1).to(torch.float64) for k in ("count", "mean", "m2", "min", "max")]
    return torch.cat([*(p.cpu() for p in parts), sd["rows"].reshape(1).to(torch.float64)])


def _old_unpack(flat, shape, dtype, device) -> WelfordState:
    pieces = flat[:-1].reshape(5, *shape)
    sd = {k: piece.to(torch.float64 if k == "count" else dtype)
          for k, piece in zip(("count", "mean", "m2", "min", "max"), pieces, strict=True)}
    sd["rows"] = flat[-1].to(torch.int64)
    return WelfordState.from_state_dict(sd, device=device)


def _old_grow(state: WelfordState, seq_len: int) -> WelfordState:
    pad = seq_len - state.shape[-1]
    if pad == 0:
        return state
    fill = {"count": 0.0, "mean": 0.0, "m2": 0.0, "min": float("inf"), "max": float("-inf")}
    sd = state.state_dict()
    sd.update({k: torch.nn.functional.pad(sd[k], (0, pad, 0, pad), value=v) for k, v in fill.items()})
    return WelfordState.from_state_dict(sd, device=state.device)


def _masked_state(shape, dtype=F64, seed=0, rows=7) -> WelfordState:
    g = _gen(seed)
    st_ = WelfordState(shape, dtype=dtype)
    x = torch.randn(rows, *shape, generator=g, dtype=F64).to(dtype) * 3 + 1
    mask = torch.rand(rows, *shape, generator=g) < 0.6
    if shape:
        mask.reshape(rows, -1)[:, 0] = False  # an empty cell (count 0, ±inf min/max)
    st_.update(x, mask)
    return st_


def _assert_same_state(a: WelfordState, b: WelfordState) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
    da, db = a.state_dict(), b.state_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert da[k].dtype == db[k].dtype and torch.equal(da[k], db[k]), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4), (3,), ()])
def test_to_flat_and_from_flat_equal_the_old_packing(shape, dtype):
    state = _masked_state(shape, dtype)
    flat = state.to_flat()
    assert flat.dtype == torch.float64 and flat.device.type == "cpu" and flat.shape == (5 * math.prod(shape) + 1,)
    assert torch.equal(flat, _old_pack(state))
    assert bool(torch.isinf(flat).any()) or not shape  # empty cells travel as ±inf
    back = WelfordState.from_flat(flat, shape, dtype, state.device)
    _assert_same_state(back, _old_unpack(flat, shape, dtype, state.device))
    _assert_same_state(back, state)
    _assert_same_state(WelfordState.from_flat(flat, shape, dtype), state)  # device defaults to flat's


def test_from_flat_rejects_a_wrong_length():
    flat = _masked_state((2, 2)).to_flat()
    with pytest.raises(ValueError, match="has 21 entries"):
        WelfordState.from_flat(flat[:-1], (2, 2))
    with pytest.raises(ValueError, match="has 21 entries"):
        WelfordState.from_flat(flat.reshape(1, -1), (2, 2))
    bad = flat.clone()
    bad[0] = -1.0  # a negative count
    with pytest.raises(ValueError, match="count"):
        WelfordState.from_flat(bad, (2, 2))


@pytest.mark.parametrize("size", [4, 6, 9])
def test_grown_equals_the_old_padding_and_merges_like_one_pass(size):
    state = _masked_state((4, 4), seed=3)
    grown = state.grown(size)
    _assert_same_state(grown, _old_grow(state, size))
    assert grown is not state and grown.total_count == state.total_count
    assert torch.equal(grown.count[4:, :], torch.zeros(size - 4, size, dtype=F64))
    assert torch.equal(grown.count[:, 4:], torch.zeros(size, size - 4, dtype=F64))
    # A state of a shorter sample set, grown, merges with a longer one as one pass over both would.
    g = _gen(4)
    long = torch.randn(5, size, size, generator=g, dtype=F64)
    one_pass = WelfordState((size, size))
    one_pass.update(long)
    short_data = torch.randn(3, 4, 4, generator=g, dtype=F64)
    padded = torch.full((3, size, size), float("nan"), dtype=F64)
    padded[:, :4, :4] = short_data
    one_pass.update(padded, ~torch.isnan(padded))
    short, rest = WelfordState((4, 4)), WelfordState((size, size))
    short.update(short_data)
    rest.update(long)
    merged = rest.merge(short.grown(size))
    torch.testing.assert_close(merged.mean, one_pass.mean, rtol=1e-14, atol=1e-14, equal_nan=True)
    torch.testing.assert_close(merged.var, one_pass.var, rtol=1e-13, atol=1e-14, equal_nan=True)
    assert torch.equal(merged.count, one_pass.count)
    assert torch.equal(merged.min, one_pass.min) and torch.equal(merged.max, one_pass.max)


def test_grown_rejects_a_smaller_grid_or_a_non_square_state():
    with pytest.raises(ValueError, match="size must be an int >= 4"):
        _masked_state((4, 4)).grown(3)
    with pytest.raises(ValueError, match="size must be an int"):
        _masked_state((4, 4)).grown(5.0)
    with pytest.raises(ValueError, match="square"):
        _masked_state((4, 3)).grown(5)
    with pytest.raises(ValueError, match="square"):
        _masked_state((4,)).grown(5)
