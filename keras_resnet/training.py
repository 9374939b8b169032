"""The one training loop behind every trainer: a custom loop on `strategy.run`.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy in TF 2.21, while a loop that
calls `strategy.run` inside a `tf.function` works under every strategy; so this loop is the
same code for one device, all local GPUs, many machines and TPUs.

What it does, in the paper's terms: SGD with momentum 0.9, the loss averaged over the global
batch, coupled L2 weight decay on conv and dense kernels (0.5 * wd * ||w||^2, as Caffe and
PyTorch apply 1e-4: Keras's L2 regulariser would be twice as strong), the step schedule
0.1 x batch/256 (CIFAR: x batch/128) divided by 10 at given epochs. Around it: checkpoints (resumed
automatically), TensorBoard scalars with the iteration on the x axis, evaluation every epoch
(top-1 and top-5 error), SIGTERM/SIGINT saving, and a stop on a non-finite loss that keeps
the last good checkpoint.
"""

import contextlib
import hashlib
import math
import os
import shutil
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import data as data_lib
from keras_resnet import checkpoints, hparams, plan, run_lock, runs
from keras_resnet.models import canonical_name
from keras_resnet.recipes import (  # noqa: F401  (TrainConfig and its fields' choices)
    EVAL_MODES,
    FINAL_SPLITS,
    JIT_MODES,
    PRECISIONS,
    SCHEDULES,
    STRATEGIES,
    TrainConfig,
)
from keras_resnet.recipes import data_service_address as data_address

MAX_IMAGE_SIZE = 2048


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def validate(config):
    """Raises ValueError naming the flag at fault, before anything is built."""

    def fail(flag, message):
        raise ValueError(f"--{flag}: {message}")

    try:
        canonical_name(config.model)
    except ValueError as error:
        fail("model", str(error))
    if config.batch_size < 1:
        fail("batch_size", f"must be positive, got {config.batch_size}")
    if (config.warm_start_learning_rate is None) != (config.warm_start_steps == 0):
        fail("warm_start_steps", "--warm_start_learning_rate and --warm_start_steps go together "
             f"(got {config.warm_start_learning_rate} and {config.warm_start_steps})")
    if config.train_steps is None and not config.epochs > 0:
        fail("epochs", f"must be positive, got {config.epochs}")
    if config.train_steps is not None and config.train_steps < 1:
        fail("train_steps", f"must be positive, got {config.train_steps}")
    if config.lr_schedule not in SCHEDULES:
        fail("lr_schedule", f"must be one of {SCHEDULES}, got {config.lr_schedule!r}")
    if config.mixed_precision not in PRECISIONS:
        fail("mixed_precision", f"must be one of {PRECISIONS}, got {config.mixed_precision!r}")
    if config.jit_compile not in JIT_MODES:
        fail("jit_compile", f"must be one of {JIT_MODES}, got {config.jit_compile!r}")
    if config.final_split not in FINAL_SPLITS:
        fail("final_split", f"must be one of {tuple(FINAL_SPLITS)}, got {config.final_split!r}")
    if config.final_eval_mode not in EVAL_MODES:
        fail("final_eval_mode", f"must be one of {EVAL_MODES}, got {config.final_eval_mode!r}")
    if config.checkpoint_every_steps is not None and config.checkpoint_every_steps < 1:
        fail("checkpoint_every_steps", f"must be positive, got {config.checkpoint_every_steps}")
    if config.log_every_steps < 1:
        fail("log_every_steps", f"must be positive, got {config.log_every_steps}")
    if config.steps_per_execution < 1:
        fail("steps_per_execution", f"must be positive, got {config.steps_per_execution}")
    if config.image_size is not None and not 8 <= config.image_size <= MAX_IMAGE_SIZE:
        fail("image_size", f"must be between 8 and {MAX_IMAGE_SIZE} pixels (the paper trains at "
             f"224 and tests up to 640), got {config.image_size}")
    if config.profile_steps is not None and (
        len(config.profile_steps) != 2 or not 0 < config.profile_steps[0] <= config.profile_steps[1]
    ):
        fail("profile_steps", f"must be two steps 0 < first <= last, got {config.profile_steps}")
    if not config.model_dir:
        fail("model_dir", "is required")
    if config.data_service is not None:
        try:
            data_address(config.data_service)
        except ValueError as error:
            fail("data_service", str(error))
    for rate_flag in ("base_learning_rate", "warm_start_learning_rate"):
        rate = getattr(config, rate_flag)
        if rate is not None and not (math.isfinite(rate) and rate > 0):  # NaN > 0 is False too
            fail(rate_flag, f"must be a positive finite number, got {rate}")


def make_strategy(name, devices=None, cpu_devices=0, tpu=None):
    """Creates the tf.distribute strategy `name` (one of STRATEGIES).

    cpu_devices > 0 splits the CPU into that many logical devices first (a testing aid that
    lets `mirrored` run on a machine without GPUs); it must come before TensorFlow touches
    any device, so call this first thing in a program.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy: must be one of {STRATEGIES}, got {name!r}")
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
            )
        except RuntimeError as error:
            raise RuntimeError(
                "--cpu_devices must be applied before TensorFlow initialises its devices: "
                f"{error}"
            ) from error
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = devices[0] if devices else ("/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        if not devices and cpu_devices and not tf.config.list_physical_devices("GPU"):
            devices = [f"/cpu:{i}" for i in range(cpu_devices)]
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi_worker":
        # The cluster (workers, this task's index) comes from the TF_CONFIG variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


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


class _Totals:
    """Sums (loss, top-1 correct, top-5 correct, examples) over replicas and workers.

    The variables are sync-on-read: each replica adds to its own copy with no communication
    per step, and `read()` reduces them once, across every replica of every worker.
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


class _Throughput:
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


class _Profiler:
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


def decayed_variables(model):
    """The variables the paper's weight decay applies to: conv and dense kernels, not BN."""
    return [v for v in model.trainable_variables if v.path.endswith("kernel")]


def weight_decay_loss(variables, weight_decay):
    """0.5 * wd * sum ||w||^2: its gradient adds wd * w, as Caffe's and PyTorch's decay does."""
    squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
    return 0.5 * weight_decay * squares


def weights_sha256(model):
    """A digest of every weight: equal on all workers of a run that stayed in sync."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()


def _correct(logits_or_probabilities, labels, weights):
    """Top-1 and top-5 hits, each example counted with its weight (0 for padding)."""
    labels = tf.cast(labels, tf.int32)
    k = min(5, logits_or_probabilities.shape[-1])

    def hits(top):
        return tf.reduce_sum(
            tf.cast(tf.math.in_top_k(labels, logits_or_probabilities, top), tf.float32) * weights)

    return hits(1), hits(k)


class _SignalFlag:
    """Remembers SIGTERM/SIGINT so the loop can save at the next step boundary, and makes
    sure the signal ends the process even if that boundary never comes.

    Python runs a signal handler only between bytecodes, so while the main thread waits inside
    a TensorFlow call (a step that waits for an input pipeline that yields nothing, say) the
    handler cannot run. A watchdog thread learns of the signal at once through the wakeup fd;
    if the loop has not begun to save within `grace` seconds (3x the longest step call so far,
    at least 30 s), it exits with 128 + the signal number, leaving the last checkpoint as it
    was. A second signal exits at once.

    Multi-worker runs pass no signals: saving is collective, so one worker saving on its own
    would wait forever for the others. There PreemptionCheckpointHandler owns SIGTERM and
    saves on every worker at the same step."""

    MIN_GRACE_SECONDS = 30.0

    def __init__(self, signums=(signal.SIGTERM, signal.SIGINT), log=print):
        self.received = None
        self.grace = self.MIN_GRACE_SECONDS
        self._signums = signums
        self._previous = {}
        self._log = log
        self._saving = threading.Event()
        self._pipe = None
        self._previous_wakeup_fd = None
        self._handled = 0

    def __enter__(self):
        for signum in self._signums:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        if self._previous:
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            self._pipe = (read_end, write_end)
            self._previous_wakeup_fd = signal.set_wakeup_fd(write_end)
            threading.Thread(target=self._watch, args=(read_end,), daemon=True).start()
        return self

    def took(self, seconds):
        """The loop reports each step call's duration: the grace period follows it."""
        self.grace = max(self.grace, 3 * seconds)

    def saving(self):
        """The loop has reached the save: the watchdog stands down."""
        self._saving.set()

    def _handle(self, signum, frame):
        self._handled += 1
        if self._handled > 1 and not self._saving.is_set():
            self._exit(signum, "second signal")
        self.received = signum

    def _watch(self, read_end):
        while True:
            try:
                data = os.read(read_end, 1)
            except OSError:
                return
            if not data:
                return
            if data[0] not in self._signums:
                continue
            self.received = self.received or data[0]
            if not self._saving.wait(self.grace):
                self._exit(data[0], f"the step in progress did not end within {self.grace:.0f} s")

    def _exit(self, signum, why):
        self._log(
            f"{signal.Signals(signum).name}: {why}; exiting without saving (the last "
            "checkpoint is kept). Run again with the same --model_dir to resume."
        )
        sys.stdout.flush()
        os._exit(128 + signum)

    def __exit__(self, *exc):
        self._saving.set()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._pipe:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            for fd in self._pipe:
                os.close(fd)


def _uses_accelerator(strategy):
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever device TensorFlow picks
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)


def cpu_info():
    """(model name, set of instruction flags) of this machine's CPU, from /proc/cpuinfo; None
    for what cannot be read (not Linux)."""
    name, flags = None, None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and name is None:
                    name = value
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return name, flags


def _precision_warning(precision, accelerated, cpu_flags=None):
    """What to tell a user whose mixed precision will be slow on this CPU, else None."""
    if accelerated or precision == "float32":
        return None
    flags = (cpu_info()[1] or set()) if cpu_flags is None else cpu_flags
    if precision == "mixed_float16":
        return ("--mixed_precision=mixed_float16 on a CPU is emulated: measured about 100x "
                "slower than float32 (ResNet-20: 4.5 against 430 images/s). Use float32, or "
                "mixed_bfloat16 on a CPU with AMX or AVX512_BF16; mixed_float16 is for GPUs.")
    if not flags & {"amx_bf16", "avx512_bf16"}:
        return ("--mixed_precision=mixed_bfloat16: this CPU has neither AMX nor AVX512_BF16, "
                "so bfloat16 is emulated and slower than float32; use float32 here.")
    return None


def _finite_or_none(value):
    """JSON has no NaN: result.json records an unknown number as null."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _State:
    """The model, the optimizer and the counters, in a checkpoint under `model_dir`: restored
    from its latest save if there is one."""

    def __init__(self, config, run_config, strategy, steps_per_epoch, total_steps, log,
                 on_damaged_checkpoint="previous"):  # fmt: skip
        previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(config.mixed_precision)
        try:
            with strategy.scope():
                self.model = runs.build_model(run_config)
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
        self.checkpoint_dir = runs.checkpoint_dir(config.model_dir)
        self.is_chief = strategy.extended.should_checkpoint
        latest = checkpoints.restore_newest_whole(self.checkpoint, self.checkpoint_dir,
                                                  on_damaged_checkpoint, self.is_chief, log)  # fmt: skip
        if latest:
            log(f"Resumed from {latest} at step {int(self.global_step.numpy())}")
        # Every worker takes part in saving; only the chief's files are kept.
        self.write_dir = self.checkpoint_dir if self.is_chief else os.path.join(
            config.model_dir, f".worker-{strategy.cluster_resolver.task_id}-checkpoints")  # fmt: skip
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir,
                                                  max_to_keep=config.keep_checkpoints,
                                                  step_counter=self.global_step)  # fmt: skip
        self.preemption = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            self.preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver, self.manager)  # fmt: skip

    def last_good(self):
        return tf.train.latest_checkpoint(self.checkpoint_dir) or "none yet"

    def save(self, step):
        """checkpoints.save: the files, then their manifest; on a full disk, nothing half-written."""
        try:
            return checkpoints.save(self.manager, step, self.is_chief)
        finally:
            if not self.is_chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)


class _Steps:
    """The compiled steps: training (SGD with the paper's coupled weight decay), evaluation
    (padding examples weigh 0), BN statistics averaging, and the finiteness check.

    Every replica step asserts that its batch is full: the pipelines guarantee it (training
    drops an epoch's last partial batch, evaluation pads), and an empty or short batch would
    otherwise give silently wrong numbers or fail inside a kernel."""

    def __init__(self, config, state, strategy, num_classes, jit):
        self.strategy = strategy
        self.state = state
        self.replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = config.batch_size // self.replicas
        self.num_classes = num_classes
        self.global_batch = config.batch_size
        self.weight_decay = config.weight_decay
        self.smoothing = config.label_smoothing
        self.kernels = decayed_variables(state.model)
        with strategy.scope():
            self.train_totals, self.eval_totals = _Totals(strategy), _Totals(strategy)
        step_fn = self._replica_train_step
        self._step_fn = tf.function(step_fn, jit_compile=True) if jit else step_fn
        self.train_steps = tf.function(self._train_steps)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)
        self.moving_statistics = [v for v in state.model.non_trainable_variables
                                  if "moving_" in v.path]  # fmt: skip
        self.average_moving_statistics = tf.function(self._average_moving_statistics)
        self.checked = [v for v in [*state.model.weights, *state.optimizer.variables]
                        if "float" in str(v.dtype)]  # fmt: skip
        self.non_finite = tf.function(self._non_finite)

    def _full_batch(self, labels):
        return tf.debugging.assert_equal(
            tf.shape(labels)[0], self.per_replica_batch,
            message=f"a replica got a batch of another size than {self.per_replica_batch}")  # fmt: skip

    def _replica_train_step(self, images, labels):
        model, optimizer = self.state.model, self.state.optimizer
        with tf.control_dependencies([self._full_batch(labels)]):
            images = tf.identity(images)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
            per_example = keras.losses.categorical_crossentropy(
                one_hot, logits, from_logits=True, label_smoothing=self.smoothing)  # fmt: skip
            loss = tf.reduce_sum(per_example) / self.global_batch
            if self.weight_decay:
                # Gradients are summed over replicas, so each adds its share of the decay.
                loss += weight_decay_loss(self.kernels, self.weight_decay) / self.replicas
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        weights = tf.ones_like(labels, tf.float32)
        self.train_totals.add(tf.reduce_sum(per_example), *_correct(logits, labels, weights),
                              tf.size(labels))  # fmt: skip

    def _train_steps(self, iterator, steps):
        for _ in tf.range(steps):
            images, labels = next(iterator)
            self.strategy.run(self._step_fn, args=(images, labels))
        self.state.global_step.assign_add(tf.cast(steps, tf.int64))

    def _replica_eval_step(self, images, labels):
        model = self.state.model
        with tf.control_dependencies([self._full_batch(labels)]):
            weights = tf.cast(labels >= 0, tf.float32)  # PADDING_LABEL examples weigh 0
            labels = tf.maximum(tf.cast(labels, tf.int32), 0)
        if images.shape.rank == 5:  # (batch, crops, H, W, 3): average the crops' softmax
            crops = tf.shape(images)[1]
            flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
            logits = tf.cast(model(flat, training=False), tf.float32)
            probabilities = tf.reduce_mean(
                tf.reshape(tf.nn.softmax(logits), [-1, crops, self.num_classes]), axis=1)  # fmt: skip
            picked = tf.gather(probabilities, labels, batch_dims=1)
            per_example = -tf.math.log(tf.maximum(picked, 1e-12))
            scores = probabilities
        else:
            scores = tf.cast(model(images, training=False), tf.float32)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, scores)
        count = tf.reduce_sum(weights)
        self.eval_totals.add(tf.reduce_sum(per_example * weights),
                             *_correct(scores, labels, weights), count)  # fmt: skip
        return count

    def _eval_step(self, images, labels):
        """Returns the number of real (not padding) examples in the global batch."""
        counts = self.strategy.run(self._replica_eval_step, args=(images, labels))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None)

    def _average_moving_statistics(self):
        # Each replica's BN keeps its own moving statistics (per-GPU BN, as in the paper);
        # averaging them before every evaluation and save makes all copies, and all workers'
        # checkpoints, equal, and estimates from every replica's data.
        def replica_fn():
            context = tf.distribute.get_replica_context()
            averaged = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self.moving_statistics])  # fmt: skip
            for variable, value in zip(self.moving_statistics, averaged):
                variable.assign(value)

        self.strategy.run(replica_fn)

    def sync_statistics(self):
        if self.replicas > 1:
            self.average_moving_statistics()

    def _non_finite(self):
        return tf.add_n([tf.cast(~tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))),
                                 tf.int32) for v in self.checked])  # fmt: skip


class _Evaluator:
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
                self.log(f"{_now()} {self.split}{_suffix(eval_mode)}: {seen} of {self.expected} "
                         f"images, {plan.format_duration(last_report - start)} elapsed")  # fmt: skip
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
        suffix = _suffix(eval_mode)
        _write_scalars(self.writer, step, **{f"loss{suffix}": loss, f"top1_error{suffix}": top1,
                                             f"top5_error{suffix}": top5,
                                             f"examples{suffix}": float(count)})  # fmt: skip
        self.log(
            f"{self.split}{suffix} step {step}: loss {loss:.4f}  top-1 error {100 * top1:.2f}%  "
            f"top-5 error {100 * top5:.2f}%  ({count} images)"
        )
        return dict(loss=loss, top1_error=top1, top5_error=top5, examples=count, split=self.split)


def _suffix(eval_mode):
    return "" if eval_mode == "center" else f"_{eval_mode}"


def _now():
    return time.strftime("%H:%M:%S")


def _write_scalars(writer, step, **scalars):
    if writer is None:
        return
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


class _Inputs:
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


def _dataset_info(config):
    try:
        info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"--dataset={config.dataset} --data_dir={config.data_dir}: {error}")
    train_split, eval_split = FINAL_SPLITS[config.final_split]
    for split in (train_split, eval_split) if config.final_split == "test" else ():
        if not info.num_examples(split):
            raise ValueError(
                f"--final_split=test: {config.dataset} has no {split!r} split (trainval needs a "
                "validation split held out of the training images, as CIFAR-10's; test one "
                "apart from validation)"
            )
    return info, train_split, eval_split


def train(config, strategy=None, log=print, on_damaged_checkpoint="previous"):
    """Trains `config.model` under `strategy`; resumes from `config.model_dir` if it has a run.

    Returns a dict with the final step, train loss and errors, the evaluation split's errors
    under its name (where it has examples and config.evaluate is set), `images_per_second`
    (training alone: see _Throughput), the unreadable images per split, and
    `stopped_by_signal` (the signal number when SIGTERM/SIGINT ended the run early, else
    None). Raises TrainingDiverged on a non-finite loss or weights, leaving the last good
    checkpoint in place, and data.DataError when the input cannot go on. The chief holds the
    run folder's lock throughout (run_lock.RunFolderBusy if another process has it); a damaged
    latest checkpoint is handled as on_damaged_checkpoint (checkpoints.ON_DAMAGED) says.
    """
    validate(config)
    strategy = strategy or tf.distribute.get_strategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size: {config.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")  # fmt: skip
    info, train_split, eval_split = _dataset_info(config)
    image_size = config.image_size or info.default_image_size
    steps_per_epoch = data_lib.batches_per_epoch(info.num_examples(train_split), config.batch_size)
    total_steps = config.train_steps or max(1, round(config.epochs * steps_per_epoch))
    if on_damaged_checkpoint not in checkpoints.ON_DAMAGED:
        raise ValueError(f"--on_damaged_checkpoint: must be one of {checkpoints.ON_DAMAGED}, "
                         f"got {on_damaged_checkpoint!r}")  # fmt: skip
    # One writer per run folder, from run.json to result.json: the chief's (the other workers
    # write only their own temporary folders).
    chief = strategy.extended.should_checkpoint
    with run_lock.hold(config.model_dir, log=log) if chief else contextlib.nullcontext():
        return _train(config, strategy, log, on_damaged_checkpoint, info, train_split,
                      eval_split, image_size, steps_per_epoch, total_steps)  # fmt: skip


def _train(config, strategy, log, on_damaged_checkpoint, info, train_split, eval_split,
           image_size, steps_per_epoch, total_steps):  # fmt: skip
    """train() once its checks are done and the run folder is its own."""
    run_config = runs.prepare(config, info, image_size, train_split, eval_split,
                              strategy.extended.should_checkpoint, log)  # fmt: skip
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    jit = config.jit_compile == "on" or (config.jit_compile == "auto" and _uses_accelerator(strategy))
    warning = _precision_warning(config.mixed_precision, _uses_accelerator(strategy))
    if warning:
        log(f"warning: {warning}")
    state = _State(config, run_config, strategy, steps_per_epoch, total_steps, log,
                   on_damaged_checkpoint)  # fmt: skip
    steps = _Steps(config, state, strategy, info.num_classes, jit)
    inputs = _Inputs(config, strategy, image_size, steps_per_epoch, train_split)
    writers = _summary_writers(config, strategy, eval_split)
    step = int(state.global_step.numpy())
    finished = runs.read_result(config.model_dir)
    if step >= total_steps and finished and finished.get("steps") == step:
        log(f"{config.model_dir} has finished {step} steps already: nothing to train")
        return finished
    log(
        f"Training {run_config['model']} on {config.dataset} {train_split} "
        f"({info.num_examples(train_split)} images, evaluated on {eval_split}, "
        f"{info.num_classes} classes, {image_size}x{image_size}) with {type(strategy).__name__} "
        f"({steps.replicas} replica{'s' if steps.replicas > 1 else ''}), global batch "
        f"{config.batch_size}, {config.mixed_precision}, jit_compile={jit}: steps {step} -> "
        f"{total_steps} ({steps_per_epoch} per epoch)"
    )
    own_signals = () if state.preemption is not None else (signal.SIGTERM, signal.SIGINT)
    with _SignalFlag(own_signals, log) as signals, inputs.serving():
        evaluator = _Evaluator(steps, inputs, eval_split, info.num_examples(eval_split),
                               writers[1], log, inputs.counter(eval_split),
                               lambda: signals.received is not None)  # fmt: skip
        loop = _Loop(config, state, steps, inputs, evaluator, writers[0], signals, log,
                     steps_per_epoch, total_steps, evaluating=config.evaluate
                     and info.num_examples(eval_split) > 0)  # fmt: skip
        result = loop.run(step)
        return _finish(config, state, steps, evaluator, inputs, result, log, signals)


def _summary_writers(config, strategy, eval_split):
    """(train, evaluation) TensorBoard writers on the chief; None elsewhere."""
    if not strategy.extended.should_save_summary:
        return None, None
    train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    eval_writer = None
    if config.evaluate:
        eval_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, eval_split))
    hparams.write_run_hparams(config)  # at the run root, beside train/ and the eval split
    return train_writer, eval_writer


class _Loop:
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
        throughput = _Throughput(config.batch_size, step)
        profiler = _Profiler(config.profile_steps, os.path.join(config.model_dir, "train"),
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
                self._run_steps(iterator, stop - step)
                self.signals.took(time.monotonic() - called)
                step = stop
                profiler.after(step)
                if self.state.preemption is not None:
                    self.state.preemption.save_checkpoint_if_preempted()
                if self._at_stop(step, throughput, result):
                    break
        result["steps"] = step
        return result

    def _run_steps(self, iterator, count):
        try:
            self.steps.train_steps(iterator, tf.constant(count, tf.int64))
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
            _write_scalars(self.writer, step, learning_rate=learning_rate,
                           images_per_second=rate, **result["train"])  # fmt: skip
            done = step - self.start_step
            elapsed = time.monotonic() - self.start_time
            eta = elapsed / done * (self.total_steps - step) if done else None
            self.log(
                f"{_now()} step {step}/{self.total_steps} epoch {step / self.steps_per_epoch:.2f}: "
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
            _write_scalars(self.writer, step, skipped_images=float(counter.value()))

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


def _finish(config, state, steps, evaluator, inputs, result, log, signals):
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
        runs.write_json_atomically(os.path.join(config.model_dir, runs.RESULT_FILE),
                                   _finite_or_none(result))  # fmt: skip
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
