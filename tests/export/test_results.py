"""Results files: bit-for-bit round trips of Welford statistics through safetensors, JSON and npz."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch

from tscope_widgets.export import load_extra_tensors, load_npz, load_statistics, save_npz, save_statistics
from tscope_widgets.kernels.welford import WelfordState


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern, so NaN payloads, signed zeros and infinities compare exactly."""
    return t.contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def assert_same_state(a: WelfordState, b: WelfordState) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
        assert torch.equal(bits(sa[key]), bits(sb[key])), key


def make_stats(dtype=torch.float64) -> dict:
    """Three layers of 5x5 states; masks leave some cells with 0 and 1 observations."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in (0, 1, "final"):
        state = WelfordState((5, 5), dtype=dtype)
        for step in range(3):
            x = torch.randn(4, 5, 5, generator=g, dtype=torch.float64).exp() * 1e3
            mask = torch.rand(4, 5, 5, generator=g) > 0.4
            mask[:, 0, 4] = False  # never observed
            mask[:, 4, 0] = False
            mask[0, 4, 0] = step == 0  # observed once
            state.update(x, mask)
        out[layer] = state
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_statistics_round_trip_is_bit_exact(tmp_path, dtype):
    stats = make_stats(dtype)
    meta = {
        "method": "exact",
        "token_labels": ["BOS", "a", "b", "c", "d"],
        "samples": 12,
        "seconds": 1.5,
        "num_layers": 2,
        "seq_len": np.int64(5),
    }
    save_statistics(tmp_path, stats, meta)
    loaded, info = load_statistics(tmp_path)
    assert list(loaded) == [0, 1, "final"]
    for layer, state in stats.items():
        assert loaded[layer].dtype == dtype
        assert_same_state(state, loaded[layer])
        assert torch.equal(loaded[layer].mean.isnan(), state.count == 0)
    assert loaded[-1] is loaded[1]  # meta["num_layers"] lets negative indices answer
    assert info["layers"] == [0, 1, "final"] and info["method"] == "exact" and info["seq_len"] == 5
    assert info["token_labels"] == meta["token_labels"]
    assert {"torch", "tscope_widgets", "numpy", "python"} <= set(info["versions"])
    assert json.loads((tmp_path / "meta.json").read_text()) == info


def test_statistics_file_is_readable_without_this_package(tmp_path):
    stats = make_stats()
    save_statistics(tmp_path, stats, {})
    raw = safetensors.torch.load_file(str(tmp_path / "statistics.safetensors"))
    assert set(raw) == {
        f"layer{layer}.{k}"
        for layer in (0, 1, "final")
        for k in ("count", "mean", "m2", "min", "max", "rows", "std")
    }
    std = raw["layerfinal.std"]
    assert torch.equal(std.isnan(), stats["final"].count < 2)
    torch.testing.assert_close(std, stats["final"].std, equal_nan=True, rtol=0, atol=0)
    assert raw["layer0.count"][0, 4] == 0 and raw["layer0.count"][4, 0] == 1


def test_extra_tensors_round_trip(tmp_path):
    ids = torch.arange(12).reshape(3, 4)
    save_statistics(tmp_path, make_stats(), {}, extra_tensors={"example_ids": ids})
    assert torch.equal(load_extra_tensors(tmp_path)["example_ids"], ids)
    stats, _ = load_statistics(tmp_path)
    assert list(stats) == [0, 1, "final"]


def test_npz_round_trip(tmp_path):
    stats = make_stats()
    path = save_npz(tmp_path / "stats.npz", stats)
    with np.load(path, allow_pickle=False) as data:
        assert data["layer1.mean"].dtype == np.float64
    loaded = load_npz(path)
    for layer, state in stats.items():
        assert_same_state(state, loaded[layer])
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        save_npz(tmp_path / "stats.bin", stats)


def test_bad_inputs_and_files(tmp_path):
    stats = make_stats()
    with pytest.raises(TypeError, match=r"meta\.model is a object"):
        save_statistics(tmp_path, stats, {"model": object()})
    with pytest.raises(TypeError, match="must be a WelfordState"):
        save_statistics(tmp_path, {0: torch.zeros(3)}, {})
    with pytest.raises(ValueError, match="non-empty"):
        save_statistics(tmp_path, {}, {})
    with pytest.raises(ValueError, match="layer label -1"):
        save_statistics(tmp_path, {-1: stats[0]}, {})
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_statistics(tmp_path / "missing")
    save_statistics(tmp_path, stats, {})
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tscope_widgets statistics"):
        load_statistics(tmp_path)
