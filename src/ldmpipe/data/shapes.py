"""Procedural "shapes" dataset: one anti-aliased coloured shape per image, fully deterministic."""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "hexagon")

_SS = 4  # supersampling factor for anti-aliasing
_STAR_INNER = 0.45  # inner/outer radius ratio of the 5-point star


def _vertices(label: int, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    """Polygon vertices (supersampled pixel coords) for a non-circle class."""
    name = SHAPE_CLASSES[label]
    if name == "star":
        radii = [r if k % 2 == 0 else r * _STAR_INNER for k in range(10)]
    else:
        radii = [r] * {"square": 4, "triangle": 3, "hexagon": 6}[name]
    m = len(radii)
    return [
        (cx + rk * math.cos(theta + 2 * math.pi * k / m), cy + rk * math.sin(theta + 2 * math.pi * k / m))
        for k, rk in enumerate(radii)
    ]


def _draw_one(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """One image from its own RNG -> ((size, size, 3) uint8, label).

    Every random value is drawn in a fixed order whatever the class, so the stream is stable.
    """
    label = int(rng.integers(len(SHAPE_CLASSES)))
    h, s, v = rng.uniform(0.0, 1.0), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)
    fg = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0  # (3,) float in [0, 255]
    bg = rng.integers(0, 61, size=3).astype(np.float64)  # (3,) dark, muted
    # circumradius 25-45 % of the side, kept >= 1 px away from every border
    r = min(rng.uniform(0.25, 0.45) * size, size / 2 - 1.0)
    cx, cy = rng.uniform(r + 1.0, size - 1.0 - r, size=2)
    theta = rng.uniform(0.0, 2 * math.pi)

    big = size * _SS
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    R, X, Y = r * _SS, cx * _SS, cy * _SS
    if SHAPE_CLASSES[label] == "circle":
        draw.ellipse((X - R, Y - R, X + R, Y + R), fill=255)
    else:
        draw.polygon(_vertices(label, X, Y, R, theta), fill=255)
    # box-filter downsample -> fractional coverage on edges = anti-aliasing
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0
    img = bg + (fg - bg) * alpha[..., None]  # (size, size, 3) float
    return np.rint(img).astype(np.uint8), label


def make_shapes(n: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` shape images -> images (n, S, S, 3) uint8, labels (n,) int64.

    Image i comes from ``default_rng(SeedSequence([seed, i]))`` alone, so it does not depend on n.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        images[i], labels[i] = _draw_one(rng, image_size)
    return images, labels
