"""Directions files: bit-for-bit round trips through safetensors + JSON, and clear errors for other files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from tests.model_zoo import gpt2
from tscope_widgets.export.directions import load_directions, save_directions
from tscope_widgets.export.lazy_state_dict import open_state_dict
from tscope_widgets.kernels.landscape import random_direction


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern, so NaN payloads, signed zeros and infinities compare exactly."""
    return t.contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def two_directions() -> tuple[dict, dict]:
    model = gpt2()
    g = torch.Generator().manual_seed(0)
    return random_direction(model, generator=g), random_direction(model, generator=g)


def test_save_load_bit_for_bit(tmp_path):
    d1, d2 = two_directions()
    d2 = {n: t.float() for n, t in d2.items()}  # a float32 direction keeps its dtype
    d1["transformer.wpe.weight"][0, 0] = -0.0
    meta = {"kind": "random", "normalization": "filter", "seed": 0}
    path = tmp_path / "sub" / "dirs.safetensors"
    assert save_directions(path, {"d1": d1, "d2": d2}, meta) == path
    loaded, meta2 = load_directions(path)
    assert meta2 == meta and list(loaded) == ["d1", "d2"]
    for name, orig in (("d1", d1), ("d2", d2)):
        assert list(loaded[name]) == list(orig)
        for n, t in orig.items():
            got = loaded[name][n]
            assert got.dtype == t.dtype and got.shape == t.shape and got.device.type == "cpu"
            assert torch.equal(bits(got), bits(t)), n
    assert [p.name for p in path.parent.iterdir()] == ["dirs.safetensors"]  # no temporary file left


def test_save_refuses_bad_input(tmp_path):
    d1, _ = two_directions()
    with pytest.raises(ValueError, match="without '/'"):
        save_directions(tmp_path / "bad.safetensors", {"a/b": d1})
    with pytest.raises(ValueError, match="JSON"):
        save_directions(tmp_path / "bad.safetensors", {"a": d1}, {"x": math.nan})
    with pytest.raises(ValueError, match="non-empty dict"):
        save_directions(tmp_path / "bad.safetensors", {})
    with pytest.raises(ValueError, match=r"'a'.*'w' must map a name to a tensor"):
        save_directions(tmp_path / "bad.safetensors", {"a": {"w": [1.0]}})
    assert not list(tmp_path.iterdir())  # nothing written


def test_load_refuses_other_files(tmp_path):
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a tscope_widgets.directions"):
        load_directions(tmp_path / "other.safetensors")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    with pytest.raises(ValueError, match="cannot read it as a safetensors file"):
        load_directions(tmp_path / "text.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_directions(tmp_path / "missing.safetensors")
    header = {"format": "tscope_widgets.directions", "version": "2", "order": "{}", "meta": "{}"}
    save_file({"a/w": torch.zeros(2)}, tmp_path / "v2.safetensors", metadata=header)
    with pytest.raises(ValueError, match="version '2'; this code reads 1"):
        load_directions(tmp_path / "v2.safetensors")
    header.update(version="1", order=json.dumps({"a": ["w", "b"]}))
    save_file({"a/w": torch.zeros(2)}, tmp_path / "short.safetensors", metadata=header)
    with pytest.raises(ValueError, match="header lists 2 tensors, file holds 1"):
        load_directions(tmp_path / "short.safetensors")
    header.update(order="{not json")
    save_file({"a/w": torch.zeros(2)}, tmp_path / "broken.safetensors", metadata=header)
    with pytest.raises(ValueError, match="bad header"):
        load_directions(tmp_path / "broken.safetensors")


def test_overwrite_keeps_an_open_reader_on_the_old_file(tmp_path):
    path = tmp_path / "dirs.safetensors"
    old = {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3)}
    save_directions(path, {"d": old})
    with open_state_dict(path) as reader:
        save_directions(path, {"d": {"w": torch.zeros(4)}, "e": {"v": torch.ones(1)}})  # replaced, not truncated
        assert torch.equal(reader["d/w"], old["w"])
    new, _ = load_directions(path)
    assert list(new) == ["d", "e"] and torch.equal(new["d"]["w"], torch.zeros(4))
