"""Synthetic data: no files; the pipeline makes the tensors."""

from keras_resnet.data.sources.base import (
    IMAGENET_TRAIN_EXAMPLES,
    IMAGENET_VALIDATION_EXAMPLES,
    Source,
    _imagenet_like,
)
from keras_resnet.data.spec import class_placeholder_names


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
