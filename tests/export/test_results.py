"""Results files: bit-for-bit round trips of Welford statistics and named results through safetensors, JSON, npz."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.torch
import torch

from tscope_widgets.export import load_extra_tensors, load_npz, load_statistics, save_npz, save_statistics
from tscope_widgets.export.results import RESULTS_FORMAT, load_results, save_results
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


# ----- generic results: save_results / load_results ------------------------------------------------
def test_results_round_trip_is_bit_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 4, generator=g, dtype=torch.float64)
    values[0, 0], values[1, 1], values[2, 2] = float("nan"), float("inf"), -0.0
    tensors = {
        "eigenvalues": torch.tensor([-1.5, 2.0, 1e300], dtype=torch.float64),
        "blocks.frobenius": values,
        "data.input_ids": torch.randint(0, 9, (5, 7), generator=g),
        "single": torch.randn(2, generator=g, dtype=torch.float32),
        "view": values[:, 1],  # a non-contiguous view is stored as its values
    }
    meta = {"summary": {"sharpness": 2.0, "condition_number": math.inf}, "labels": ("a", "b"), "n": np.int64(3)}
    path = save_results(tmp_path, "curvature", tensors, meta)
    assert path == tmp_path / "curvature.safetensors"
    loaded, info = load_results(tmp_path)
    assert list(loaded) == list(tensors)
    for key, t in tensors.items():
        assert loaded[key].dtype == t.dtype and loaded[key].shape == t.shape, key
        assert torch.equal(bits(loaded[key]), bits(t.contiguous())), key
    assert info["format"] == RESULTS_FORMAT and info["results"] == "curvature"
    assert info["summary"] == {"sharpness": 2.0, "condition_number": "inf"} and info["labels"] == ["a", "b"]
    assert info["n"] == 3 and info["tensors"]["data.input_ids"] == {"shape": [5, 7], "dtype": "int64"}
    # readable without this package: safetensors + JSON
    raw = safetensors.torch.load_file(str(path))
    assert torch.equal(raw["eigenvalues"], tensors["eigenvalues"])
    assert json.loads((tmp_path / "meta.json").read_text()) == info


def test_results_refuse_bad_inputs_and_files(tmp_path):
    t = {"x": torch.zeros(2)}
    with pytest.raises(ValueError, match="must be an identifier"):
        save_results(tmp_path, "../escape", t)
    with pytest.raises(ValueError, match="non-empty mapping"):
        save_results(tmp_path, "r", {})
    with pytest.raises(TypeError, match=r"tensors\['x'\] must be a torch.Tensor, got list"):
        save_results(tmp_path, "r", {"x": [1.0]})
    with pytest.raises(TypeError, match="JSON cannot hold"):
        save_results(tmp_path, "r", t, {"bad": object()})
    with pytest.raises(FileNotFoundError, match="meta.json not found"):
        load_results(tmp_path / "nothing")
    save_statistics(tmp_path / "stats", make_stats(), {})
    with pytest.raises(ValueError, match="not a tscope_widgets results description"):
        load_results(tmp_path / "stats")
    save_results(tmp_path / "r", "landscape", {"loss": torch.ones(2, 2), "alphas": torch.zeros(2)})
    meta_path = tmp_path / "r" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tensors"]["loss"]["shape"] = [4]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"tensor 'loss' is .*meta.json says"):
        load_results(tmp_path / "r")
    del meta["tensors"]["alphas"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"holds \['alphas', 'loss'\], .* lists \['loss'\]"):
        load_results(tmp_path / "r")
    (tmp_path / "r" / "landscape.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="landscape.safetensors not found"):
        load_results(tmp_path / "r")
