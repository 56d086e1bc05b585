"""Atomic, deterministic artifact writers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ldmpipe.io import ArtifactError, Contents, atomic_path, listed, load_arrays, pid_alive, read_json, save_arrays, write_json


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


def test_a_file_of_the_wrong_kind_names_the_file_and_what_it_holds(tmp_path):
    """A missing array or metadata key (e.g. images given where latents are read) is an ArtifactError that
    names the file and its keys, not a bare KeyError; present keys read as from a dict."""
    save_arrays(tmp_path / "images.safetensors", {"images": np.zeros((2, 4, 4, 3), np.uint8)}, {"classes": ["a"]})
    arrays, meta = load_arrays(tmp_path / "images.safetensors")
    with pytest.raises(ArtifactError, match=r"images.safetensors: has no array 'latents' \(it holds 'images'\)"):
        arrays["latents"]
    with pytest.raises(ArtifactError, match=r"images.safetensors: has no metadata key 'scale_factor' \(it holds 'classes'\)"):
        meta["scale_factor"]
    assert arrays["images"].shape == (2, 4, 4, 3) and meta["classes"] == ["a"] and meta.get("x") is None


def test_listed_shows_the_first_names_and_counts_the_rest():
    """The one idiom behind every "first N and M more" in a message (prepare's warnings, a file of the
    wrong kind, the report's unclean work tree)."""
    names = [f"f{i}" for i in range(12)]
    assert listed(names) == "f0, f1, f2, f3, f4, f5, f6, f7 and 4 more"
    assert listed(names, 10, repr) == "'f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9' and 2 more"
    assert listed(names[:8]) == "f0, f1, f2, f3, f4, f5, f6, f7" and listed([]) == ""
    with pytest.raises(ArtifactError, match=r"m.json: has no key 'x' \(it holds 'f0', 'f1', 'f10', 'f11', 'f2', 'f3', 'f4', 'f5' and 4 more\)"):
        Contents("m.json", "key", dict.fromkeys(names))["x"]


def test_json_inputs_name_the_file(tmp_path):
    write_json(tmp_path / "m.json", {"fid": 1.5})
    assert read_json(tmp_path / "m.json")["fid"] == 1.5
    with pytest.raises(ArtifactError, match=r"m.json: has no key 'classes' \(it holds 'fid'\)"):
        read_json(tmp_path / "m.json")["classes"]
    with pytest.raises(ArtifactError, match="none.json: file not found"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="bad.json: not a readable JSON file"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="list.json: expected a JSON object, found list"):
        read_json(tmp_path / "list.json")


def test_stale_temp_files_are_removed_but_not_a_neighbours(tmp_path):
    """A dead writer's temporary file of fid.json goes; the live temporary file of fid.4000000.json, whose
    name also starts with '.fid.' and ends with '.tmp.json', stays (its first dotted part is not a pid)."""
    dead = 2**22 + 12345  # above Linux's default pid_max, so no live process has it
    assert not pid_alive(dead)
    stale = tmp_path / f".fid.{dead}.abc_12.tmp.json"
    neighbour = tmp_path / f".fid.{dead}.{os.getpid()}.xyz.tmp.json"  # fid.<dead>.json being written by us
    stale.write_text("{}"), neighbour.write_text("{}")
    write_json(tmp_path / "fid.json", {"fid": 1})
    assert not stale.exists() and neighbour.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fid.json", neighbour.name])


def test_a_stage_given_a_file_of_the_wrong_kind_says_so_in_one_line(tmp_path, capsys):
    """prepare's images given as train-diffusion's latents: exit 1, one line naming the file, nothing written."""
    from conftest import TINY

    from ldmpipe.cli import main

    images = tmp_path / "train.safetensors"
    save_arrays(images, {"images": np.zeros((4, 32, 32, 3), np.uint8), "labels": np.zeros(4, np.int64)}, {"n": 4})
    out = tmp_path / "out"
    argv = ["train-diffusion", "--params", str(TINY), "--latents", str(images), "--model", f"{out}/m.safetensors",
            "--live", f"{out}/live", "--val-latents", str(images), "--timestep-error", f"{out}/te.tsv",
            "--timestep-figure", f"{out}/te.png"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{images}: has no metadata key 'scale_factor' (it holds 'n')" in err[0], err
    assert not out.exists()


def test_written_files_get_the_mode_of_the_umask(tmp_path):
    """Not mkstemp's 0600: colleagues on a shared filesystem read each other's models and reports."""
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        save_arrays(tmp_path / "b.safetensors", {"x": np.zeros(2)})
        os.umask(0o077)
        write_json(tmp_path / "c.json", {})
    finally:
        os.umask(old)
    modes = [(tmp_path / n).stat().st_mode & 0o777 for n in ("a.json", "b.safetensors", "c.json")]
    assert modes == [0o644, 0o644, 0o600]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an open file through Linux's /proc")
def test_a_written_file_reaches_the_disk_before_its_name(tmp_path, monkeypatch):
    """The contents are flushed (fsync) before the rename, and the rename after it."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b)))
    write_json(tmp_path / "m.json", {"a": 1})
    (_, synced), (_, moved, target), (_, folder) = events
    assert synced == moved != target == str(tmp_path / "m.json") and folder == str(tmp_path)


def test_text_artifacts_are_utf8_whatever_the_locale(tmp_path):
    """Reports hold ε, ×, ± and class names: they are written and read as UTF-8 also where the locale's
    encoding is ASCII (the C locale without PEP 538's coercion), which made write_text raise before."""
    import os
    import subprocess
    import sys

    code = ("import sys; from ldmpipe.io import read_json, write_text; write_text(sys.argv[1] + '/r.md', "
            "'x0-MSE at t = 999, \\u03b5 \\u00d7 2 \\u00b1 1'); print(read_json(sys.argv[1] + '/m.json')['class'])")  # fmt: skip
    (tmp_path / "m.json").write_bytes('{"class": "Sträucher"}'.encode())
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code, str(tmp_path)], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "r.md").read_bytes() == "x0-MSE at t = 999, ε × 2 ± 1".encode()
    assert r.stdout.decode().strip() == "Sträucher"
