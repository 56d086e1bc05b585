"""Run one ldmpipe command with truncated Min-SNR-gamma loss weights: a measurement, not a pipeline option.

Min-SNR-gamma (Hang et al. 2023) weights the x0 error by min(SNR, gamma). For SNR < 1 that is the plain
epsilon loss, so on the default shifted cosine schedule the v loss at t > 600 (SNR < 0.13) is weighted by
abar_t <= 0.11, and `benchmarks/diagnose_reverse.py` finds both reverse processes losing stars there.
The truncated SNR weighting (Salimans & Ho 2022, sec. 4: max(SNR, 1) on the x0 error), capped by gamma,
gives those noise levels weight 1 / (SNR + 1), close to 1, on the v loss:

    x0 weight min(max(SNR, 1), gamma);  v weight = x0 weight / (SNR + 1);  epsilon weight = x0 weight / SNR.

This wrapper replaces `ldmpipe.diffusion.loss.min_snr_weights` and runs the command, so the diffusion model
can be retrained on a finished run's latents:

    python benchmarks/truncated_snr.py train-diffusion --params params.yaml \\
        --latents data/latents/train.safetensors --meta data/prepared/meta.json --model trunc/model.safetensors \\
        --live trunc/live --val-latents data/latents/val.safetensors --timestep-error trunc/te.tsv --timestep-figure trunc/te.png

then ``ldmpipe sample`` and ``ldmpipe evaluate`` on ``trunc/model.safetensors`` (the commands of dvc.yaml with
other output paths). Measured figures: benchmarks/results/truncated_snr.json (README: "Is the model sound at
every noise level?").
"""

from __future__ import annotations

import sys

import torch

from ldmpipe.diffusion.loss import prediction_weights


def truncated_min_snr_weights(snr: torch.Tensor, gamma: float, prediction: str = "epsilon") -> torch.Tensor:
    """min(max(SNR, 1), gamma) on the x0 error, as a weight on the `prediction`'s error; 1 where SNR = 0."""
    return prediction_weights(snr.clamp(min=1.0, max=gamma), snr, prediction)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    import ldmpipe.diffusion.loss as loss

    loss.min_snr_weights = truncated_min_snr_weights  # diffusion_loss looks it up at each call
    print("truncated_snr: x0 weight min(max(SNR, 1), gamma)", file=sys.stderr)
    from ldmpipe.cli import main as ldmpipe

    return ldmpipe(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
