"""``LDMPipePipeline``: the diffusers pipeline of a folder written by ``ldmpipe export``.

Unconditional latent diffusion (Rombach et al. 2022), as ``ldmpipe sample`` runs it: x_T ~ N(0, I) of
shape (B, C, h, w), one UNet evaluation and one ``scheduler.step`` per entry of
``scheduler.timesteps``, then ``vae.decode(latents / vae.config.scaling_factor)``. The export copies this
file verbatim to the folder's root; it imports only torch and diffusers:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(batch_size=16, generator=[torch.Generator().manual_seed(i) for i in range(16)]).images

A list of B CPU generators draws latent row i from generator i, as ldmpipe's per-sample seeds do, so
image i does not depend on the batch size.

A class-conditional model (``unet.config.num_classes`` K > 0) samples with classifier-free guidance
(Ho & Salimans 2022) as ldmpipe does: ``out = out_null + w (out_class - out_null)`` on the network's
output, the class and the null pass (label K) in one forward over a doubled batch, no null pass at w = 1.
``class_labels`` (B,) picks the classes; by default row i gets class i mod K, as ``ldmpipe sample`` does:

    images = pipe(batch_size=8, class_labels=[3] * 8, guidance_scale=2.0).images
"""

from __future__ import annotations

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class LDMPipePipeline(DiffusionPipeline):
    """Components: ``unet`` (latents -> the scheduler's prediction type), ``vae`` (``decode`` with a
    ``scaling_factor`` in its config) and ``scheduler``. ``default_steps``, ``default_eta`` and
    ``default_guidance_scale`` are the exporting params' ``sample.steps``, ``sample.eta`` and
    ``sample.guidance_scale``; ``classes`` names a class model's labels (label i: ``classes[i]``)."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet, vae, scheduler, default_steps: int = 50, default_eta: float = 0.0,
                 default_guidance_scale: float = 1.0, classes: list[str] | None = None):  # fmt: skip
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)
        self.register_to_config(default_steps=default_steps, default_eta=default_eta,
                                default_guidance_scale=default_guidance_scale, classes=classes)  # fmt: skip

    def _model(self, class_labels, guidance_scale: float, batch_size: int, device):
        """``model(x, t)`` -> the (guided) network output (B, C, h, w)."""
        k = getattr(self.unet.config, "num_classes", 0)
        if not k:
            if class_labels is not None:
                raise ValueError("class_labels given, but this model is unconditional (unet.config.num_classes 0)")
            return lambda x, t: self.unet(x, t).sample
        y = torch.arange(batch_size) % k if class_labels is None else torch.as_tensor(class_labels, dtype=torch.long)
        if tuple(y.shape) != (batch_size,) or bool(((y < 0) | (y >= k)).any()):
            raise ValueError(f"class_labels must be {batch_size} labels in 0..{k - 1}, got {y.tolist()}")
        y, null, w = y.to(device), torch.full_like(y, k).to(device), float(guidance_scale)
        if w in (0.0, 1.0):  # one pass: plainly unconditional (w = 0) or plainly conditional (w = 1)
            return lambda x, t: self.unet(x, t, null if w == 0.0 else y).sample
        yy = torch.cat([y, null])  # (2B,): rows 0..B-1 with their class, B..2B-1 with the null class

        def guided(x, t):
            out_class, out_null = self.unet(torch.cat([x, x]), t, yy).sample.chunk(2)  # 2 x (B, C, h, w)
            return out_null + w * (out_class - out_null)

        return guided

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        eta: float | None = None,
        class_labels: list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """``latents``: x_T (B, C, h, w) instead of drawing it. ``eta`` goes to schedulers that take it
        (DDIM). ``class_labels`` (B,) and ``guidance_scale`` w: class models only (defaults: row i gets
        class i mod K; the exported ``sample.guidance_scale``). ``output_type``: ``pil``, ``np`` (B, H, W, C) in [0, 1], ``pt`` (B, C, H, W) in [0, 1], or
        ``latent`` (the scaled latents x_0, undecoded)."""
        device, dtype = self._execution_device, self.unet.dtype
        steps = self.config.default_steps if num_inference_steps is None else num_inference_steps
        eta = self.config.default_eta if eta is None else eta
        w = self.config.default_guidance_scale if guidance_scale is None else guidance_scale
        model = self._model(class_labels, w, batch_size, device)
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
            output = model(self.scheduler.scale_model_input(latents, t), t)  # (B, C, h, w)
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
