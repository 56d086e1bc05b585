"""Run one ldmpipe command with a self-conditioned UNet: a measurement, not a pipeline option.

Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits", sec. 3.2) feeds the network its own
previous estimate of x0 as extra input channels: x0_hat = f(x_t, x0_prev, t). In training, half of the
batches (a coin per batch) first run the network with x0_prev = 0 without gradients and then train on its
estimate; the others train with x0_prev = 0. In sampling, each step gets the x0 implied by the previous
step's output (0 at the first step). It costs about a sixth more training compute (a
forward pass, about a third of a training step, on half the batches) and nothing more per sampling step.

This wrapper swaps ldmpipe's `UNet` for a subclass whose input convolution takes 2C channels (the config,
so the checkpoint's metadata, is the plain UNet's) and runs the command. Train, sample and sweep all
through the wrapper, on a finished run's latents (the commands of dvc.yaml with other output paths):

    python benchmarks/self_conditioning.py --params sc/params.yaml train-diffusion --params sc/params.yaml \\
        --latents data/latents/train.safetensors --meta data/prepared/meta.json --model sc/model.safetensors \\
        --live sc/live --val-latents data/latents/val.safetensors --timestep-error sc/te.tsv --timestep-figure sc/te.png
    python benchmarks/self_conditioning.py --params sc/params.yaml sample --params sc/params.yaml --diffusion sc/model.safetensors ...

The first ``--params`` gives the schedule and prediction type that turn an output into x0. A checkpoint
it writes loads only through the wrapper. The per-timestep error of the EMA model is measured without
self-conditioning (each probe starts a new chain: x0_prev = 0). Guidance runs the conditional and the
null pass each with its own previous estimate. Measured figures: benchmarks/results/self_conditioning.json
(README: "Is the model sound at every noise level?").
"""

from __future__ import annotations

import sys

import torch
from torch import nn

COIN = torch.Generator().manual_seed(12345)  # the per-batch coin of training (outside the module: EMA deep-copies it)


def make_class(base: type, schedule, prediction: str) -> type:
    from ldmpipe.diffusion.parameterization import predict_x0

    def x0_of(out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 implied by the output at x_t = x (both (B, C, H, W)) for t (B,) or a scalar: one conversion when
        every row shares t (each sampler step), row by row otherwise (a training batch)."""
        tt = torch.as_tensor(t, device="cpu").long().reshape(-1)
        if bool((tt == tt[0]).all()):
            return predict_x0(prediction, out, x, float(schedule.alphas_cumprod[int(tt[0])]))
        rows = [predict_x0(prediction, out[i : i + 1], x[i : i + 1], float(schedule.alphas_cumprod[int(tt[i])]))
                for i in range(len(tt))]  # fmt: skip
        return torch.cat(rows)

    class UNet(base):  # the plain class's name, so checkpoints name the class that loads them
        def __init__(self, in_channels: int, *args, **kwargs):
            super().__init__(in_channels, *args, **kwargs)
            old = self.conv_in
            self.conv_in = nn.Conv2d(2 * in_channels, old.out_channels, 3, padding=1)
            self._prev, self._last_t = None, None

        def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            zeros = torch.zeros_like(x)
            if self.training:
                cond = zeros
                if float(torch.rand((), generator=COIN)) < 0.5:
                    with torch.no_grad():
                        cond = x0_of(super().forward(torch.cat([x, zeros], 1), t, y), x, t).detach()
                return super().forward(torch.cat([x, cond], 1), t, y)
            t_now = int(torch.as_tensor(t).reshape(-1)[0])
            fresh = self._prev is None or self._prev.shape != x.shape or t_now >= self._last_t
            cond = zeros if fresh else self._prev
            out = super().forward(torch.cat([x, cond], 1), t, y)
            self._prev, self._last_t = x0_of(out, x, t).detach(), t_now
            return out

    return UNet


def patch(params_path: str) -> None:
    """Swap `UNet` in every ldmpipe module that names it for the self-conditioned subclass."""
    from ldmpipe.config import load_params, to_dict
    from ldmpipe.diffusion import NoiseSchedule
    from ldmpipe.models import unet as unet_module
    from ldmpipe.stages import sample, sweep, train_diffusion  # sweep_reference loads through sweep
    from ldmpipe import generate  # its guide_for loads the autoguidance guide

    d = load_params(params_path).diffusion
    cls = make_class(unet_module.UNet, NoiseSchedule.from_params(to_dict(d)), d.prediction)
    for module in (unet_module, generate, sample, sweep, train_diffusion):
        module.UNet = cls


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "--params":
        print(__doc__, file=sys.stderr)
        return 2
    from ldmpipe.config import ConfigError

    try:
        patch(argv[1])
    except ConfigError as e:
        print(f"self_conditioning: {e}", file=sys.stderr)
        return 2
    print("self_conditioning: UNet with x0_prev input channels", file=sys.stderr)
    from ldmpipe.cli import main as ldmpipe

    return ldmpipe(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
