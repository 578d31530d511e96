"""Lazy state dicts over safetensors files: exact values, header-only descriptions, and landscape kernels
that stream checkpoint files one tensor at a time."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file, save_model

from tests.kernels.landscape.test_landscape import moved, plane_trajectory
from tests.model_zoo import gpt2
from tscope_widgets.export.lazy_state_dict import LazyStateDict, open_state_dict
from tscope_widgets.kernels.landscape import (
    checkpoint_direction,
    pca_directions,
    project_trajectory,
    random_direction,
)


def test_mapping_reads_tensors_exactly(tmp_path):
    tensors = {
        "b": torch.tensor([-0.0, float("nan"), float("inf")], dtype=torch.float64),
        "a": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "h": torch.randn(2, 2, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
        "m": torch.tensor([True, False]),
    }
    save_file(tensors, tmp_path / "sd.safetensors", metadata={"note": "x"})
    sd = open_state_dict(tmp_path / "sd.safetensors")
    assert isinstance(sd, LazyStateDict) and len(sd) == 4 and set(sd) == set(tensors)
    assert sd.metadata == {"note": "x"} and "a" in sd and "z" not in sd
    for key, t in tensors.items():
        assert sd.shape_and_dtype(key) == (tuple(t.shape), t.dtype)
        got = sd[key]
        assert got.dtype == t.dtype and got.shape == t.shape and got.device.type == "cpu"
        assert torch.equal(got.view(torch.uint8), t.view(torch.uint8)), key  # raw bytes
    assert sd["a"] is not sd["a"]  # a fresh tensor per read
    with pytest.raises(KeyError, match="holds no tensor 'z'"):
        sd["z"]
    with pytest.raises(KeyError, match="holds no tensor 'z'"):
        sd.shape_and_dtype("z")
    sd.close()
    assert "closed" in repr(sd) and sd.shape_and_dtype("a") == ((2, 3), torch.int64)
    with pytest.raises(ValueError, match="closed"):
        sd["a"]


def test_open_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors not found"):
        open_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        open_state_dict(tmp_path)  # a folder
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="cannot read it as a safetensors file"):
        open_state_dict(tmp_path / "pickled.pt")


def test_pca_and_projection_stream_checkpoint_files(tmp_path):
    c = plane_trajectory()
    dirs, ratio = pca_directions(c.traj, k=2)
    paths = []
    for t, sd in enumerate(c.traj):
        paths.append(tmp_path / f"ckpt{t}.safetensors")
        save_file(sd, paths[-1])
    save_file(c.origin, tmp_path / "origin.safetensors")
    files = [open_state_dict(p) for p in paths]
    dirs_f, ratio_f = pca_directions(files, k=2)
    torch.testing.assert_close(ratio_f, ratio, rtol=0, atol=1e-14)
    for d, e in zip(dirs, dirs_f, strict=True):
        torch.testing.assert_close(c.flat(d), c.flat(e), rtol=0, atol=1e-13)
    with open_state_dict(tmp_path / "origin.safetensors") as origin:
        xy_f = project_trajectory(files, dirs[0], dirs[1], origin=origin)
    xy = project_trajectory(c.traj, dirs[0], dirs[1], origin=c.origin)
    torch.testing.assert_close(xy_f, xy, rtol=0, atol=1e-14)
    torch.testing.assert_close(xy_f, c.coef @ (c.Q.T @ torch.stack([c.flat(d) for d in dirs], 1)), rtol=0, atol=1e-12)
    for f in files:
        f.close()


def test_checkpoint_direction_from_a_tied_gpt2_file(tmp_path):
    """``save_model`` keeps a tied weight under one name; ``reference`` finds it, exactly as in memory."""
    a = gpt2()
    b = moved(a, [(0.1, random_direction(a, generator=torch.Generator().manual_seed(0)))])
    save_model(a, str(tmp_path / "a.safetensors"))
    save_model(b, str(tmp_path / "b.safetensors"))
    with open_state_dict(tmp_path / "a.safetensors") as fa, open_state_dict(tmp_path / "b.safetensors") as fb:
        assert len(fb) == len(b.state_dict()) - 1  # one name of the tied wte / lm_head pair
        d_file = checkpoint_direction(fa, fb, reference=a)
        d_mixed = checkpoint_direction(a, fb)  # the model is the reference
    d = checkpoint_direction(a, b)
    assert list(d_file) == list(d) == [n for n, _ in a.named_parameters()]
    for n, t in d.items():
        assert d_file[n].dtype == t.dtype and torch.equal(d_file[n], t) and torch.equal(d_mixed[n], t), n
