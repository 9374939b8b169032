"""What every source shares: DatasetInfo (what a dataset is), ReadOptions (how the pipeline
wants a split read), Source (the interface each dataset kind implements) and the reading
helpers of the file-based sources (interleaved, sharded, shuffled file and list streams;
archives extracted into the cache)."""

import dataclasses
import hashlib
import os
import tarfile
from typing import Optional

import tensorflow as tf

from keras_resnet.data.spec import CIFAR_CROP_FRACTION, InputSpec, family_defaults

AUTOTUNE = tf.data.AUTOTUNE

# ImageNet's split sizes: the standard ILSVRC-2012 shards hold these, and synthetic data
# stands in for them.
IMAGENET_TRAIN_EXAMPLES = 1_281_167
IMAGENET_VALIDATION_EXAMPLES = 50_000


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

    def for_augmentation(self, augmentation):
        """This dataset as a run trained with `augmentation` (None: the dataset's own) sees
        it. "cifar" trains on padded crops of the whole image, so its evaluation keeps the
        whole image too (crop 1, as CIFAR's does), not an ImageNet-like set's central 0.875:
        a folder of 32x32 images trained that way would otherwise be tested on enlarged
        centres it never saw. The other augmentations keep the dataset's crop."""
        if (augmentation or self.default_augmentation) == "cifar":
            return dataclasses.replace(self, center_crop_fraction=CIFAR_CROP_FRACTION)
        return self

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


def _family_like(family, name, class_names, num_train, num_validation, *, num_test=0,
                 num_trainval=0, data_dir=None, image_size=None, mean=None, std=None):  # fmt: skip
    """The DatasetInfo of a dataset whose input is `family`'s ("imagenet" or "cifar":
    data.spec.family_defaults), with its own counts and, where given, statistics."""
    defaults = family_defaults(family)
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        num_train_examples=num_train,
        num_validation_examples=num_validation,
        default_image_size=image_size or defaults.image_size,
        mean=tuple(mean or defaults.mean),
        std=tuple(std or defaults.std),
        center_crop_fraction=defaults.center_crop_fraction,
        default_augmentation="cifar" if family == "cifar" else "paper",
        num_test_examples=num_test,
        data_dir=data_dir,
        num_trainval_examples=num_trainval,
    )


def _imagenet_like(name, class_names, num_train, num_validation, data_dir=None, image_size=None,
                   num_test=0):  # fmt: skip
    return _family_like("imagenet", name, class_names, num_train, num_validation,
                        num_test=num_test, data_dir=data_dir, image_size=image_size)  # fmt: skip


def _cifar_like(name, class_names, num_train, num_validation, num_test, data_dir=None,
                image_size=None, mean=None, std=None, num_trainval=0):  # fmt: skip
    return _family_like("cifar", name, class_names, num_train, num_validation,
                        num_test=num_test, num_trainval=num_trainval, data_dir=data_dir,
                        image_size=image_size, mean=mean, std=std)  # fmt: skip


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
