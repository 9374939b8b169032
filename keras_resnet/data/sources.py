"""Where the images come from: every source yields (encoded image or file path, label, origin).

origin names where an example came from (its file; for TFRecords the shard and the image's
image/filename where the record has one), for the
messages about unreadable images and bad labels. Labels are passed on as read, unchecked:
the pipeline checks them where a bad one stops the run instead of being skipped as an
unreadable image. A source (a Source, below) knows its classes, its split sizes and how to
read a split as a tf.data stream of undecoded examples, sharded for the calling worker and,
for training, shuffled; decoding and augmentation are the pipeline's job (preprocessing.py),
so every source shares one decode path. get_source looks a name up in SOURCES (or
PREFIXED_SOURCES) and loads it from data_dir. Sources:

  demo               the built-in generated set (demo.py), ImageNet TFRecord format
  imagenet_tfrecord  classic ImageNet TFRecord shards (train-*-of-*, validation-*-of-*)
  folder             data_dir/train/<class>/*.jpg and data_dir/val/ (or validation/, test/)
  cifar10            tensorflow-datasets cifar10, 45k/5k train/validation split, 10k test
  cifar10_folder     CIFAR-10 as JPEG class folders (train/, test/), 45k/5k split of train/
  synthetic          random tensors (made by the pipeline: Source.synthetic; no files)
  tfds:<name>        any tensorflow-datasets image classification set

Splits: train and validation everywhere; test where a source has one apart from validation;
trainval (train and validation together: every training image) where validation is held out
of the training data, as CIFAR-10's 5k are. The paper chose its CIFAR-10 schedule on the
45k/5k split, then trained on trainval and reported test (Table 6).
"""

import dataclasses
import functools
import hashlib
import os
import struct
import tarfile
from typing import Optional

import tensorflow as tf

from keras_resnet.data.spec import (  # noqa: F401  (the constants are sources' public names too)
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    class_placeholder_names,
    family_defaults,
)

AUTOTUNE = tf.data.AUTOTUNE

CIFAR10_VALIDATION_FRACTION = 10  # the last 1/10 of each class: 10 x 500 = the paper's 5k

# The standard ILSVRC-2012 shard layout (1024 train shards, 128 validation shards), whose
# sizes are known; other layouts are counted by reading the TFRecord record headers.
IMAGENET_TRAIN_EXAMPLES = 1_281_167
IMAGENET_VALIDATION_EXAMPLES = 50_000
IMAGENET_STANDARD_SHARDS = (1024, 128)
# Files that name the classes of a TFRecord folder, in label order, one per line.
CLASS_NAME_FILES = ("labels.txt", "synsets.txt", "imagenet_lsvrc_2015_synsets.txt")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VALIDATION_FOLDERS = ("val", "validation", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a trainer and an exporter need to know about a dataset.

    mean and std are per-channel RGB on the 0..255 scale: pipelines output exactly
    (decoded_pixels - mean) / std. center_crop_fraction is the share of the shorter side that
    centre-crop evaluation keeps (224/256 for ImageNet-like sets; 1 for CIFAR, whose images
    are the crop). default_augmentation is the paper's recipe for this kind of data.
    """

    name: str
    num_classes: int
    class_names: tuple
    num_train_examples: int
    num_validation_examples: int
    default_image_size: int
    mean: tuple
    std: tuple
    center_crop_fraction: float = 0.875
    default_augmentation: str = "paper"
    num_test_examples: int = 0
    data_dir: Optional[str] = None
    num_trainval_examples: int = 0  # train + validation, where validation is held out of train

    def num_examples(self, split):
        return {
            "train": self.num_train_examples,
            "validation": self.num_validation_examples,
            "test": self.num_test_examples,
            "trainval": self.num_trainval_examples,
        }[split]

    def input_spec(self, image_size=None):
        """The InputSpec of a model trained on this dataset at `image_size` (default: the
        dataset's)."""
        return InputSpec(
            image_size=image_size or self.default_image_size,
            mean=self.mean,
            std=self.std,
            center_crop_fraction=self.center_crop_fraction,
            class_names=self.class_names,
        )


def _imagenet_like(name, class_names, num_train, num_validation, data_dir=None, image_size=None,
                   num_test=0):  # fmt: skip
    imagenet = family_defaults("imagenet")
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        num_train_examples=num_train,
        num_validation_examples=num_validation,
        default_image_size=image_size or imagenet.image_size,
        mean=imagenet.mean,
        std=imagenet.std,
        center_crop_fraction=imagenet.center_crop_fraction,
        num_test_examples=num_test,
        data_dir=data_dir,
    )


def _cifar_like(name, class_names, num_train, num_validation, num_test, data_dir=None,
                image_size=None, mean=None, std=None, num_trainval=0):  # fmt: skip
    cifar = family_defaults("cifar")
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        num_train_examples=num_train,
        num_validation_examples=num_validation,
        default_image_size=image_size or cifar.image_size,
        mean=tuple(mean or cifar.mean),
        std=tuple(std or cifar.std),
        center_crop_fraction=cifar.center_crop_fraction,
        default_augmentation="cifar",
        num_test_examples=num_test,
        data_dir=data_dir,
        num_trainval_examples=num_trainval,
    )


# ---------------------------------------------------------------------------------------
# Reading helpers shared by the file-based sources.


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How the pipeline wants a split read: training streams are shuffled; input_context
    (a tf.distribute.InputContext or None) says which share of the data this worker reads."""

    training: bool
    input_context: Optional[tf.distribute.InputContext] = None
    seed: Optional[int] = None
    deterministic: bool = False
    shuffle_buffer: int = 10_000

    @property
    def pipelines(self):
        if self.input_context is None:
            return 1, 0
        return self.input_context.num_input_pipelines, self.input_context.input_pipeline_id


class Source:
    """A dataset: its DatasetInfo and its splits as streams of undecoded examples.

    info             the DatasetInfo (classes, split sizes, mean/std, image size)
    examples(split, options)
                     a tf.data stream of (encoded image or file path, label, origin) for the
                     ReadOptions; a split the source lacks raises, naming the ones it has
    yields_paths     examples carry file paths (read by the pipeline), not encoded images
    label_base       the labels as read minus label_base are 0-based (1 for ImageNet TFRecords)
    synthetic        no files: the pipeline makes random tensors of info's shape instead
    check_files(split)
                     ValueError naming a damaged file of `split` (called after a read error)
    load(data_dir, name)
                     the source registered as `name`, reading data_dir (SOURCES below)
    """

    yields_paths = False
    label_base = 0
    synthetic = False
    info: DatasetInfo

    @classmethod
    def load(cls, data_dir, name):
        return cls(data_dir, name=name)

    def examples(self, split, options):
        raise NotImplementedError

    def check_files(self, split):
        """Nothing to check by default."""


def _cycle_length():
    return max(4, min(16, os.cpu_count() or 4))


def _read_buffer(data_dir):
    """TFRecordDataset's read buffer for files in `data_dir`: none for local files, where a
    buffer only adds a copy of every record (0.07 against 0.13 CPU-ms per 125 KB record with
    8 MB, 2-core AMD EPYC); 8 MB for remote file systems (gs://, s3://, hdfs://), where each
    read is a request."""
    return 8 << 20 if "://" in data_dir else 0


def read_files(files, reader, options):
    """Interleaves `reader(file)` over `files`: sharded by file when there are enough files
    for every input pipeline, else by record; file order and records shuffled for training."""
    num_pipelines, pipeline_id = options.pipelines
    by_file = num_pipelines > 1 and len(files) >= num_pipelines
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if options.training and (by_file or num_pipelines == 1):
        ds = ds.shuffle(len(files), seed=options.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        reader,
        cycle_length=min(len(files), _cycle_length()),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=options.deterministic or not options.training,
    )
    if num_pipelines > 1 and not by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if options.training:
        ds = ds.shuffle(options.shuffle_buffer, seed=options.seed, reshuffle_each_iteration=True)
    return ds


def read_list(items, options):
    """A stream over an in-memory list of (path, label): sharded, fully shuffled for training;
    (path, label, path) examples."""
    num_pipelines, pipeline_id = options.pipelines
    paths, labels = zip(*items)
    ds = tf.data.Dataset.from_tensor_slices((list(paths), tf.constant(labels, tf.int32), list(paths)))
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if options.training:
        ds = ds.shuffle(len(items), seed=options.seed, reshuffle_each_iteration=True)
    return ds


def _cache_root():
    return os.environ.get("KERAS_RESNET_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_resnet"
    )


def resolve_archive(path):
    """A .tar/.tar.gz/.tgz data_dir is extracted once into the cache folder (atomically:
    into a temporary folder, then renamed) and the extracted folder is used instead."""
    if not path or not path.endswith((".tar", ".tar.gz", ".tgz")) or os.path.isdir(path):
        return path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data_dir archive not found: {path}")
    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    stem = os.path.basename(path).split(".tar")[0].split(".tgz")[0]
    target = os.path.join(_cache_root(), "extracted", f"{stem}-{key.hexdigest()[:10]}")
    if not os.path.isdir(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = f"{target}.tmp-{os.getpid()}"
        with tarfile.open(path) as archive:
            try:
                archive.extractall(temporary, filter="data")  # no links or paths outside
            except TypeError:  # Python without extraction filters (before 3.10.12)
                archive.extractall(temporary)
        try:
            os.rename(temporary, target)
        except OSError:  # another process finished first
            tf.io.gfile.rmtree(temporary)
    entries = [e for e in os.listdir(target) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(target, entries[0])):
        return os.path.join(target, entries[0])  # archive with one top-level folder
    return target


# ---------------------------------------------------------------------------------------
# ImageNet TFRecords (and the demo set, which is written in the same format).

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


# ---------------------------------------------------------------------------------------
# Class folders.


def _list_class_folder(root, class_names=None):
    """[(path, label)] for root/<class>/*.{jpg,jpeg,png} (any case), classes sorted by name
    (or the given class_names), files sorted by name within each class."""
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"{root} does not exist; expected {root}/<class>/*.jpg")
    found = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                   if tf.io.gfile.isdir(os.path.join(root, d)))  # fmt: skip
    if class_names is None:
        class_names = tuple(found)
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(
                f"{root} has class folders {unknown[:5]} that the training folder lacks; "
                f"expected a subset of the {len(class_names)} training classes"
            )
    items = []
    index = {name: i for i, name in enumerate(class_names)}
    for name in found:
        folder = os.path.join(root, name)
        files = sorted(f for f in tf.io.gfile.listdir(folder)
                       if f.lower().endswith(IMAGE_EXTENSIONS))  # fmt: skip
        items.extend((os.path.join(folder, f), index[name]) for f in files)
    if not items:
        raise FileNotFoundError(
            f"{root} holds no images; expected {root}/<class>/*.jpg (or .jpeg, .png) with one "
            "folder per class"
        )
    return class_names, items


class FolderSource(Source):
    """data_dir/train/<class>/*.{jpg,jpeg,png} and the first of data_dir/val, validation,
    test in the same layout; classes are the train/ folder names, sorted; label i is the
    i-th name. A .tar/.tar.gz data_dir is extracted into the cache first."""

    yields_paths = True
    # What data_dir holds, for the messages: {d} is data_dir.
    layout = "{d}/train/<class>/*.jpg"
    needs = "a folder with train/<class>/*.jpg (and val/<class>/...)"

    def __init__(self, data_dir, name="folder"):
        if not data_dir:
            raise FileNotFoundError(f"{name} needs data_dir: {self.needs}")
        data_dir = resolve_archive(data_dir)
        if not tf.io.gfile.isdir(data_dir):
            raise FileNotFoundError(f"{name}: data_dir {data_dir} does not exist")
        train = os.path.join(data_dir, "train")
        if not tf.io.gfile.isdir(train):
            raise FileNotFoundError(
                f"{name}: {train} does not exist; expected {self.layout.format(d=data_dir)}"
            )
        self.data_dir = data_dir
        class_names, train_items = _list_class_folder(train)
        if len(class_names) < 2:
            raise ValueError(
                f"{name}: {train} has {len(class_names)} class folder(s) {list(class_names)}; "
                "expected at least 2 (one folder per class)"
            )
        self.items = self._splits(class_names, train_items)
        self.info = self._info(name, class_names)

    def _splits(self, class_names, train_items):
        """{split: [(path, label)]}: train/ as train, the first validation folder found as
        validation."""
        items = {"train": train_items}
        for folder in VALIDATION_FOLDERS:
            path = os.path.join(self.data_dir, folder)
            if tf.io.gfile.isdir(path):
                items["validation"] = _list_class_folder(path, class_names)[1]
                break
        return items

    def _info(self, name, class_names):
        counts = len(self.items["train"]), len(self.items.get("validation", ()))
        return _imagenet_like(name, class_names, *counts, data_dir=self.data_dir)

    def examples(self, split, options):
        if split not in self.items:
            expected = " or ".join(os.path.join(self.data_dir, f) for f in VALIDATION_FOLDERS)
            raise FileNotFoundError(
                f"{self.info.name}: no {split} split: expected {expected} with <class>/*.jpg"
            )
        return read_list(self.items[split], options)


class Cifar10FolderSource(FolderSource):
    """CIFAR-10 as JPEG class folders (the layout of cifar10-jpg.tar.gz): train/<class>/*.jpg
    (5,000 a class) and test/<class>/*.jpg (1,000 a class). The paper's 45k/5k split of the
    training set is fixed: in each class, the last tenth of the files in name order (500 of
    5,000) are validation, the rest train. Splits: train (45k), validation (5k), trainval (all
    50k, in file order), test (10k)."""

    layout = "{d}/train/<class>/*.jpg and {d}/test/<class>/*.jpg"
    needs = (
        "a folder (or .tar.gz) with train/<class>/*.jpg and test/<class>/*.jpg, like "
        "cifar10-jpg.tar.gz"
    )

    def __init__(self, data_dir, name="cifar10_folder"):
        super().__init__(data_dir, name=name)

    def _splits(self, class_names, train_items):
        by_class = {}
        for path, label in train_items:  # already sorted by class, then file name
            by_class.setdefault(label, []).append((path, label))
        cut = {label: len(c) - len(c) // CIFAR10_VALIDATION_FRACTION
               for label, c in by_class.items()}  # fmt: skip
        items = {
            "train": [item for label, c in by_class.items() for item in c[: cut[label]]],
            "validation": [item for label, c in by_class.items() for item in c[cut[label]:]],
            "trainval": train_items,
        }  # fmt: skip
        test = os.path.join(self.data_dir, "test")
        if tf.io.gfile.isdir(test):
            items["test"] = _list_class_folder(test, class_names)[1]
        return items

    def _info(self, name, class_names):
        counts = {split: len(items) for split, items in self.items.items()}
        return _cifar_like(name, class_names, counts["train"], counts["validation"],
                           counts.get("test", 0), data_dir=self.data_dir,
                           num_trainval=counts["trainval"])  # fmt: skip


# ---------------------------------------------------------------------------------------
# tensorflow-datasets.


class TfdsSource(Source):
    """Any tensorflow-datasets image classification set, read without decoding (the pipeline
    decodes). `tfds_name` may carry a config and version ("imagenette/320px-v2"). Splits:
    train; validation (the dataset's validation split, else its test split); test (where
    the dataset has both). Datasets
    that are not prepared yet are downloaded and prepared in data_dir (tfds's default
    ~/tensorflow_datasets when None); imagenet2012 needs the ILSVRC2012 tar files in tfds's
    manual_dir, <data_dir>/downloads/manual/.

    "cifar10" (without the tfds: prefix) is tfds cifar10 with the paper's split: train is
    the first 45,000 images of tfds's train split, validation the last 5,000, trainval all
    50,000, test tfds's test split."""

    PREFIX = "tfds:"

    def __init__(self, tfds_name, data_dir=None, name=None, cifar_split=False):
        import tensorflow_datasets as tfds  # slow to import; only when asked for

        self.tfds = tfds
        name = name or f"tfds:{tfds_name}"
        self.builder = self._prepared_builder(tfds, tfds_name, data_dir, name)
        info = self.builder.info
        image_key, label_key = info.supervised_keys or ("image", "label")
        features = info.features
        if image_key not in features or label_key not in features or not isinstance(
            features[label_key], tfds.features.ClassLabel
        ):
            raise ValueError(
                f"{name}: expected an image classification dataset with an image feature and a "
                f"ClassLabel label; found features {list(features.keys())}"
            )
        self.image_key, self.label_key = image_key, label_key
        self.split_names, counts = self._splits(info.splits, cifar_split)
        class_names = tuple(features[label_key].names)
        if cifar_split and len(class_names) == len(CIFAR10_CLASSES):
            class_names = CIFAR10_CLASSES  # tfds's label order; names even without metadata
        shape = features[image_key].shape
        small = shape[0] is not None and shape[0] <= 64
        if cifar_split or small:
            stats = (CIFAR10_MEAN, CIFAR10_STD) if tfds_name.startswith("cifar10") else (
                IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
            self.info = _cifar_like(name, class_names, counts["train"], counts.get("validation", 0),
                                    counts.get("test", 0), data_dir=data_dir,
                                    image_size=shape[0] if small else None, mean=stats[0],
                                    std=stats[1], num_trainval=counts.get("trainval", 0))  # fmt: skip
        else:
            self.info = dataclasses.replace(
                _imagenet_like(name, class_names, counts["train"], counts.get("validation", 0),
                               data_dir=data_dir, num_test=counts.get("test", 0)),
                num_trainval_examples=counts.get("trainval", 0))  # fmt: skip
        self._num_shards = {}

    @staticmethod
    def _prepared_builder(tfds, tfds_name, data_dir, name):
        """The dataset's tfds builder, downloaded and prepared; errors say what to do."""
        try:
            builder = tfds.builder(tfds_name, data_dir=data_dir)
        except Exception as error:  # noqa: BLE001  (tfds raises its own not-found types)
            raise ValueError(
                f"{name}: tensorflow-datasets has no dataset {tfds_name!r}: {error}"
            ) from None
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001
            root = getattr(builder, "data_dir_root", None) or data_dir or "~/tensorflow_datasets"
            manual = os.path.join(root, "downloads", "manual")
            hint = ""
            if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
                hint = f" This dataset needs files downloaded by hand into {manual}: " + " ".join(
                    builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()
                )
            raise FileNotFoundError(
                f"{name}: tensorflow-datasets could not prepare {tfds_name!r} in "
                f"{builder.data_dir}: {error}.{hint}"
            ) from None
        return builder

    @staticmethod
    def _splits(splits, cifar_split):
        """({our split: tfds split}, {our split: examples}) for tfds's `splits`."""
        if cifar_split:
            try:
                total = splits["train"].num_examples
            except KeyError:  # split sizes unknown (e.g. under tfds.testing.mock_data)
                total = 50_000
            held_out = total // 10  # 5,000 of CIFAR-10's 50,000
            names = {
                "train": f"train[:{total - held_out}]",
                "validation": f"train[{total - held_out}:]",
                "trainval": "train",
                "test": "test",
            }
        else:
            names = {"train": "train"}
            known = set(splits.keys())
            if "validation" in known or not known:  # unknown sizes (mock data): assume one
                names["validation"] = "validation"
                if "test" in known:
                    names["test"] = "test"
            elif "test" in known:
                names["validation"] = "test"
            if "test" in names:  # a validation split apart from test
                names["trainval"] = "train+validation"
        counts = {}
        for split, tfds_split in names.items():
            try:
                counts[split] = sum(splits[part].num_examples for part in tfds_split.split("+"))
            except (KeyError, ValueError):
                counts[split] = 0
        if cifar_split and not counts["train"]:
            counts = {"train": total - held_out, "validation": held_out, "trainval": total,
                      "test": total // 5}  # fmt: skip
        return names, counts

    @classmethod
    def load(cls, data_dir, name):
        """"tfds:<name>": that tensorflow-datasets set; "cifar10": tfds cifar10 with the
        paper's split."""
        if name == "cifar10":
            return cls("cifar10", data_dir, name=name, cifar_split=True)
        return cls(name[len(cls.PREFIX):], data_dir, name=name)

    def _shards(self, tfds_split):
        try:
            return len(self.builder.info.splits[tfds_split].file_instructions)
        except Exception:  # noqa: BLE001
            return 1

    def examples(self, split, options):
        tfds = self.tfds
        if split not in self.split_names:
            raise ValueError(
                f"{self.info.name}: no {split!r} split; available: {sorted(self.split_names)}"
            )
        tfds_split = self.split_names[split]
        num_pipelines, pipeline_id = options.pipelines
        by_file = num_pipelines > 1 and self._shards(tfds_split) >= num_pipelines
        read_config = tfds.ReadConfig(
            shuffle_seed=options.seed,
            input_context=options.input_context if by_file else None,
            interleave_cycle_length=_cycle_length(),
            try_autocache=False,
            add_tfds_id=True,
        )
        ds = self.builder.as_dataset(
            split=tfds_split,
            shuffle_files=options.training and (by_file or num_pipelines == 1),
            read_config=read_config,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
        )
        image_key, label_key = self.image_key, self.label_key
        origin = f"{self.info.name} {split}"
        ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32),
                                ex.get("tfds_id", tf.constant(origin))))  # fmt: skip
        if num_pipelines > 1 and not by_file:
            ds = ds.shard(num_pipelines, pipeline_id)
        if options.training:
            ds = ds.shuffle(options.shuffle_buffer, seed=options.seed,
                            reshuffle_each_iteration=True)  # fmt: skip
        return ds


# ---------------------------------------------------------------------------------------
# Synthetic data: no files; the pipeline makes the tensors.


class SyntheticSource(Source):
    """Random images and labels of ImageNet's shape and size, made on the fly: a throughput
    benchmark of everything after the input pipeline. Splits: train and validation."""

    synthetic = True
    splits = ("train", "validation")

    def __init__(self, num_classes=1000, name="synthetic"):
        self.info = _imagenet_like(name, class_placeholder_names(num_classes),
                                   IMAGENET_TRAIN_EXAMPLES, IMAGENET_VALIDATION_EXAMPLES)  # fmt: skip

    @classmethod
    def load(cls, data_dir, name):
        return cls(name=name)  # no files

    def check_split(self, split):
        if split not in self.splits:
            raise ValueError(
                f"{self.info.name}: no {split!r} split; available: {list(self.splits)}"
            )


# ---------------------------------------------------------------------------------------
# The registry: dataset name -> the classmethod that makes its source from data_dir.

SOURCES = {
    "demo": DemoSource.load,
    "imagenet_tfrecord": TFRecordSource.load,
    "folder": FolderSource.load,
    "cifar10": TfdsSource.load,
    "cifar10_folder": Cifar10FolderSource.load,
    "synthetic": SyntheticSource.load,
}
# Names that start with a prefix, followed by a name the source looks up itself.
PREFIXED_SOURCES = {TfdsSource.PREFIX: TfdsSource.load}
DATASETS = (*SOURCES, *(f"{prefix}<name>" for prefix in PREFIXED_SOURCES))


def unknown_dataset(name):
    return ValueError(
        f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)} "
        "(e.g. 'tfds:imagenet2012', 'tfds:imagenette/320px-v2')"
    )


def _loader(name):
    if isinstance(name, str):
        if name in SOURCES:
            return SOURCES[name]
        for prefix, load in PREFIXED_SOURCES.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return load
    raise unknown_dataset(name)


@functools.lru_cache(maxsize=32)
def get_source(name, data_dir=None):
    """The Source for a dataset name (cached: folders are listed once per process)."""
    load = _loader(name)
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
    return load(data_dir, name)
