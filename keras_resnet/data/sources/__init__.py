"""Where the images come from: every source yields (encoded image or file path, label, origin).

origin names where an example came from (its file; for TFRecords the shard and the image's
image/filename where the record has one), for the
messages about unreadable images and bad labels. Labels are passed on as read, unchecked:
the pipeline checks them where a bad one stops the run instead of being skipped as an
unreadable image. A source (a Source, in base.py) knows its classes, its split sizes and how
to read a split as a tf.data stream of undecoded examples, sharded for the calling worker
and, for training, shuffled; decoding and augmentation are the pipeline's job
(preprocessing.py), so every source shares one decode path. get_source (registry.py) looks a
name up in SOURCES (or PREFIXED_SOURCES) and loads it from data_dir. Sources:

  demo               the built-in generated set (demo.py), ImageNet TFRecord format
  imagenet_tfrecord  classic ImageNet TFRecord shards (train-*-of-*, validation-*-of-*)
  folder             data_dir/train/<class>/*.jpg and data_dir/val/ (or validation/, test/)
  cifar10            tensorflow-datasets cifar10, 45k/5k train/validation split, 10k test
  cifar10_folder     CIFAR-10 as JPEG class folders (train/, test/), 45k/5k split of train/
  synthetic          random tensors (made by the pipeline: Source.synthetic; no files)
  tfds:<name>        any tensorflow-datasets image classification set

Modules: base.py (DatasetInfo, ReadOptions, Source, the shared reading helpers), tfrecord.py
(demo, imagenet_tfrecord), folder.py (folder, cifar10_folder), tfds.py (cifar10, tfds:<name>),
synthetic.py, registry.py (SOURCES, get_source).

Splits: train and validation everywhere; test where a source has one apart from validation;
trainval (train and validation together: every training image) where validation is held out
of the training data, as CIFAR-10's 5k are. The paper chose its CIFAR-10 schedule on the
45k/5k split, then trained on trainval and reported test (Table 6).

Every name is importable from here (keras_resnet.data.sources), wherever it is defined.
"""

from keras_resnet.data.sources.base import (  # noqa: F401  (re-exported)
    AUTOTUNE,
    IMAGENET_TRAIN_EXAMPLES,
    IMAGENET_VALIDATION_EXAMPLES,
    DatasetInfo,
    ReadOptions,
    Source,
    _cache_root,
    _cifar_like,
    _cycle_length,
    _imagenet_like,
    _read_buffer,
    read_files,
    read_list,
    resolve_archive,
)
from keras_resnet.data.sources.folder import (  # noqa: F401  (re-exported)
    CIFAR10_VALIDATION_FRACTION,
    IMAGE_EXTENSIONS,
    VALIDATION_FOLDERS,
    Cifar10FolderSource,
    FolderSource,
    _list_class_folder,
)
from keras_resnet.data.sources.registry import (  # noqa: F401  (re-exported)
    DATASETS,
    PREFIXED_SOURCES,
    SOURCES,
    _loader,
    get_source,
    unknown_dataset,
)
from keras_resnet.data.sources.synthetic import SyntheticSource  # noqa: F401
from keras_resnet.data.sources.tfds import TfdsSource  # noqa: F401
from keras_resnet.data.sources.tfrecord import (  # noqa: F401  (re-exported)
    CLASS_NAME_FILES,
    IMAGENET_STANDARD_SHARDS,
    TFRECORD_FEATURES,
    _PARSE_BATCH,
    DemoSource,
    TFRecordSource,
    _check_tfrecord,
    _count_records,
    _read_class_names,
)
from keras_resnet.data.spec import (  # noqa: F401  (sources' public names too)
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    class_placeholder_names,
    family_defaults,
)
