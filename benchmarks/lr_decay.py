"""Run one ldmpipe command with the learning rate decayed after warm-up: a measurement, not a pipeline option.

The training loop holds the learning rate constant after its linear warm-up (`train.warmup_steps`), so
the EMA weights at step N are those of an N-step run (autoguidance's guide relies on it). Short runs are
often trained with the rate annealed to zero instead (diffusers' `get_cosine_schedule_with_warmup`,
`--lr_scheduler cosine` in its training scripts; Loshchilov & Hutter 2017). This wrapper multiplies the
loop's warm-up factor by a decay over the last part of the run and runs the command, so the diffusion
model can be retrained on a finished run's latents:

    python benchmarks/lr_decay.py --decay cosine --steps 3000 --start 100 train-diffusion --params params.yaml \\
        --latents data/latents/train.safetensors --meta data/prepared/meta.json --model cos/model.safetensors \\
        --live cos/live --val-latents data/latents/val.safetensors --timestep-error cos/te.tsv --timestep-figure cos/te.png

then ``ldmpipe sample`` and ``ldmpipe evaluate`` on ``cos/model.safetensors`` (the commands of dvc.yaml with
other output paths). ``--steps`` must be the run's ``train.steps``; the factor is 1 until step ``--start``
(the measured runs: 100, the end of warm-up) and falls to 0 at step ``--steps``, linearly or as a half cosine.
Measured figures: benchmarks/results/lr_decay.json (README: "Is the model sound at every noise level?").
"""

from __future__ import annotations

import math
import sys

import torch


def decay_factor(kind: str, i: int, steps: int, start: int) -> float:
    """Multiplier of the learning rate after ``i`` scheduler steps: 1 before ``start``, then falling to 0 at ``steps``."""
    if i < start:
        return 1.0
    frac = min(1.0, (i - start) / max(1, steps - start))  # 0 -> 1 over [start, steps]
    return 0.5 * (1.0 + math.cos(math.pi * frac)) if kind == "cosine" else 1.0 - frac


def patch(kind: str, steps: int, start: int) -> None:
    """Make every ``LambdaLR`` built from now on multiply its factor by ``decay_factor``."""
    base = torch.optim.lr_scheduler.LambdaLR

    class LambdaLR(base):
        def __init__(self, optimizer, lr_lambda, *args, **kwargs):
            super().__init__(optimizer, lambda i: lr_lambda(i) * decay_factor(kind, i, steps, start), *args, **kwargs)

    torch.optim.lr_scheduler.LambdaLR = LambdaLR  # the loop looks it up when it builds its scheduler


def main(argv: list[str]) -> int:
    if len(argv) < 7 or argv[0] != "--decay" or argv[1] not in ("cosine", "linear") or argv[2] != "--steps" \
            or argv[4] != "--start":  # fmt: skip
        print(__doc__, file=sys.stderr)
        return 2
    kind, steps, start = argv[1], int(argv[3]), int(argv[5])
    patch(kind, steps, start)
    print(f"lr_decay: {kind} decay from step {start} to 0 at step {steps}", file=sys.stderr)
    from ldmpipe.cli import main as ldmpipe

    return ldmpipe(argv[6:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
