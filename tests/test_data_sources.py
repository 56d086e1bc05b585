import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmpipe.data.sources import DataError, load_imagefolder, load_torchvision, read_image

# ---- fake torchvision datasets in their on-disk layouts -------------------------------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """Uncompressed idx file: big-endian magic (0x0000 08=uint8, ndim) + big-endian dims + data."""
    header = np.array([0x0800 | arr.ndim, *arr.shape], dtype=">i4").tobytes()
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_fake_mnist(root: Path, folder: str = "MNIST", n_train: int = 6, n_test: int = 4, seed: int = 0):
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # (N, 28, 28) uint8
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)  # magic 2051
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)  # magic 2049
        out[split] = (x, y)
    return out


def write_fake_cifar10(root: Path, per_batch: int = 2):
    """root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} as latin1-compatible pickles."""
    rng = np.random.default_rng(1)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    xs = {"train": [], "test": []}
    ys = {"train": [], "test": []}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        split = "test" if name == "test_batch" else "train"
        x = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
        y = rng.integers(0, 10, size=per_batch).tolist()
        data = x.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # real layout: (N, 3*32*32) CHW rows
        (base / name).write_bytes(pickle.dumps({"data": data, "labels": y}))
        xs[split].append(x)
        ys[split] += y
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return {s: (np.concatenate(xs[s]), np.array(ys[s])) for s in xs}, names


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_roundtrip(tmp_path, name, folder):
    written = write_fake_mnist(tmp_path, folder)
    got = load_torchvision(name, tmp_path, download=False)
    for split in ("train", "test"):
        x, y = got[split]
        assert x.dtype == np.uint8 and x.shape == (len(written[split][0]), 28, 28, 1)
        assert y.dtype == np.int64
        assert np.array_equal(x[..., 0], written[split][0]) and np.array_equal(y, written[split][1])
    assert len(got["classes"]) == 10 and all(isinstance(c, str) for c in got["classes"])


def test_cifar10_roundtrip(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    # torchvision checks the md5 of every CIFAR file (in CIFAR10._check_integrity and in _load_meta,
    # both through cifar.check_integrity); our fake files cannot match, so check existence only.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    written, names = write_fake_cifar10(tmp_path)
    got = load_torchvision("cifar10", tmp_path, download=False)
    for split in ("train", "test"):
        x, y = got[split]
        assert x.dtype == np.uint8 and x.shape == (len(written[split][0]), 32, 32, 3)
        assert np.array_equal(x, written[split][0])
        assert y.dtype == np.int64 and np.array_equal(y, written[split][1])
    assert got["classes"] == names


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_data_raises_dataerror(tmp_path, name):
    root = tmp_path / "no_data_here"
    with pytest.raises(DataError) as exc:
        load_torchvision(name, root, download=False)
    msg = str(exc.value)
    assert str(root) in msg and "data.download" in msg and "\n" not in msg
    assert not root.exists()  # nothing was downloaded or created


def test_unknown_torchvision_name(tmp_path):
    with pytest.raises(DataError, match="svhn"):
        load_torchvision("svhn", tmp_path, download=False)


# ---- image folders ---------------------------------------------------------------------------------


def _png(path: Path, w: int, h: int, mode: str = "RGB", value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (w, h), value if mode == "L" else (value, 10, 200)).save(path)


def test_imagefolder_with_class_subfolders(tmp_path):
    _png(tmp_path / "dogs" / "b.png", 10, 12)
    _png(tmp_path / "dogs" / "a.PNG", 20, 8)
    _png(tmp_path / "cats" / "z.jpg", 5, 5)
    _png(tmp_path / "cats" / "nested" / "y.png", 7, 9)
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    _png(tmp_path / "empty_dir" / ".hidden.png", 4, 4)  # hidden file -> folder has no images
    files, labels, classes = load_imagefolder(tmp_path)
    assert classes == ["cats", "dogs"]
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "cats/nested/y.png", "cats/z.jpg", "dogs/a.PNG", "dogs/b.png"
    ]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1]
    assert read_image(files[2], 3).shape == (8, 20, 3)  # (H, W, C): sizes differ per file


def test_imagefolder_flat(tmp_path):
    root = tmp_path / "my_pics"
    for i, ext in enumerate(["png", "bmp", "gif", "webp", "JPEG"]):
        _png(root / f"img{i}.{ext}", 6 + i, 6)
    files, labels, classes = load_imagefolder(root)
    assert classes == ["my_pics"] and len(files) == 5 and labels.tolist() == [0] * 5
    assert files == sorted(files)


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_imagefolder(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        load_imagefolder(tmp_path / "empty")


def test_read_image_channels_and_corrupt_file(tmp_path):
    _png(tmp_path / "g.png", 5, 4, mode="L", value=77)
    _png(tmp_path / "c.png", 5, 4)
    g = read_image(tmp_path / "g.png", None)
    assert g.shape == (4, 5, 1) and g.dtype == np.uint8 and (g == 77).all()
    assert read_image(tmp_path / "g.png", 3).shape == (4, 5, 3)
    assert read_image(tmp_path / "c.png", None).shape == (4, 5, 3)
    assert read_image(tmp_path / "c.png", 1).shape == (4, 5, 1)
    bad = tmp_path / "cls" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad, 3)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes((tmp_path / "c.png").read_bytes()[:-30])
    with pytest.raises(DataError, match="trunc.png"):
        read_image(truncated, None)
