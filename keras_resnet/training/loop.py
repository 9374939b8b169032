"""train(): a run from its checks to result.json, and the loop over its steps (plan.py's
rules at each stop: metrics, epoch bookkeeping, saves, evaluations, a signal's stop)."""

import contextlib
import dataclasses
import math
import os
import signal
import time

import keras
import tensorflow as tf

from keras_resnet import data as data_lib
from keras_resnet import checkpoints, plan, run_lock, runs
from keras_resnet.models import canonical_name
from keras_resnet.training.checks import validate
from keras_resnet.training import initial_weights
from keras_resnet.training.evaluation import Evaluator
from keras_resnet.training.inputs import Inputs, dataset_info
from keras_resnet.training.metrics import Throughput, now, summary_writers, write_scalars
from keras_resnet.training.profiler import Profiler
from keras_resnet.training.signals import SignalFlag
from keras_resnet.training.state import State, weights_sha256
from keras_resnet.training.steps import Steps
from keras_resnet.training.strategy import precision_warning, uses_accelerator, uses_jit


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def train(config, strategy=None, log=print, on_damaged_checkpoint="previous"):
    """Trains `config.model` under `strategy`; resumes from `config.model_dir` if it has a run.

    Returns a dict with the final step, train loss and errors, the evaluation split's errors
    under its name (where it has examples and config.evaluate is set), `images_per_second`
    (training alone: see metrics.Throughput), the unreadable images per split, and
    `stopped_by_signal` (the signal number when SIGTERM/SIGINT ended the run early, else
    None). Raises TrainingDiverged on a non-finite loss or weights, leaving the last good
    checkpoint in place, and data.DataError when the input cannot go on. The chief holds the
    run folder's lock throughout (run_lock.RunFolderBusy if another process has it); a damaged
    latest checkpoint is handled as on_damaged_checkpoint (checkpoints.ON_DAMAGED) says.
    """
    # The folder is opened once, here; validate names a missing --model_dir.
    folder = runs.RunFolder(config.model_dir) if config.model_dir else None
    validate(config, folder)
    # "imagenet" and torch checkpoints imply their layout: the run's options name it.
    config = dataclasses.replace(config, model_options=initial_weights.model_options(config))
    strategy = strategy or tf.distribute.get_strategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size: {config.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")  # fmt: skip
    info, train_split, eval_split = dataset_info(config)
    image_size = config.image_size or info.default_image_size
    steps_per_epoch = data_lib.batches_per_epoch(info.num_examples(train_split), config.batch_size)
    total_steps = config.train_steps or max(1, round(config.epochs * steps_per_epoch))
    if on_damaged_checkpoint not in checkpoints.ON_DAMAGED:
        raise ValueError(f"--on_damaged_checkpoint: must be one of {checkpoints.ON_DAMAGED}, "
                         f"got {on_damaged_checkpoint!r}")  # fmt: skip
    initial = None
    if config.weights is not None:
        initial = initial_weights.InitialWeights(config, info.num_classes, image_size,
                                                 info.class_names)  # fmt: skip
        if not folder.checkpoints():
            initial.read()  # a source that cannot be read or does not fit: nothing written yet
    # One writer per run folder, from run.json to result.json: the chief's (the other workers
    # write only their own temporary folders).
    chief = strategy.extended.should_checkpoint
    with run_lock.hold(config.model_dir, log=log) if chief else contextlib.nullcontext():
        return _train(config, folder, strategy, log, on_damaged_checkpoint, info, train_split,
                      eval_split, image_size, steps_per_epoch, total_steps, initial)  # fmt: skip


def _train(config, folder, strategy, log, on_damaged_checkpoint, info, train_split, eval_split,
           image_size, steps_per_epoch, total_steps, initial):  # fmt: skip
    """train() once its checks are done and the run folder is its own."""
    record = folder.prepare(config, info, image_size, train_split, eval_split,
                            strategy.extended.should_checkpoint, log,
                            initial.record if initial else None)  # fmt: skip
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    jit = uses_jit(config.jit_compile, strategy)
    warning = precision_warning(config.mixed_precision, uses_accelerator(strategy))
    if warning:
        log(f"warning: {warning}")
    state = State(config, folder, record, strategy, steps_per_epoch, total_steps, log,
                  on_damaged_checkpoint, initial)  # fmt: skip
    freeze_steps = min(round(config.freeze_backbone_epochs * steps_per_epoch), total_steps)
    steps = Steps(config, state, strategy, info.num_classes, jit, freeze_steps)
    inputs = Inputs(config, strategy, image_size, steps_per_epoch, train_split)
    writers = summary_writers(config, strategy, eval_split)
    step = int(state.global_step.numpy())
    finished = folder.read_result()
    if step >= total_steps and finished and finished.get("steps") == step:
        log(f"{config.model_dir} has finished {step} steps already: nothing to train")
        return finished
    log(
        f"Training {record.model} on {config.dataset} {train_split} "
        f"({info.num_examples(train_split)} images, evaluated on {eval_split}, "
        f"{info.num_classes} classes, {image_size}x{image_size}) with {type(strategy).__name__} "
        f"({steps.replicas} replica{'s' if steps.replicas > 1 else ''}), global batch "
        f"{config.batch_size}, {config.mixed_precision}, jit_compile={jit}: steps {step} -> "
        f"{total_steps} ({steps_per_epoch} per epoch)"
    )
    if step < freeze_steps:
        log(f"Steps {step} -> {freeze_steps} train the classifier alone (the rest frozen, BN in "
            "inference mode); then everything")  # fmt: skip
    own_signals = () if state.preemption is not None else (signal.SIGTERM, signal.SIGINT)
    with SignalFlag(own_signals, log) as signals, inputs.serving():
        evaluator = Evaluator(steps, inputs, eval_split, info.num_examples(eval_split),
                              writers[1], log, inputs.counter(eval_split),
                              lambda: signals.received is not None)  # fmt: skip
        loop = Loop(config, state, steps, inputs, evaluator, writers[0], signals, log,
                    steps_per_epoch, total_steps, evaluating=config.evaluate
                    and info.num_examples(eval_split) > 0)  # fmt: skip
        result = loop.run(step)
        return finish(config, folder, state, steps, evaluator, inputs, result, log, signals)


class Loop:
    """Steps from the current one to total_steps, with what plan.events_at says at each stop."""

    def __init__(self, config, state, steps, inputs, evaluator, writer, signals, log,
                 steps_per_epoch, total_steps, evaluating):  # fmt: skip
        self.config, self.state, self.steps, self.inputs = config, state, steps, inputs
        self.evaluator, self.writer, self.signals, self.log = evaluator, writer, signals, log
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.evaluating = evaluating
        self.checkpoint_every = config.checkpoint_every_steps or steps_per_epoch

    def run(self, step):
        config = self.config
        result = dict(steps=step, stopped_by_signal=None, train_split=self.inputs.train_split,
                      eval_split=self.evaluator.split)  # fmt: skip
        throughput = Throughput(config.batch_size, step)
        profiler = Profiler(config.profile_steps, os.path.join(config.model_dir, "train"),
                            self.state.is_chief)  # fmt: skip
        self.start_step, self.start_time = step, time.monotonic()
        iterator = None
        with profiler:
            while step < self.total_steps:
                if iterator is None or step % self.steps_per_epoch == 0:
                    iterator = self.inputs.train_iterator(step)
                stop = plan.next_stop(step, total_steps=self.total_steps,
                                      steps_per_epoch=self.steps_per_epoch,
                                      log_every=config.log_every_steps,
                                      checkpoint_every=self.checkpoint_every,
                                      steps_per_execution=config.steps_per_execution)  # fmt: skip
                profiler.before(step + 1, stop)
                called = time.monotonic()
                self._run_steps(iterator, step, stop - step)
                self.signals.took(time.monotonic() - called)
                step = stop
                profiler.after(step)
                if self.state.preemption is not None:
                    self.state.preemption.save_checkpoint_if_preempted()
                if self._at_stop(step, throughput, result):
                    break
        result["steps"] = step
        return result

    def _run_steps(self, iterator, step, count):
        try:
            self.steps.run(iterator, step, count)
        except tf.errors.OpError as error:
            translated = self.inputs.translate(error, self.inputs.train_split)
            if translated is None:
                raise
            raise translated from None

    def _at_stop(self, step, throughput, result):
        """Metrics, epoch bookkeeping, save, evaluation after `step`; True to end the run."""
        events = plan.events_at(step, total_steps=self.total_steps,
                                steps_per_epoch=self.steps_per_epoch,
                                log_every=self.config.log_every_steps,
                                checkpoint_every=self.checkpoint_every,
                                eval_every_epochs=self.config.eval_every_epochs,
                                evaluating=self.evaluating,
                                signalled=self.signals.received is not None)  # fmt: skip
        if events.read_metrics:
            self._read_metrics(step, throughput, result)
        if events.epoch_end:
            self.state.epoch.assign(step // self.steps_per_epoch)
            self._report_skipped(step)
        if events.stop:
            self.signals.saving()
        if events.save:
            self.log(f"saved {self._save(step)}")
        if events.stop:
            name = signal.Signals(self.signals.received).name
            self.log(f"{name} received: saved checkpoint at step {step}; exiting. Run again "
                     "with the same --model_dir to resume.")  # fmt: skip
            result["stopped_by_signal"] = self.signals.received
            return True
        if events.evaluate:
            evaluation = self.evaluator(step)
            if evaluation is not None:
                result[self.evaluator.split] = evaluation
        if events.read_metrics:
            throughput.restart_clock()  # saves, evaluations and summaries are not training
        return False

    def _read_metrics(self, step, throughput, result):
        loss, top1, top5, count = self.steps.train_totals.read_and_reset()
        if count and not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} between steps {throughput.step} and {step}; stopped "
                f"without saving. The last good checkpoint is kept: {self.state.last_good()}. "
                "Lower --base_learning_rate or add --warmup_epochs."
            )
        rate, first = throughput.interval(step)
        learning_rate = float(self.state.schedule(step - 1))
        if count:
            result["train"] = dict(loss=loss, top1_error=top1, top5_error=top5)
            write_scalars(self.writer, step, learning_rate=learning_rate,
                          images_per_second=rate, **result["train"])  # fmt: skip
            done = step - self.start_step
            elapsed = time.monotonic() - self.start_time
            eta = elapsed / done * (self.total_steps - step) if done else None
            self.log(
                f"{now()} step {step}/{self.total_steps} epoch {step / self.steps_per_epoch:.2f}: "
                f"loss {loss:.4f}  top-1 error {100 * top1:.2f}%  lr {learning_rate:.4g}  "
                f"{rate:.1f} images/s{' (includes tracing)' if first else ''}  elapsed "
                f"{plan.format_duration(elapsed)}  ETA {plan.format_duration(eta)}"
            )
        result["images_per_second"] = throughput.images_per_second()

    def _report_skipped(self, step):
        counter = self.inputs.counter(self.inputs.train_split)
        if counter.value():
            names = ", ".join(counter.names(3))
            self.log(f"skipped {counter.value()} distinct unreadable training images so far "
                     f"({names}{', ...' if counter.value() > 3 else ''})")  # fmt: skip
            write_scalars(self.writer, step, skipped_images=float(counter.value()))

    def _save(self, step):
        """Saves only finite weights: a step after the last loss check may have broken them."""
        self.steps.sync_statistics()
        broken = int(self.steps.non_finite())
        if broken:
            raise TrainingDiverged(
                f"{broken} of {len(self.steps.checked)} weight and optimizer variables became "
                f"NaN or infinite by step {step}; not saved. The last good checkpoint is kept: "
                f"{self.state.last_good()}. Lower --base_learning_rate or add --warmup_epochs."
            )
        return self.state.save(step)


def finish(config, folder, state, steps, evaluator, inputs, result, log, signals):
    """The final evaluations and result.json of a run that reached its last step."""
    step = result["steps"]
    steps.sync_statistics()
    skipped, names = inputs.report()
    result.update(total_steps=state.schedule.total_steps, skipped_images=skipped,
                  skipped_files=names, weights_sha256=weights_sha256(state.model))  # fmt: skip
    result.setdefault("train", {})
    if result["stopped_by_signal"] is not None or step < state.schedule.total_steps:
        return result
    split = evaluator.split
    evaluating = config.evaluate and evaluator.expected > 0
    finals = [(split, "center")] if split not in result else []
    if config.final_eval_mode != "center":
        finals.append((f"{split}_{config.final_eval_mode}", config.final_eval_mode))
    for key, eval_mode in finals if evaluating else ():
        result[key] = evaluator(step, eval_mode)
        if result[key] is None:  # a signal: no result.json, so a rerun evaluates again
            del result[key]
            result["stopped_by_signal"] = signals.received
            return result
    if state.is_chief:
        folder.write_result(finite_or_none(result))
    final = result.get(split) or result["train"]
    log(
        f"Finished {canonical_name(config.model)}: {step} steps, "
        + (
            f"final top-1 error {100 * final['top1_error']:.2f}% "
            f"(top-5 {100 * final['top5_error']:.2f}%) on "
            + (split if split in result else "training")
            if final
            else "no metrics"
        )
    )
    return result


def finite_or_none(value):
    """JSON has no NaN: result.json records an unknown number as null."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
