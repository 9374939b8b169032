"""The data of a run: its dataset and splits, and the distributed input streams the steps
read (the local pipeline, or a tf.data service for training)."""

import contextlib
import os

import tensorflow as tf

from keras_resnet import data as data_lib
from keras_resnet.settings import FINAL_SPLITS


class Inputs:
    """The distributed input streams of a run: one training iterator per epoch (resumable
    mid-epoch), and evaluation passes; each split with its own SkipCounter. A TensorFlow error
    raised by a pipeline's checks becomes a DataError naming the file."""

    def __init__(self, config, strategy, image_size, steps_per_epoch, train_split):
        self.config = config
        self.strategy = strategy
        self.image_size = image_size
        self.steps_per_epoch = steps_per_epoch
        self.train_split = train_split
        self.skipped = {}
        # Training through the tf.data service (data/service.py); evaluation stays local.
        self.service = None
        if config.data_service:
            from keras_resnet.data import service

            self.service = service.TrainingService(config.data_service, strategy,
                                                   os.path.abspath(config.model_dir))  # fmt: skip

    def counter(self, split):
        if split not in self.skipped:
            self.skipped[split] = data_lib.SkipCounter()
        return self.skipped[split]

    def __call__(self, split, training, eval_mode="center", epoch=None, skip_steps=0):
        config = self.config
        skipped = self.counter(split)

        def make(input_context):
            if training and self.service is not None:
                return self.service.training_dataset(
                    config, split, input_context, image_size=self.image_size, epoch=epoch,
                    skip_steps=skip_steps, steps_per_epoch=self.steps_per_epoch)  # fmt: skip
            return data_lib.make_dataset(
                config.dataset, split, data_dir=config.data_dir,
                batch_size=input_context.get_per_replica_batch_size(config.batch_size),
                image_size=self.image_size, training=training,
                augmentation=config.augmentation, eval_mode=eval_mode, lighting=config.lighting,
                input_context=input_context, seed=config.seed,
                deterministic=config.deterministic, skipped=skipped, epoch=epoch,
                skip_steps=skip_steps, pad_batches=not training,
            )  # fmt: skip

        return self.strategy.distribute_datasets_from_function(make)

    @contextlib.contextmanager
    def serving(self):
        """The run's span: a tf.data service's watchdog stands down when it ends."""
        try:
            yield self
        finally:
            if self.service is not None:
                self.service.close()

    def train_iterator(self, step):
        """The training stream from `step` to the end of its epoch."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        return iter(self(self.train_split, training=True, epoch=epoch, skip_steps=offset))

    def report(self):
        """{split: distinct unreadable images}, {split: the first of them}."""
        return ({split: c.value() for split, c in self.skipped.items()},
                {split: c.names() for split, c in self.skipped.items() if c.value()})  # fmt: skip

    def translate(self, error, split):
        """A DataError for a TensorFlow error from the input, else None."""
        message = data_lib.data_error_message(error)
        if message:
            return data_lib.DataError(message)
        if isinstance(error, (tf.errors.DataLossError, tf.errors.OutOfRangeError)):
            source = data_lib.sources.get_source(self.config.dataset, self.config.data_dir)
            try:
                getattr(source, "check_files", lambda split: None)(split)
            except ValueError as damaged:
                return data_lib.DataError(str(damaged))
        return None


def dataset_info(config):
    """(DatasetInfo, training split, evaluation split) of a run, or one line naming the flags
    at fault: an unknown dataset or folder, or --final_split=test on a dataset without the
    splits it needs."""
    try:
        info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"--dataset={config.dataset} --data_dir={config.data_dir}: {error}")
    info = info.for_augmentation(config.augmentation)  # the evaluation crop run.json records
    train_split, eval_split = FINAL_SPLITS[config.final_split]
    for split in (train_split, eval_split) if config.final_split == "test" else ():
        if not info.num_examples(split):
            raise ValueError(
                f"--final_split=test: {config.dataset} has no {split!r} split (trainval needs a "
                "validation split held out of the training images, as CIFAR-10's; test one "
                "apart from validation)"
            )
    return info, train_split, eval_split
