"""Damaged files (issue 12, findings 6 and 7): every reader of the project's files refuses a corrupt, truncated,
empty, foreign or absurd file with a ``ValueError`` that names it; random truncations and byte flips of
every format the project writes never raise anything else."""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from tests import model_zoo
from tscope_widgets.cli import main
from tscope_widgets.export import load_extra_tensors, load_npz, load_statistics, save_npz, save_statistics
from tscope_widgets.export.directions import load_directions, save_directions
from tscope_widgets.export.lazy_state_dict import open_state_dict
from tscope_widgets.export.results import load_results, save_results
from tscope_widgets.export.spectrum_history import load_spectrum_history, save_spectrum_history
from tscope_widgets.files import parse_json, read_json, read_safetensors, read_safetensors_header
from tscope_widgets.jobs import Job, load_checkpoint, save_checkpoint
from tscope_widgets.kernels.welford import WelfordState
from tscope_widgets.models import TinyConfig, TinyTransformer, adapt
from tscope_widgets.tracking import SpectrumTracker
from tscope_widgets.training import load_model, save_model

FAST = ["--no-progress", "--threads", "1"]


def _welford(seed: int) -> WelfordState:
    g = torch.Generator().manual_seed(seed)
    state = WelfordState((3, 3))
    state.update(torch.randn(4, 3, 3, generator=g, dtype=torch.float64))
    return state


def _write_all(root: Path) -> None:
    """One of every file format the project writes, each in its own folder under ``root``."""
    save_results(root / "results", "curvature", {"eigenvalues": torch.arange(4.0), "steps": torch.arange(3)},
                 {"method": "lanczos"})
    save_statistics(root / "stats", {0: _welford(0), "final": _welford(1)}, {"method": "exact"},
                    extra_tensors={"input_ids": torch.arange(6).reshape(2, 3)})
    snap = SimpleNamespace(done=3, total=10, state_dict=lambda: _welford(2).state_dict(),
                           meta=lambda: {"next_row": 3})
    save_checkpoint(root / "ckpt", snap, job_name="test")
    save_directions(root / "dirs" / "d.safetensors", {"a": {"w": torch.randn(2, 3)}, "b": {"w": torch.randn(2, 3)}},
                    {"kind": "random"})
    model = model_zoo.tiny(vocab_size=7, d_model=4, n_head=1, n_layer=1, d_mlp=8, max_seq_len=6)
    tracker = SpectrumTracker(model, model_zoo.random_batch(adapt(model), 2, 5), every=1, tol=1e-3, max_iter=10)
    for step in range(2):
        tracker.step(step=step, loss=0.5)
    save_spectrum_history(root / "hist" / "h.safetensors", tracker)
    torch.manual_seed(0)
    save_model(root / "model", TinyTransformer(TinyConfig(vocab_size=11, max_seq_len=8, d_model=8, n_layer=2,
                                                          n_head=2)))
    save_npz(root / "npz" / "s.npz", {0: _welford(3)})


def _kernel(resume=None):
    yield from ()


# reader name -> (folder, read(folder))
READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "load_results": ("results", load_results),
    "load_statistics": ("stats", load_statistics),
    "load_extra_tensors": ("stats", load_extra_tensors),
    "load_checkpoint": ("ckpt", load_checkpoint),
    "Job(resume_from=)": ("ckpt", lambda d: Job(_kernel, resume_from=d, start=False)),
    "load_directions": ("dirs", lambda d: load_directions(d / "d.safetensors")),
    "load_spectrum_history": ("hist", lambda d: load_spectrum_history(d / "h.safetensors")),
    "open_state_dict": ("model", lambda d: [t.sum() for t in open_state_dict(d / "model.safetensors").values()]),
    "load_model": ("model", load_model),
    "load_npz": ("npz", lambda d: load_npz(d / "s.npz")),
}
SAFETENSORS_READERS = [name for name in READERS if name != "load_npz"]
JSON_READERS = ["load_results", "load_statistics", "load_checkpoint", "Job(resume_from=)", "load_model"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    _write_all(root)
    return root


def _copy(pristine: Path, folder: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine / folder, tmp_path / folder))


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    return buf.getvalue()


def _absurd_shape() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 16


SAFETENSORS_CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda b: b[: len(b) // 2],
    "truncated_header": lambda b: b[:20],
    "empty": lambda b: b"",
    "pickle": lambda b: pickle.dumps({"w": [1.0, 2.0]}),
    "torch_save_zip": lambda b: _torch_zip(),
    "text": lambda b: b"this is not a safetensors file\n",
    "absurd_header_length": lambda b: struct.pack("<Q", 2**62) + b[8:],
    "absurd_shape": lambda b: _absurd_shape(),
    "unknown_dtype": lambda b: b.replace(b'"F32"', b'"X32"').replace(b'"F64"', b'"X64"').replace(b'"I64"', b'"X64"'),
}

JSON_CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "invalid": lambda b: b"{not json",
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "deep_nesting": lambda b: b"[" * 100_000 + b"]" * 100_000,
    "utf16": lambda b: b.decode("utf-8").encode("utf-16"),
    "huge_integer": lambda b: b'{"format": ' + b"9" * 5000 + b"}",
    "not_an_object": lambda b: b"[1, 2, 3]",
}


def _target(folder: Path, suffix: str) -> Path:
    (path,) = [p for p in folder.iterdir() if p.suffix == suffix]
    return path


def _assert_clear_refusal(read: Callable[[], object], path: Path) -> str:
    with pytest.raises(ValueError) as info:
        read()
    message = str(info.value)
    assert path.name in message, message
    return message


# ---------------------------------------------------------------------------------------------- finding 6
@pytest.mark.parametrize("corruption", sorted(SAFETENSORS_CORRUPTIONS))
@pytest.mark.parametrize("reader", SAFETENSORS_READERS)
def test_bad_safetensors_files_are_refused_naming_the_file(pristine, tmp_path, reader, corruption):
    folder_name, read = READERS[reader]
    folder = _copy(pristine, folder_name, tmp_path)
    path = _target(folder, ".safetensors")
    path.write_bytes(SAFETENSORS_CORRUPTIONS[corruption](path.read_bytes()))
    message = _assert_clear_refusal(lambda: read(folder), path)
    assert str(path) in message and "expected" in message  # where, what it should be, what to do


def test_nothing_is_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("a pickle was loaded",))

    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="x.safetensors: cannot read it as a safetensors file .*a Python pickle"):
        read_safetensors(path, what="a test file")


def test_absurd_headers_are_refused_before_allocation(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(_absurd_shape())
    with pytest.raises(ValueError, match=r"outside the 16 bytes of data"):
        read_safetensors_header(path, what="a test file")
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="more than the 100000000"):
        read_safetensors(path, what="a test file")


def test_header_offsets_must_tile_the_data(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(2), "b": torch.ones(3)}, good)
    assert read_safetensors_header(good, what="x").numel == 5
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["b"]["data_offsets"] = header["a"]["data_offsets"]  # two tensors on the same bytes
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(ValueError, match="bad.safetensors: cannot read it as a safetensors file"):
        read_safetensors(bad, what="x")


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("corruption", ["truncated", "pickle", "torch_save_zip", "absurd_header_length", "empty"])
def test_cli_data_ids_bad_file(pristine, tmp_path, capsys, corruption):
    model_dir = _copy(pristine, "model", tmp_path)
    ids = tmp_path / "ids.safetensors"
    save_file({"input_ids": torch.randint(0, 11, (2, 5))}, ids)
    ids.write_bytes(SAFETENSORS_CORRUPTIONS[corruption](ids.read_bytes()))
    config = (f"[model]\nkind = 'tiny'\npath = '{model_dir.as_posix()}'\n[data]\nids = '{ids.as_posix()}'\n"
              "[analysis]\nlayers = 'final'\n")
    assert main(["run", str(_write_config(tmp_path, config)), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[data].ids" in err and str(ids) in err


@pytest.mark.parametrize("corruption", ["truncated", "pickle", "text", "absurd_shape"])
def test_cli_model_path_bad_weights(pristine, tmp_path, capsys, corruption):
    model_dir = _copy(pristine, "model", tmp_path)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(SAFETENSORS_CORRUPTIONS[corruption](weights.read_bytes()))
    config = f"[model]\nkind = 'tiny'\npath = '{model_dir.as_posix()}'\n[data]\ntask = 'induction'\n"
    assert main(["run", str(_write_config(tmp_path, config)), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[model].path" in err and str(weights) in err


# ---------------------------------------------------------------------------------------------- finding 7
@pytest.mark.parametrize("corruption", sorted(JSON_CORRUPTIONS))
@pytest.mark.parametrize("reader", JSON_READERS)
def test_bad_json_files_are_refused_naming_the_file(pristine, tmp_path, reader, corruption):
    folder_name, read = READERS[reader]
    folder = _copy(pristine, folder_name, tmp_path)
    path = _target(folder, ".json")
    path.write_bytes(JSON_CORRUPTIONS[corruption](path.read_bytes()))
    _assert_clear_refusal(lambda: read(folder), path)


@pytest.mark.parametrize("corruption", ["invalid", "deep_nesting", "huge_integer"])
@pytest.mark.parametrize("reader,key", [("load_directions", "order"), ("load_spectrum_history", "block_labels")])
def test_bad_json_in_a_safetensors_header(pristine, tmp_path, reader, key, corruption):
    folder_name, read = READERS[reader]
    folder = _copy(pristine, folder_name, tmp_path)
    path = _target(folder, ".safetensors")
    with open_state_dict(path) as sd:
        tensors, header = {k: sd[k] for k in sd}, dict(sd.metadata)
    header[key] = JSON_CORRUPTIONS[corruption](header[key].encode()).decode()
    save_file(tensors, path, metadata=header)
    message = _assert_clear_refusal(lambda: read(folder), path)
    assert repr(key) in message


def test_read_json_cases(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": 1}')
    assert read_json(path, what="x") == {"a": 1}
    for data, match in [
        (b"", "empty"),
        ("{}".encode("utf-16"), "UTF-16"),
        (b"\xff\x00{}", "UTF-16"),
        (b'{"a": "\xe9"}', "not UTF-8"),
        (b"[" * 100_000, "nested deeper"),
        (b"[" + b"1" * 5000 + b"]", "digits"),
        (b"[1]", "not a JSON object"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match) as info:
            read_json(path, what="a test file")
        assert str(path) in str(info.value) and "expected a test file" in str(info.value)
    assert parse_json("[1]", source="s", what="x") == [1]
    with pytest.raises(FileNotFoundError, match="nope.json not found; expected a test file"):
        read_json(tmp_path / "nope.json", what="a test file")


# ---------------------------------------------------------------------------------------------- fuzz
FORMATS = {  # folder -> readers of it
    "results": ["load_results"],
    "stats": ["load_statistics", "load_extra_tensors"],
    "ckpt": ["load_checkpoint"],
    "dirs": ["load_directions"],
    "hist": ["load_spectrum_history"],
    "model": ["load_model", "open_state_dict"],
    "npz": ["load_npz"],
}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    if not data or rng.random() < 0.3:
        return data[: rng.randrange(len(data) or 1)]
    out = bytearray(data)
    head = 8 + struct.unpack("<Q", data[:8])[0] if len(data) >= 8 and data[8:9] == b"{" else len(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        span = min(head, len(out)) if rng.random() < 0.7 else len(out)  # mostly the header, where meaning lies
        out[rng.randrange(span)] ^= rng.randrange(1, 256)
    return bytes(out)


@pytest.mark.parametrize("seed", range(300))
def test_fuzz_readers_raise_only_clear_value_errors(pristine, tmp_path, seed):
    rng = random.Random(seed)
    folder_name = rng.choice(sorted(FORMATS))
    folder = _copy(pristine, folder_name, tmp_path)
    path = rng.choice(sorted(p for p in folder.iterdir() if p.is_file()))
    path.write_bytes(_mutate(path.read_bytes(), rng))
    for reader in FORMATS[folder_name]:
        try:
            READERS[reader][1](folder)
        except ValueError as err:  # anything else fails the test
            assert str(folder) in str(err), f"{reader}: {err}"
        except FileNotFoundError as err:  # only a damaged meta.json naming another (missing) tensors file
            assert path.suffix == ".json" and "not found" in str(err) or "names missing file" in str(err), err
            assert str(path) in str(err), err
