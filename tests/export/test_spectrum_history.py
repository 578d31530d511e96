"""Spectrum history files: bit-for-bit round trips of a tracker's records, and clear errors for other files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from tests import model_zoo
from tscope_widgets.export.spectrum_history import load_spectrum_history, save_spectrum_history
from tscope_widgets.models import adapt
from tscope_widgets.tracking import SpectrumHistory, SpectrumTracker


@pytest.fixture(scope="module")
def tracker() -> SpectrumTracker:
    """Three records of a one-layer tiny model: momentum SGD, two blocks, densities, one record without loss."""
    model = model_zoo.tiny(vocab_size=7, d_model=4, n_head=1, n_layer=1, d_mlp=8, max_seq_len=6)
    batch = model_zoo.random_batch(adapt(model), 2, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = SpectrumTracker(model, batch, every=1, blocks=["block0.attn.q", "head"], density_every=2,
                              density_probes=2, density_steps=5, optimizer=opt, tol=1e-3, max_iter=20,
                              trace_matvecs=6)
    for step in range(3):
        tracker.step(step=10 * step, loss=0.5 if step != 1 else None)
    return tracker


def assert_same_history(h: SpectrumHistory, back: SpectrumHistory) -> None:
    for name, value in h.to_dict().items():
        other = back.to_dict()[name]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape, name
            np.testing.assert_array_equal(value, other)  # NaN == NaN here
            assert value.tobytes() == other.tobytes(), name  # bit for bit, NaN payloads included
        else:
            assert value == other, name


def test_history_save_load_round_trip_bit_for_bit(tmp_path, tracker):
    path = tmp_path / "history.safetensors"
    assert save_spectrum_history(path, tracker) == path
    h, back = tracker.history, load_spectrum_history(path)
    assert len(back) == 3 and back.density_steps.tolist() == [0, 20] and back.total is None
    assert_same_history(h, back)
    assert np.isnan(back.train_loss[1]) and back.train_loss[0] == 0.5
    assert back.block_labels == ["block0.attn.q", "head"] and back.grad_norm_labels == ["embed", "block0", "final"]
    np.testing.assert_allclose(back.threshold, 76.0)  # (2 + 2 * 0.9) / 0.05
    h.total = 7  # a history (not only a tracker) is saved, total included; the old file is replaced
    save_spectrum_history(path, h)
    assert load_spectrum_history(path).total == 7
    assert [p.name for p in tmp_path.iterdir()] == ["history.safetensors"]  # no temporary file left


def test_empty_history_round_trip(tmp_path):
    h = SpectrumHistory.empty(["embed", "block0", "final"])
    save_spectrum_history(tmp_path / "empty.safetensors", h)
    back = load_spectrum_history(tmp_path / "empty.safetensors")
    assert len(back) == 0 and back.grad_norms.shape == (0, 3) and back.block_labels == []
    assert_same_history(h, back)


def test_reads_the_layout_written_by_numpy(tmp_path, tracker):
    """The file layout is plain safetensors: NumPy-written files of the same layout load too."""
    h = tracker.history
    arrays = {k: v for k, v in h.to_dict().items() if isinstance(v, np.ndarray)}
    header = {
        "format": "tscope_widgets.spectrum_history",
        "version": "1",
        "grad_norm_labels": json.dumps(h.grad_norm_labels),
        "block_labels": json.dumps(h.block_labels),
        "total": json.dumps(None),
    }
    save_file(arrays, str(tmp_path / "numpy.safetensors"), metadata=header)
    assert_same_history(h, load_spectrum_history(tmp_path / "numpy.safetensors"))


def test_load_refuses_other_files(tmp_path, tracker):
    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2)}, str(path), metadata={"format": "something else"})
    with pytest.raises(ValueError, match="not a spectrum history"):
        load_spectrum_history(path)
    (tmp_path / "text.safetensors").write_text("{}")
    with pytest.raises(ValueError, match="cannot read it as a safetensors file"):
        load_spectrum_history(tmp_path / "text.safetensors")
    with pytest.raises(FileNotFoundError):
        load_spectrum_history(tmp_path / "missing.safetensors")
    h = tracker.history
    arrays = {k: v for k, v in h.to_dict().items() if isinstance(v, np.ndarray) and k != "lambda_min"}
    header = {"format": "tscope_widgets.spectrum_history", "version": "1", "grad_norm_labels": json.dumps(["a"]),
              "block_labels": "[]", "total": "null"}
    save_file(arrays, str(tmp_path / "partial.safetensors"), metadata=header)
    with pytest.raises(ValueError, match=r"partial.safetensors: spectrum history lacks arrays \['lambda_min'\]"):
        load_spectrum_history(tmp_path / "partial.safetensors")
    save_file({"x": np.zeros(2)}, str(tmp_path / "v2.safetensors"), metadata={**header, "version": "2"})
    with pytest.raises(ValueError, match="unsupported spectrum history version '2'"):
        load_spectrum_history(tmp_path / "v2.safetensors")
    with pytest.raises(TypeError, match="SpectrumHistory or a SpectrumTracker"):
        save_spectrum_history(tmp_path / "x.safetensors", h.to_dict())
