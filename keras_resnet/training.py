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

import dataclasses
import hashlib
import math
import os
import shutil
import signal
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import data as data_lib
from keras_resnet import runs
from keras_resnet.models import canonical_name

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("step", "cosine")
JIT_MODES = ("auto", "on", "off")
EVAL_MODES = ("center", "ten_crop")
# What a run trains on and evaluates, by --final_split: "validation" holds a split out of the
# training data to choose a schedule; "test" trains on every training image and reports the
# test set, as the paper's final CIFAR-10 numbers (Table 6) do.
FINAL_SPLITS = {"validation": ("train", "validation"), "test": ("trainval", "test")}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; each field but lr_decay_factor and model_options (the
    --shortcut, --stride_position and --bn_synchronized flags) is a trainer flag of the
    same name."""

    model_dir: str
    model: str = "resnet50"
    model_options: dict = dataclasses.field(default_factory=dict)
    dataset: str = "demo"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None  # None: the dataset's default (224, or 32 for CIFAR)
    batch_size: int = 256  # global, across all replicas
    epochs: float = 90.0
    train_steps: Optional[int] = None  # overrides epochs
    base_learning_rate: float = 0.1  # at a batch of lr_reference_batch; scaled linearly
    lr_reference_batch: int = 256  # the paper: 0.1 at 256 on ImageNet, 0.1 at 128 on CIFAR
    lr_schedule: str = "step"
    lr_decay_epochs: tuple = (30, 60)
    lr_decay_steps: Optional[tuple] = None  # overrides lr_decay_epochs
    lr_decay_factor: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0 to the peak rate
    warm_start_learning_rate: Optional[float] = None  # held for warm_start_steps (ResNet-110)
    warm_start_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augmentation: Optional[str] = None  # None: the dataset's recipe ("cifar" for CIFAR-10)
    lighting: bool = False
    mixed_precision: str = "float32"
    jit_compile: str = "auto"
    steps_per_execution: int = 1
    eval_every_epochs: int = 1  # 0: no evaluation during training
    evaluate: bool = True  # False: no evaluation at all (e.g. throughput runs on synthetic data)
    final_eval_mode: str = "center"  # "ten_crop": the paper's 10-crop testing at the end
    final_split: str = "validation"  # "test": train on train+validation, evaluate on test
    log_every_steps: int = 100
    profile_steps: Optional[tuple] = None  # (first, last): a profiler trace in model_dir/train
    checkpoint_every_steps: Optional[int] = None  # None: at the end of every epoch
    keep_checkpoints: int = 3
    seed: Optional[int] = None
    deterministic: bool = False


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
    if config.image_size is not None and config.image_size < 8:
        fail("image_size", f"must be at least 8, got {config.image_size}")
    if config.profile_steps is not None and (
        len(config.profile_steps) != 2 or not 0 < config.profile_steps[0] <= config.profile_steps[1]
    ):
        fail("profile_steps", f"must be two steps 0 < first <= last, got {config.profile_steps}")
    if not config.model_dir:
        fail("model_dir", "is required")
    if config.base_learning_rate <= 0:
        fail("base_learning_rate", f"must be positive, got {config.base_learning_rate}")


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


def _correct(logits_or_probabilities, labels):
    labels = tf.cast(labels, tf.int32)
    k = min(5, logits_or_probabilities.shape[-1])
    top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits_or_probabilities, 1), tf.float32))
    top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits_or_probabilities, k), tf.float32))
    return top1, top5


class _SignalFlag:
    """Remembers SIGTERM/SIGINT so the loop can save at the next step boundary.

    Multi-worker runs pass no signals: saving is collective, so one worker saving on its own
    would wait forever for the others. There PreemptionCheckpointHandler owns SIGTERM and
    saves on every worker at the same step."""

    def __init__(self, signums=(signal.SIGTERM, signal.SIGINT)):
        self.received = None
        self._signums = signums
        self._previous = {}

    def __enter__(self):
        for signum in self._signums:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _uses_accelerator(strategy):
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever device TensorFlow picks
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)


def _hparams(config):
    flat = {}
    for key, value in dataclasses.asdict(config).items():
        if key == "model_options":
            for option, option_value in value.items():
                flat[f"model_options.{option}"] = str(option_value)
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        else:
            flat[key] = str(value)
    return flat


def _check_same_run(existing, config):
    # Runs from before --final_split trained on train and evaluated on validation.
    defaults = dict(train_split="train", eval_split="validation")
    for key in ("model", "model_options", "dataset", "num_classes", "image_size", *defaults):
        if existing.get(key, defaults.get(key)) != config.get(key):
            raise ValueError(
                f"--model_dir: {config['model_dir']} holds a run with {key}="
                f"{existing.get(key)!r}, not {config.get(key)!r}; use a new --model_dir or "
                "the run's own settings to resume it"
            )


def train(config, strategy=None, log=print):
    """Trains `config.model` under `strategy`; resumes from `config.model_dir` if it has a run.

    Returns a dict with the final step, train loss and errors, validation errors (where the
    dataset has a validation split and config.evaluate is set), `images_per_second` (training
    alone: see _Throughput), and `stopped_by_signal` (the signal number when SIGTERM/SIGINT
    ended the run early, else None). Raises TrainingDiverged on
    a non-finite loss, leaving the last good checkpoint in place.
    """
    validate(config)
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"--batch_size: {config.batch_size} is not divisible by the {replicas} replicas"
        )
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
    image_size = config.image_size or info.default_image_size
    steps_per_epoch = max(1, info.num_examples(train_split) // config.batch_size)
    total_steps = config.train_steps or max(1, round(config.epochs * steps_per_epoch))
    is_chief = strategy.extended.should_checkpoint
    model_name = canonical_name(config.model)

    run_config = dict(
        model=model_name,
        model_options=dict(config.model_options),
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        image_size=image_size,
        mean=list(info.mean),
        std=list(info.std),
        center_crop_fraction=info.center_crop_fraction,
        dataset=config.dataset,
        train_split=train_split,
        eval_split=eval_split,
        data_dir=config.data_dir,
        model_dir=config.model_dir,
        flags=_hparams(config),
    )
    run_file = os.path.join(config.model_dir, runs.RUN_FILE)
    if os.path.exists(run_file):
        _check_same_run(runs.read_run_config(config.model_dir), run_config)
    if is_chief:
        runs.write_run_config(config.model_dir, run_config)

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    jit = config.jit_compile == "on" or (
        config.jit_compile == "auto" and _uses_accelerator(strategy)
    )
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.mixed_precision)
    try:
        with strategy.scope():
            model = runs.build_model(run_config)
            schedule = make_schedule(config, steps_per_epoch, total_steps)
            optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
            if config.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            train_totals, eval_totals = _Totals(strategy), _Totals(strategy)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, global_step=global_step, epoch=epoch
    )
    checkpoint_dir = runs.checkpoint_dir(config.model_dir)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log(f"Resumed from {latest} at step {int(global_step.numpy())}")
    # Every worker takes part in saving; only the chief's files are kept.
    write_dir = checkpoint_dir if is_chief else os.path.join(
        config.model_dir, f".worker-{strategy.cluster_resolver.task_id}-checkpoints"
    )
    manager = tf.train.CheckpointManager(
        checkpoint, write_dir, max_to_keep=config.keep_checkpoints, step_counter=global_step
    )
    preemption = None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager
        )

    skipped = data_lib.SkipCounter()
    global_batch = config.batch_size

    def dataset_fn(split, training, eval_mode="center"):
        def make(input_context):
            return data_lib.make_dataset(
                config.dataset,
                split,
                data_dir=config.data_dir,
                batch_size=input_context.get_per_replica_batch_size(global_batch),
                image_size=image_size,
                training=training,
                augmentation=config.augmentation,
                eval_mode=eval_mode,
                lighting=config.lighting,
                input_context=input_context,
                seed=config.seed,
                deterministic=config.deterministic,
                skipped=skipped,
            )

        return strategy.distribute_datasets_from_function(make)

    kernels = decayed_variables(model)
    weight_decay = config.weight_decay
    smoothing = config.label_smoothing

    def replica_train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            one_hot = tf.one_hot(tf.cast(labels, tf.int32), info.num_classes)
            per_example = keras.losses.categorical_crossentropy(
                one_hot, logits, from_logits=True, label_smoothing=smoothing
            )
            loss = tf.reduce_sum(per_example) / global_batch
            if weight_decay:
                # Gradients are summed over replicas, so each adds its share of the decay.
                loss += weight_decay_loss(kernels, weight_decay) / replicas
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        train_totals.add(tf.reduce_sum(per_example), *_correct(logits, labels), tf.size(labels))

    step_fn = tf.function(replica_train_step, jit_compile=True) if jit else replica_train_step

    @tf.function
    def train_steps(iterator, steps):
        for _ in tf.range(steps):
            images, labels = next(iterator)
            strategy.run(step_fn, args=(images, labels))
        global_step.assign_add(tf.cast(steps, tf.int64))

    moving_statistics = [v for v in model.non_trainable_variables if "moving_" in v.path]

    @tf.function
    def average_moving_statistics():
        # Each replica's BN keeps its own moving statistics (per-GPU BN, as in the paper);
        # averaging them before every evaluation and save makes all copies, and all workers'
        # checkpoints, equal, and estimates from every replica's data.
        def replica_fn():
            context = tf.distribute.get_replica_context()
            averaged = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in moving_statistics]
            )
            for variable, value in zip(moving_statistics, averaged):
                variable.assign(value)

        strategy.run(replica_fn)

    def replica_eval_step(images, labels):
        if images.shape.rank == 5:  # (batch, crops, H, W, 3): average the crops' softmax
            crops = tf.shape(images)[1]
            flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
            logits = tf.cast(model(flat, training=False), tf.float32)
            probabilities = tf.nn.softmax(logits)
            probabilities = tf.reduce_mean(
                tf.reshape(probabilities, [-1, crops, info.num_classes]), axis=1
            )
            picked = tf.gather(probabilities, tf.cast(labels, tf.int32), batch_dims=1)
            per_example = -tf.math.log(tf.maximum(picked, 1e-12))
            scores = probabilities
        else:
            scores = tf.cast(model(images, training=False), tf.float32)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.cast(labels, tf.int32), scores
            )
        eval_totals.add(tf.reduce_sum(per_example), *_correct(scores, labels), tf.size(labels))

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        strategy.run(replica_eval_step, args=(images, labels))

    def evaluate_all(dataset):
        # One traced step per batch, looped in Python: a graph loop over the dataset would
        # be unrolled whole if AutoGraph ever failed to convert it.
        for images, labels in dataset:
            eval_step(images, labels)

    train_writer = validation_writer = None
    if strategy.extended.should_save_summary:
        train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        if config.evaluate:
            validation_writer = tf.summary.create_file_writer(
                os.path.join(config.model_dir, eval_split)
            )
        from tensorboard.plugins.hparams import api as hparams_api

        with train_writer.as_default():
            hparams_api.hparams(_hparams(config), trial_id=os.path.basename(config.model_dir.rstrip("/")))

    def write_scalars(writer, step, **scalars):
        if writer is None:
            return
        with writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def save(step):
        if replicas > 1:
            average_moving_statistics()
        path = manager.save(checkpoint_number=step)
        if not is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)
        return path

    has_validation = config.evaluate and info.num_examples(eval_split) > 0

    def evaluate(step, eval_mode="center"):
        if replicas > 1:
            average_moving_statistics()
        evaluate_all(dataset_fn(eval_split, training=False, eval_mode=eval_mode))
        loss, top1, top5, count = eval_totals.read_and_reset()
        suffix = "" if eval_mode == "center" else f"_{eval_mode}"
        write_scalars(
            validation_writer,
            step,
            **{f"loss{suffix}": loss, f"top1_error{suffix}": top1, f"top5_error{suffix}": top5},
        )
        log(
            f"{eval_split}{suffix} step {step}: loss {loss:.4f}  top-1 error {100 * top1:.2f}%  "
            f"top-5 error {100 * top5:.2f}%  ({count} images)"
        )
        return dict(loss=loss, top1_error=top1, top5_error=top5, examples=count, split=eval_split)

    step = int(global_step.numpy())
    finished = runs.read_result(config.model_dir)
    if step >= total_steps and finished and finished.get("steps") == step:
        log(f"{config.model_dir} has finished {step} steps already: nothing to train")
        return finished
    log(
        f"Training {model_name} on {config.dataset} {train_split} "
        f"({info.num_examples(train_split)} images, evaluated on {eval_split}, "
        f"{info.num_classes} classes, {image_size}x{image_size}) with {type(strategy).__name__} "
        f"({replicas} replica{'s' if replicas > 1 else ''}), global batch {global_batch}, "
        f"{config.mixed_precision}, jit_compile={jit}: steps {step} -> {total_steps} "
        f"({steps_per_epoch} per epoch)"
    )
    iterator = iter(dataset_fn(train_split, training=True))
    result = dict(steps=step, stopped_by_signal=None, skipped_images=0, train_split=train_split,
                  eval_split=eval_split)  # fmt: skip
    throughput = _Throughput(global_batch, step)
    checkpoint_every = config.checkpoint_every_steps or steps_per_epoch
    train_metrics = {}
    profiler = _Profiler(config.profile_steps, os.path.join(config.model_dir, "train"), is_chief)
    own_signals = () if preemption is not None else (signal.SIGTERM, signal.SIGINT)
    with _SignalFlag(own_signals) as signals, profiler:
        while step < total_steps:
            boundaries = [steps_per_epoch, config.log_every_steps, checkpoint_every]
            next_stop = min(min((step // b + 1) * b for b in boundaries), total_steps)
            chunk = min(config.steps_per_execution, next_stop - step)
            profiler.before(step + 1, step + chunk)
            train_steps(iterator, tf.constant(chunk, tf.int64))
            step += chunk
            profiler.after(step)
            if preemption is not None:
                preemption.save_checkpoint_if_preempted()

            epoch_end = step % steps_per_epoch == 0 or step == total_steps
            stopping = signals.received and step < total_steps
            should_save = epoch_end or step % checkpoint_every == 0 or stopping
            # Metrics are read (one sync) only here; a save always checks the loss first.
            read_metrics = step % config.log_every_steps == 0 or should_save
            if read_metrics:
                loss, top1, top5, count = train_totals.read_and_reset()
                if count and not math.isfinite(loss):
                    kept = tf.train.latest_checkpoint(checkpoint_dir)
                    raise TrainingDiverged(
                        f"loss became {loss} between steps {throughput.step} and {step}; stopped "
                        f"without saving. The last good checkpoint is kept: {kept or 'none yet'}. "
                        "Lower --base_learning_rate or add --warmup_epochs."
                    )
                rate, first = throughput.interval(step)
                learning_rate = float(schedule(step - 1))
                if count:
                    train_metrics = dict(loss=loss, top1_error=top1, top5_error=top5)
                    write_scalars(
                        train_writer,
                        step,
                        learning_rate=learning_rate,
                        images_per_second=rate,
                        **train_metrics,
                    )
                    log(
                        f"step {step}/{total_steps} epoch {step / steps_per_epoch:.2f}: loss "
                        f"{loss:.4f}  top-1 error {100 * top1:.2f}%  lr {learning_rate:.4g}  "
                        f"{rate:.1f} images/s" + (" (includes tracing)" if first else "")
                    )
                result["images_per_second"] = throughput.images_per_second()

            if epoch_end:
                epoch.assign(step // steps_per_epoch)
                if skipped.value():
                    log(f"skipped {skipped.value()} unreadable images so far")
                    write_scalars(train_writer, step, skipped_images=float(skipped.value()))
            if should_save:
                log(f"saved {save(step)}")
            if stopping:
                name = signal.Signals(signals.received).name
                log(
                    f"{name} received: saved checkpoint at step {step}; exiting. Run again "
                    "with the same --model_dir to resume."
                )
                result.update(stopped_by_signal=signals.received)
                break
            if (
                epoch_end
                and has_validation
                and config.eval_every_epochs
                and (step // steps_per_epoch) % config.eval_every_epochs == 0
            ):
                result[eval_split] = evaluate(step)
            if read_metrics:
                throughput.restart_clock()  # saves, evaluations and summaries are not training

    if replicas > 1 and step > result["steps"]:
        average_moving_statistics()
    result.update(
        steps=step,
        total_steps=total_steps,
        train=train_metrics,
        skipped_images=skipped.value(),
        weights_sha256=weights_sha256(model),
    )
    if result["stopped_by_signal"] is None and step >= total_steps:
        if has_validation and eval_split not in result:
            result[eval_split] = evaluate(step)
        if has_validation and config.final_eval_mode != "center":
            result[f"{eval_split}_{config.final_eval_mode}"] = evaluate(step, config.final_eval_mode)
        if is_chief:
            runs.write_json_atomically(os.path.join(config.model_dir, runs.RESULT_FILE), result)
        final = result.get(eval_split) or train_metrics
        log(
            f"Finished {model_name}: {step} steps, "
            + (
                f"final top-1 error {100 * final['top1_error']:.2f}% "
                f"(top-5 {100 * final['top5_error']:.2f}%) on "
                + (eval_split if eval_split in result else "training")
                if final
                else "no metrics"
            )
        )
    return result
