"""ImageNet TFRecord shards (train-*-of-*, validation-*-of-*), and the demo set, which is
written in the same format: TFRecordSource, DemoSource, and the checks that name a damaged
or foreign file."""

import os
import struct

import tensorflow as tf

from keras_resnet.data.sources.base import (
    AUTOTUNE,
    IMAGENET_TRAIN_EXAMPLES,
    IMAGENET_VALIDATION_EXAMPLES,
    Source,
    _imagenet_like,
    _read_buffer,
    read_files,
)
from keras_resnet.data.spec import class_placeholder_names

# The standard ILSVRC-2012 shard layout (1024 train shards, 128 validation shards), whose
# sizes are known; other layouts are counted by reading the TFRecord record headers.
IMAGENET_STANDARD_SHARDS = (1024, 128)
# Files that name the classes of a TFRecord folder, in label order, one per line.
CLASS_NAME_FILES = ("labels.txt", "synsets.txt", "imagenet_lsvrc_2015_synsets.txt")

TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    # The image's own name (ImageNet's build scripts write it): names an unreadable image.
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


_PARSE_BATCH = 64  # records parsed together


def _count_records(path):
    """Counts the records of a TFRecord file from its length headers, without reading data;
    ValueError naming the file and the record if it ends inside one."""
    count, position = 0, 0
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, "rb") as f:
        while position < size:
            header = f.read(12)
            (length,) = struct.unpack("<Q", header[:8]) if len(header) == 12 else (0,)
            if len(header) < 12 or position + 12 + length + 4 > size:
                raise ValueError(
                    f"{path}: truncated TFRecord file: it ends inside record {count + 1} "
                    f"(byte {position} of {size}); the file is damaged or was cut while copied"
                )
            position += 12 + length + 4
            f.seek(position)
            count += 1
    return count


def _read_class_names(data_dir):
    for name in CLASS_NAME_FILES:
        path = os.path.join(data_dir, name)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                names = [line.strip() for line in f if line.strip()]
            if names:
                return tuple(names)
    return None


def _check_tfrecord(path):
    """Reads the first example of `path` and checks the keys and the 1-based label."""
    expected = (
        "'image/encoded' (bytes: the encoded JPEG/PNG) and 'image/class/label' (int64, 1-based)"
    )
    _count_records(path)  # a file cut short is named as such
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as error:
        raise ValueError(f"{path}: not a readable TFRecord file ({error.message})") from None
    if first is None:
        raise ValueError(f"{path}: the TFRecord file is empty; expected tf.train.Examples")
    try:
        example = tf.train.Example.FromString(first.numpy())
    except Exception:  # noqa: BLE001  (protobuf's DecodeError)
        raise ValueError(
            f"{path}: its records are not tf.train.Example protos; expected {expected}"
        ) from None
    features = example.features.feature
    missing = [key for key in ("image/encoded", "image/class/label") if key not in features]
    if (
        missing
        or not features["image/encoded"].bytes_list.value
        or not features["image/class/label"].int64_list.value
    ):
        raise ValueError(
            f"{path}: TFRecord example lacks {missing or 'values for the expected keys'}; "
            f"expected {expected}; found keys {sorted(features.keys())}"
        )
    if features["image/class/label"].int64_list.value[0] < 1:
        raise ValueError(
            f"{path}: image/class/label is {features['image/class/label'].int64_list.value[0]}"
            "; expected ImageNet TFRecords with 1-based labels (1..num_classes), as written "
            "by the common converter scripts"
        )


class TFRecordSource(Source):
    """Classic ImageNet TFRecord shards: data_dir/train-*-of-*, data_dir/validation-*-of-*,
    each record a tf.train.Example with image/encoded and image/class/label (1-based,
    mapped to 0-based here). Class names come from the first of labels.txt, synsets.txt,
    imagenet_lsvrc_2015_synsets.txt found in data_dir (one per line, in label order), else
    class_0, class_1, ... for 1000 classes."""

    label_base = 1  # labels are 1-based in the files

    def __init__(self, data_dir, name="imagenet_tfrecord", default_image_size=None):
        if not data_dir:
            raise FileNotFoundError(
                f"{name} needs data_dir: a folder of TFRecord shards train-*-of-* and "
                "validation-*-of-*"
            )
        if not tf.io.gfile.isdir(data_dir):
            raise FileNotFoundError(f"{name}: data_dir {data_dir} does not exist")
        self.data_dir = data_dir
        self.files = {
            split: sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{prefix}-*-of-*")))
            for split, prefix in (("train", "train"), ("validation", "validation"))
        }
        if not self.files["train"]:
            raise FileNotFoundError(
                f"{name}: no TFRecord shards {os.path.join(data_dir, 'train-*-of-*')}; expected "
                "ImageNet TFRecord shards named train-00000-of-01024, ..., "
                "validation-00000-of-00128"
            )
        for files in self.files.values():
            if files:
                _check_tfrecord(files[0])
        class_names = _read_class_names(data_dir) or class_placeholder_names(1000)
        standard = (
            len(self.files["train"]) == IMAGENET_STANDARD_SHARDS[0]
            and len(self.files["validation"]) == IMAGENET_STANDARD_SHARDS[1]
            and len(class_names) == 1000
        )
        if standard:
            counts = IMAGENET_TRAIN_EXAMPLES, IMAGENET_VALIDATION_EXAMPLES
        else:
            counts = [sum(map(_count_records, self.files[s])) for s in ("train", "validation")]
        self.info = _imagenet_like(name, class_names, *counts, data_dir=data_dir,
                                   image_size=default_image_size)  # fmt: skip

    def check_files(self, split):
        """Reads the record headers of every file of `split`: ValueError naming a truncated one."""
        for path in self.files.get(split, ()):
            _count_records(path)

    def examples(self, split, options):
        files = self.files.get(split)
        if not files:
            raise FileNotFoundError(
                f"{self.info.name}: no {split} shards "
                f"{os.path.join(self.data_dir, split + '-*-of-*')}"
            )

        def parse(paths, records):
            examples = tf.io.parse_example(records, TFRECORD_FEATURES)
            # 1-based in the file; an int64 beyond int32 stays out of range after the cast.
            labels = tf.cast(tf.clip_by_value(examples["image/class/label"], -(2**31) + 1,
                                              2**31 - 1), tf.int32) - 1  # fmt: skip
            filenames = examples["image/filename"]
            origins = tf.where(tf.equal(filenames, ""), paths,
                               tf.strings.join([paths, " (", filenames, ")"]))  # fmt: skip
            return examples["image/encoded"], labels, origins

        buffer_size = _read_buffer(self.data_dir)

        def reader(path):
            # Each record with its file: a zip, not a map or an enumerate, which are sequential
            # stages that cost as much as reading the record (numbering the records cost
            # 0.05 CPU-ms each, so records are named by their file and image/filename).
            records = tf.data.TFRecordDataset(path, buffer_size=buffer_size)
            return tf.data.Dataset.zip(tf.data.Dataset.from_tensors(path).repeat(), records)

        # Parsed in batches: a map stage per record cost more than the parsing itself
        # (0.13 against 0.08 CPU-ms per record from the files to parsed examples).
        ds = read_files(files, reader, options).batch(_PARSE_BATCH)
        return ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=not options.training
                      or options.deterministic).unbatch()  # fmt: skip


class DemoSource(TFRecordSource):
    """The built-in generated set (demo.py), written on first use into data_dir (default: the
    cache folder) in the ImageNet TFRecord format."""

    @classmethod
    def load(cls, data_dir, name):
        from keras_resnet.data import demo

        return cls(demo.ensure_demo(data_dir), name=name,
                   default_image_size=demo.DEFAULT_IMAGE_SIZE)  # fmt: skip
