"""tf.data input pipelines for the paper's experiments: ImageNet from every common source,
CIFAR-10, a generated demo set and synthetic data; the paper's augmentation and testing.

    from keras_resnet import data
    info = data.dataset_info("demo")              # classes, split sizes, mean/std, image size
    train = data.make_dataset("demo", "train", batch_size=64, training=True)
    for images, labels in train.take(1): ...     # float32 (64, 64, 64, 3), int32 (64,)

Datasets: "demo", "imagenet_tfrecord", "folder", "cifar10", "cifar10_folder", "synthetic",
"tfds:<name>" (the sources package, sources/, says what each reads and how its splits are
made; a Source each, registered in sources.SOURCES). spec.py holds InputSpec, what a model's
input is (image size, mean/std, crop fraction, class names), and each model family's defaults.
"""

from keras_resnet.data.pipeline import (
    MAX_CONSECUTIVE_FAILURES,
    PADDING_LABEL,
    DataError,
    SkipCounter,
    batches_per_epoch,
    data_error_message,
    dataset_info,
    make_dataset,
)
from keras_resnet.data.preprocessing import (
    AUGMENTATIONS,
    EVAL_MODES,
    MULTI_SCALE_SIDES,
    multi_scale_sides,
)
from keras_resnet.data.sources import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    Source,
)
from keras_resnet.data.spec import InputSpec, family_defaults

__all__ = [
    "AUGMENTATIONS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "EVAL_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MULTI_SCALE_SIDES",
    "DatasetInfo",
    "InputSpec",
    "MAX_CONSECUTIVE_FAILURES",
    "PADDING_LABEL",
    "DataError",
    "SkipCounter",
    "Source",
    "batches_per_epoch",
    "data_error_message",
    "dataset_info",
    "family_defaults",
    "make_dataset",
    "multi_scale_sides",
]
