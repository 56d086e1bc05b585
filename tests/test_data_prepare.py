import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmpipe.data import (
    DATASETS,
    SHAPE_CLASSES,
    DataError,
    PreparedData,
    prepare_dataset,
    resize_center_crop,
    split_indices,
)


def _write_fake_mnist(root: Path, n_train: int, n_test: int) -> dict:
    """Minimal torchvision MNIST raw layout (uncompressed idx files); returns the arrays written."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            header = np.array([0x0800 | arr.ndim, *arr.shape], dtype=">i4").tobytes()
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + arr.tobytes())
        out[split] = (x, y)
    return out


@pytest.mark.parametrize("n,frac", [(100, 0.1), (2, 0.0), (2, 0.9), (7, 0.5), (1000, 0.25)])
def test_split_indices_disjoint_cover_deterministic(n, frac):
    tr, va = split_indices(n, frac, seed=3)
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert len(tr) >= 1 and len(va) >= 1
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))  # disjoint + covering
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # sorted
    tr2, va2 = split_indices(n, frac, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    if n >= 100:
        assert len(va) == round(n * frac)
        assert not np.array_equal(va, split_indices(n, frac, seed=4)[1])


def test_split_indices_bad_fraction():
    with pytest.raises(DataError):
        split_indices(10, 1.0, 0)


def test_resize_center_crop_non_square():
    img = np.zeros((20, 60, 3), dtype=np.uint8)  # (H, W, C): red | green | blue thirds
    img[:, :20, 0] = img[:, 20:40, 1] = img[:, 40:, 2] = 255
    out = resize_center_crop(img, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    # only the green middle third survives (edge columns blend slightly with the cropped-away neighbours)
    inner = out[:, 1:-1].astype(int)
    assert (inner[..., 1] >= 250).all() and (inner[..., [0, 2]] <= 5).all()
    assert (out[..., 1].astype(int) > 4 * out[..., [0, 2]].max(axis=-1)).all()
    tall = resize_center_crop(img.transpose(1, 0, 2)[..., :1].copy(), 16)  # (60, 20, 1)
    assert tall.shape == (16, 16, 1) and (tall[1:-1] == 0).all() and (tall <= 20).all()  # red rows cropped


def test_resize_center_crop_noop_and_upscale():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(resize_center_crop(img, 32), img)
    up = resize_center_crop(np.full((28, 28, 1), 200, np.uint8), 32)
    assert up.shape == (32, 32, 1) and (up == 200).all()


def test_prepare_shapes():
    kw = dict(image_size=16, seed=1, count=50, val_fraction=0.2, progress=False)
    p = prepare_dataset("shapes", **kw)
    assert isinstance(p, PreparedData) and p.channels == 3 and p.classes == list(SHAPE_CLASSES)
    assert p.train_images.shape == (40, 16, 16, 3) and p.val_images.shape == (10, 16, 16, 3)
    assert p.train_images.dtype == np.uint8 and p.train_labels.dtype == np.int64
    assert p.train_labels.shape == (40,) and p.val_labels.shape == (10,)
    q = prepare_dataset("shapes", **kw)
    assert p.train_images.tobytes() == q.train_images.tobytes()
    assert np.array_equal(p.val_labels, q.val_labels)
    with pytest.raises(DataError, match="count"):
        prepare_dataset("shapes", **{**kw, "count": None})


def test_prepare_fake_mnist_subset(tmp_path):
    written = _write_fake_mnist(tmp_path, n_train=12, n_test=8)
    kw = dict(image_size=32, seed=0, count=10, val_fraction=0.3, root=str(tmp_path), progress=False)
    p = prepare_dataset("mnist", **kw)
    assert p.channels == 1 and len(p.classes) == 10
    assert p.train_images.shape == (7, 32, 32, 1) and p.val_images.shape == (3, 32, 32, 1)
    assert p.train_images.dtype == np.uint8 and p.val_labels.dtype == np.int64
    # every kept image is the resized version of a distinct original from the right split
    for imgs, labels, (x, y) in ((p.train_images, p.train_labels, written["train"]),
                                 (p.val_images, p.val_labels, written["test"])):
        resized = [resize_center_crop(xi[..., None], 32) for xi in x]
        idx = [next(j for j, r in enumerate(resized) if np.array_equal(r, im)) for im in imgs]
        assert idx == sorted(set(idx)) and np.array_equal(labels, y[idx])
    q = prepare_dataset("mnist", **kw)
    assert np.array_equal(p.train_images, q.train_images) and np.array_equal(p.val_labels, q.val_labels)
    full = prepare_dataset("mnist", **{**kw, "count": None})
    assert len(full.train_images) == 12 and len(full.val_images) == 8


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_prepare_imagefolder_channels(tmp_path):
    for i in range(4):
        gray = np.full((10 + i, 14), 9 * i, np.uint8)  # (H, W) uint8 -> mode L
        _save(tmp_path / "gray" / ("a" if i % 2 else "b") / f"{i}.png", gray)
    kw = dict(image_size=8, seed=0, count=None, val_fraction=0.25, progress=False)
    p = prepare_dataset("imagefolder", root=tmp_path / "gray", **kw)
    assert p.channels == 1 and p.classes == ["a", "b"]
    assert p.train_images.shape == (3, 8, 8, 1) and p.val_images.shape == (1, 8, 8, 1)
    _save(tmp_path / "gray" / "a" / "rgb.png", np.full((9, 9, 3), 50, np.uint8))  # one RGB -> all RGB
    p = prepare_dataset("imagefolder", root=tmp_path / "gray", **{**kw, "count": 4})
    assert p.channels == 3 and len(p.train_images) + len(p.val_images) == 4
    assert p.train_images.shape[1:] == (8, 8, 3)
    gray = np.concatenate([p.train_images, p.val_images])
    assert (gray[..., 0] == gray[..., 1]).all()  # grayscale files replicated to RGB


def test_prepare_unknown_and_missing(tmp_path):
    kw = dict(image_size=32, seed=0, count=10, val_fraction=0.1, progress=False)
    assert set(DATASETS) == {"shapes", "mnist", "fashion_mnist", "cifar10", "imagefolder"}
    with pytest.raises(DataError, match="svhn"):
        prepare_dataset("svhn", **kw)
    with pytest.raises(DataError, match="data.download"):
        prepare_dataset("fashion_mnist", root=str(tmp_path), **kw)


def _bad_folder(root: Path) -> None:
    """Two classes of good PNGs plus a truncated PNG and a text file saved as .jpg."""
    for cls in ("a", "b"):
        for i in range(4):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), (40 * i, 100, 200)).save(root / cls / f"{i}.png")
    good = (root / "a" / "0.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "notes.jpg").write_text("not an image at all")


def test_bad_files_fail_by_default_naming_the_file(tmp_path):
    _bad_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"truncated\.png.*data\.on_bad_file: skip"):
        prepare_dataset("imagefolder", root=tmp_path / "imgs", image_size=8, seed=0, count=None, val_fraction=0.25,
                        progress=False)  # fmt: skip


def test_bad_files_skipped_are_listed(tmp_path):
    _bad_folder(tmp_path / "imgs")
    p = prepare_dataset("imagefolder", root=tmp_path / "imgs", image_size=8, seed=0, count=None, val_fraction=0.25,
                        progress=False, on_bad_file="skip")  # fmt: skip
    assert p.skipped == ["a/truncated.png", "b/notes.jpg"]
    assert len(p.train_images) + len(p.val_images) == 8
    assert sorted(np.concatenate([p.train_labels, p.val_labels]).tolist()) == [0] * 4 + [1] * 4


def test_images_beside_class_folders_are_listed_as_ignored(tmp_path):
    """With class sub-folders, files directly in the root are not read (torchvision's ImageFolder rule);
    a dataset that silently lost them would be the wrong dataset, so they are listed."""
    _bad_folder(tmp_path / "imgs")
    for name in ("loose1.png", "loose0.jpg"):
        Image.new("RGB", (12, 10), (1, 2, 3)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "readme.txt").write_text("not an image")
    p = prepare_dataset("imagefolder", root=tmp_path / "imgs", image_size=8, seed=0, count=None, val_fraction=0.25,
                        progress=False, on_bad_file="skip")  # fmt: skip
    assert p.ignored == ["loose0.jpg", "loose1.png"] and p.classes == ["a", "b"]
    assert len(p.train_images) + len(p.val_images) == 8
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(8):
        Image.new("RGB", (12, 10), (i, 2, 3)).save(flat / f"{i}.png")
    p = prepare_dataset("imagefolder", root=flat, image_size=8, seed=0, count=None, val_fraction=0.25, progress=False)
    assert p.ignored == [] and len(p.train_images) + len(p.val_images) == 8  # no sub-folders: the root's images are read


def prepare_argv(params, out) -> list[str]:
    """``ldmpipe prepare`` with its outputs under ``out``."""
    return ["prepare", "--params", str(params), "--train", f"{out}/t.safetensors", "--val", f"{out}/v.safetensors",
            "--meta", f"{out}/m.json", "--preview", f"{out}/p.png", "--metrics", f"{out}/prepare.json"]  # fmt: skip


def test_prepare_stage_warns_and_records_skipped_files(tmp_path, tiny_params, capsys):
    from conftest import write_params
    from ldmpipe.cli import main

    _bad_folder(tmp_path / "imgs")
    tiny_params["data"].update(name="imagefolder", root=str(tmp_path / "imgs"), count=None, on_bad_file="skip",
                               val_fraction=0.25)  # 2 of the 8 readable images (the least there may be)
    params = write_params(tmp_path / "params.yaml", tiny_params)
    out = tmp_path / "out"
    args = prepare_argv(params, out)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable file(s)" in err and "ignored" not in err
    metrics = json.loads((out / "prepare.json").read_text())
    assert metrics["n_skipped"] == 2 and metrics["skipped_files"] == ["a/truncated.png", "b/notes.jpg"]
    tiny_params["data"]["on_bad_file"] = "fail"
    write_params(params, tiny_params)
    (out / "prepare.json").unlink()
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the progress bar
    assert len(errors) == 1 and errors[0].startswith("ldmpipe prepare: error: cannot read image")
    assert "truncated.png" in errors[0] and not (out / "prepare.json").exists()


def test_prepare_stage_warns_about_images_beside_class_folders(tmp_path, tiny_params, capsys):
    from conftest import write_params
    from ldmpipe.cli import main

    _bad_folder(tmp_path / "imgs")
    Image.new("RGB", (12, 10), (1, 2, 3)).save(tmp_path / "imgs" / "stray.png")
    tiny_params["data"].update(name="imagefolder", root=str(tmp_path / "imgs"), count=None, on_bad_file="skip",
                               val_fraction=0.25)  # fmt: skip
    assert main(prepare_argv(write_params(tmp_path / "params.yaml", tiny_params), tmp_path / "out")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "ignored" in line]
    assert warnings == [f"prepare: warning: ignored 1 image file(s) directly in {tmp_path / 'imgs'}: beside class "
                        "sub-folders only the sub-folders' images are read (move them into one): stray.png"]  # fmt: skip


def test_prepare_stage_warns_when_data_count_asks_for_more_images_than_there_are(tmp_path, tiny_params, capsys):
    from conftest import write_params
    from ldmpipe.cli import main

    _bad_folder(tmp_path / "imgs")  # 10 files, 2 unreadable
    (tmp_path / "imgs" / "c").mkdir()
    for i in range(40):  # 50 files: count=50 leaves 38 train images, enough for the floor of 30 samples
        Image.new("RGB", (12, 10), (i, 50, 100)).save(tmp_path / "imgs" / "c" / f"{i}.png")
    tiny_params["data"].update(name="imagefolder", root=str(tmp_path / "imgs"), count=50, on_bad_file="skip",
                               val_fraction=0.25)  # fmt: skip
    tiny_params["sample"]["n_samples"] = 30
    params = write_params(tmp_path / "params.yaml", tiny_params)
    out = tmp_path / "out"
    args = prepare_argv(params, out)
    assert main(args) == 0
    assert "data.count" not in capsys.readouterr().err  # all 50 files were asked for and read or skipped
    tiny_params["data"]["count"] = 100
    write_params(params, tiny_params)
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "data.count" in line]
    assert warnings == [f"prepare: warning: data.count is 100, but '{tmp_path / 'imgs'}' holds 50 images: all are used"]


def test_prepare_stage_refuses_a_folder_too_small_for_two_validation_images(tmp_path, tiny_params, capsys):
    """FID's reference statistics need two validation images: a folder of 8 readable images at
    val_fraction 0.1 leaves one, which `check` cannot know (data.count is null)."""
    from conftest import write_params
    from ldmpipe.cli import main

    _bad_folder(tmp_path / "imgs")
    tiny_params["data"].update(name="imagefolder", root=str(tmp_path / "imgs"), count=None, on_bad_file="skip")
    out = tmp_path / "out"
    assert main(prepare_argv(write_params(tmp_path / "params.yaml", tiny_params), out)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"ldmpipe prepare: error: '{tmp_path / 'imgs'}' holds too few images for 2 validation images at "
                      "data.val_fraction 0.1 (the evaluator's reference statistics): 1 left"]  # fmt: skip
    assert not out.exists() or not any(out.iterdir())
