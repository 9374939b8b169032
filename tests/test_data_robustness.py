"""The input pipelines against bad data and for reproducibility: unreadable images skipped,
counted and named; streams of only unreadable images, bad labels and cut shards stopped with
the file named; padded evaluation passes; exact resumes, seeded repeats and disjoint shards."""

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import data
from keras_resnet.data import demo

from data_helpers import (  # noqa: F401  (folder, corrupt_folder, tfrecords: fixtures)
    CLASSES, COLOURS, _class_folders, _collect, _encode, _image, _labels_from_pixels,
    _tfrecord_items, _write, corrupt_folder, folder, tfrecords,
)


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
