"""Atomic, deterministic artifact writers."""

from __future__ import annotations

import numpy as np
import pytest

from ldmpipe.io import ArtifactError, atomic_path, load_arrays, save_arrays, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("garbage")
            raise RuntimeError
    assert target.read_text() == '{\n  "a": 1\n}\n'


def test_arrays_round_trip_with_metadata(tmp_path):
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    labels = np.array([3, 1], dtype=np.int64)
    save_arrays(tmp_path / "a.safetensors", {"images": images, "labels": labels}, {"classes": ["x", "y"], "n": 2})
    arrays, meta = load_arrays(tmp_path / "a.safetensors")
    assert np.array_equal(arrays["images"], images) and np.array_equal(arrays["labels"], labels)
    assert meta == {"classes": ["x", "y"], "n": 2}


def test_array_files_are_byte_identical(tmp_path):
    arrays = {"b": np.ones(3), "a": np.zeros((2, 2), np.float32)}
    meta = {"z": 1, "a": [1, 2], "m": "text"}
    save_arrays(tmp_path / "1.safetensors", arrays, meta)
    save_arrays(tmp_path / "2.safetensors", dict(reversed(arrays.items())), dict(reversed(meta.items())))
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()


def test_unreadable_arrays_name_the_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="bad.safetensors: not a readable safetensors file"):
        load_arrays(tmp_path / "bad.safetensors")
    with pytest.raises(ArtifactError, match="none.safetensors: file not found"):
        load_arrays(tmp_path / "none.safetensors")
