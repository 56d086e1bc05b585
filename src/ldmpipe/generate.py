"""Images from a trained latent diffusion model: sampler construction and per-sample-seeded generation.

Shared by the ``sample`` and ``sweep`` stages.  Sample i starts from its own seed (derived from
the global seed and i), so it does not depend on the batch size or on how many are drawn.
``trajectory`` replays the first samples and shows x_t and the predicted x0 along the way.
"""

from __future__ import annotations

import numpy as np
import torch

from . import runtime
from .diffusion import SAMPLERS
from .diffusion.noise import sample_generators
from .diffusion.parameterization import predict_x0
from .diffusion.sampling import sample_loop
from .diffusion.schedule import NoiseSchedule
from .images import to_uint8
from .models.autoencoder import Autoencoder
from .models.unet import UNet


def schedule_of(diffusion: dict) -> NoiseSchedule:
    """The noise schedule a UNet was trained with, from its checkpoint's ``diffusion`` params."""
    return NoiseSchedule.from_config(
        diffusion["schedule"], diffusion["timesteps"], diffusion["beta_start"], diffusion["beta_end"],
        rescale_zero_terminal_snr=diffusion.get("zero_terminal_snr", False),
    )  # fmt: skip


def make_sampler(name: str, schedule: NoiseSchedule, *, prediction: str, spacing: str, eta: float = 0.0):
    """A sampler by its params name; ``eta`` applies to DDIM only."""
    kwargs = {"eta": eta} if name == "ddim" else {}
    return SAMPLERS[name](schedule, prediction=prediction, spacing=spacing, **kwargs)


def generate(
    unet: UNet,
    vae: Autoencoder,
    scale_factor: float,
    sampler,
    steps: int,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> np.ndarray:
    """``n`` images, uint8 (N, H, W, C): sample scaled latents, divide by the scale factor, decode (VQ: quantise first)."""
    shape = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    images = []
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        gens = sample_generators([runtime.stage_seed(seed, f"sample/{i}") for i in idx])
        sampler.set_timesteps(steps)
        z = sample_loop(unet, sampler, (len(idx), *shape), gens, device, progress=progress)  # (B, z, h, w)
        with torch.no_grad():
            images.append(to_uint8(vae.decode_latents(z.to(device) / scale_factor)))
    return np.concatenate(images)


def trajectory(
    unet: UNet,
    vae: Autoencoder,
    scale_factor: float,
    sampler,
    steps: int,
    seed: int,
    n: int = 4,
    columns: int = 8,
    device: torch.device | str = "cpu",
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The reverse process of the first ``n`` samples (their own seeds, as in ``generate``), seen at
    ``columns`` network evaluations evenly spaced from the first to the last: the network's input x_t
    and the clean sample x̂0 its output implies there (``parameterization.predict_x0``), both decoded.

    Returns ([(evaluation index, t)] of the K columns, x_t images uint8 (n, K, H, W, C), x̂0 images
    (n, K, H, W, C)); the last x̂0 is (nearly) the sample itself."""
    sampler.set_timesteps(steps)
    keep = sorted({int(round(float(i))) for i in np.linspace(0, sampler.nfe - 1, min(columns, sampler.nfe))})
    abar, seen = sampler.schedule.alphas_cumprod, {}

    def record(i: int, t: int, x_t: torch.Tensor, out: torch.Tensor) -> None:  # x_t, out: (n, z, h, w)
        if i in keep:
            seen[i, t] = (x_t.clone(), predict_x0(sampler.prediction, out, x_t, float(abar[t])))

    shape = (n, unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    gens = sample_generators([runtime.stage_seed(seed, f"sample/{i}") for i in range(n)])
    sample_loop(unet, sampler, shape, gens, device, progress=False, callback=record)

    def decoded(k: int) -> np.ndarray:  # column by column: (n, z, h, w) -> uint8 (n, H, W, C); stacked (n, K, H, W, C)
        with torch.no_grad():
            return np.stack([to_uint8(vae.decode_latents(z[k] / scale_factor)) for z in seen.values()], axis=1)

    return list(seen), decoded(0), decoded(1)
