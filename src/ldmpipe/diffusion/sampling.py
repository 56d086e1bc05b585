"""The reverse-process loop, as diffusers' pipelines run it: x_T = init_noise_sigma * N(0, I), then
one model evaluation and one `sampler.step` per entry of `sampler.timesteps`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from .noise import GeneratorArg, randn_per_sample


def sample_loop(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler,
    shape: Sequence[int],
    generators: GeneratorArg,
    device: torch.device | str,
    progress: bool = True,
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
    latents: torch.Tensor | None = None,
    begin_index: int = 0,
) -> torch.Tensor:
    """Draw samples (B, C, H, W) float32 on `device` with a sampler whose `set_timesteps` was called.

    `generators`: B per-sample generators (see `sample_generators`) so sample i does not depend on
    the batch size, a single generator, or None. `model(x, t)` gets t as an int64 (B,) tensor; its
    output is whatever the sampler's `prediction` says (eps, x0 or v). The loop first calls
    `sampler.reset()` (`set_timesteps` again with the same steps or grid), which resets multistep /
    two-stage state, so one sampler can serve several batches. Works for every sampler: `timesteps`
    lists each model evaluation (Heun lists a timestep twice), `scale_model_input` gives the network
    its input, and `init_noise_sigma` scales x_T (both trivial except for samplers working in sigma
    space).
    `callback(i, t, model_input, model_output)`, if given, sees every evaluation i (as diffusers'
    `callback_on_step_end`): the network's input x_t and its output, both (B, C, H, W).

    A partial reverse process (SDEdit, Meng et al. 2022; diffusers' img2img pipelines): `latents`
    (B, C, H, W), the sampler's x at `timesteps[begin_index]` (e.g. `sampler.add_noise(x0, eps, t)`),
    replaces x_T, and the loop runs `timesteps[begin_index:]`; the generators then draw only the steps'
    noise. `i` in the callback stays the position in `timesteps`.
    """
    if getattr(sampler, "timesteps", None) is None:
        raise ValueError("call sampler.set_timesteps(n) before sample_loop")
    sampler.reset()
    sampler.set_begin_index(begin_index)
    shape = tuple(int(s) for s in shape)
    B = shape[0]
    if latents is None:
        if begin_index:
            raise ValueError(f"begin_index {begin_index} needs latents: the sample at timesteps[{begin_index}]")
        # 1. x_T ~ N(0, init_noise_sigma^2 I): (B, C, H, W), row i from generators[i] on CPU, then moved to device
        x = randn_per_sample(shape, generators, dtype=torch.float32, device=device) * sampler.init_noise_sigma
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents of shape {tuple(latents.shape)} for samples of shape {shape}")
    else:
        x = latents.to(device=device, dtype=torch.float32)  # 1'. x at timesteps[begin_index], (B, C, H, W)
    timesteps = sampler.timesteps.tolist()[begin_index:]
    with torch.no_grad():
        for i, t in enumerate(tqdm(timesteps, desc="sampling", file=sys.stderr, disable=not progress), start=begin_index):
            # 2. The network's output at (scale_model_input(x, t), t): (B, C, H, W)
            t_batch = torch.full((B,), t, dtype=torch.int64, device=x.device)
            x_in = sampler.scale_model_input(x, t)
            out = model(x_in, t_batch).to(torch.float32)
            if callback is not None:
                callback(i, t, x_in, out)
            # 3. x -> the next sample (x_{prev_t}, or Heun's intermediate point)
            x = sampler.step(out, t, x, generator=generators)
    return x
