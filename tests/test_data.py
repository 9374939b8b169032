"""The input pipelines, on data the tests write (JPEG/PNG class folders, ImageNet TFRecords,
the demo set), on real CIFAR-10 JPEGs where ../shared/data/ has them, and on tfds sources
through tfds.testing.mock_data. Small images and few batches: the whole file runs in well
under two minutes on 2 cores."""

import dataclasses
import itertools
import os
import re
import time
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import data
from keras_resnet.data import demo, pipeline, preprocessing, sources

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


# --------------------------------------------------------------------------------------
# Errors that name what was wrong.


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="demo.*imagenet_tfrecord.*folder.*cifar10.*tfds:"):
        data.dataset_info("imagenet")


def test_every_dataset_name_is_a_registered_source():
    # One registry: every name DATASETS lists is a Source class's `load`, each Source says
    # what it yields, and a prefix without a name is not a dataset.
    assert sources.DATASETS == (*sources.SOURCES, "tfds:<name>")
    for load in [*sources.SOURCES.values(), *sources.PREFIXED_SOURCES.values()]:
        assert issubclass(load.__self__, sources.Source)
    assert sources.get_source("synthetic").synthetic
    assert not sources.FolderSource.synthetic and sources.FolderSource.yields_paths
    assert sources.TFRecordSource.label_base == 1 and sources.TfdsSource.label_base == 0
    for name in ("tfds:", "Demo", None):
        with pytest.raises(ValueError, match="unknown dataset"):
            data.dataset_info(name)
    with pytest.raises(ValueError, match=r"synthetic: no 'test' split; available: \['train', "
                                         r"'validation'\]"):  # fmt: skip
        data.make_dataset("synthetic", "test", batch_size=2, training=False)


def test_cifar10_folder_errors_name_the_layout(tmp_path):
    # Cifar10FolderSource is a FolderSource (its __init__ runs the parent's) with CIFAR's
    # layout in its messages and its own splits.
    with pytest.raises(FileNotFoundError, match="needs data_dir.*test/<class>.*cifar10-jpg"):
        data.dataset_info("cifar10_folder")
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match=r"x/train does not exist.*x/test/<class>"):
        data.dataset_info("cifar10_folder", str(tmp_path / "x"))


def test_folder_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.dataset_info("folder", missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/train.*train/<class>"):
        data.dataset_info("folder", str(empty))
    one = tmp_path / "one"
    _class_folders(str(one), 2, np.random.default_rng(0), classes=("apple",))
    with pytest.raises(ValueError, match=r"one/train has 1 class folder.*at least 2"):
        data.dataset_info("folder", str(one))
    no_images = tmp_path / "no_images"
    (no_images / "train" / "a").mkdir(parents=True)
    (no_images / "train" / "b").mkdir(parents=True)
    (no_images / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"no_images/train holds no images"):
        data.dataset_info("folder", str(no_images))
    with pytest.raises(FileNotFoundError, match="needs data_dir"):
        data.dataset_info("folder")


def test_folder_without_validation_split(tmp_path):
    _class_folders(str(tmp_path), 2, np.random.default_rng(0), val_per_class=0)
    os.rmdir(tmp_path / "val") if (tmp_path / "val").exists() else None
    info = data.dataset_info("folder", str(tmp_path))
    assert info.num_validation_examples == 0
    with pytest.raises(FileNotFoundError, match="val or .*validation or .*test"):
        data.make_dataset("folder", "validation", data_dir=str(tmp_path), batch_size=2,
                          training=False)  # fmt: skip


def test_argument_errors_name_the_argument(folder):
    common = dict(data_dir=folder, batch_size=2, image_size=16)
    with pytest.raises(ValueError, match="augmentation.*paper.*inception.*cifar.*none.*'flip'"):
        data.make_dataset("folder", "train", training=True, augmentation="flip", **common)
    with pytest.raises(ValueError, match="eval_mode.*center.*ten_crop.*multi_scale"):
        data.make_dataset("folder", "validation", training=False, eval_mode="five", **common)
    with pytest.raises(ValueError, match="split must be one of"):
        data.make_dataset("folder", "valid", training=False, **common)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        data.make_dataset("folder", "train", data_dir=folder, batch_size=0, training=True)
    with pytest.raises(ValueError, match="image_size must be"):
        data.make_dataset("folder", "train", data_dir=folder, batch_size=2, image_size=-3,
                          training=True)  # fmt: skip
    with pytest.raises(ValueError, match="multi_scale.*batch_size=1"):
        data.make_dataset("folder", "validation", training=False, eval_mode="multi_scale",
                          **common)  # fmt: skip


def _write_examples(path, examples):
    with tf.io.TFRecordWriter(path) as writer:
        for features in examples:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features))
                         .SerializeToString())  # fmt: skip


def test_tfrecord_errors_name_the_file_and_the_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-\\*-of-\\*"):
        data.dataset_info("imagenet_tfrecord", str(tmp_path))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    raw = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"abc"]))
    _write_examples(str(wrong / "train-00000-of-00001"), [{"image/raw": raw}])
    with pytest.raises(ValueError, match="train-00000-of-00001.*image/encoded.*image/raw"):
        data.dataset_info("imagenet_tfrecord", str(wrong))
    zero = tmp_path / "zero"
    zero.mkdir()
    label = tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))
    _write_examples(str(zero / "train-00000-of-00001"),
                    [{"image/encoded": raw, "image/class/label": label}])  # fmt: skip
    with pytest.raises(ValueError, match="1-based"):
        data.dataset_info("imagenet_tfrecord", str(zero))
    with pytest.raises(FileNotFoundError, match="needs data_dir"):
        data.dataset_info("imagenet_tfrecord")


# --------------------------------------------------------------------------------------
# Sources: shapes, dtypes, value ranges, labels.


def test_folder_training_batches(folder):
    info = data.dataset_info("folder", folder)
    assert info.class_names == CLASSES
    assert (info.num_train_examples, info.num_validation_examples) == (18, 9)
    assert info.mean == data.IMAGENET_MEAN and info.default_image_size == 224
    ds = data.make_dataset("folder", "train", data_dir=folder, batch_size=8, image_size=24,
                           training=True, seed=1)  # fmt: skip
    low, high = _value_bounds(info)
    for images, labels in ds.take(4):  # 32 images: more than one epoch of 18
        assert images.shape == (8, 24, 24, 3) and images.dtype == tf.float32
        assert labels.shape == (8,) and labels.dtype == tf.int32
        images = images.numpy()
        assert np.all(images >= low) and np.all(images <= high)
        np.testing.assert_array_equal(_labels_from_pixels(images, info), labels.numpy())


def test_folder_evaluation_is_one_ordered_pass(folder):
    info = data.dataset_info("folder", folder)
    ds = data.make_dataset("folder", "validation", data_dir=folder, batch_size=4, image_size=24,
                           training=False)  # fmt: skip
    batches = [labels.shape[0] for _, labels in ds]
    assert batches == [4, 4, 1]  # every example once, the last batch kept
    images, labels = _collect(ds)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 3))  # class folders, in order
    np.testing.assert_array_equal(_labels_from_pixels(images, info), labels)
    images_again, _ = _collect(ds)
    np.testing.assert_array_equal(images, images_again)


def test_validation_folder_names(tmp_path):
    for name in ("validation", "test"):
        root = tmp_path / name
        _class_folders(str(root), 2, np.random.default_rng(0), val_folder=name, val_per_class=1)
        assert data.dataset_info("folder", str(root)).num_validation_examples == 3


def test_tfrecord_labels_are_mapped_to_zero_based(tfrecords):
    info = data.dataset_info("imagenet_tfrecord", tfrecords)
    assert info.class_names == CLASSES
    assert (info.num_train_examples, info.num_validation_examples) == (15, 6)
    images, labels = _collect(data.make_dataset(
        "imagenet_tfrecord", "validation", data_dir=tfrecords, batch_size=4, image_size=16,
        training=False))  # fmt: skip
    np.testing.assert_array_equal(np.sort(labels), [0, 0, 1, 1, 2, 2])  # stored as 1, 2, 3
    np.testing.assert_array_equal(_labels_from_pixels(images, info), labels)
    for images, labels in data.make_dataset(
        "imagenet_tfrecord", "train", data_dir=tfrecords, batch_size=5, image_size=16,
        training=True, augmentation="inception", lighting=True, seed=0).take(4):  # fmt: skip
        assert images.shape == (5, 16, 16, 3)
        assert set(labels.numpy()) <= {0, 1, 2}


def test_tfrecord_without_class_file_uses_placeholder_names(tmp_path):
    rng = np.random.default_rng(0)
    demo.write_tfrecords(str(tmp_path), "train", _tfrecord_items(rng, 1), num_shards=1)
    info = data.dataset_info("imagenet_tfrecord", str(tmp_path))
    assert info.num_classes == 1000 and info.class_names[:2] == ("class_0", "class_1")
    assert info.num_validation_examples == 0


def test_cifar10_folder_split_and_exact_normalisation(tmp_path):
    """A generated folder in the cifar10-jpg layout: the last tenth of each class is
    validation, and centre-crop evaluation at 32x32 is the decoded pixels, normalised."""
    rng = np.random.default_rng(5)
    for split, count in (("train", 20), ("test", 4)):
        for name in CLASSES[:2]:
            for i in range(count):
                _write(str(tmp_path / split / name / f"{i:04d}.jpg"),
                       _encode(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)))  # fmt: skip
    info = data.dataset_info("cifar10_folder", str(tmp_path))
    assert (info.num_train_examples, info.num_validation_examples, info.num_test_examples) == (
        36, 4, 8)  # fmt: skip
    assert info.default_image_size == 32 and info.mean == data.CIFAR10_MEAN
    assert info.center_crop_fraction == 1.0 and info.default_augmentation == "cifar"
    images, labels = _collect(data.make_dataset("cifar10_folder", "validation",
                                                data_dir=str(tmp_path), batch_size=3,
                                                training=False))  # fmt: skip
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    expected = [tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "train" / name / f))).numpy()
                for name in CLASSES[:2] for f in ("0018.jpg", "0019.jpg")]  # fmt: skip
    expected = (np.float32(expected) - np.float32(info.mean)) / np.float32(info.std)
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)
    def first_training_batch(**augmentation):
        train = data.make_dataset("cifar10_folder", "train", data_dir=str(tmp_path),
                                  batch_size=6, training=True, seed=0, deterministic=True,
                                  **augmentation)  # fmt: skip
        return next(iter(train))[0].numpy()

    # Without an augmentation the dataset's own recipe applies: CIFAR's, not the paper's.
    images = first_training_batch()
    assert images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(images, first_training_batch(augmentation="cifar"))
    assert not np.array_equal(images, first_training_batch(augmentation="paper"))
    test = data.make_dataset("cifar10_folder", "test", data_dir=str(tmp_path), batch_size=8,
                             training=False)  # fmt: skip
    assert sum(int(labels.shape[0]) for _, labels in test) == 8


def test_cifar_augmentation_on_a_folder_evaluates_the_whole_image(tmp_path):
    """A folder of 32x32 images is ImageNet-like (evaluation keeps the central 0.875), but a
    run trained with the CIFAR augmentation sees padded crops of the whole image: its
    evaluation, and the crop its run.json records for export, must be the whole image too."""
    from keras_resnet import recipes
    from keras_resnet.training.inputs import dataset_info

    rng = np.random.default_rng(6)
    for split in ("train", "val"):
        for name in CLASSES[:2]:
            _write(str(tmp_path / split / name / "0000.jpg"),
                   _encode(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)))  # fmt: skip
    info = data.dataset_info("folder", str(tmp_path))
    assert info.center_crop_fraction == 0.875

    def validation(**options):
        return _collect(data.make_dataset("folder", "validation", data_dir=str(tmp_path),
                                          batch_size=2, image_size=32, training=False,
                                          **options))[0]  # fmt: skip

    decoded = [tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "val" / name / "0000.jpg")))
               for name in CLASSES[:2]]  # fmt: skip
    whole = (np.float32(decoded) - np.float32(info.mean)) / np.float32(info.std)
    np.testing.assert_allclose(validation(augmentation="cifar"), whole, rtol=0, atol=1e-5)
    assert np.abs(validation() - whole).max() > 0.5  # the paper's augmentation: the 0.875 centre
    config = recipes.config("resnet20", str(tmp_path / "run"), dataset="folder",
                            data_dir=str(tmp_path), augmentation="cifar", final_split="validation")
    assert dataset_info(config)[0].input_spec(32).center_crop_fraction == 1.0
    paper = recipes.config("resnet20", str(tmp_path / "run"), dataset="folder",
                           data_dir=str(tmp_path), augmentation="paper", final_split="validation")
    assert dataset_info(paper)[0].input_spec(32).center_crop_fraction == 0.875


def test_archive_data_dir_is_extracted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_RESNET_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "source"
    _class_folders(str(source / "mini"), 2, np.random.default_rng(0), val_per_class=1)
    archive = tmp_path / "mini.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "mini", arcname="mini")
    info = data.dataset_info("folder", str(archive))
    assert info.num_train_examples == 6 and info.data_dir.startswith(str(tmp_path / "cache"))
    assert not [p for p in os.listdir(tmp_path / "cache" / "extracted") if ".tmp" in p]
    assert sources.resolve_archive(str(archive)) == info.data_dir


# --------------------------------------------------------------------------------------
# Augmentation and testing views.


def test_crop_windows_stay_inside_the_image():
    rng = np.random.default_rng(0)
    for i in range(60):
        height, width = (int(v) for v in rng.integers(20, 700, size=2))
        seed = tf.constant([i, 7], tf.int64)
        image_size = int(rng.choice([32, 64, 224]))
        y, x, h, w = (int(v) for v in preprocessing.paper_window(height, width, seed, image_size))
        shorter = min(height, width)
        # The paper's scale augmentation: a 224 crop of the image resized to shorter side S
        # in [256, 480] is a square of side 224 * shorter / S of the source.
        assert h == w
        assert round(shorter * 224 / 480) - 1 <= h <= round(shorter * 224 / 256) + 1
        windows = [(y, x, h, w)]
        windows.append(tuple(int(v) for v in preprocessing.inception_window(height, width, seed)))
        windows.append(tuple(int(v) for v in preprocessing.center_window(height, width, 0.875)))
        for y, x, h, w in windows:
            assert 0 <= y and 0 <= x and h >= 1 and w >= 1
            assert y + h <= height and x + w <= width
        y, x, h, w = windows[1]
        assert 0.08 * height * width * 0.9 <= h * w  # inception area >= 8% (rounding)


def _gradient_png(height=48, width=64):
    ramp = np.linspace(0, 255, width)[None, :, None]
    return tf.constant(_encode(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8), "png"))


@pytest.mark.parametrize("augmentation", ["paper", "inception", "cifar"])
def test_flip_actually_flips(augmentation):
    encoded = _gradient_png()
    directions = []
    for i in range(24):
        image = preprocessing.train_image(encoded, tf.constant([i, 1], tf.int64),
                                          augmentation=augmentation, image_size=32).numpy()  # fmt: skip
        directions.append(np.sign(image[:, -4:].mean() - image[:, :4].mean()))
    assert directions.count(1) >= 4 and directions.count(-1) >= 4  # both ways, about half


def test_no_augmentation_is_the_centre_crop():
    encoded = _gradient_png()
    seeds = [tf.constant([i, 0], tf.int64) for i in range(3)]
    views = [preprocessing.train_image(encoded, s, augmentation="none", image_size=32).numpy()
             for s in seeds]  # fmt: skip
    centre = preprocessing.center_crop(encoded, image_size=32).numpy()
    for view in views:
        np.testing.assert_array_equal(view, centre)


def test_lighting_adds_one_colour_offset_per_image():
    encoded = _gradient_png()
    seed = tf.constant([3, 4], tf.int64)
    plain = preprocessing.train_image(encoded, seed, augmentation="paper", image_size=32)
    lit = preprocessing.train_image(encoded, seed, augmentation="paper", image_size=32,
                                    lighting=True)  # fmt: skip
    offset = (lit - plain).numpy().reshape(-1, 3)
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-3)
    assert 0 < np.abs(offset[0]).max() < 255


def test_ten_crop_gives_ten_distinct_views():
    rng = np.random.default_rng(0)
    encoded = tf.constant(_encode(rng.integers(0, 256, (60, 80, 3)).astype(np.uint8), "png"))
    views = preprocessing.ten_crop(encoded, image_size=32).numpy()
    assert views.shape == (10, 32, 32, 3)
    for a, b in itertools.combinations(range(10), 2):
        assert not np.array_equal(views[a], views[b]), (a, b)
    np.testing.assert_array_equal(views[5:], views[:5, :, ::-1])  # the mirrored five
    resized = tf.image.resize(tf.io.decode_png(encoded), [37, 49]).numpy()  # shorter side 32/0.875
    np.testing.assert_allclose(views[1], resized[:32, :32], atol=1e-4)  # top-left
    np.testing.assert_allclose(views[4], resized[-32:, -32:], atol=1e-4)  # bottom-right


def test_ten_crop_and_multi_scale_through_the_pipeline(folder):
    info = data.dataset_info("folder", folder)
    images, labels = next(iter(data.make_dataset(
        "folder", "validation", data_dir=folder, batch_size=4, image_size=16, training=False,
        eval_mode="ten_crop")))  # fmt: skip
    assert images.shape == (4, 10, 16, 16, 3) and labels.shape == (4,)
    ds = data.make_dataset("folder", "validation", data_dir=folder, batch_size=1, image_size=32,
                           training=False, eval_mode="multi_scale")  # fmt: skip
    sides = data.multi_scale_sides(32)
    assert sides == (32, 37, 55, 69, 91)
    count = 0
    for images, labels in ds:
        assert sorted(images, key=int) == [str(s) for s in sides]
        for side in sides:
            batch = images[str(side)].numpy()
            assert batch.shape[0] == 1 and min(batch.shape[1:3]) == side
            assert abs(batch.shape[2] / batch.shape[1] - 56 / 40) < 0.05  # aspect kept
        np.testing.assert_array_equal(_labels_from_pixels(images["32"].numpy(), info), labels)
        count += 1
    assert count == info.num_validation_examples
    assert data.MULTI_SCALE_SIDES == (224, 256, 384, 480, 640)
    assert data.multi_scale_sides(224) == data.MULTI_SCALE_SIDES


# --------------------------------------------------------------------------------------
# Robustness and reproducibility.


def test_corrupt_images_are_skipped_and_counted(corrupt_folder):
    skipped = data.SkipCounter()
    ds = data.make_dataset("folder", "validation", data_dir=corrupt_folder, batch_size=4,
                           image_size=16, training=False, skipped=skipped)  # fmt: skip
    info = data.dataset_info("folder", corrupt_folder)
    images, labels = _collect(ds)
    assert info.num_validation_examples == 8  # 6 good + 2 bad files
    assert len(labels) == 6 and skipped.value() == 2
    np.testing.assert_array_equal(_labels_from_pixels(images, info), labels)

    assert [os.path.basename(n) for n in skipped.names()] == ["truncated.jpg", "garbage.jpg"]
    assert all("/val/" in n for n in skipped.names())

    training_skips = data.SkipCounter()
    train = data.make_dataset("folder", "train", data_dir=corrupt_folder, batch_size=7,
                              image_size=16, training=True, seed=0,
                              skipped=training_skips)  # fmt: skip
    for _ in train.take(40):  # 280 good images: 23 epochs of 12 good + 2 bad, 46 bad
        pass
    # The same two files fail in every epoch: counted once each, named with their path.
    assert training_skips.value() == 2 and skipped.value() == 2
    assert all("/train/" in n for n in training_skips.names())
    assert "SkipCounter(2)" == repr(training_skips)


def _all_corrupt_folder(root, per_class=3):
    for split in ("train", "val"):
        for name in CLASSES[:2]:
            for i in range(per_class):
                _write(os.path.join(root, split, name, f"{i}.jpg"), b"\xff\xd8\xff broken")
    return root


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_too_many_unreadable_images_in_a_row_stop_with_the_last_named(tmp_path, monkeypatch,
                                                                     batch_size):
    monkeypatch.setattr(data.pipeline, "MAX_CONSECUTIVE_FAILURES", 4)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):  # evaluation order: by class, then by file name
        folder = os.path.join(str(tmp_path), split, CLASSES[0])
        _write(os.path.join(folder, "a.jpg"), _encode(_image(COLOURS[CLASSES[0]], 16, 16, rng)))
        for i in range(3):  # three in a row: under the limit
            _write(os.path.join(folder, f"b{i}.jpg"), b"not an image")
        _write(os.path.join(folder, "c.jpg"), _encode(_image(COLOURS[CLASSES[0]], 16, 16, rng)))
        for i in range(5):  # five in a row: over it
            _write(os.path.join(folder, f"d{i}.jpg"), b"not an image")
        _write(os.path.join(folder, "e.jpg"), _encode(_image(COLOURS[CLASSES[0]], 16, 16, rng)))
        _write(os.path.join(str(tmp_path), split, CLASSES[1], "f.jpg"),
               _encode(_image(COLOURS[CLASSES[1]], 16, 16, rng)))
    ds = data.make_dataset("folder", "validation", data_dir=str(tmp_path),
                           batch_size=batch_size, image_size=16, training=False)  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        _collect(ds)
    message = data.data_error_message(raised.value)
    assert message == (f"folder validation: 4 images in a row could not be read or decoded, the "
                       f"last {tmp_path}/val/{CLASSES[0]}/d4.jpg; is --data_dir right, and are "
                       "the files complete?")  # fmt: skip


def test_a_stream_of_only_unreadable_images_stops_with_an_error_naming_one(tmp_path):
    folder = _all_corrupt_folder(str(tmp_path))
    train = data.make_dataset("folder", "train", data_dir=folder, batch_size=2, image_size=16,
                              training=True, seed=0)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        next(iter(train))
    message = data.data_error_message(raised.value)
    # (the first pass's end says so before MAX_CONSECUTIVE_FAILURES are reached)
    assert message.startswith("folder train: no image of a whole pass could be read or decoded "
                              "(6 in a row), the last ")  # fmt: skip
    assert f"{folder}/train/" in message and "--data_dir" in message
    assert time.monotonic() - start < 60
    # A finite split of only unreadable images is simply empty (the trainer reports it).
    skipped = data.SkipCounter()
    assert not list(data.make_dataset("folder", "validation", data_dir=folder, batch_size=2,
                                      image_size=16, training=False, skipped=skipped))
    assert skipped.value() == 6


def test_a_training_stream_whose_files_all_break_after_its_first_pass_stops(tmp_path):
    # Every pass ends in sentinels: a pass none of whose images can be read ends the stream
    # with an error, where later passes used to fail image after image without end, unchecked.
    rng = np.random.default_rng(0)
    _class_folders(str(tmp_path), 3, rng, size=(16, 16))
    paths = sorted(Path(tmp_path, "train").glob("*/*"))
    ds = data.make_dataset("folder", "train", data_dir=str(tmp_path), batch_size=2,
                           image_size=16, training=True, seed=0)  # fmt: skip
    iterator = iter(ds)
    next(iterator)  # the first pass is being read
    for path in paths:
        _write(str(path), b"broken now")
    outcome = []

    def pull():
        try:
            for _ in range(1000):
                next(iterator)
            outcome.append("went on")
        except tf.errors.InvalidArgumentError as error:
            outcome.append(data.data_error_message(error))

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()
    thread.join(120)
    assert outcome, "the stream went on failing without a word"
    # (the run may begin in the pass before: a sentinel does not end it)
    match = re.match(r"folder train: no image of a whole pass could be read or decoded "
                     r"\((\d+) in a row\), the last (.*); is --data_dir right", outcome[0])
    assert match and int(match[1]) >= len(paths) == 9, outcome
    assert match[2].startswith(f"{tmp_path}/train/")


def test_passes_with_an_unreadable_image_go_on_whatever_the_skip(tmp_path):
    # Each pass ends in sentinels, and a skip can start the stream anywhere in a pass, even
    # at the unreadable image just before them: that partial pass is not a whole one.
    _class_folders(str(tmp_path), 3, np.random.default_rng(0), size=(16, 16))
    _write(str(sorted(Path(tmp_path, "train").glob("*/*"))[0]), b"not an image")
    for skip_steps in range(12):  # a pass is 9 examples and 2 sentinels: every position
        ds = data.make_dataset("folder", "train", data_dir=str(tmp_path), batch_size=2,
                               image_size=16, training=True, seed=0, skip_steps=skip_steps)
        assert len(list(ds.take(30))) == 30  # about 7 passes


@pytest.mark.parametrize("bad_label", [0, 9999])
def test_a_tfrecord_label_out_of_range_stops_with_the_file_and_the_label(tmp_path, bad_label):
    rng = np.random.default_rng(0)
    items = _tfrecord_items(rng, 2)
    items[1] = (items[1][0], bad_label - 1)  # write_tfrecords stores label + 1
    demo.write_tfrecords(str(tmp_path), "train", items, num_shards=1)
    for training in (True, False):
        ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=str(tmp_path),
                               batch_size=2, image_size=16, training=training)  # fmt: skip
        with pytest.raises(tf.errors.InvalidArgumentError) as raised:
            _collect(ds.take(3))
        message = data.data_error_message(raised.value)
        shard = os.path.join(str(tmp_path), "train-00000-of-00001")
        assert message == f"{shard}: label {bad_label} is outside 1..1000 (1000 classes)"


def test_a_tfrecord_with_image_file_names_names_the_bad_image(tmp_path):
    rng = np.random.default_rng(0)
    items = [(encoded, label, f"image_{i}.JPEG")
             for i, (encoded, label) in enumerate(_tfrecord_items(rng, 2))]  # fmt: skip
    items[1] = (items[1][0], 9998, items[1][2])  # write_tfrecords stores label + 1
    items[2] = (b"not a JPEG", 0, items[2][2])
    demo.write_tfrecords(str(tmp_path), "train", items, num_shards=1)
    shard = os.path.join(str(tmp_path), "train-00000-of-00001")
    skipped = data.SkipCounter()
    ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=str(tmp_path), batch_size=1,
                           image_size=16, training=False, skipped=skipped)  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        _collect(ds)
    assert data.data_error_message(raised.value) == (
        f"{shard} (image_1.JPEG): label 9999 is outside 1..1000 (1000 classes)")
    del items[1]
    os.remove(shard)
    demo.write_tfrecords(str(tmp_path), "train", items, num_shards=1)
    skipped = data.SkipCounter()
    ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=str(tmp_path), batch_size=1,
                           image_size=16, training=False, skipped=skipped)  # fmt: skip
    assert len(_collect(ds)[1]) == len(items) - 1
    assert skipped.names() == [f"{shard} (image_2.JPEG)"]


def test_a_tfrecord_shard_cut_inside_a_record_is_named(tmp_path):
    rng = np.random.default_rng(0)
    demo.write_tfrecords(str(tmp_path), "train", _tfrecord_items(rng, 2), num_shards=1)
    demo.write_tfrecords(str(tmp_path), "validation", _tfrecord_items(rng, 1), num_shards=1)
    shard = os.path.join(str(tmp_path), "validation-00000-of-00001")
    content = open(shard, "rb").read()
    for cut in (len(content) - 30, 5):  # inside a record's data, inside a header
        with open(shard, "wb") as f:
            f.write(content[:cut])
        data.sources.get_source.cache_clear()
        with pytest.raises(ValueError, match=f"{shard}: truncated TFRecord file: it ends inside "
                           "record"):  # fmt: skip
            data.dataset_info("imagenet_tfrecord", str(tmp_path))


@pytest.mark.parametrize("examples", [1, 7, 13])
@pytest.mark.parametrize("eval_mode", ["center", "ten_crop"])
def test_padded_evaluation_batches_are_full_and_hold_every_example_once(tmp_path, examples,
                                                                        eval_mode):  # fmt: skip
    rng = np.random.default_rng(examples)
    items = _tfrecord_items(rng, 1) * examples
    demo.write_tfrecords(str(tmp_path), "train", items[:2], num_shards=1)
    demo.write_tfrecords(str(tmp_path), "validation", items[:examples], num_shards=1)
    ds = data.make_dataset("imagenet_tfrecord", "validation", data_dir=str(tmp_path),
                           batch_size=4, image_size=16, training=False, eval_mode=eval_mode,
                           pad_batches=True)  # fmt: skip
    labels = []
    for images, batch_labels in ds.take(-(-examples // 4) + 2):
        assert images.shape[0] == batch_labels.shape[0] == 4
        labels.extend(batch_labels.numpy())
    real = [label for label in labels if label != data.PADDING_LABEL]
    assert real == [label for _, label in items[:examples]]
    assert labels[len(real):] == [data.PADDING_LABEL] * (len(labels) - len(real))


def test_one_training_epoch_is_whole_batches_and_resumes_exactly(tfrecords):
    def epoch(number, skip_steps=0):
        ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=tfrecords, batch_size=4,
                               image_size=16, training=True, seed=3, deterministic=True,
                               epoch=number, skip_steps=skip_steps)  # fmt: skip
        return _collect(ds)

    images, labels = epoch(0)
    info = data.dataset_info("imagenet_tfrecord", tfrecords)
    assert len(labels) == 4 * (info.num_train_examples // 4)  # the rest is dropped
    resumed_images, resumed_labels = epoch(0, skip_steps=2)
    np.testing.assert_array_equal(resumed_labels, labels[8:])
    np.testing.assert_array_equal(resumed_images, images[8:])
    assert not np.array_equal(epoch(1)[1], labels)  # each epoch its own order


def test_corrupt_tfrecord_image_is_skipped(tmp_path):
    rng = np.random.default_rng(0)
    items = _tfrecord_items(rng, 2) + [(b"\x89PNG broken", 1)]
    demo.write_tfrecords(str(tmp_path), "train", items, num_shards=1)
    demo.write_tfrecords(str(tmp_path), "validation", items, num_shards=1)
    skipped = data.SkipCounter()
    _, labels = _collect(data.make_dataset("imagenet_tfrecord", "validation",
                                           data_dir=str(tmp_path), batch_size=4, image_size=16,
                                           training=False, skipped=skipped))  # fmt: skip
    assert len(labels) == 6 and skipped.value() == 1


def test_seeded_deterministic_pipelines_repeat_exactly(tfrecords):
    def first_batches(seed):
        ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=tfrecords, batch_size=4,
                               image_size=16, training=True, seed=seed, deterministic=True)  # fmt: skip
        return _collect(ds.take(5))  # 20 images: across an epoch boundary

    images, labels = first_batches(7)
    again_images, again_labels = first_batches(7)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    other_images, _ = first_batches(8)
    assert not np.array_equal(images, other_images)


@pytest.mark.parametrize("name", ["folder", "imagenet_tfrecord"])
def test_input_context_shards_are_disjoint_and_complete(name, folder, tfrecords):
    data_dir = folder if name == "folder" else tfrecords
    info = data.dataset_info(name, data_dir)

    def fingerprints(split, context):
        ds = data.make_dataset(name, split, data_dir=data_dir, batch_size=3, image_size=8,
                               training=False, input_context=context)  # fmt: skip
        images, labels = _collect(ds)
        return [(int(l), np.round(im, 3).tobytes()) for im, l in zip(images, labels)]

    for split in ("train", "validation"):
        whole = fingerprints(split, None)
        shards = [fingerprints(split, tf.distribute.InputContext(2, i, 2)) for i in range(2)]
        assert len(whole) == info.num_examples(split)
        assert sorted(shards[0] + shards[1]) == sorted(whole)
        assert len(shards[0]) and len(shards[1])


# --------------------------------------------------------------------------------------
# The accounting of unreadable images (pipeline.SkippingBatcher), method by method, on tiny
# streams: a number is a readable image of that value, "x" an unreadable one.

SENTINEL = pipeline._SENTINEL_ORIGIN
_READ_THE_FILES = "; is --data_dir right, and are the files complete?"


def _number(data, origin, seed):
    """The tiny streams' decode: fails, as a corrupt image does, on anything but a number."""
    return tf.strings.to_number(data, tf.int32)


def _tiny_stream(items, sentinels=0, labels=None):
    """(data, label, origin) for `items` (label: the value % 3 unless given; origin: f<position>),
    then `sentinels` sentinels as the pipeline makes them (origin and label; data "0")."""
    labels = labels or [int(item) % 3 if item != "x" else 0 for item in items]
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(items, tf.string), tf.constant(labels, tf.int32),
        tf.constant([f"f{i}" for i in range(len(items))], tf.string)))  # fmt: skip
    sentinel = ("0", tf.constant(data.PADDING_LABEL), SENTINEL)
    return ds.concatenate(tf.data.Dataset.from_tensors(sentinel).repeat(sentinels))


def _batcher(batch_size=2, *, training=False, pad=False, drop_remainder=False, first_index=0,
             num_classes=3, label_base=0):  # fmt: skip
    counter = data.SkipCounter()
    batcher = pipeline.SkippingBatcher(_number, batch_size, counter, "tiny", num_classes,
                                       label_base, first_index=first_index, training=training,
                                       drop_remainder=drop_remainder, pad=pad)  # fmt: skip
    return batcher, counter


def _values(ds):
    return [(images.numpy().tolist(), labels.numpy().tolist()) for images, labels in ds]


def _data_error(call):
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        call()
    return data.data_error_message(raised.value)


def _remember_all(batcher, items):
    """Remembers every example's origin as the decode stage does: the unreadable ones too."""
    for index, example in enumerate(_tiny_stream(items)):
        try:
            batcher.remember(tf.constant(index, tf.int64), example)
        except tf.errors.InvalidArgumentError:  # (raised eagerly here: ignore_errors drops it)
            assert example[0].numpy() == b"x"


def test_remember_keeps_the_origin_by_number_and_decodes():
    batcher, _ = _batcher()
    example = (tf.constant("7"), tf.constant(1), tf.constant("f5"))
    image, label, origin, index = batcher.remember(tf.constant(5, tf.int64), example)
    assert (int(image), int(label), origin.numpy(), int(index)) == (7, 1, b"f5", 5)
    assert batcher.pending.lookup(tf.constant([5, 6], tf.int64)).numpy().tolist() == [b"f5", b""]
    with pytest.raises(tf.errors.InvalidArgumentError):  # the decode fails: remembered first
        batcher.remember(tf.constant(6, tf.int64), (tf.constant("x"), example[1], tf.constant("f6")))
    assert batcher.pending.lookup(tf.constant([6], tf.int64)).numpy().tolist() == [b"f6"]


def test_decoded_drops_the_unreadable_and_keeps_their_numbers_as_gaps():
    batcher, _ = _batcher(first_index=10)
    batches = list(batcher.decoded(_tiny_stream(["1", "x", "3", "x", "x", "6"])))
    assert [b[3].numpy().tolist() for b in batches] == [[10, 12], [15]]
    assert [b[0].numpy().tolist() for b in batches] == [[1, 3], [6]]
    # every origin is remembered until the accounting has passed its batch
    numbers = tf.constant([11, 13, 14], tf.int64)
    assert batcher.pending.lookup(numbers).numpy().tolist() == [b"f1", b"f3", b"f4"]
    assert list(_batcher()[0].decoded(_tiny_stream([]))) == []


def test_failure_runs_go_on_through_sentinels_and_across_batches():
    runs = pipeline.SkippingBatcher.failure_runs
    as_lists = lambda *tensors: [t.numpy().tolist() for t in tensors]  # noqa: E731
    index = tf.constant([0, 2, 5], tf.int64)
    gaps, failed, ended_at, run = runs(tf.constant(-1, tf.int64), tf.constant(0, tf.int64),
                                       index, tf.constant([False, False, False]))  # fmt: skip
    assert as_lists(gaps, failed, ended_at, run) == [[0, 1, 2], [0, 1, 3], [0, 1, 3], [0, 1, 2]]
    # two failures, a sentinel (which does not end the run), two more, a readable image
    _, failed, ended_at, run = runs(tf.constant(-1, tf.int64), tf.constant(0, tf.int64),
                                    tf.constant([2, 5], tf.int64), tf.constant([True, False]))
    assert as_lists(run) == [[2, 4]] and int(failed[-1] - ended_at[-1]) == 0
    # a run carried over from the batch before
    _, failed, ended_at, run = runs(tf.constant(4, tf.int64), tf.constant(3, tf.int64),
                                    tf.constant([5, 7], tf.int64), tf.constant([False, True]))
    assert as_lists(run) == [[3, 1]] and int(failed[-1] - ended_at[-1]) == 1


def test_check_labels_names_the_first_bad_label_as_read_and_lets_sentinels_pass():
    origin = tf.constant(["f0", "f1", "f2", SENTINEL])
    sentinel = tf.equal(origin, SENTINEL)
    batcher, _ = _batcher()
    batcher.check_labels(tf.constant([0, 2, 1, data.PADDING_LABEL]), origin, sentinel)
    bad = tf.constant([0, 3, -1, data.PADDING_LABEL])
    assert _data_error(lambda: batcher.check_labels(bad, origin, sentinel)) == (
        "f1: label 3 is outside 0..2 (3 classes)")
    one_based, _ = _batcher(label_base=1, num_classes=1000)
    assert _data_error(lambda: one_based.check_labels(tf.constant([999, 1000, 0, -1]), origin,
                                                      sentinel)) == (  # fmt: skip
        "f1: label 1001 is outside 1..1000 (1000 classes)")


def test_missing_names_the_failed_examples_without_sentinels():
    batcher, _ = _batcher()
    _remember_all(batcher, ["1", "x", "3", "x", "x", "6"])
    batcher.pending.insert(tf.constant([6], tf.int64), tf.constant([SENTINEL]))
    lost = batcher.missing(tf.constant(-1, tf.int64), tf.constant([0, 2, 5], tf.int64))
    assert lost.numpy().tolist() == [b"f1", b"f3", b"f4"]
    lost = batcher.missing(tf.constant(2, tf.int64), tf.constant([7], tf.int64))
    assert lost.numpy().tolist() == [b"f3", b"f4", b"f5"]  # (6: the sentinel)


def test_count_skipped_counts_each_origin_once():
    batcher, counter = _batcher()
    batcher.count_skipped(tf.constant(["f1", "f1", "f4"]))
    assert counter.value() == 2
    batcher.count_skipped(tf.constant(["f4", "f7"]))
    batcher.count_skipped(tf.constant([], tf.string))
    assert counter.value() == 3 and counter.names() == ["f1", "f4", "f7"]


def test_check_runs_stops_at_the_limit_naming_the_last_failure(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_FAILURES", 3)
    batcher, _ = _batcher()
    _remember_all(batcher, ["1", "x", "x", "x", "5", "x", "x", "x", "x", "10"])
    batcher.check_runs(tf.constant([0, 4], tf.int64), tf.constant([0, 2], tf.int64))
    error = _data_error(lambda: batcher.check_runs(tf.constant([4, 9], tf.int64),
                                                   tf.constant([3, 4], tf.int64)))  # fmt: skip
    assert error == ("tiny: 3 images in a row could not be read or decoded, the last f3"
                     + _READ_THE_FILES)  # (the first example that a run of 3 precedes: 4)


def test_nothing_readable_and_unreadable_name_the_image_before_the_example():
    batcher, _ = _batcher(training=True)
    _remember_all(batcher, ["x", "x", "x"])
    message = batcher.unreadable(tf.constant(3, tf.int64), "what went wrong")
    assert tf.strings.join(message).numpy().decode() == (
        "tiny: what went wrong, the last f2" + _READ_THE_FILES)
    error = _data_error(lambda: batcher.nothing_readable(tf.constant([3, 4], tf.int64),
                                                         tf.constant([3, 3], tf.int64), 0))
    assert error == ("tiny: no image of a whole pass could be read or decoded (3 in a row), "
                     "the last f2" + _READ_THE_FILES)  # fmt: skip


def test_check_passes_stops_a_training_stream_at_a_pass_with_no_readable_image():
    index, sentinel = tf.constant([3, 4], tf.int64), tf.constant([True, True])
    gaps, runs = tf.constant([3, 0], tf.int64), tf.constant([3, 3], tf.int64)
    zero, false = tf.constant(0, tf.int64), tf.constant(False)
    evaluation, _ = _batcher()
    _, readable = evaluation.check_passes(index, sentinel, gaps, runs, zero, false)
    assert int(readable) == 0  # not checked, not counted
    training, _ = _batcher(training=True)
    _remember_all(training, ["x", "x", "x"])
    assert _data_error(lambda: training.check_passes(index, sentinel, gaps, runs, zero, false)
                       ).startswith("tiny: no image of a whole pass could be read or decoded "
                                    "(3 in a row), the last f2")  # fmt: skip
    # one readable image before the failures: the pass goes on, and the count starts again
    _, readable = training.check_passes(index, sentinel, gaps, runs, tf.constant(1, tf.int64),
                                        false)  # fmt: skip
    assert int(readable) == 0


def test_account_carries_the_state_and_forgets_the_accounted_origins():
    batcher, counter = _batcher()
    _remember_all(batcher, ["1", "x", "3"])
    batcher.pending.insert(tf.constant([3], tf.int64), tf.constant([SENTINEL]))
    state = batcher.initial_state()
    assert [int(t) for t in state] == [-1, 0, 0, 0]
    batch = (tf.constant([1, 3]), tf.constant([1, 0]), tf.constant(["f0", "f2"]),
             tf.constant([0, 2], tf.int64))  # fmt: skip
    state, (images, labels) = batcher.account(state, batch)
    assert [int(t) for t in state] == [2, 0, 0, 0] and images.numpy().tolist() == [1, 3]
    assert counter.names() == ["f1"]
    assert batcher.pending.lookup(tf.constant([0, 1, 2, 3], tf.int64)).numpy().tolist() == [
        b"", b"", b"", SENTINEL.encode()]  # fmt: skip
    # an evaluation pass's last batch: its sentinel taken out
    state, (images, labels) = batcher.account(state, (
        tf.constant([0]), tf.constant([data.PADDING_LABEL]), tf.constant([SENTINEL]),
        tf.constant([3], tf.int64)))  # fmt: skip
    assert [int(t) for t in state] == [3, 0, 0, 1] and images.numpy().tolist() == []
    assert _batcher(first_index=5)[0].initial_state()[0] == 4  # a skip: counted as partial
    assert _batcher(first_index=5)[0].initial_state()[2] == 1


def test_delivered_and_finish_keep_what_each_kind_of_stream_delivers():
    images, labels = tf.constant([5, 0]), tf.constant([2, data.PADDING_LABEL])
    sentinel = tf.constant([False, True])
    evaluation, _ = _batcher()
    assert _values([evaluation.delivered(images, labels, sentinel)]) == [([5], [2])]
    for batcher in (_batcher(training=True)[0], _batcher(pad=True)[0]):
        assert _values([batcher.delivered(images, labels, sentinel)]) == [([5, 0], [2, -1])]
    two = tf.data.Dataset.from_tensors((images, labels)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant([7]), tf.constant([1]))))
    assert _values(_batcher(training=True)[0].finish(two)) == [([7], [1])]
    batches = two.concatenate(  # and an evaluation pass's last batch, once its sentinel is out
        tf.data.Dataset.from_tensors((tf.constant([], tf.int32), tf.constant([], tf.int32))))
    assert len(_values(_batcher(pad=True)[0].finish(batches))) == 3
    assert _values(_batcher()[0].finish(batches)) == [([5, 0], [2, -1]), ([7], [1])]
    assert _values(_batcher(drop_remainder=True)[0].finish(batches)) == [([5, 0], [2, -1])]


@pytest.mark.parametrize("items, batches, skipped", [
    (["x", "1", "2", "x", "4", "x"], [([1, 2], [1, 2]), ([4], [1])], ["f0", "f3", "f5"]),
    (["1", "2", "x", "x"], [([1, 2], [1, 2])], ["f2", "f3"]),  # (seen at the sentinel)
    (["x", "x", "x"], [], ["f0", "f1", "f2"]),  # a split of only unreadable images: empty
    ([], [], []),
    (["1", "2", "4"], [([1, 2], [1, 2]), ([4], [1])], []),
])  # fmt: skip
def test_an_evaluation_pass_delivers_the_readable_and_counts_the_rest(items, batches, skipped):
    batcher, counter = _batcher()
    assert _values(batcher.batches(_tiny_stream(items, sentinels=1))) == batches
    assert counter.names() == skipped


def test_an_evaluation_pass_with_too_many_failures_in_a_row_stops(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_FAILURES", 2)
    batcher, _ = _batcher()
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2", "x", "4"], 1))) == [
        ([1, 2], [1, 2]), ([4], [1])]  # fmt: skip
    batcher, _ = _batcher()
    ds = batcher.batches(_tiny_stream(["1", "x", "x", "2"], sentinels=1))
    assert _data_error(lambda: _values(ds)) == (
        "tiny: 2 images in a row could not be read or decoded, the last f2" + _READ_THE_FILES)


def test_a_padded_evaluation_pass_fills_its_last_batch_with_sentinels():
    batcher, counter = _batcher(pad=True)
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2"], sentinels=2))) == [
        ([1, 2], [1, 2]), ([0, 0], [-1, -1])]  # fmt: skip
    assert counter.names() == ["f1"]


def test_a_training_pass_drops_the_batches_holding_sentinels():
    batcher, counter = _batcher(training=True, drop_remainder=True)
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2", "4"], sentinels=2))) == [
        ([1, 2], [1, 2])]  # fmt: skip
    assert counter.names() == ["f1"]


def test_a_training_pass_of_only_unreadable_images_stops_unless_a_skip_began_inside_it():
    batcher, counter = _batcher(training=True, drop_remainder=True)
    ds = batcher.batches(_tiny_stream(["x", "x", "x"], sentinels=2))
    assert _data_error(lambda: _values(ds)) == (
        "tiny: no image of a whole pass could be read or decoded (3 in a row), the last f2"
        + _READ_THE_FILES)  # fmt: skip
    batcher, _ = _batcher(training=True, drop_remainder=True, first_index=2)
    assert _values(batcher.batches(_tiny_stream(["x"], sentinels=2))) == []
    batcher, _ = _batcher(training=True, drop_remainder=True)
    ds = batcher.batches(_tiny_stream([], sentinels=2))
    assert _values(ds) == []  # no failures: an empty pass is not an unreadable one


def test_a_label_out_of_range_stops_the_stream_even_among_skipped_images():
    batcher, _ = _batcher()
    ds = batcher.batches(_tiny_stream(["1", "x", "2"], sentinels=1, labels=[0, 0, 7]))
    assert _data_error(lambda: _values(ds)) == "f2: label 7 is outside 0..2 (3 classes)"


# --------------------------------------------------------------------------------------
# The demo set, synthetic data, tfds.


def test_demo_set_is_generated_once(demo_dir):
    info = data.dataset_info("demo", demo_dir)
    assert info.name == "demo" and info.class_names == demo.CLASS_NAMES
    assert (info.num_train_examples, info.num_validation_examples) == (4000, 1000)
    assert info.default_image_size == 64 and info.data_dir == demo_dir
    manifest = os.path.join(demo_dir, demo.MANIFEST)
    mtime = os.path.getmtime(manifest)
    assert demo.ensure_demo(demo_dir) == demo_dir and os.path.getmtime(manifest) == mtime
    parent = os.path.dirname(demo_dir)
    assert os.listdir(parent) == [os.path.basename(demo_dir)]  # no temporary folders left
    images, labels = next(iter(data.make_dataset("demo", "train", data_dir=demo_dir,
                                                 batch_size=16, training=True, seed=0)))  # fmt: skip
    assert images.shape == (16, 64, 64, 3) and labels.dtype == tf.int32
    assert 0 <= labels.numpy().min() and labels.numpy().max() < 10


def test_demo_default_location_follows_the_cache_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_RESNET_CACHE", str(tmp_path))
    assert demo.default_dir() == str(tmp_path / "demo-v1")


def test_interrupted_demo_generation_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "demo"

    def interrupted(folder, **kwargs):
        os.makedirs(folder)
        (Path(folder) / "train-00000-of-00004").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo(str(target))
    assert not target.exists() and os.listdir(tmp_path) == []


def test_demo_drawings_are_deterministic_and_distinct():
    first = [demo.draw(label, np.random.default_rng(label)) for label in range(10)]
    again = [demo.draw(label, np.random.default_rng(label)) for label in range(10)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for image in first:
        assert image.dtype == np.uint8 and 64 <= min(image.shape[:2]) <= max(image.shape[:2]) <= 96


def test_synthetic_data_shapes():
    info = data.dataset_info("synthetic")
    assert info.num_classes == 1000 and info.num_train_examples == 1_281_167
    images, labels = next(iter(data.make_dataset("synthetic", "train", batch_size=4,
                                                 image_size=32, training=True)))  # fmt: skip
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and labels.numpy().max() < 1000
    evaluation = data.make_dataset("synthetic", "validation", batch_size=4096, image_size=8,
                                   training=False)  # fmt: skip
    assert int(evaluation.cardinality()) == -(-50_000 // 4096)
    *_, (last_images, last_labels) = evaluation
    assert last_labels.shape == (50_000 % 4096,)
    ten_crop = data.make_dataset("synthetic", "validation", batch_size=2, image_size=16,
                                 training=False, eval_mode="ten_crop")  # fmt: skip
    images, _ = next(iter(ten_crop))
    assert images.shape == (2, 10, 16, 16, 3)


def test_tfds_sources_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=12):
        info = data.dataset_info("cifar10", data_dir)
        assert info.class_names == data.sources.CIFAR10_CLASSES
        assert (info.num_train_examples, info.num_validation_examples) == (45_000, 5_000)
        assert info.default_image_size == 32 and info.mean == data.CIFAR10_MEAN
        images, labels = next(iter(data.make_dataset(
            "cifar10", "train", data_dir=data_dir, batch_size=4, training=True,
            augmentation="cifar", seed=0)))  # fmt: skip
        assert images.shape == (4, 32, 32, 3) and labels.numpy().max() < 10
        _, labels = _collect(data.make_dataset("cifar10", "validation", data_dir=data_dir,
                                               batch_size=5, training=False))  # fmt: skip
        assert len(labels) == 12  # the mock's examples, each once

        info = data.dataset_info("tfds:imagenette/320px-v2", data_dir)
        assert info.num_classes == 10 and info.default_image_size == 224
        images, _ = next(iter(data.make_dataset(
            "tfds:imagenette/320px-v2", "train", data_dir=data_dir, batch_size=2,
            image_size=24, training=True)))  # fmt: skip
        assert images.shape == (2, 24, 24, 3)
        images, _ = next(iter(data.make_dataset(
            "tfds:imagenette/320px-v2", "validation", data_dir=data_dir, batch_size=2,
            image_size=24, training=False, eval_mode="ten_crop")))  # fmt: skip
        assert images.shape == (2, 10, 24, 24, 3)
    with pytest.raises(ValueError, match="tfds:no_such_dataset"):
        data.dataset_info("tfds:no_such_dataset", data_dir)


# --------------------------------------------------------------------------------------
# Real CIFAR-10 photographs (../shared/data/cifar10-jpg.tar.gz), where present.


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {CIFAR_ARCHIVE}")
    root = tmp_path_factory.mktemp("cifar10")
    wanted = ("airplane", "automobile", "cat")
    with tarfile.open(CIFAR_ARCHIVE) as archive:
        members = []
        for member in archive:
            parts = member.name.split("/")
            # 100 training and 20 test images of three classes.
            if len(parts) == 3 and parts[1] in wanted and member.isfile():
                number = int(parts[2].split(".")[0])
                if (parts[0] == "train" and number < 100) or (parts[0] == "test" and number < 20):
                    members.append(member)
        archive.extractall(root, members=members, filter="data")
    return str(root)


def test_real_cifar10_jpegs(cifar_subset):
    info = data.dataset_info("cifar10_folder", cifar_subset)
    assert info.class_names == ("airplane", "automobile", "cat")
    assert (info.num_train_examples, info.num_validation_examples, info.num_test_examples) == (
        270, 30, 60)  # fmt: skip
    images, labels = _collect(data.make_dataset("cifar10_folder", "validation",
                                                data_dir=cifar_subset, batch_size=16,
                                                training=False))  # fmt: skip
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 10))
    first = tf.io.decode_jpeg(tf.io.read_file(os.path.join(
        cifar_subset, "train", "airplane", "0090.jpg"))).numpy()  # fmt: skip
    expected = (first.astype(np.float32) - np.float32(info.mean)) / np.float32(info.std)
    np.testing.assert_allclose(images[0], expected, atol=1e-5)
    # Real photographs normalised with the CIFAR-10 statistics: roughly zero mean, unit spread.
    assert abs(images.mean()) < 0.5 and 0.5 < images.std() < 1.5
    for images, labels in data.make_dataset("cifar10_folder", "train", data_dir=cifar_subset,
                                            batch_size=32, training=True, augmentation="cifar",
                                            seed=0).take(3):  # fmt: skip
        assert images.shape == (32, 32, 32, 3) and set(labels.numpy()) <= {0, 1, 2}
    assert len(list(data.make_dataset("cifar10_folder", "test", data_dir=cifar_subset,
                                      batch_size=64, training=False))) == 1  # fmt: skip


@pytest.mark.slow  # decodes all 10,000 test images (and extracts the archive on first use)
def test_real_cifar10_test_split_counts_every_test_image_once():
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {CIFAR_ARCHIVE}")
    info = data.dataset_info("cifar10_folder", str(CIFAR_ARCHIVE))
    assert (info.num_train_examples + info.num_validation_examples, info.num_test_examples) == (
        50_000, 10_000)  # fmt: skip
    # As the trainer evaluates it: padded batches of 128, padding labelled PADDING_LABEL.
    real, per_class = 0, np.zeros(10, np.int64)
    for _, labels in data.make_dataset("cifar10_folder", "test", data_dir=str(CIFAR_ARCHIVE),
                                       batch_size=128, training=False, pad_batches=True):
        labels = labels.numpy()
        if (labels == data.PADDING_LABEL).all():
            break
        real += (labels != data.PADDING_LABEL).sum()
        per_class += np.bincount(labels[labels != data.PADDING_LABEL], minlength=10)
    assert real == 10_000 and (per_class == 1000).all()


# --------------------------------------------------------------------------------------
# The package's contract.


def test_dataset_info_is_frozen(folder):
    info = data.dataset_info("folder", folder)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 5
    assert isinstance(info.class_names, tuple) and len(info.mean) == len(info.std) == 3


def test_the_data_package_does_not_use_absl():
    package = Path(data.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "import absl" not in text and "from absl" not in text, path


def test_malloc_tuning_can_be_turned_off(monkeypatch):
    from keras_resnet.data import host_memory

    monkeypatch.setattr(host_memory, "_done", None)
    monkeypatch.setenv("KERAS_RESNET_TUNE_MALLOC", "0")
    assert host_memory.reuse_freed_buffers() is False
    monkeypatch.setattr(host_memory, "_done", True)
    assert host_memory.reuse_freed_buffers() is True  # once per process


def test_the_resize_gives_tensorflows_uint8_resize_bit_for_bit():
    # The crop is cast to float32 before the resize only because the kernel is faster so.
    rng = np.random.default_rng(0)
    for height, width, size in [(262, 262, 224), (375, 500, 224), (17, 40, 32), (9, 9, 32)]:
        image = tf.constant(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        np.testing.assert_array_equal(preprocessing._resize(image, [size, size]),
                                      tf.image.resize(image, [size, size]))  # fmt: skip
