"""Turn a named dataset into fixed-size uint8 train/val arrays (deterministic for a given seed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..constants import DATASETS, val_size  # shared with config validation
from .shapes import SHAPE_CLASSES, make_shapes
from .sources import TORCHVISION_DATASETS, DataError, load_imagefolder, load_torchvision, read_image, root_images

# SeedSequence "streams" (second entry) so the different random choices never share draws
_SPLIT_STREAM, _TRAIN_SUBSET_STREAM, _TEST_SUBSET_STREAM, _FOLDER_SUBSET_STREAM = 1, 2, 3, 4


@dataclass
class PreparedData:
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int64
    val_images: np.ndarray  # (M, H, W, C) uint8
    val_labels: np.ndarray  # (M,) int64
    classes: list[str]
    channels: int
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (on_bad_file="skip")
    ignored: list[str] = field(default_factory=list)  # image files directly in a folder that has class sub-folders


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8: scale the shorter side to ``size``, center-crop.

    Bicubic with PIL's antialiasing (filter support widened when downscaling). C is 1 or 3.
    """
    if img.ndim != 3 or img.shape[2] not in (1, 3) or img.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 1|3) uint8 image, got {img.shape} {img.dtype}")
    h, w, c = img.shape
    if h == w == size:
        return img
    side = min(h, w)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)  # centered square
    pil = Image.fromarray(img[..., 0] if c == 1 else img)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)
    return out[..., None] if c == 1 else out


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint split of range(n) -> (train_idx, val_idx), both sorted int64.

    ``round(n * val_fraction)`` go to val, clamped so both sides get >= 1 item when n >= 2.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = val_size(n, val_fraction, official_split=False)
    perm = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM])).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def _subset(n: int, k: int, seed: int, stream: int) -> np.ndarray:
    """Sorted seeded choice of min(k, n) indices out of range(n)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    return np.sort(rng.choice(n, size=min(k, n), replace=False)).astype(np.int64)


def _resize_all(images: np.ndarray, size: int, progress: bool, desc: str) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C) uint8."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    for i in tqdm(range(len(images)), desc=desc, unit="img", disable=not progress):
        out[i] = resize_center_crop(images[i], size)
    return out


def _stack(images: list[np.ndarray], size: int, channels: int) -> np.ndarray:
    out = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = im  # broadcasts 1 -> 3 channels (same as PIL's L -> RGB)
    return out


def _split(images, labels, classes, val_fraction, seed) -> PreparedData:
    tr, va = split_indices(len(images), val_fraction, seed)
    return PreparedData(images[tr], labels[tr], images[va], labels[va], list(classes), images.shape[3])


def prepare_dataset(
    name: str,
    *,
    image_size: int,
    seed: int,
    count: int | None,
    val_fraction: float,
    root: str | Path | None = None,
    download: bool = False,
    progress: bool = True,
    on_bad_file: str = "fail",
) -> PreparedData:
    """Build train/val arrays of ``image_size`` x ``image_size`` images for dataset ``name``.

    shapes: ``count`` generated images, split by ``split_indices``.
    imagefolder: every image under ``root`` (or a seeded subset of ``count``), split by ``split_indices``;
    a file that cannot be decoded stops with an error naming it (``on_bad_file="fail"``) or is
    left out and listed in ``PreparedData.skipped`` (``"skip"``); image files directly in ``root`` beside
    class sub-folders are not read and are listed in ``PreparedData.ignored``.
    mnist / fashion_mnist / cifar10: official train -> train, official test -> val; with ``count``,
    a seeded subset of round(count * (1 - val_fraction)) train and the rest test images (each capped
    at what the split holds).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if image_size < 8:
        raise DataError(f"image_size must be >= 8, got {image_size}")
    if count is not None and count < 1:
        raise DataError(f"count must be >= 1 (or unset), got {count}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if on_bad_file not in ("fail", "skip"):
        raise DataError(f"on_bad_file must be fail or skip, got {on_bad_file!r}")

    if name == "shapes":
        if count is None:
            raise DataError("dataset 'shapes' needs an explicit count")
        images, labels = make_shapes(count, image_size, seed)
        return _split(images, labels, SHAPE_CLASSES, val_fraction, seed)

    if name == "imagefolder":
        if root is None:
            raise DataError("dataset 'imagefolder' needs a root folder")
        files, labels, classes = load_imagefolder(root)
        listed = set(files)
        ignored = [p.name for p in root_images(root) if p not in listed]
        if count is not None:
            keep = _subset(len(files), count, seed, _FOLDER_SUBSET_STREAM)
            files, labels = [files[i] for i in keep], labels[keep]
        resized, readable, skipped = [], [], []
        for i, f in enumerate(tqdm(files, desc=f"reading {name}", unit="img", disable=not progress)):
            try:
                resized.append(resize_center_crop(read_image(f, None), image_size))
                readable.append(i)
            except DataError as e:
                if on_bad_file != "skip":
                    raise DataError(f"{e} (data.on_bad_file: skip leaves such files out)") from None
                skipped.append(Path(f).relative_to(Path(root)).as_posix())
        if not resized:
            raise DataError(f"none of the {len(files)} image files under '{root}' could be read")
        channels = 1 if all(im.shape[2] == 1 for im in resized) else 3
        data = _split(_stack(resized, image_size, channels), labels[readable], classes, val_fraction, seed)
        data.skipped, data.ignored = skipped, ignored
        return data

    assert name in TORCHVISION_DATASETS
    raw = load_torchvision(name, root, download)
    (xtr, ytr), (xte, yte) = raw["train"], raw["test"]
    if count is not None:
        n_train = count - val_size(count, val_fraction, official_split=True)
        itr = _subset(len(xtr), n_train, seed, _TRAIN_SUBSET_STREAM)
        ite = _subset(len(xte), count - n_train, seed, _TEST_SUBSET_STREAM)
        xtr, ytr, xte, yte = xtr[itr], ytr[itr], xte[ite], yte[ite]
    return PreparedData(
        train_images=_resize_all(xtr, image_size, progress, f"resizing {name} train"),
        train_labels=ytr,
        val_images=_resize_all(xte, image_size, progress, f"resizing {name} test"),
        val_labels=yte,
        classes=raw["classes"],
        channels=xtr.shape[3],
    )
