"""Shared fixtures: the repo root, the tiny params, and a DVC that sends no analytics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"

os.environ["DVC_NO_ANALYTICS"] = "1"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_params() -> dict:
    """The tiny config as a dict, to be modified and written by a test."""
    return yaml.safe_load(TINY.read_text())


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# --- temporary pipeline repos for the end-to-end tests ---------------------------------------

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
# a fixed commit date: two repos committed from the same files get the same commit id, which the report names
DATED_ENV = {**ENV, "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}


def _resolved() -> dict[str, list[str]]:
    """DVC's resolved stages of dvc.yaml with the tiny params (matrix entries expanded, e.g.
    `sweep@ddim-leading`) -> their outputs."""
    import contextlib
    import io
    import tempfile

    from dvc.repo import Repo

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ROOT / "dvc.yaml", Path(tmp) / "dvc.yaml")
        shutil.copy(TINY, Path(tmp) / "params.yaml")
        with contextlib.redirect_stdout(io.StringIO()):  # "Initialized DVC repository."
            Repo.init(tmp, no_scm=True).close()
        with Repo(tmp) as repo:
            return {st.name: [o.def_path for o in st.outs] for st in repo.index.stages}


STAGES = _resolved()  # the stages of a tiny-config repo (its sweep matrix may differ from params.yaml's)
OUTPUTS = sorted(o for outs in STAGES.values() for o in outs)
SNAKEMAKE_JOBS = sorted(n for n in STAGES if n != "check")  # dvc.yaml's check stage: the Snakefile's onstart hook
CHECK_STAMP = STAGES["check"][0]  # written by both engines, read by no stage
# The sweep's uncached timing metrics hold wall times, which differ between runs by nature; every
# other output (the sweep's rows and grids included) must be byte-identical run after run and
# engine after engine.
TIMED = {o for o in OUTPUTS if o.startswith("reports/sweep_timing/")}
TIMED_STAGES = {name for name, outs in STAGES.items() if TIMED & set(outs)}


def sh(cmd: str, cwd: Path, env: dict | None = None) -> str:
    """Run a shell command in ``cwd``; fail the test with its output if it fails."""
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def make_repo(path: Path) -> Path:
    """A git + DVC repo holding the pipeline definition, the code and the tiny params, committed."""
    for name in ("dvc.yaml", "Snakefile", "resources.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "captions", path / "captions")  # Snakemake's report
    shutil.copy(TINY, path / "params.yaml")
    sh("git init -q -b main && git config user.email t@t && git config user.name t", path)
    sh("dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", path, DATED_ENV)
    return path


def ran_stages(output: str) -> set[str]:
    """Stages that `dvc repro` / `dvc exp run` actually ran (not restored from cache)."""
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, str]:
    """The tiny pipeline run once by `dvc repro` for the whole session: (its repo, what DVC printed).
    Modules that go on from a finished run take a copy (`copy_run`), so each pays for it once."""
    repo = make_repo(tmp_path_factory.mktemp("tiny_run"))
    return repo, sh("dvc repro", repo)


@pytest.fixture(scope="session")
def tiny_snakemake_run(tmp_path_factory) -> Path:
    """The tiny pipeline run once by Snakemake for the whole session, on its committed repo (so its
    report names a clean work tree). Modules take a copy (`copy_run`), as of `tiny_run`."""
    repo = make_repo(tmp_path_factory.mktemp("tiny_snakemake_run"))
    sh("snakemake --cores 2", repo)
    return repo


def copy_run(run: Path, path: Path) -> Path:
    """A copy of a finished run's repo (git, DVC cache and run cache, outputs with their mtimes) at
    ``path``, which must not exist."""
    shutil.copytree(run, path, symlinks=True)
    return path
