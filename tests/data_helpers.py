"""What the input-pipeline tests share: images drawn in one colour per class (so a label can be
checked from the pixels), the class folders and TFRecords written from them, and the fixtures
that write them once a session. Test files import the fixtures by name."""

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet.data import demo

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpg.tar.gz"

# Three classes, each drawn in its own colour, so a label can be checked from the pixels.
COLOURS = {"apple": (210, 40, 40), "banana": (40, 210, 40), "cherry": (40, 40, 210)}
CLASSES = tuple(COLOURS)


def _image(colour, height, width, rng):
    noise = rng.integers(-8, 9, size=(height, width, 3))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


def _encode(image, fmt="jpg"):
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    return tf.io.encode_jpeg(image, quality=95).numpy()


def _write(path, encoded):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(encoded)


def _class_folders(root, per_class, rng, val_folder="val", val_per_class=3, size=(40, 56),
                   classes=CLASSES):  # fmt: skip
    for split, count in (("train", per_class), (val_folder, val_per_class)):
        for name in classes:
            for i in range(count):
                fmt = "png" if i == 1 else "jpg"
                ext = {"jpg": ".JPEG" if i == 2 else ".jpg", "png": ".png"}[fmt]
                image = _image(COLOURS[name], *size, rng)
                _write(os.path.join(root, split, name, f"{i:04d}{ext}"), _encode(image, fmt))


def _labels_from_pixels(images, info):
    """The class whose colour is nearest to each image's mean colour (normalised input)."""
    pixels = images * np.array(info.std) + np.array(info.mean)
    means = pixels.reshape(len(pixels), -1, 3).mean(axis=1)
    colours = np.array([COLOURS[name] for name in info.class_names])
    return np.argmin(((means[:, None, :] - colours[None]) ** 2).sum(-1), axis=1)


def _collect(ds):
    images, labels = [], []
    for batch_images, batch_labels in ds:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _value_bounds(info):
    low = (0 - np.array(info.mean)) / np.array(info.std)
    high = (255 - np.array(info.mean)) / np.array(info.std)
    return low - 1e-4, high + 1e-4


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folder"))
    _class_folders(root, per_class=6, rng=np.random.default_rng(0))
    return root


@pytest.fixture(scope="session")
def corrupt_folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corrupt"))
    _class_folders(root, per_class=4, rng=np.random.default_rng(1), val_per_class=2)
    good = _encode(_image(COLOURS["apple"], 40, 56, np.random.default_rng(2)))
    for split in ("train", "val"):
        _write(os.path.join(root, split, "apple", "truncated.jpg"), good[: len(good) // 3])
        _write(os.path.join(root, split, "banana", "garbage.jpg"), b"\xff\xd8\xff not a jpeg")
    return root


def _tfrecord_items(rng, per_class, classes=CLASSES):
    return [
        (_encode(_image(COLOURS[name], 36, 48, rng)), label)
        for label, name in enumerate(classes)
        for _ in range(per_class)
    ]


@pytest.fixture(scope="session")
def tfrecords(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfrecords"))
    rng = np.random.default_rng(3)
    demo.write_tfrecords(root, "train", _tfrecord_items(rng, 5), num_shards=2)
    demo.write_tfrecords(root, "validation", _tfrecord_items(rng, 2), num_shards=1)
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo") / "demo-v1")
