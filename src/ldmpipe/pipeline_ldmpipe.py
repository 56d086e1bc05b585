"""``LDMPipePipeline``: the diffusers pipeline of a folder written by ``ldmpipe export``.

Unconditional latent diffusion (Rombach et al. 2022), as ``ldmpipe sample`` runs it: x_T ~ N(0, I) of
shape (B, C, h, w), one UNet evaluation and one ``scheduler.step`` per entry of
``scheduler.timesteps``, then ``vae.decode(latents / vae.config.scaling_factor)``. The export copies this
file verbatim to the folder's root; it imports only torch and diffusers:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(batch_size=16, generator=[torch.Generator().manual_seed(i) for i in range(16)]).images

A list of B CPU generators draws latent row i from generator i, as ldmpipe's per-sample seeds do, so
image i does not depend on the batch size (up to the float rounding of batched kernels).

A class-conditional model (``unet.config.num_classes`` K > 0) samples with classifier-free guidance
(Ho & Salimans 2022) as ldmpipe does: ``out = out_null + w (out_class - out_null)`` on the network's
output, the class and the null pass (label K) in one forward over a doubled batch, no null pass at w = 1.
``class_labels`` (B,) picks the classes; by default row i gets class i mod K, as ``ldmpipe sample`` does:

    images = pipe(batch_size=8, class_labels=[3] * 8, guidance_scale=2.0).images

A folder exported from a model trained with ``train.guide_step`` also holds the autoguidance guide
(Karras et al. 2024), the optional component ``guide_unet``: an earlier snapshot of the same network.
``autoguidance_scale`` w_g != 1 guides the model away from it, as ``ldmpipe sample`` does:
``out = out_guide + w_g (out - out_guide)``, the guide seeing the class the model sees; with classifier-free
guidance as well, ``+ (w - 1)(out_class - out_null)``. The guide costs one more forward per step:

    images = pipe(batch_size=16, autoguidance_scale=1.5).images
"""

from __future__ import annotations

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


def guide(out: torch.Tensor, out_guide: torch.Tensor, w: float) -> torch.Tensor:
    """out_guide + w (out - out_guide), both (B, C, h, w): classifier-free guidance (Ho & Salimans 2022,
    eq. 6) with the null output as the guide, autoguidance (Karras et al. 2024, eq. 1) with the guide's."""
    return out_guide + w * (out - out_guide)


class LDMPipePipeline(DiffusionPipeline):
    """Components: ``unet`` (latents -> the scheduler's prediction type), ``vae`` (``decode`` with a
    ``scaling_factor`` in its config), ``scheduler`` and, optionally, ``guide_unet`` (autoguidance's guide,
    the same architecture). ``default_steps``, ``default_eta``, ``default_guidance_scale`` and
    ``default_autoguidance`` are the exporting params' ``sample.steps``, ``sample.eta``,
    ``sample.guidance_scale`` and ``sample.autoguidance``; ``classes`` names a class model's labels
    (label i: ``classes[i]``)."""

    model_cpu_offload_seq = "unet->guide_unet->vae"
    _optional_components = ["guide_unet"]

    def __init__(self, unet, vae, scheduler, guide_unet=None, default_steps: int = 50, default_eta: float = 0.0,
                 default_guidance_scale: float = 1.0, default_autoguidance: float = 1.0,
                 classes: list[str] | None = None):  # fmt: skip
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, guide_unet=guide_unet)
        self.register_to_config(default_steps=default_steps, default_eta=default_eta,
                                default_guidance_scale=default_guidance_scale,
                                default_autoguidance=default_autoguidance, classes=classes)  # fmt: skip

    def _labels(self, class_labels, batch_size: int, device) -> torch.Tensor | None:
        """The class of each row (B,) for a class model (default: row i gets class i mod K), else None."""
        k = getattr(self.unet.config, "num_classes", 0)
        if not k:
            if class_labels is not None:
                raise ValueError("class_labels given, but this model is unconditional (unet.config.num_classes 0)")
            return None
        y = torch.arange(batch_size) % k if class_labels is None else torch.as_tensor(class_labels, dtype=torch.long)
        if tuple(y.shape) != (batch_size,) or bool(((y < 0) | (y >= k)).any()):
            raise ValueError(f"class_labels must be {batch_size} labels in 0..{k - 1}, got {y.tolist()}")
        return y.to(device)

    def _model(self, class_labels, guidance_scale: float, autoguidance_scale: float, batch_size: int, device):
        """``model(x, t)`` -> the (guided) network output (B, C, h, w)."""
        y, w, w_g = self._labels(class_labels, batch_size, device), float(guidance_scale), float(autoguidance_scale)
        for name, value in (("guidance_scale", w), ("autoguidance_scale", w_g)):
            if not value >= 0.0:  # as ldmpipe check refuses sample.guidance_scale and sample.autoguidance (NaN too)
                raise ValueError(f"{name} must be a non-negative number, got {value:g}")
        if w_g != 1.0 and self.guide_unet is None:
            raise ValueError(f"autoguidance_scale {w_g:g} needs the guide network, and this pipeline has none "
                             "(guide_unet: exported from a model trained without train.guide_step)")  # fmt: skip

        def run(net, x, t, labels):  # one forward of ``net``; an unconditional model takes no labels
            return (net(x, t) if labels is None else net(x, t, labels)).sample

        null = None if y is None else torch.full_like(y, self.unet.config.num_classes)
        if y is None or w in (0.0, 1.0):  # one pass of the model: unconditional, null class (w = 0) or class (w = 1)
            seen = null if w == 0.0 else y  # what both networks see: the labels (B,), or none
            if w_g == 1.0:
                return lambda x, t: run(self.unet, x, t, seen)
            return lambda x, t: guide(run(self.unet, x, t, seen), run(self.guide_unet, x, t, seen), w_g)
        yy = torch.cat([y, null])  # (2B,): rows 0..B-1 with their class, B..2B-1 with the null class

        def guided(x, t):
            out_class, out_null = run(self.unet, torch.cat([x, x]), t, yy).chunk(2)  # 2 x (B, C, h, w)
            if w_g == 1.0:
                return guide(out_class, out_null, w)
            return guide(out_class, run(self.guide_unet, x, t, y), w_g) + (w - 1.0) * (out_class - out_null)

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
        autoguidance_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        timesteps: list[int] | None = None,
    ):
        """``latents``: x_T (B, C, h, w) instead of drawing it. ``eta`` goes to schedulers that take it
        (DDIM). ``class_labels`` (B,) and ``guidance_scale`` w: class models only (defaults: row i gets
        class i mod K; the exported ``sample.guidance_scale``). ``autoguidance_scale`` w_g: needs
        ``guide_unet`` unless 1 (default: the exported ``sample.autoguidance``). ``output_type``: ``pil``,
        ``np`` (B, H, W, C) in [0, 1], ``pt`` (B, C, H, W) in [0, 1], or ``latent`` (the scaled latents x_0,
        undecoded). ``timesteps``: a grid of one's own instead of ``num_inference_steps`` (descending, as
        diffusers' pipelines take it, e.g. an "Align Your Steps" grid), for schedulers that take one (DDPM,
        DPM-Solver++, Heun; not DDIM)."""
        device, dtype = self._execution_device, self.unet.dtype
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass num_inference_steps or timesteps, not both")
            if "timesteps" not in inspect.signature(self.scheduler.set_timesteps).parameters:
                raise ValueError(f"{type(self.scheduler).__name__} takes no custom timesteps; pass num_inference_steps")
        steps = self.config.default_steps if num_inference_steps is None else num_inference_steps
        eta = self.config.default_eta if eta is None else eta
        w = self.config.default_guidance_scale if guidance_scale is None else guidance_scale
        w_g = self.config.default_autoguidance if autoguidance_scale is None else autoguidance_scale
        model = self._model(class_labels, w, w_g, batch_size, device)
        size = self.unet.config.sample_size
        shape = (batch_size, self.unet.config.in_channels, size, size)
        # 1. The timesteps (first: a sigma-space scheduler's init_noise_sigma depends on them): the spacing's
        #    n steps, or the caller's grid (as diffusers' `retrieve_timesteps`)
        if timesteps is None:
            self.scheduler.set_timesteps(steps, device=device)
        else:
            self.scheduler.set_timesteps(timesteps=[int(t) for t in timesteps], device=device)
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
