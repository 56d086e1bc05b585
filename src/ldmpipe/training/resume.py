"""Resumable training state: saved every N steps, outside the pipeline's outputs, never unpickled.

A killed training stage restarts from its last saved state instead of from step 0.  The state
(model, EMA, optimiser, LR schedule, RNG states, batch order, step, logged history) goes to one
file per (stage, fingerprint), where the fingerprint hashes the stage's params and the bytes of
its inputs: a rerun with other params or inputs never picks up a stale state.  The folder
(``.ldmpipe/resume`` or ``$LDMPIPE_STATE_DIR``) is outside every DVC output, so ``dvc repro``,
which deletes a stage's outputs before running it, leaves the state alone.  Loading uses
``torch.load(weights_only=True)``: tensors and plain containers only, no code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import ArtifactError, atomic_path

STATE_DIR_ENV = "LDMPIPE_STATE_DIR"
DEFAULT_STATE_DIR = ".ldmpipe/resume"


@dataclass(frozen=True)
class Checkpointing:
    """Where a training run keeps its resumable state and how often it saves it (0: never)."""

    path: Path
    every: int

    def discard(self) -> None:
        """Delete the state once the stage's outputs are written: nothing is left to resume."""
        self.path.unlink(missing_ok=True)


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(config: Mapping[str, Any], inputs: Iterable[str | Path]) -> str:
    """SHA-256 over the stage's config (sorted JSON) and the content of each input file."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for p in inputs:
        h.update(file_digest(p).encode())
    return h.hexdigest()


def checkpointing(stage: str, every: int, config: Mapping[str, Any], inputs: Iterable[str | Path]) -> Checkpointing:
    """The resumable-state file of ``stage`` for this config and these inputs."""
    folder = Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
    return Checkpointing(folder / f"{stage}-{fingerprint(config, inputs)[:16]}.pt", every)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a kill during the write leaves the previous state intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or pickled-code files all end here
        raise ArtifactError(f"{path}: resumable state is unreadable ({type(e).__name__}); delete it to start over") from None


def rng_state() -> dict[str, Any]:
    """The global RNGs (dropout and anything else not on a stage generator): the CPU's and, on a
    CUDA machine, that of the current device only (each process trains on one device, which
    ``runtime.setup`` makes current); on a Mac, the MPS generator's."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` saved, whatever the number of GPUs now visible: the CUDA state
    goes to the current device if there is one (and is ignored on a CPU-only machine).  A state
    from an older version holds one entry per GPU that was visible; the first is used."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def state_of(obj: Any) -> Any:
    """``state_dict()`` of a module/optimiser/sampler, or the state of a ``torch.Generator``."""
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def restore(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)
