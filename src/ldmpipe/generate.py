"""Images from a trained latent diffusion model: sampler construction and per-sample-seeded generation.

Shared by the ``sample``, ``sweep`` and ``guidance_sweep`` stages.  Sample i starts from its own seed
(derived from the global seed and i), so its noise does not depend on the batch size or on how many
are drawn (its pixels can: the network's batched kernels round differently, by ~1e-7, which can move a
uint8 pixel by one level); from a class-conditional model it is also drawn from its own class, a function of i alone
(`guidance.sample_classes`), with classifier-free guidance at scale w (`guidance.GuidedModel`). With a
``guide`` network and ``autoguidance`` w_g != 1 either kind is also autoguided (`guidance.AutoGuidedModel`).
``trajectory`` replays the first samples and shows x_t and the predicted x0 along the way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from . import runtime
from .config import ConfigError
from .diffusion import SAMPLERS
from .diffusion.guidance import AutoGuidedModel, GuidedModel, model_passes, sample_classes
from .diffusion.noise import sample_generators
from .diffusion.parameterization import predict_x0
from .diffusion.sampling import sample_loop
from .diffusion.schedule import NoiseSchedule
from .images import to_uint8
from .io import ArtifactError
from .models.autoencoder import Autoencoder
from .models.checkpoint import load_guide
from .models.unet import UNet


def schedule_of(diffusion: dict) -> NoiseSchedule:
    """The noise schedule a UNet was trained with, from its checkpoint's ``diffusion`` params."""
    return NoiseSchedule.from_params(diffusion)


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
    progress: bool | str = True,
    labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    make_model: Callable[[int, int], Callable] | None = None,
    guide: UNet | None = None,
    autoguidance: float = 1.0,
) -> np.ndarray:
    """``n`` images, uint8 (N, H, W, C): `sample_latents`, divided by the scale factor and decoded batch by
    batch (VQ: quantised first)."""
    batches = sample_latents(unet, sampler, steps, n, batch_size, seed, device, progress, labels, guidance_scale,
                             make_model, guide, autoguidance)  # fmt: skip
    return np.concatenate([decode_samples(vae, z.to(device), scale_factor) for z in batches])


@torch.no_grad()
def decode_samples(vae: Autoencoder, z: torch.Tensor, scale_factor: float) -> np.ndarray:
    """Scaled latents (B, z, h, w) -> uint8 images (B, H, W, C): divided by the scale factor and decoded
    (VQ: quantised first)."""
    return to_uint8(vae.decode_latents(z / scale_factor))


def sample_latents(
    unet: UNet,
    sampler,
    steps: int,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool | str = True,
    labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    make_model: Callable[[int, int], Callable] | None = None,
    guide: UNet | None = None,
    autoguidance: float = 1.0,
) -> Iterator[torch.Tensor]:
    """The scaled latents (B, z, h, w) of samples 0..n-1, ``batch_size`` at a time; sample i from its own seed.

    A class-conditional ``unet`` needs ``labels`` (N,), the class of every sample (`class_labels`), and
    samples with classifier-free guidance at ``guidance_scale``; an unconditional one takes neither. At
    ``autoguidance`` w_g != 1 both are also guided by ``guide`` (`sampling_model`).
    ``make_model(start, stop)``, if given, is the ``model(x, t)`` that samples rows start..stop-1 instead
    (another guidance of ``unet``, which then takes no ``labels``). ``progress``: one bar over every
    sampler step of every batch (a string: its label), or none."""
    if make_model is None and (labels is None) != (unet.num_classes == 0):
        raise ValueError("a class-conditional UNet samples with labels (N,), an unconditional one without")
    shape = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    sampler.set_timesteps(steps)
    bar = tqdm(total=-(-n // batch_size) * len(sampler.timesteps), desc=progress if isinstance(progress, str) else "sampling",
               unit="step", file=sys.stderr, disable=progress is False)  # fmt: skip
    tick = lambda *_: bar.update()  # noqa: E731  (sample_loop's callback: once per network evaluation)
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        gens = sample_generators([runtime.stage_seed(seed, f"sample/{i}") for i in idx])
        if make_model is not None:
            model = make_model(start, idx.stop)
        else:
            rows = None if labels is None else labels[start : idx.stop]
            model = sampling_model(unet, rows, guidance_scale, guide, autoguidance)
        yield sample_loop(model, sampler, (len(idx), *shape), gens, device, progress=False, callback=tick)  # (B, z, h, w)
    bar.close()


def sampling_model(unet: UNet, labels: torch.Tensor | None, guidance_scale: float, guide: UNet | None,
                   autoguidance: float) -> Callable:  # fmt: skip
    """``model(x, t)`` for ``sample_loop``: the UNet itself (unconditional), guided by classifier-free
    guidance (a class model: its rows' ``labels`` (B,)), and autoguided by ``guide`` at w_g != 1."""
    if autoguidance != 1.0:
        if guide is None:
            raise ValueError("autoguidance needs the guide network")
        return AutoGuidedModel(unet, guide, autoguidance, labels, unet.null_class if labels is not None else 0, guidance_scale)
    return unet if labels is None else GuidedModel(unet, labels, unet.null_class, guidance_scale)


def guide_for(path, autoguidance: float, device: torch.device | str) -> UNet | None:
    """The autoguidance guide stored in the UNet checkpoint at ``path`` when ``autoguidance`` != 1 (else
    None, nothing read); a checkpoint without one is refused, naming the file and the key."""
    if autoguidance == 1.0:
        return None
    guide = load_guide(UNet, path, device)
    if guide is None:
        raise ArtifactError(f"{path}: holds no autoguidance guide (trained with train.guide_step null), but "
                            f"sample.autoguidance is {autoguidance:g}")  # fmt: skip
    return guide


def class_labels(unet: UNet, classes: tuple[int, ...] | None, n: int) -> torch.Tensor | None:
    """The class of samples 0..n-1 (N,) for a class model, from ``sample.classes`` (None: all classes,
    balanced); None for an unconditional model, which ignores the key."""
    if unet.num_classes == 0:
        return None
    drawn = list(range(unet.num_classes)) if classes is None else list(classes)
    if max(drawn) >= unet.num_classes:
        raise ConfigError(f"sample.classes must be class indices below the model's {unet.num_classes} classes, got {drawn}")
    return sample_classes(range(n), drawn)


def nfe(sampler, unet: UNet, guidance_scale: float, autoguidance: float = 1.0) -> int:
    """Network evaluations per sample: the sampler's, times the passes per step (classifier-free guidance of
    a class model: 2 unless w is 0 or 1; autoguidance: one more)."""
    return sampler.nfe * model_passes(unet.num_classes > 0, guidance_scale, autoguidance)


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
    labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    guide: UNet | None = None,
    autoguidance: float = 1.0,
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """The reverse process of the first ``n`` samples (their own seeds, as in ``generate``), seen at
    ``columns`` network evaluations evenly spaced from the first to the last: the network's input x_t
    and the clean sample x̂0 its output implies there (``parameterization.predict_x0``), both decoded.

    Returns ([(evaluation index, t)] of the K columns, x_t images uint8 (n, K, H, W, C), x̂0 images
    (n, K, H, W, C)); the last x̂0 is (nearly) the sample itself. A class model samples as in ``generate``
    (``labels`` of all samples, the first n used; x̂0 from the guided output), autoguided as there."""
    sampler.set_timesteps(steps)
    keep = sorted({int(round(float(i))) for i in np.linspace(0, sampler.nfe - 1, min(columns, sampler.nfe))})
    abar, seen = sampler.schedule.alphas_cumprod, {}

    def record(i: int, t: int, x_t: torch.Tensor, out: torch.Tensor) -> None:  # x_t, out: (n, z, h, w)
        if i in keep:
            seen[i, t] = (x_t.clone(), predict_x0(sampler.prediction, out, x_t, float(abar[t])))

    shape = (n, unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    gens = sample_generators([runtime.stage_seed(seed, f"sample/{i}") for i in range(n)])
    model = sampling_model(unet, None if labels is None else labels[:n], guidance_scale, guide, autoguidance)
    sample_loop(model, sampler, shape, gens, device, progress=False, callback=record)

    def decoded(k: int) -> np.ndarray:  # column by column: (n, z, h, w) -> uint8 (n, H, W, C); stacked (n, K, H, W, C)
        return np.stack([decode_samples(vae, z[k], scale_factor) for z in seen.values()], axis=1)

    return list(seen), decoded(0), decoded(1)
