"""Image disturbances of Heusel et al. 2017 (fig. 3), four levels each, and the FID test built on them.

A sound FID feature space must see damage: FID should rise with the strength of a disturbance.
Each disturbance maps uint8 images (N, H, W, C) to uint8 images of the same shape (computed in
float64, rounded to nearest, clipped to [0, 255]); level 0 is the undisturbed image, levels 1-4
use the parameters in ``DISTURBANCES``:

- ``gaussian_noise``: x + N(0, sigma^2) per value, sigma in {0.02, 0.05, 0.1, 0.2} * 255;
- ``gaussian_blur``: convolution with a Gaussian of sigma in {0.5, 1, 1.5, 2.5} px
  (``scipy.ndimage.gaussian_filter``: kernel truncated at 4 sigma, mirrored borders);
- ``black_square``: one black square of side round(s * min(H, W)), s in {10, 25, 40, 60} %, at a
  random place wholly inside the image (Heusel et al. use black rectangles);
- ``salt_and_pepper``: exactly round(p * H * W) pixels (all channels of each) set to black or
  white with probability 1/2 each, p in {1, 3, 10, 25} %;
- ``colour_push``: g + (1 + a)(x - g) + 64 a with g the per-pixel grey, here the *mean over the
  channels* (not luma), a in {0.25, 0.5, 1, 2}: more saturation and more brightness.  On
  one-channel images x = g, so only the brightness moves.

Randomness: image i of a set draws from its own generator ``default_rng([seed, k, i])`` (k: the
disturbance's index in ``DISTURBANCES``), independent of N and of the level.  The levels share
random numbers: the same noise field scaled, the same ordering of pixels for salt-and-pepper (a
level's pixels contain the previous level's), the same relative place of the square.  So the levels
differ by strength alone, and FID's change between levels is not blurred by fresh randomness.

Protocol (``fid_table``; the benchmark ``benchmarks/bench_disturbances.py`` and
``tests/test_disturbances.py`` follow it):

1. the held-out real images are the ``evaluate`` stage's floor images: ``held_out_real`` picks
   the same seeded subset of n train images (n = ``sample.n_samples``);
2. the reference is the evaluator's stored statistics of the validation split
   (``data/evaluator/reference.safetensors``), which never saw those train images;
3. FID of each disturbance at each level against the reference; level 0 is the undisturbed set,
   so its FID is exactly the real-vs-real floor at this n (``fid_real_floor`` of evaluate).

Required (``table_failures`` lists what fails): for every disturbance FID rises strictly from
level 0 to level 4, and from level 2 on it lies above the floor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from .evaluation import Reference
from .runtime import stage_seed

LEVELS = 4
# name -> the disturbance's parameter at levels 1..4 (Heusel et al. 2017, fig. 3; our spacing)
DISTURBANCES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.02, 0.05, 0.1, 0.2),  # sigma / 255
    "gaussian_blur": (0.5, 1.0, 1.5, 2.5),  # sigma in pixels
    "black_square": (0.10, 0.25, 0.40, 0.60),  # side / image side
    "salt_and_pepper": (0.01, 0.03, 0.10, 0.25),  # fraction of pixels
    "colour_push": (0.25, 0.5, 1.0, 2.0),  # a
}


def _gaussian_noise(x: np.ndarray, sigma: float, rngs: list[np.random.Generator]) -> np.ndarray:
    noise = np.stack([rng.standard_normal(x.shape[1:]) for rng in rngs])  # (N, H, W, C), unit variance
    return x + sigma * 255.0 * noise


def _gaussian_blur(x: np.ndarray, sigma: float, rngs: list[np.random.Generator]) -> np.ndarray:
    return gaussian_filter(x, sigma=(0.0, sigma, sigma, 0.0), mode="mirror", truncate=4.0)


def square_side(size: int, fraction: float) -> int:
    """Side in pixels of the black square covering ``fraction`` of an image side of ``size`` pixels."""
    return int(np.clip(round(fraction * size), 1, size))


def _black_square(x: np.ndarray, fraction: float, rngs: list[np.random.Generator]) -> np.ndarray:
    out = x.copy()
    n, h, w, _ = x.shape
    side = square_side(min(h, w), fraction)
    for img, rng in zip(out, rngs):
        u, v = rng.uniform(size=2)  # the same relative place at every level
        top, left = int(u * (h - side + 1)), int(v * (w - side + 1))
        img[top : top + side, left : left + side] = 0.0
    return out


def _salt_and_pepper(x: np.ndarray, fraction: float, rngs: list[np.random.Generator]) -> np.ndarray:
    out = x.copy()
    n, h, w, _ = x.shape
    count = int(round(fraction * h * w))
    for img, rng in zip(out, rngs):
        order = rng.permutation(h * w)  # the first `count` pixels are hit: nested across levels
        white = rng.integers(0, 2, size=h * w).astype(bool)  # salt or pepper, per pixel
        hit = order[:count]
        img.reshape(h * w, -1)[hit] = np.where(white[hit], 255.0, 0.0)[:, None]
    return out


def _colour_push(x: np.ndarray, a: float, rngs: list[np.random.Generator]) -> np.ndarray:
    g = x.mean(axis=-1, keepdims=True)  # per-pixel grey: mean over channels, (N, H, W, 1)
    return g + (1.0 + a) * (x - g) + 64.0 * a


_APPLY: dict[str, Callable[[np.ndarray, float, list[np.random.Generator]], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "gaussian_blur": _gaussian_blur,
    "black_square": _black_square,
    "salt_and_pepper": _salt_and_pepper,
    "colour_push": _colour_push,
}


def disturb(images: np.ndarray, name: str, level: int, seed: int = 0) -> np.ndarray:
    """``images`` uint8 (N, H, W, C) under disturbance ``name`` at ``level`` in 0..4 (0: a copy)."""
    if name not in DISTURBANCES:
        raise ValueError(f"unknown disturbance {name!r}; use one of {', '.join(DISTURBANCES)}")
    if not 0 <= level <= LEVELS:
        raise ValueError(f"level must be in 0..{LEVELS}, got {level}")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"need uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    if level == 0:
        return images.copy()
    k = list(DISTURBANCES).index(name)
    rngs = [np.random.default_rng([seed, k, i]) for i in range(len(images))]
    out = _APPLY[name](images.astype(np.float64), DISTURBANCES[name][level - 1], rngs)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def held_out_real(train_images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``evaluate`` stage's floor images: a seeded subset of n train images, in their order."""
    if n > len(train_images):
        raise ValueError(f"{len(train_images)} train images cannot give {n} held-out real images")
    rng = np.random.default_rng(stage_seed(seed, "evaluate.floor"))
    return train_images[np.sort(rng.permutation(len(train_images))[:n])]


def fid_table(
    features: Callable[[np.ndarray], np.ndarray], images: np.ndarray, reference: Reference, seed: int = 0
) -> dict[str, list[float]]:
    """FID against ``reference`` of ``features(disturb(images, name, level))`` (N, D), per name: levels 0..4.

    Level 0 (undisturbed) is the real-vs-real floor at n = len(images); it is computed once.
    """
    floor = reference.fid(features(images))
    return {
        name: [floor] + [reference.fid(features(disturb(images, name, lvl, seed))) for lvl in range(1, LEVELS + 1)]
        for name in DISTURBANCES
    }


def table_failures(table: dict[str, list[float]]) -> list[str]:
    """What breaks the requirements: FID not strictly rising with the level, or not above the
    floor (level 0) from level 2 on.  Empty when the feature space passes."""
    failures = []
    for name, fids in table.items():
        for lvl in range(1, len(fids)):
            if not fids[lvl] > fids[lvl - 1]:
                failures.append(f"{name}: FID at level {lvl} ({fids[lvl]:.3f}) is not above level {lvl - 1} ({fids[lvl - 1]:.3f})")
            if lvl >= 2 and not fids[lvl] > fids[0]:
                failures.append(f"{name}: FID at level {lvl} ({fids[lvl]:.3f}) is not above the floor ({fids[0]:.3f})")
    return failures
