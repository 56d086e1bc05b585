"""Atomic writers for every artifact: write under a temporary name in the same directory, then
``os.replace`` it into place, so a crash never leaves a truncated file under the final name.

Formats are chosen to be byte-deterministic and free of pickled code: safetensors for tensors
and arrays, JSON for metrics, PNG for pictures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def listed(names: list[str], shown: int = 8, fmt: Callable[[str], str] = str) -> str:
    """``names`` for a one-line message: the first ``shown`` (each through ``fmt``), then "and N more"."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(map(fmt, names[:shown])) + more


class ArtifactError(ValueError):
    """An input artifact is missing, unreadable or of the wrong kind; the message names the file."""


class Contents(dict):
    """What a file holds (its arrays, metadata or JSON): a missing key raises an `ArtifactError` that names
    the file and what it does hold (a file of the wrong kind given as input), not a bare ``KeyError``."""

    def __init__(self, path: str | Path, what: str, items: Mapping[str, Any]):
        super().__init__(items)
        self.path, self.what = path, what

    def __missing__(self, key: str) -> Any:
        held = listed(sorted(self), fmt=repr) or "nothing"
        raise ArtifactError(f"{self.path}: has no {self.what} {key!r} (it holds {held}): not the file this step reads")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LEFTOVER = re.compile(r"(\d+)(\.[A-Za-z0-9_]+)?")  # {pid} or {pid}.{mkstemp's random part}


def remove_stale(folder: Path, prefix: str, suffix: str = "") -> None:
    """Delete ``{prefix}{pid}{suffix}`` and ``{prefix}{pid}.{random}{suffix}`` leftovers of killed writers
    (their pid is gone). Only names of exactly that form: the temporary file of a neighbour whose name
    extends this prefix (``fid.4000000.json`` beside ``fid.json``) is not a leftover."""
    for p in folder.glob(f"{prefix}*{suffix}"):
        match = _LEFTOVER.fullmatch(p.name[len(prefix) : len(p.name) - len(suffix)])
        if match is None or pid_alive(int(match[1])):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it to ``path`` on success, its
    contents and then the rename flushed to disk (fsync), so not even a power loss truncates it.

    The temporary name carries the writer's pid, so leftovers of a killed writer (SIGKILL runs
    no cleanup) are recognised and removed by the next write to the same path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.stem}.", f".tmp{path.suffix}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the mode open() would give it
        _fsync(tmp, os.O_RDONLY)  # its bytes are on disk before its name is: a power loss leaves the old or the new
        os.replace(tmp, path)
        if os.name == "posix":  # and the rename (Windows cannot open a folder)
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: str | Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> None:
    """Save numpy arrays as safetensors, with ``metadata`` as one sorted JSON string."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=pack_metadata(metadata))


def pack_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """safetensors keeps metadata in a hash map whose order varies between processes, so all of
    it goes into one key as sorted JSON: the file's bytes then depend on the content alone."""
    return {"ldmpipe": json.dumps(dict(metadata or {}), sort_keys=True)}


def unpack_metadata(raw: Mapping[str, str] | None) -> dict[str, Any]:
    return json.loads((raw or {}).get("ldmpipe", "{}"))


def read_json(path: str | Path) -> Contents:
    """A JSON object from a file; a missing or malformed file, or a missing key, is an `ArtifactError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return Contents(path, "key", data)


def load_arrays(path: str | Path) -> tuple[Contents, Contents]:
    """Load arrays and JSON-decoded metadata written by ``save_arrays``; a missing array or metadata key
    raises an `ArtifactError` naming the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
            meta = unpack_metadata(f.metadata())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ArtifactError(f"{path}: not a readable safetensors file ({e})") from None
    return Contents(path, "array", arrays), Contents(path, "metadata key", meta)


def save_image(path: str | Path, image: Any) -> None:
    """Save a PIL image as PNG, atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_figure(path: str | Path, fig: Any) -> None:
    """Save a matplotlib figure as PNG without time-dependent metadata, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
