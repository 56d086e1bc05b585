"""The evaluator: a small CNN classifier whose penultimate features and softmax serve FID and IS.

FID compares Gaussian fits to ``features(x)`` (B, feature_dim); IS uses ``softmax(logits)``
(Heusel et al. 2017; Salimans et al. 2016), both computed by this frozen network instead of
Inception, so the metric works offline on any dataset the pipeline trains on.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import group_norm


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
    )  # fmt: skip


class Classifier(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: int, feature_dim: int):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, channels=channels, feature_dim=feature_dim)
        c = channels
        self.body = nn.Sequential(
            _block(in_channels, c), nn.AvgPool2d(2),
            _block(c, 2 * c), nn.AvgPool2d(2),
            _block(2 * c, 4 * c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.feature = nn.Sequential(nn.Linear(4 * c, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images (B, C, H, W) in [-1, 1]."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # logits (B, num_classes)
