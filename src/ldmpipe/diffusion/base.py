"""The contract every sampler follows (diffusers' scheduler interface), and the checks they share.

    sampler = DDIMSampler(schedule, prediction="v_prediction", spacing="trailing")
    sampler.set_timesteps(n)        # fills sampler.timesteps: one entry per model evaluation, in order
                                    # (or set_timesteps(timesteps=[999, 850, ...]): a grid of one's own)
    x = sampler.init_noise_sigma * N(0, I)
    for t in sampler.timesteps:
        out = model(sampler.scale_model_input(x, t), t)
        x = sampler.step(out, t, x, generator=generators)

`timesteps` are int64 training timesteps; a two-stage sampler (Heun) lists a timestep twice, so
`nfe = len(timesteps)` counts model evaluations honestly. Multistep and two-stage samplers keep state
between `step` calls, which must follow `timesteps` in order; `set_timesteps` resets it.

A partial reverse process (SDEdit, Meng et al. 2022; diffusers' img2img pipelines) starts at
`timesteps[i]` from data taken forward to that timestep:

    sampler.set_timesteps(n); sampler.set_begin_index(i)
    x = sampler.add_noise(x0, eps, int(sampler.timesteps[i]))
    for t in sampler.timesteps[i:]: ...as above
"""

from __future__ import annotations

import torch

from .parameterization import check_prediction
from .schedule import NoiseSchedule
from .spacing import check_spacing, check_timesteps, spaced_timesteps


class Sampler:
    """Base class: validated arguments, `nfe`, identity `scale_model_input`, `init_noise_sigma` = 1."""

    def __init__(self, schedule: NoiseSchedule, *, prediction: str = "epsilon", spacing: str = "leading") -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"expected a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self.spacing = check_spacing(spacing)
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.custom_timesteps: torch.Tensor | None = None  # the caller's grid (set_timesteps(timesteps=...)), or None
        self._position = 0  # index into `timesteps` of the next `step` (stateful samplers)

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of x_T for the sampling loop (1: samplers working on the VP x_t)."""
        return 1.0

    @property
    def nfe(self) -> int:
        """Model evaluations for the current `set_timesteps`."""
        return len(self._require_timesteps())

    def scale_model_input(self, sample: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The model's input for `sample` at timestep t (identity unless the sampler works in sigma space)."""
        return sample

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The sampler's x at timestep t (an int, or one per row (B,)) for data `original` and noise `noise`,
        both (B, C, H, W): here the VP x_t of `NoiseSchedule.add_noise` (Ho et al. 2020, eq. 4), as diffusers'
        `add_noise`."""
        return self.schedule.add_noise(original, noise, torch.as_tensor(t))

    def set_begin_index(self, begin_index: int) -> None:
        """Make the next `step` the one at `timesteps[begin_index]` (diffusers' `set_begin_index`), for a
        partial reverse process; call it after `set_timesteps`, which starts at 0. A multistep sampler
        starts without history there (first order), as from x_T."""
        n = len(self._require_timesteps())
        begin_index = int(begin_index)
        if not 0 <= begin_index < n:
            raise ValueError(f"begin_index {begin_index} outside [0, {n - 1}] (this sampler's {n} timesteps)")
        self._position = begin_index

    def reset(self) -> None:
        """Start again at `timesteps[0]` without history: `set_timesteps` with the same step count or grid
        (`sample_loop` calls it before every batch)."""
        self._require_timesteps()
        if self.custom_timesteps is not None:
            self.set_timesteps(timesteps=self.custom_timesteps)
        else:
            self.set_timesteps(self.num_inference_steps)

    def _timestep_grid(self, num_inference_steps: int | None, timesteps, *, skip_zero: bool = False) -> torch.Tensor:
        """The (n,) descending grid for `set_timesteps`: the spacing's n points (`spacing.spaced_timesteps`),
        or the caller's `timesteps` (`spacing.check_timesteps`; the spacing is then unused), exactly one of the
        two, as diffusers' `set_timesteps(num_inference_steps=None, timesteps=None)`. Sets
        `num_inference_steps` (= n) and `custom_timesteps`, and restarts at position 0."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("set_timesteps takes exactly one of num_inference_steps and timesteps")
        T = self.schedule.num_timesteps
        if timesteps is not None:
            grid = check_timesteps(timesteps, T)
            self.custom_timesteps, self.num_inference_steps = grid, len(grid)
        else:
            grid = spaced_timesteps(self.spacing, T, num_inference_steps, skip_zero=skip_zero)
            self.custom_timesteps, self.num_inference_steps = None, num_inference_steps
        self._position = 0
        return grid

    def _require_timesteps(self) -> torch.Tensor:
        if self.timesteps is None:
            raise ValueError("call set_timesteps(n) first")
        return self.timesteps

    def _check_step(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor) -> int:
        """Common checks of a `step` call; returns t as an int."""
        self._require_timesteps()
        t = int(t)
        if not 0 <= t < self.schedule.num_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.schedule.num_timesteps - 1}]")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        return t

    def _advance(self, t: int) -> int:
        """For stateful samplers: the position of this step in `timesteps` (which t must match), then +1."""
        ts = self._require_timesteps()
        i = self._position
        if i >= len(ts) or int(ts[i]) != t:
            expected = int(ts[i]) if i < len(ts) else "none (finished; call set_timesteps again)"
            raise ValueError(f"steps must follow sampler.timesteps in order: got t={t}, expected {expected}")
        self._position = i + 1
        return i


class SingleStepSampler(Sampler):
    """A sampler whose step from t lands on the next entry of `timesteps` (DDPM, DDIM): one model
    evaluation per step, no state between steps."""

    def __init__(self, schedule: NoiseSchedule, *, prediction: str = "epsilon", spacing: str = "leading") -> None:
        super().__init__(schedule, prediction=prediction, spacing=spacing)
        self._next: dict[int, int] = {}  # timestep -> the one a step from it lands on (`set_timesteps`)

    def set_timesteps(self, num_inference_steps: int | None = None, *, timesteps=None) -> None:
        """n descending int64 timesteps (see `spacing.spaced_timesteps`), or the caller's `timesteps`;
        a step from each lands on the next, the last on x_0.

        leading:  arange(0, n) * (T // n), reversed (diffusers' default).
        trailing: round(T - i * T / n) - 1 for i = 0..n-1 (Lin et al. 2024: starts at T - 1).
        linspace: round(linspace(0, T - 1, n)), reversed.
        """
        self.timesteps = self._timestep_grid(num_inference_steps, timesteps)
        self._next = next_timesteps(self.timesteps)

    def previous_timestep(self, t: int) -> int:
        """The timestep a step from t lands on: the next entry of `timesteps`, -1 (abar = 1, x_0) after the last."""
        self._require_timesteps()
        if int(t) not in self._next:
            raise ValueError(f"timestep {int(t)} is not one of this sampler's timesteps")
        return self._next[int(t)]


def next_timesteps(timesteps: torch.Tensor) -> dict[int, int]:
    """t -> the timestep that follows it in `timesteps` (-1 after the last): where a step from t lands."""
    ts = timesteps.tolist()
    return dict(zip(ts, ts[1:] + [-1]))
