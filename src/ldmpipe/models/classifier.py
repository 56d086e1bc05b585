"""The evaluator: a small CNN classifier whose features and softmax serve FID and IS.

FID compares Gaussian fits to ``features(x)`` (B, dim); IS uses ``softmax(head(features(x)))``
(Heusel et al. 2017; Salimans et al. 2016), both computed by this frozen network instead of
Inception, so the metric works offline on any dataset the pipeline trains on.

A classifier of shapes has every reason to become blind to colour, noise and blur: none of them
changes the class.  So the FID features are more than the pooled top features (B, feature_dim)
that the linear head classifies.  For each of the first ``stat_blocks`` blocks they add two
statistics of every channel of its output, over all positions (multi-scale features, in the
spirit of the texture statistics of Gatys et al. 2016):

- the mean: colour and brightness;
- the mean absolute local deviation |a - box3x3(a)|: high-frequency energy.  It grows in
  proportion to the strength of weak noise in flat regions (a variance grows with its square),
  and falls with blur.

With ``standardise``, every feature dimension is then z-scored with the mean and standard
deviation of the training images (``standardise_``), so FID, a sum of squares over dimensions,
weighs each dimension by its natural spread instead of by the network's arbitrary units.  Training
is unchanged: the head reads the top features only (``forward`` skips the statistics), and
``standardise_`` rescales it so that the logits stay the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import group_norm


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
    )  # fmt: skip


def feature_size(channels: int, feature_dim: int, stat_blocks: int) -> int:
    """Dimension of ``Classifier.features``: feature_dim + 2 statistics x the widths (c, 2c) of the first stat_blocks blocks."""
    return feature_dim + 2 * sum(channels * 2**i for i in range(stat_blocks))


def block_statistics(a: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and mean absolute local deviation of activations (B, C, H, W) -> (B, 2C)."""
    local = F.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)  # 3x3 box mean, (B, C, H, W)
    return torch.cat([a.mean((2, 3)), (a - local).abs().mean((2, 3))], dim=1)


class SpatialMean(nn.Module):
    """Global average pooling (B, C, H, W) -> (B, C). Its backward is deterministic on CUDA, where
    ``nn.AdaptiveAvgPool2d``'s is not (``torch.use_deterministic_algorithms``); the CPU values are the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class TopHead(nn.Linear):
    """The classification head: a linear map of the first ``in_features`` columns of the features
    (B, dim), the top features; the block statistics after them serve FID only."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return super().forward(f[:, : self.in_features])  # logits (B, num_classes)


class Classifier(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: int, feature_dim: int,
                 stat_blocks: int = 0, standardise: bool = False):  # fmt: skip
        super().__init__()
        if not 0 <= stat_blocks <= 2:
            raise ValueError(f"stat_blocks must be 0, 1 or 2 (blocks before the last), got {stat_blocks}")
        self.config = dict(in_channels=in_channels, num_classes=num_classes, channels=channels,
                           feature_dim=feature_dim, stat_blocks=stat_blocks, standardise=standardise)  # fmt: skip
        c = channels
        self.body = nn.Sequential(
            _block(in_channels, c), nn.AvgPool2d(2),
            _block(c, 2 * c), nn.AvgPool2d(2),
            _block(2 * c, 4 * c), SpatialMean(),
        )  # fmt: skip
        self.feature = nn.Sequential(nn.Linear(4 * c, feature_dim), nn.SiLU())
        self.head = TopHead(feature_dim, num_classes)
        self.stat_blocks, self.standardise = stat_blocks, standardise
        self.dim = feature_size(channels, feature_dim, stat_blocks)
        if standardise:  # features = (raw - mean) / std; identity until `standardise_`
            self.register_buffer("feature_mean", torch.zeros(self.dim))
            self.register_buffer("feature_std", torch.ones(self.dim))

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """Top features (B, feature_dim), then the statistics (B, 2 c 2^i) of blocks i < stat_blocks."""
        stats = []
        for i, layer in enumerate(self.body):
            x = layer(x)  # block i = body[2 i]: (B, c 2^i, H / 2^i, W / 2^i)
            if i % 2 == 0 and i // 2 < self.stat_blocks:
                stats.append(block_statistics(x))
        return torch.cat([self.feature(x), *stats], dim=1)  # (B, dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FID features (B, dim) of images (B, C, H, W) in [-1, 1]."""
        f = self.raw_features(x)
        return (f - self.feature_mean) / self.feature_std if self.standardise else f

    @torch.no_grad()
    def standardise_(self, raw: torch.Tensor) -> None:
        """Z-score the features with the float64 mean and std of ``raw_features`` (N, dim) of training
        images; rescale the head so that the logits stay: W' = W_raw diag(std), b' = b_raw + W_raw mean."""
        if not self.standardise:
            raise ValueError("this Classifier was built with standardise=False")
        def f64(x: torch.Tensor) -> torch.Tensor:  # float64 on the CPU (MPS has none)
            return x.detach().cpu().double()

        raw = f64(raw)
        mean, std = raw.mean(0), raw.std(0).clamp(min=1e-6)  # (dim,) each
        k = self.head.in_features
        w_raw = f64(self.head.weight) / f64(self.feature_std[:k])  # (K, k): the head on raw top features
        b_raw = f64(self.head.bias) - w_raw @ f64(self.feature_mean[:k])
        for dest, value in ((self.head.weight, w_raw * std[:k]), (self.head.bias, b_raw + w_raw @ mean[:k]),
                            (self.feature_mean, mean), (self.feature_std, std)):  # fmt: skip
            dest.copy_(value.to(dest.dtype))  # rounded on the CPU, then copied to the device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) = ``head(features(x))``, without computing the block statistics."""
        f = self.feature(self.body(x))  # top features (B, feature_dim)
        if self.standardise:
            f = (f - self.feature_mean[: f.shape[1]]) / self.feature_std[: f.shape[1]]
        return self.head(f)
