"""Conversions between stored images (uint8, channels last) and model tensors ([-1, 1], channels first)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def to_model_input(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1] on ``device``."""
    return tensor_to_model_input(torch.from_numpy(np.ascontiguousarray(images))).to(device)


def tensor_to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 tensor (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1], on the tensor's device."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C), clamped and rounded to nearest."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def map_batches(
    fn: Callable[[torch.Tensor], np.ndarray], images: np.ndarray, batch_size: int, device: torch.device | str = "cpu"
) -> np.ndarray:
    """``fn`` on model inputs of uint8 images (N, H, W, C), ``batch_size`` at a time; outputs concatenated."""
    return np.concatenate([fn(to_model_input(images[i : i + batch_size], device)) for i in range(0, len(images), batch_size)])
