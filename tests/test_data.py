"""The input pipelines, on data the tests write (JPEG/PNG class folders, ImageNet TFRecords,
the demo set), on real CIFAR-10 JPEGs where ../shared/data/ has them, and on tfds sources
through tfds.testing.mock_data: errors, sources, augmentation, the demo set and the data
package's contract. Bad data: test_data_robustness.py; the skip accounting:
test_skipping_batcher.py."""

import dataclasses
import itertools
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import data
from keras_resnet.data import demo, preprocessing, sources

from data_helpers import (  # noqa: F401  (folder, tfrecords, demo_dir: fixtures)
    CIFAR_ARCHIVE, CLASSES, _class_folders, _collect, _encode, _labels_from_pixels,
    _tfrecord_items, _value_bounds, _write, demo_dir, folder, tfrecords,
)

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
