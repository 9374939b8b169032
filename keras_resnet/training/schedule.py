"""The learning rate over a run: the paper's step schedule (or cosine), with warm-ups."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_resnet")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step (divide by 10 at boundaries) or cosine decay, with optional warm-up phases.

    Steps below `warm_start_steps` use `warm_start_rate` (the paper's ResNet-110 trick);
    steps below `warmup_steps` rise linearly to `peak_rate` (Goyal et al.).
    """

    def __init__(
        self,
        peak_rate,
        total_steps,
        kind="step",
        boundaries=(),
        decay_factor=0.1,
        warmup_steps=0,
        warm_start_rate=None,
        warm_start_steps=0,
    ):
        self.peak_rate = float(peak_rate)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.boundaries = tuple(int(b) for b in boundaries)
        self.decay_factor = float(decay_factor)
        self.warmup_steps = int(warmup_steps)
        self.warm_start_rate = None if warm_start_rate is None else float(warm_start_rate)
        self.warm_start_steps = int(warm_start_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.kind == "step":
            drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] or [0.0])
            rate = self.peak_rate * tf.pow(self.decay_factor, drops)
        else:
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = 0.5 * self.peak_rate * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps:
            rate = tf.where(
                step < self.warmup_steps, self.peak_rate * (step + 1) / self.warmup_steps, rate
            )
        if self.warm_start_steps and self.warm_start_rate is not None:
            rate = tf.where(step < self.warm_start_steps, self.warm_start_rate, rate)
        return rate

    def get_config(self):
        return dict(
            peak_rate=self.peak_rate,
            total_steps=self.total_steps,
            kind=self.kind,
            boundaries=self.boundaries,
            decay_factor=self.decay_factor,
            warmup_steps=self.warmup_steps,
            warm_start_rate=self.warm_start_rate,
            warm_start_steps=self.warm_start_steps,
        )


def make_schedule(config, steps_per_epoch, total_steps):
    """The run's schedule: the peak rate scaled by batch / lr_reference_batch (Goyal et al.), the
    decay points in steps (given, or from epochs), the warm-up and warm start."""
    peak = config.base_learning_rate * config.batch_size / config.lr_reference_batch
    if config.lr_decay_steps is not None:
        boundaries = config.lr_decay_steps
    else:
        boundaries = [round(epoch * steps_per_epoch) for epoch in config.lr_decay_epochs]
    return PaperSchedule(
        peak,
        total_steps,
        kind=config.lr_schedule,
        boundaries=boundaries,
        decay_factor=config.lr_decay_factor,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        warm_start_rate=config.warm_start_learning_rate,
        warm_start_steps=config.warm_start_steps,
    )
