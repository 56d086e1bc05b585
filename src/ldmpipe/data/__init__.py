"""Dataset library: procedural shapes, torchvision/image-folder sources, and preparation to arrays.

Knows no pipeline paths and reads no config: everything comes in as plain arguments.
"""

from .prepare import DATASETS, PreparedData, prepare_dataset, resize_center_crop, split_indices
from .shapes import SHAPE_CLASSES, make_shapes
from .sources import (
    IMAGE_EXTENSIONS,
    TORCHVISION_DATASETS,
    DataError,
    load_imagefolder,
    load_torchvision,
    read_image,
)

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "TORCHVISION_DATASETS",
    "DataError",
    "PreparedData",
    "load_imagefolder",
    "load_torchvision",
    "make_shapes",
    "prepare_dataset",
    "read_image",
    "resize_center_crop",
    "split_indices",
]
