"""Raw data loaders: torchvision datasets and plain image folders, from local roots only."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..constants import TORCHVISION_DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAY_MODES = ("1", "L", "LA")  # PIL modes kept as 1 channel by read_image(channels=None)


class DataError(ValueError):
    """Dataset missing, unreadable or misconfigured (one-line, user-facing message)."""


def _tv_class(name: str):
    import torchvision.datasets as tvd  # lazy: torchvision is slow to import

    return {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]


def _to_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """torchvision dataset -> images (N, H, W, C) uint8, labels (N,) int64."""
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    if data.ndim == 3:  # MNIST-type (N, H, W)
        data = data[..., None]
    labels = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
    return np.ascontiguousarray(data, dtype=np.uint8), labels.astype(np.int64)


def load_torchvision(name: str, root: str | Path, download: bool = False) -> dict:
    """Load both official splits of a torchvision dataset stored under ``root``.

    Returns {"train": (images, labels), "test": (images, labels), "classes": list[str]},
    images (N, H, W, C) uint8 (C=1 for MNIST-type, 3 for CIFAR-10), labels (N,) int64.
    Downloads only when ``download`` is True.
    """
    if name not in TORCHVISION_DATASETS:
        raise DataError(f"unknown torchvision dataset {name!r}; expected one of {TORCHVISION_DATASETS}")
    if root is None or str(root) == "":
        raise DataError(f"dataset {name!r} needs a data root directory")
    cls, root = _tv_class(name), str(root)
    out: dict = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=root, train=train, download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found ..." or failed download
            if download:
                raise DataError(f"could not download {name} into '{root}': {e}") from None
            raise DataError(
                f"{name} not found under '{root}': set data.download: true or place the files there"
            ) from None
        except (OSError, ValueError, TypeError, AssertionError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"could not read {name} under '{root}': {type(e).__name__}: {e}") from None
        out[split] = _to_arrays(ds)
        out["classes"] = [str(c) for c in ds.classes]
    return out


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted."""
    files = [p for p in folder.rglob("*") if _is_image(p)]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def root_images(root: str | Path) -> list[Path]:
    """Image files directly in ``root``, not in a sub-folder (hidden ones skipped), sorted."""
    return sorted(p for p in Path(root).iterdir() if _is_image(p))


def load_imagefolder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """List a folder of images -> (files, labels (N,) int64, classes).

    Sub-folders of ``root`` (sorted by name) are the classes; files directly in ``root`` are then
    ignored (as torchvision's ``ImageFolder`` does; ``root_images`` lists them) and sub-folders without
    images are skipped. Without sub-folders, every image in ``root`` belongs to a single class named
    after the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a directory")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = [(d.name, _images_under(d)) for d in subdirs]
    groups = [(c, f) for c, f in groups if f]
    if not groups:
        flat = root_images(root)
        groups = [(root.resolve().name or "images", flat)] if flat else []
    if not groups:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in '{root}'")
    files = [p for _, fs in groups for p in fs]
    labels = np.concatenate([np.full(len(fs), k, dtype=np.int64) for k, (_, fs) in enumerate(groups)])
    return files, labels, [c for c, _ in groups]


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Read one image -> (H, W, C) uint8.

    ``channels``: 1 (grayscale), 3 (RGB) or None (1 if the file is grayscale, else 3).
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if channels is None:
                channels = 1 if im.mode in GRAY_MODES else 3
            if channels == 3 and "transparency" in im.info:
                im = im.convert("RGBA")  # avoids PIL's palette-transparency warning
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image '{path}': {type(e).__name__}: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr
