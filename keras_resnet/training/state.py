"""What a run carries from step to step: the model, the optimizer, the step and epoch
counters, and the checkpoint that holds them all (restored from the newest whole save, or at
a fresh start with --weights, the model's values from initial_weights)."""

import hashlib
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import checkpoints
from keras_resnet.training.schedule import make_schedule


class State:
    """The model, the optimizer and the counters, in a checkpoint in the run folder `folder`
    (a runs.RunFolder): restored from its latest save if there is one. The model is the one
    that run.json's `record` (runs.RunRecord) describes."""

    def __init__(self, config, folder, record, strategy, steps_per_epoch, total_steps, log,
                 on_damaged_checkpoint="previous", initial=None):  # fmt: skip
        previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(config.mixed_precision)
        try:
            with strategy.scope():
                self.model = folder.build_model(record)
                self.schedule = make_schedule(config, steps_per_epoch, total_steps)
                optimizer = keras.optimizers.SGD(learning_rate=self.schedule,
                                                 momentum=config.momentum)  # fmt: skip
                if config.mixed_precision == "mixed_float16":
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(self.model.trainable_variables)
                self.optimizer = optimizer
                self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="global_step")  # fmt: skip
                self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        finally:
            keras.config.set_dtype_policy(previous_policy)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              global_step=self.global_step, epoch=self.epoch)  # fmt: skip
        self.checkpoint_dir = folder.checkpoint_dir
        self.is_chief = strategy.extended.should_checkpoint
        latest = checkpoints.restore_newest_whole(self.checkpoint, self.checkpoint_dir,
                                                  on_damaged_checkpoint, self.is_chief, log)  # fmt: skip
        if latest:
            log(f"Resumed from {latest} at step {int(self.global_step.numpy())}")
        elif initial is not None:  # a fresh start: the source's weights (initial_weights.py)
            initial.assign(self.model, log)
        # Every worker takes part in saving; only the chief's files are kept.
        self.write_dir = self.checkpoint_dir if self.is_chief else os.path.join(
            folder.model_dir, f".worker-{strategy.cluster_resolver.task_id}-checkpoints")  # fmt: skip
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir,
                                                  max_to_keep=config.keep_checkpoints,
                                                  step_counter=self.global_step)  # fmt: skip
        self.preemption = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Its save goes through self.save, as every other save does: the files, then the
            # chief's manifest, so that a preempted run resumes from a checkpoint it can verify.
            save = tf.distribute.experimental.TerminationConfig(
                save_fn=lambda: self.save(int(self.global_step.numpy())))
            self.preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver, self.manager, termination_config=save)  # fmt: skip

    def last_good(self):
        return tf.train.latest_checkpoint(self.checkpoint_dir) or "none yet"

    def save(self, step):
        """checkpoints.save: the files, then their manifest; on a full disk, nothing half-written."""
        try:
            return checkpoints.save(self.manager, step, self.is_chief)
        finally:
            if not self.is_chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)


def weights_sha256(model):
    """A digest of every weight: equal on all workers of a run that stayed in sync."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()
