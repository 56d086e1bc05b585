#!/usr/bin/env python
"""Run an ``ldmpipe`` stage and SIGKILL it at a chosen point: a real, uncatchable kill.

    python kill_at_step.py STEP STAGE_MODULE -- ldmpipe-args...   # killed just before step STEP
    python kill_at_step.py save N -- ldmpipe-args...              # killed half-way through the N-th
                                                                   # resumable-state write
    python kill_at_step.py output NAME -- ldmpipe-args...         # killed half-way through writing
                                                                   # the safetensors output NAME
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import torch

from ldmpipe import cli


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_before_step(module: str, step: int) -> None:
    stage = importlib.import_module(f"ldmpipe.stages.{module}")
    train_loop = stage.train_loop

    def patched(model, loss_fn, settings, **kw):
        def killing_loss(s):
            if s == step:
                die()
            return loss_fn(s)

        return train_loop(model, killing_loss, settings, **kw)

    stage.train_loop = patched


def kill_during_save(nth: int) -> None:
    calls, save = {"n": 0}, torch.save

    def half_save(obj, path):
        calls["n"] += 1
        save(obj, path)
        if calls["n"] == nth:
            with open(path, "r+b") as f:  # leave a truncated temporary file behind, then die
                f.truncate(os.path.getsize(path) // 2)
            die()

    torch.save = half_save  # only resumable states are written with torch.save


def kill_during_output(name: str) -> None:
    import safetensors.torch

    save, stem = safetensors.torch.save_file, name.split(".")[0]

    def half_save(tensors, filename, metadata=None):
        save(tensors, filename, metadata=metadata)
        if os.path.basename(filename).startswith(f".{stem}."):  # the atomic writer's temporary
            with open(filename, "r+b") as f:
                f.truncate(os.path.getsize(filename) // 2)
            die()

    safetensors.torch.save_file = half_save


if __name__ == "__main__":
    sep = sys.argv.index("--")
    head, argv = sys.argv[1:sep], sys.argv[sep + 1 :]
    if head[0] == "save":
        kill_during_save(int(head[1]))
    elif head[0] == "output":
        kill_during_output(head[1])
    else:
        kill_before_step(head[1], int(head[0]))
    sys.exit(cli.main(argv))
