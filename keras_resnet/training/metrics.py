"""What a run measures and where it goes: loss and top-1/top-5 hits summed over replicas and
workers, training throughput, and the TensorBoard writers and scalars."""

import os
import time

import tensorflow as tf

from keras_resnet import hparams


def correct(logits_or_probabilities, labels, weights):
    """Top-1 and top-5 hits, each example counted with its weight (0 for padding)."""
    labels = tf.cast(labels, tf.int32)
    k = min(5, logits_or_probabilities.shape[-1])

    def hits(top):
        return tf.reduce_sum(
            tf.cast(tf.math.in_top_k(labels, logits_or_probabilities, top), tf.float32) * weights)

    return hits(1), hits(k)


class Totals:
    """Sums (loss, top-1 correct, top-5 correct, examples) over replicas and workers.

    The variables are sync-on-read: each replica adds to its own copy with no communication
    per step, and `read_and_reset()` reduces them once, across every replica of every worker.
    """

    NAMES = ("loss", "correct1", "correct5", "count")

    def __init__(self, strategy):
        self.strategy = strategy
        self.variables = [
            tf.Variable(
                0.0,
                trainable=False,
                dtype=tf.float64,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name=name,
            )
            for name in self.NAMES
        ]

    def add(self, loss_sum, correct1, correct5, count):
        for variable, value in zip(self.variables, (loss_sum, correct1, correct5, count)):
            variable.assign_add(tf.cast(value, tf.float64))

    @tf.function
    def _read_and_reset(self):
        def local():
            values = [tf.identity(v) for v in self.variables]
            with tf.control_dependencies(values):
                resets = [v.assign(tf.zeros_like(v)) for v in self.variables]
            with tf.control_dependencies(resets):
                return [tf.identity(v) for v in values]

        per_replica = self.strategy.run(local)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

    def read_and_reset(self):
        """Returns (mean loss, top-1 error, top-5 error, examples) and starts a new interval."""
        loss, correct1, correct5, count = (float(v) for v in self._read_and_reset())
        if count == 0:
            return float("nan"), float("nan"), float("nan"), 0
        return loss / count, 1 - correct1 / count, 1 - correct5 / count, int(count)


class Throughput:
    """Training images/second between metric reads, the only points where the loop waits for
    the device. The clock restarts after each read (and the save, evaluation and summaries
    that follow it), so these are not counted; the first interval of a process holds the
    first call's tracing and allocation, so the overall figure leaves it out unless it is the
    only one."""

    def __init__(self, global_batch, step):
        self.global_batch = global_batch
        self.step = step
        self.start = time.perf_counter()
        self.first = True
        self.steady_steps = 0
        self.steady_seconds = 0.0
        self.first_rate = float("nan")

    def interval(self, step):
        """Call right after a read: (images/s since the last one, whether it is the first)."""
        seconds = max(time.perf_counter() - self.start, 1e-9)
        rate = (step - self.step) * self.global_batch / seconds
        first = self.first
        if first:
            self.first_rate = rate
        else:
            self.steady_steps += step - self.step
            self.steady_seconds += seconds
        self.first, self.step = False, step
        return rate, first

    def restart_clock(self):
        self.start = time.perf_counter()

    def images_per_second(self):
        if not self.steady_steps:
            return self.first_rate
        return self.steady_steps * self.global_batch / self.steady_seconds


def summary_writers(config, strategy, eval_split):
    """(train, evaluation) TensorBoard writers on the chief; None elsewhere."""
    if not strategy.extended.should_save_summary:
        return None, None
    train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    eval_writer = None
    if config.evaluate:
        eval_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, eval_split))
    hparams.write_run_hparams(config)  # at the run root, beside train/ and the eval split
    return train_writer, eval_writer


def write_scalars(writer, step, **scalars):
    """TensorBoard scalars at `step`, flushed at once; nothing where `writer` is None (not the
    chief)."""
    if writer is None:
        return
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


def now():
    """The time of day that progress lines begin with."""
    return time.strftime("%H:%M:%S")
