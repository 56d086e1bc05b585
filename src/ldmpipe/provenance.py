"""Where a result comes from: the git commit a work tree is at, the paths that differ from it, and
a file's content at an earlier commit. Plain ``git`` commands in a given folder; no pipeline paths.

Everything here is a function of the repository's state (commits, index, work tree), never of the
time or the machine, so two runs at the same commit on the same tree give the same answers.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def git(folder: str | Path, *args: str) -> str | None:
    """stdout of ``git <args>`` run in ``folder``, or None if git fails or is not installed."""
    try:
        r = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return r.stdout if r.returncode == 0 else None


def work_tree(folder: str | Path, ignore: Sequence[str | Path] = ()) -> dict[str, Any] | None:
    """``{"commit": full id, "modified": sorted paths}`` of the git work tree holding ``folder``, or None
    outside one (or before its first commit). ``modified``: paths (from the top of the work tree) whose
    content differs from the commit, staged or not, and untracked files git does not ignore, except
    those at or under an ``ignore`` path (e.g. the outputs of the run being described)."""
    top = git(folder, "rev-parse", "--show-toplevel")
    commit = git(folder, "rev-parse", "--verify", "--quiet", "HEAD")
    if top is None or commit is None:
        return None
    top = top.strip()
    status = git(top, "status", "--porcelain=v1", "-z", "--untracked-files=all") or ""
    entries = status.split("\0")
    paths, i = [], 0
    while i < len(entries):
        entry = entries[i]
        if entry:
            paths.append(entry[3:])
            i += entry[0] in "RC"  # a rename or copy: its source path follows as the next entry
        i += 1
    skip = [os.path.relpath(Path(folder, p).resolve(), Path(top).resolve()).replace(os.sep, "/") for p in ignore]
    modified = sorted(p for p in paths if not any(p == s or p.startswith(s.rstrip("/") + "/") for s in skip))
    return {"commit": commit.strip(), "modified": modified}


def json_at(folder: str | Path, rev: str, path: str | Path) -> tuple[str, Any] | None:
    """(full commit id, parsed content) of the JSON file ``path`` (relative to ``folder`` or absolute)
    at git revision ``rev`` (e.g. ``HEAD~1``), or None if the revision or the file does not exist."""
    commit = git(folder, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit is None:
        return None
    rel = os.path.relpath(Path(folder, path).resolve(), Path(folder).resolve()).replace(os.sep, "/")
    text = git(folder, "show", f"{commit.strip()}:./{rel}")
    if text is None:
        return None
    try:
        return commit.strip(), json.loads(text)
    except json.JSONDecodeError:
        return None


def earlier_json(folder: str | Path, path: str | Path, current: Any, revs: Sequence[str] = ("HEAD", "HEAD~1")) -> tuple[str, str, Any] | None:
    """The first of ``revs`` whose committed ``path`` differs from ``current``: (rev, commit id, content).

    Run before its results are committed, a pipeline's previous result is HEAD's; rerun on a committed
    result, it is HEAD~1's. None if no revision holds a different version."""
    for rev in revs:
        found = json_at(folder, rev, path)
        if found is not None and found[1] != current:
            return rev, *found
    return None
