"""Shared fixtures: the repo root, the tiny params, and a DVC that sends no analytics."""

from __future__ import annotations

import os
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
