"""One evaluation of a run: every example of the evaluation split exactly once, its numbers to
TensorBoard and the log."""

import time

import tensorflow as tf

from keras_resnet import data as data_lib
from keras_resnet import plan
from keras_resnet.training.metrics import now, write_scalars


class Evaluator:
    """Evaluates the model on the evaluation split, every example exactly once, and writes
    the numbers to TensorBoard (model_dir/<split>) and the log."""

    PROGRESS_SECONDS = 30.0

    def __init__(self, steps, dataset_fn, split, expected, writer, log, skipped, stop_requested):
        self.steps = steps
        self.dataset_fn = dataset_fn
        self.split = split
        self.expected = expected
        self.writer = writer
        self.log = log
        self.skipped = skipped
        self.stop_requested = stop_requested

    def _run(self, eval_mode):
        """Steps over the split; False if a signal cut it short."""
        start = last_report = time.monotonic()
        seen = 0
        for images, labels in self.dataset_fn(self.split, training=False, eval_mode=eval_mode):
            real = int(self.steps.eval_step(images, labels))
            if real == 0:  # the pipelines pad forever once every example has been seen
                return True
            seen += real
            if self.stop_requested():
                return False
            if time.monotonic() - last_report > self.PROGRESS_SECONDS:
                last_report = time.monotonic()
                self.log(f"{now()} {self.split}{mode_suffix(eval_mode)}: {seen} of "
                         f"{self.expected} images, {plan.format_duration(last_report - start)} "
                         "elapsed")  # fmt: skip
        return True

    def __call__(self, step, eval_mode="center"):
        """A dict of loss, top1_error, top5_error, examples, split; None if a signal cut it."""
        self.steps.sync_statistics()
        try:
            if not self._run(eval_mode):
                self.steps.eval_totals.read_and_reset()
                return None
        except tf.errors.OpError as error:
            translated = self.dataset_fn.translate(error, self.split)
            if translated is None:
                raise
            raise translated from None
        loss, top1, top5, count = self.steps.eval_totals.read_and_reset()
        if count == 0:
            names = ", ".join(self.skipped.names(3))
            raise data_lib.DataError(
                f"no {self.split} image could be read: {self.skipped.value()} unreadable "
                f"({names}{', ...' if self.skipped.value() > 3 else ''})")  # fmt: skip
        suffix = mode_suffix(eval_mode)
        write_scalars(self.writer, step, **{f"loss{suffix}": loss, f"top1_error{suffix}": top1,
                                            f"top5_error{suffix}": top5,
                                            f"examples{suffix}": float(count)})  # fmt: skip
        self.log(
            f"{self.split}{suffix} step {step}: loss {loss:.4f}  top-1 error {100 * top1:.2f}%  "
            f"top-5 error {100 * top5:.2f}%  ({count} images)"
        )
        return dict(loss=loss, top1_error=top1, top5_error=top5, examples=count, split=self.split)


def mode_suffix(eval_mode):
    """What an evaluation mode adds to its scalars' and log lines' names ("" for the centre
    crop)."""
    return "" if eval_mode == "center" else f"_{eval_mode}"
