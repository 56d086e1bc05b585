"""``LDMPipePipeline``: the diffusers pipeline of a folder written by ``ldmpipe export``.

Unconditional latent diffusion (Rombach et al. 2022), as ``ldmpipe sample`` runs it: x_T ~ N(0, I) of
shape (B, C, h, w), one UNet evaluation and one ``scheduler.step`` per entry of
``scheduler.timesteps``, then ``vae.decode(latents / vae.config.scaling_factor)``. The export copies this
file verbatim to the folder's root; it imports only torch and diffusers:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(batch_size=16, generator=[torch.Generator().manual_seed(i) for i in range(16)]).images

A list of B CPU generators draws latent row i from generator i, as ldmpipe's per-sample seeds do, so
image i does not depend on the batch size.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class LDMPipePipeline(DiffusionPipeline):
    """Components: ``unet`` (latents -> the scheduler's prediction type), ``vae`` (``decode`` with a
    ``scaling_factor`` in its config) and ``scheduler``. ``default_steps`` and ``default_eta`` are the
    exporting params' ``sample.steps`` and ``sample.eta``."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet, vae, scheduler, default_steps: int = 50, default_eta: float = 0.0):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)
        self.register_to_config(default_steps=default_steps, default_eta=default_eta)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        eta: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """``latents``: x_T (B, C, h, w) instead of drawing it. ``eta`` goes to schedulers that take it
        (DDIM). ``output_type``: ``pil``, ``np`` (B, H, W, C) in [0, 1], ``pt`` (B, C, H, W) in [0, 1], or
        ``latent`` (the scaled latents x_0, undecoded)."""
        device, dtype = self._execution_device, self.unet.dtype
        steps = self.config.default_steps if num_inference_steps is None else num_inference_steps
        eta = self.config.default_eta if eta is None else eta
        size = self.unet.config.sample_size
        shape = (batch_size, self.unet.config.in_channels, size, size)
        # 1. The timesteps (first: a sigma-space scheduler's init_noise_sigma depends on them)
        self.scheduler.set_timesteps(steps, device=device)
        # 2. x_T ~ N(0, init_noise_sigma^2 I), (B, C, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        # 3. The reverse process: one network evaluation per scheduler timestep
        accepted = inspect.signature(self.scheduler.step).parameters
        kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepted}
        for t in self.progress_bar(self.scheduler.timesteps):
            output = self.unet(self.scheduler.scale_model_input(latents, t), t).sample  # (B, C, h, w)
            latents = self.scheduler.step(output, t, latents, **kwargs).prev_sample
        # 4. Decode the unscaled latents; images from [-1, 1] to [0, 1]
        if output_type == "latent":
            images = latents
        else:
            images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            images = (images / 2 + 0.5).clamp(0, 1).float()
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
