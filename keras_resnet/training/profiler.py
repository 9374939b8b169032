"""--profile_steps: a TensorFlow profiler trace of chosen training steps."""

import tensorflow as tf


class Profiler:
    """A TensorFlow profiler trace of the training steps steps[0]..steps[1] (counted from 1,
    rounded out to whole tf.function calls), for TensorBoard's Profile tab."""

    def __init__(self, steps, logdir, is_chief):
        self.steps = steps if is_chief else None
        self.logdir = logdir
        self.running = False

    def before(self, first, last):
        """Called before the tf.function call that runs steps first..last."""
        if self.steps and not self.running and first <= self.steps[1] and last >= self.steps[0]:
            tf.profiler.experimental.start(self.logdir)
            self.running = True

    def after(self, step):
        if self.running and step >= self.steps[1]:
            self.stop()

    def stop(self):
        if self.running:
            tf.profiler.experimental.stop()
            self.running = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
