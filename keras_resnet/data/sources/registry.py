"""The registry: dataset name -> the classmethod that makes its source from data_dir, and
get_source, which looks a name up and loads it (once per process)."""

import functools
import os

from keras_resnet.data.sources.folder import Cifar10FolderSource, FolderSource
from keras_resnet.data.sources.synthetic import SyntheticSource
from keras_resnet.data.sources.tfds import TfdsSource
from keras_resnet.data.sources.tfrecord import DemoSource, TFRecordSource

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
