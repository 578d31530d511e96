"""The one atomic writer: same bytes as a plain write, durable (fsync), and a failure leaves the old file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tscope_widgets import _atomic
from tscope_widgets._atomic import TMP_PREFIX, write_atomic, write_safetensors, write_text

TENSORS = {"a": torch.arange(6, dtype=torch.float64).reshape(2, 3), "b": torch.tensor([True, False])}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_safetensors_bytes_equal_save_file_and_folders_are_created(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file(TENSORS, str(plain), metadata={"format": "x"})
    path = write_safetensors(tmp_path / "sub" / "dir" / "t.safetensors", TENSORS, {"format": "x"})
    assert path == tmp_path / "sub" / "dir" / "t.safetensors"
    assert path.read_bytes() == plain.read_bytes()
    assert names(path.parent) == ["t.safetensors"]
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], TENSORS[k]) for k in TENSORS)


def test_text_bytes_equal_write_text_and_replace_the_old_file(tmp_path):
    document = json.dumps({"x": [1, 2.5, None], "y": "z"}, indent=2)
    plain = tmp_path / "plain.json"
    plain.write_text(document)
    path = tmp_path / "meta.json"
    path.write_text("old")
    assert write_text(path, document) == path
    assert path.read_bytes() == plain.read_bytes()
    assert names(tmp_path) == ["meta.json", "plain.json"]


def test_file_then_folder_are_flushed_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = _atomic._fsync_path

    def spy(p: Path) -> None:
        synced.append((Path(p).name, Path(p).exists() and Path(p).is_dir()))
        real(p)

    monkeypatch.setattr(_atomic, "_fsync_path", spy)
    write_text(tmp_path / "f.txt", "hello")
    assert len(synced) == 2
    assert synced[0][0].startswith(TMP_PREFIX) and synced[0][0].endswith("-f.txt") and not synced[0][1]
    assert synced[1] == (tmp_path.name, True)


def fail_midway(tmp: Path) -> None:
    tmp.write_bytes(b"half a fi")
    raise OSError("disk full (injected)")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_a_failure_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, where):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, TENSORS, {"format": "x"})
    before = path.read_bytes()
    if where == "write":
        monkeypatch.setattr(_atomic, "save_file", lambda tensors, filename, metadata=None: fail_midway(Path(filename)))
    elif where == "fsync":
        def broken_fsync(p: Path) -> None:
            raise OSError("fsync failed (injected)")

        monkeypatch.setattr(_atomic, "_fsync_path", broken_fsync)
    else:
        def broken_replace(src, dst) -> None:
            raise OSError("rename failed (injected)")

        monkeypatch.setattr(_atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        write_safetensors(path, {"a": torch.zeros(100)}, {"format": "y"})
    assert path.read_bytes() == before
    assert names(tmp_path) == ["t.safetensors"]


def test_a_failing_writer_of_text_leaves_the_old_file(tmp_path):
    path = tmp_path / "meta.json"
    write_text(path, '{"old": 1}')
    with pytest.raises(OSError, match="injected"):
        write_atomic(path, fail_midway)
    assert path.read_text() == '{"old": 1}'
    assert names(tmp_path) == ["meta.json"]
    with pytest.raises(TypeError):
        write_text(path, {"not": "text"})  # type: ignore[arg-type]
    assert path.read_text() == '{"old": 1}'
    assert names(tmp_path) == ["meta.json"]


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_the_umask_allows(tmp_path, umask):
    # safetensors creates its file with mode 0600; results should be readable as any new file would be
    old = os.umask(umask)
    try:
        tensors = write_safetensors(tmp_path / "statistics.safetensors", {"x": torch.zeros(2)})
        text = write_text(tmp_path / "meta.json", "{}")
    finally:
        os.umask(old)
    for path in (tensors, text):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
