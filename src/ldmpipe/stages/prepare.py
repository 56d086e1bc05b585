"""Stage ``prepare``: dataset -> uint8 train/val arrays, a meta file and a preview grid."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..config import Params, check_paths
from ..constants import MIN_VAL_IMAGES
from ..data import DataError, prepare_dataset
from ..io import listed, save_arrays, save_image, write_json
from ..plotting import labelled_grid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="output: train arrays (.safetensors)")
    p.add_argument("--val", required=True, help="output: validation arrays (.safetensors)")
    p.add_argument("--meta", required=True, help="output: dataset meta (.json)")
    p.add_argument("--preview", required=True, help="output: preview grid, one row per class (.png)")
    p.add_argument("--metrics", required=True, help="output: counts and skipped files (.json)")


def run(args: argparse.Namespace, params: Params) -> None:
    d = params.data
    check_paths(params)
    data = prepare_dataset(
        d.name, image_size=d.image_size, seed=params.seed, count=d.count,
        val_fraction=d.val_fraction, root=d.root, download=d.download, on_bad_file=d.on_bad_file,
    )  # fmt: skip
    if data.skipped:
        print(f"prepare: warning: skipped {len(data.skipped)} unreadable file(s) under {d.root}: {listed(data.skipped, 10)}",
              file=sys.stderr)  # fmt: skip
    if data.ignored:
        print(f"prepare: warning: ignored {len(data.ignored)} image file(s) directly in {d.root}: beside class "
              f"sub-folders only the sub-folders' images are read (move them into one): {listed(data.ignored, 10)}",
              file=sys.stderr)  # fmt: skip
    if d.count is not None and (found := len(data.train_images) + len(data.val_images) + len(data.skipped)) < d.count:
        where = (f"'{d.root}' holds {found} images: all are used" if d.name == "imagefolder" else
                 f"{d.name} gives {found}: {len(data.train_images)} of its train and {len(data.val_images)} of its test "
                 "split, each at most the split's size")  # fmt: skip
        print(f"prepare: warning: data.count is {d.count}, but {where}", file=sys.stderr)
    if len(data.val_images) < MIN_VAL_IMAGES:  # `check` refuses a data.count that leaves fewer; the source may hold fewer
        where = f"'{d.root}' holds" if d.name == "imagefolder" else f"{d.name}'s test split holds"
        raise DataError(f"{where} too few images for {MIN_VAL_IMAGES} validation images at data.val_fraction "
                        f"{d.val_fraction} (the evaluator's reference statistics): {len(data.val_images)} left")  # fmt: skip
    meta = {
        "dataset": d.name,
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": d.image_size,
        "n_train": len(data.train_images),
        "n_val": len(data.val_images),
        "train_class_counts": np.bincount(data.train_labels, minlength=len(data.classes)).tolist(),
    }
    for path, images, labels in ((args.train, data.train_images, data.train_labels), (args.val, data.val_images, data.val_labels)):
        save_arrays(path, {"images": images, "labels": labels}, {"classes": meta["classes"]})
    write_json(args.meta, meta)
    write_json(args.metrics, {"n_train": meta["n_train"], "n_val": meta["n_val"], "n_skipped": len(data.skipped),
                              "skipped_files": data.skipped})  # fmt: skip
    save_image(args.preview, labelled_grid(data.train_images, data.train_labels, data.classes))
    print(f"prepare: {meta['n_train']} train / {meta['n_val']} val images of {d.name}, classes {meta['classes']}")
