"""Run one ldmpipe command with AdamW's betas changed: a measurement, not a pipeline option.

The training loop builds ``torch.optim.AdamW`` with its defaults, betas (0.9, 0.999). Short runs at a high
learning rate are often trained with beta2 = 0.99 (a second-moment estimate that forgets in ~100 steps
instead of ~1000; EDM2, Karras et al. 2024, uses 0.99). This wrapper patches the optimiser's default betas
and runs the command, so the diffusion model can be retrained on a finished run's latents:

    python benchmarks/adam_betas.py --betas 0.9,0.99 train-diffusion --params params.yaml \\
        --latents data/latents/train.safetensors --meta data/prepared/meta.json --model b99/model.safetensors \\
        --live b99/live --val-latents data/latents/val.safetensors --timestep-error b99/te.tsv --timestep-figure b99/te.png

then ``ldmpipe sample`` and ``ldmpipe evaluate`` on ``b99/model.safetensors`` (the commands of dvc.yaml with
other output paths). Measured figures: benchmarks/results/adam_betas.json (README: "Is the model sound at
every noise level?").
"""

from __future__ import annotations

import sys

import torch


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "--betas":
        print(__doc__, file=sys.stderr)
        return 2
    betas = tuple(float(b) for b in argv[1].split(","))
    base = torch.optim.AdamW

    class AdamW(base):
        def __init__(self, params, *args, **kwargs):
            kwargs.setdefault("betas", betas)
            super().__init__(params, *args, **kwargs)

    torch.optim.AdamW = AdamW  # the loop looks it up when it builds the optimiser
    print(f"adam_betas: AdamW betas {betas}", file=sys.stderr)
    from ldmpipe.cli import main as ldmpipe

    return ldmpipe(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
