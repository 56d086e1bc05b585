"""Run one ldmpipe command with input perturbation in the diffusion loss: a measurement, not a pipeline option.

Input perturbation (DDPM-IP; Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion
Models", eq. 9) trains on x_t = sqrt(abar) x0 + sqrt(1 - abar) (eps + gamma xi), xi ~ N(0, I), while the
target is computed from the unperturbed eps (and x0): the network sees inputs a little off the forward
marginal, as a sampler's x_t is after its own earlier errors (exposure bias), and learns to bring them
back. It costs one extra Gaussian draw per step. The paper uses epsilon targets and gamma = 0.1; here the
target is whatever `diffusion.prediction` says (v by default), from the unperturbed eps and x0.

This wrapper hands the loss a schedule whose `add_noise` adds gamma xi (xi from its own CPU generator,
seeded by ``--seed``, so the loss's own draws of t and eps are those of the unperturbed run) and runs the
command, so the diffusion model can be retrained on a finished run's latents:

    python benchmarks/input_perturbation.py --gamma 0.1 --seed 0 train-diffusion --params params.yaml \\
        --latents data/latents/train.safetensors --meta data/prepared/meta.json --model ip/model.safetensors \\
        --live ip/live --val-latents data/latents/val.safetensors --timestep-error ip/te.tsv --timestep-figure ip/te.png

then ``ldmpipe sample``, ``ldmpipe evaluate`` and the sweep's commands on ``ip/model.safetensors`` (those of
dvc.yaml with other output paths). The per-timestep error of the EMA model (``--timestep-error``) is
measured on unperturbed inputs. The perturbation's generator is not in the stage's checkpoint, so a resumed
run draws other xi than an uninterrupted one. Measured figures: benchmarks/results/input_perturbation.json (README: "Is
the model sound at every noise level?").
"""

from __future__ import annotations

import sys

import torch


class PerturbedSchedule:
    """A `NoiseSchedule` whose `add_noise(x0, eps, t)` uses eps + gamma xi; every other attribute is the schedule's."""

    def __init__(self, schedule, gamma: float, generator: torch.Generator) -> None:
        self._schedule, self._gamma, self._generator = schedule, gamma, generator

    def __getattr__(self, name: str):
        return getattr(self._schedule, name)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xi = torch.randn(tuple(eps.shape), generator=self._generator).to(device=eps.device, dtype=eps.dtype)
        return self._schedule.add_noise(x0, eps + self._gamma * xi, t)


def patch(gamma: float, seed: int) -> None:
    """Make train_diffusion's loss train on perturbed inputs (its targets unchanged)."""
    from ldmpipe.stages import train_diffusion

    base = train_diffusion.diffusion_loss
    generator = torch.Generator().manual_seed(seed)

    def diffusion_loss(model, schedule, *args, **kwargs):
        return base(model, PerturbedSchedule(schedule, gamma, generator), *args, **kwargs)

    train_diffusion.diffusion_loss = diffusion_loss  # the stage looks it up at every step


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[0] != "--gamma" or argv[2] != "--seed":
        print(__doc__, file=sys.stderr)
        return 2
    gamma, seed = float(argv[1]), int(argv[3])
    patch(gamma, seed)
    print(f"input_perturbation: gamma {gamma:g}, perturbation seed {seed}", file=sys.stderr)
    from ldmpipe.cli import main as ldmpipe

    return ldmpipe(argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
