"""tensorflow-datasets: TfdsSource, any tfds image classification set ("tfds:<name>"), and
tfds cifar10 with the paper's split ("cifar10")."""

import dataclasses
import os

import tensorflow as tf

from keras_resnet.data.sources.base import Source, _cifar_like, _cycle_length, _imagenet_like
from keras_resnet.data.spec import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)


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
        self.image_key, self.label_key = self._feature_keys(tfds, info, name)
        self.split_names, counts = self._splits(info.splits, cifar_split)
        self.info = self._dataset_info(tfds_name, name, data_dir, counts, cifar_split)
        self._num_shards = {}

    @staticmethod
    def _feature_keys(tfds, info, name):
        """(image key, label key) of a tfds dataset's features: ValueError unless it is an
        image classification set."""
        image_key, label_key = info.supervised_keys or ("image", "label")
        features = info.features
        if image_key not in features or label_key not in features or not isinstance(
            features[label_key], tfds.features.ClassLabel
        ):
            raise ValueError(
                f"{name}: expected an image classification dataset with an image feature and a "
                f"ClassLabel label; found features {list(features.keys())}"
            )
        return image_key, label_key

    def _dataset_info(self, tfds_name, name, data_dir, counts, cifar_split):
        """The DatasetInfo: CIFAR-like (statistics and augmentation) for the paper's cifar10
        and for small images (64 pixels or fewer), else ImageNet-like."""
        features = self.builder.info.features
        class_names = tuple(features[self.label_key].names)
        if cifar_split and len(class_names) == len(CIFAR10_CLASSES):
            class_names = CIFAR10_CLASSES  # tfds's label order; names even without metadata
        shape = features[self.image_key].shape
        small = shape[0] is not None and shape[0] <= 64
        if cifar_split or small:
            stats = (CIFAR10_MEAN, CIFAR10_STD) if tfds_name.startswith("cifar10") else (
                IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
            return _cifar_like(name, class_names, counts["train"], counts.get("validation", 0),
                               counts.get("test", 0), data_dir=data_dir,
                               image_size=shape[0] if small else None, mean=stats[0],
                               std=stats[1], num_trainval=counts.get("trainval", 0))  # fmt: skip
        return dataclasses.replace(
            _imagenet_like(name, class_names, counts["train"], counts.get("validation", 0),
                           data_dir=data_dir, num_test=counts.get("test", 0)),
            num_trainval_examples=counts.get("trainval", 0))  # fmt: skip

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
            names = TfdsSource._split_names(set(splits.keys()))
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

    @staticmethod
    def _split_names(known):
        """{our split: tfds split} for a dataset with the tfds splits `known`: validation is
        its validation split, else its test split."""
        names = {"train": "train"}
        if "validation" in known or not known:  # unknown sizes (mock data): assume one
            names["validation"] = "validation"
            if "test" in known:
                names["test"] = "test"
        elif "test" in known:
            names["validation"] = "test"
        if "test" in names:  # a validation split apart from test
            names["trainval"] = "train+validation"
        return names

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
