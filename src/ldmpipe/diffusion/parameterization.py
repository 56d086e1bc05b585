"""What the network predicts, and how its output converts to the clean sample x0 and the noise eps.

With x_t = a x0 + s eps, a = sqrt(abar_t), s = sqrt(1 - abar_t) (Ho et al. 2020, eq. 4), a^2 + s^2 = 1:

    epsilon:      target eps (Ho et al. eq. 14)    x0 = (x_t - s eps) / a
    sample:       target x0                        eps = (x_t - a x0) / s
    v_prediction: target v = a eps - s x0          x0 = a x_t - s v,  eps = s x_t + a v
                  (Salimans & Ho 2022, sec. 4 and appendix D)

The formulas are written as diffusers writes them, so the samplers agree with it to rounding. At zero
terminal SNR (abar = 0) eps-prediction cannot give x0 (Lin et al. 2024, sec. 3.2): that raises.
"""

from __future__ import annotations

import math

import torch

from ..constants import PREDICTIONS  # one list, shared with config validation
from ..runtime import to_device


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; expected one of {', '.join(PREDICTIONS)}")
    return prediction


def training_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Regression target (B, ...) in x0's dtype/device for x0, noise (B, ...) and abar (B,) float64."""
    check_prediction(prediction)
    if prediction == "epsilon":
        return noise
    if prediction == "sample":
        return x0
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a = to_device(abar.sqrt().reshape(shape), x0.device, x0.dtype)  # (B, 1, 1, 1), cast on the CPU (MPS has no float64)
    s = to_device((1.0 - abar).sqrt().reshape(shape), x0.device, x0.dtype)
    return a * noise.to(device=x0.device, dtype=x0.dtype) - s * x0  # v


def predict_x0(prediction: str, model_output: torch.Tensor, sample: torch.Tensor, abar: float) -> torch.Tensor:
    """x0 implied by the model output at x_t = `sample` (both (B, C, H, W)), for a scalar abar_t."""
    if check_prediction(prediction) == "epsilon":
        if abar == 0.0:
            raise ValueError("epsilon prediction cannot recover x0 at zero SNR; use v_prediction or sample")
        return (sample - math.sqrt(1.0 - abar) * model_output) / math.sqrt(abar)
    if prediction == "sample":
        return model_output
    return math.sqrt(abar) * sample - math.sqrt(1.0 - abar) * model_output  # v_prediction


def predict_eps(prediction: str, model_output: torch.Tensor, sample: torch.Tensor, abar: float) -> torch.Tensor:
    """eps implied by the model output at x_t = `sample` (both (B, C, H, W)), for a scalar abar_t < 1."""
    if check_prediction(prediction) == "epsilon":
        return model_output
    if prediction == "sample":
        return (sample - math.sqrt(abar) * model_output) / math.sqrt(1.0 - abar)
    return math.sqrt(abar) * model_output + math.sqrt(1.0 - abar) * sample  # v_prediction
