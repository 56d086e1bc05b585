import numpy as np
import pytest

from ldmpipe.data.shapes import SHAPE_CLASSES, make_shapes


def _border(img: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (4*(H-1), C): the outermost ring of pixels."""
    return np.concatenate([img[0, :-1], img[:-1, -1], img[-1, 1:], img[1:, 0]])


def test_dtype_and_shape():
    images, labels = make_shapes(7, image_size=48, seed=3)
    assert images.shape == (7, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (7,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(SHAPE_CLASSES)
    assert make_shapes(0)[0].shape == (0, 32, 32, 3)


def test_deterministic_per_seed():
    a_img, a_lab = make_shapes(20, seed=5)
    b_img, b_lab = make_shapes(20, seed=5)
    assert a_img.tobytes() == b_img.tobytes() and np.array_equal(a_lab, b_lab)
    c_img, _ = make_shapes(20, seed=6)
    assert a_img.tobytes() != c_img.tobytes()


def test_image_independent_of_n():
    small_img, small_lab = make_shapes(10)
    big_img, big_lab = make_shapes(50)
    assert np.array_equal(small_img[3], big_img[3])
    assert np.array_equal(small_img, big_img[:10]) and np.array_equal(small_lab, big_lab[:10])


def test_all_classes_appear():
    _, labels = make_shapes(500, image_size=16)
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_background_dark_foreground_bright():
    images, _ = make_shapes(50)
    for img in images:
        bg = img[0, 0].astype(int)
        assert bg.max() <= 60
        assert img.reshape(-1, 3).max(axis=1).max() >= int(0.75 * 255) - 1  # V >= 0.75 somewhere


def test_shape_fully_inside():
    images, _ = make_shapes(200)
    same = [np.abs(_border(img).astype(int) - img[0, 0]).max(axis=1) <= 2 for img in images]
    assert np.mean(np.concatenate(same)) > 0.98  # border ring is (almost) all background
    # ... and the shape itself is visible: many pixels differ from the background
    assert all((np.abs(img.astype(int) - img[0, 0]).max(axis=2) > 40).sum() > 20 for img in images)


@pytest.mark.parametrize("seed", [0, 1])
def test_edges_are_antialiased(seed):
    images, _ = make_shapes(20, seed=seed)
    for img in images:
        px = img.reshape(-1, 3).astype(float)
        bg = px[0]
        dist = np.abs(px - bg).sum(axis=1)
        fg = px[np.argmax(dist)]  # a fully covered pixel
        t = (px - bg) @ (fg - bg) / ((fg - bg) @ (fg - bg))  # position on the bg -> fg segment
        on_segment = np.abs(px - (bg + t[:, None] * (fg - bg))).max(axis=1) <= 1.5
        intermediate = on_segment & (t > 0.1) & (t < 0.9)
        assert intermediate.sum() >= 4, "expected blended edge pixels between bg and fg"


def test_the_class_counts_that_check_knows_are_the_datasets():
    """`check` refuses sample.classes beyond a dataset's classes from `constants.NUM_CLASSES` (CIFAR-10's
    names come from its archive, and its count is its name)."""
    import torchvision

    from ldmpipe.constants import NUM_CLASSES, TORCHVISION_DATASETS

    assert set(NUM_CLASSES) == {"shapes", *TORCHVISION_DATASETS}
    assert NUM_CLASSES["shapes"] == len(SHAPE_CLASSES)
    assert NUM_CLASSES["mnist"] == len(torchvision.datasets.MNIST.classes)
    assert NUM_CLASSES["fashion_mnist"] == len(torchvision.datasets.FashionMNIST.classes)
