"""validate(config, folder): the checks of a TrainConfig that need neither the dataset nor a device,
so that a bad flag is named in one line before TensorFlow builds anything. The checks that
need them (the batch against the replicas, a split the dataset lacks) are train()'s."""

import math
import os

from keras_resnet import runs
from keras_resnet.models import canonical_name
from keras_resnet.settings import EVAL_MODES, FINAL_SPLITS, JIT_MODES, PRECISIONS, SCHEDULES
from keras_resnet.recipes import data_service_address as data_address
from keras_resnet.training import initial_weights

MAX_IMAGE_SIZE = 2048


def validate(config, folder=None):
    """Raises ValueError naming the flag at fault, before anything is built. `folder` is the
    runs.RunFolder of config.model_dir where the caller has opened it."""

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
    if not (math.isfinite(config.freeze_backbone_epochs) and config.freeze_backbone_epochs >= 0):
        fail("freeze_backbone_epochs", f"must be 0 or more, got {config.freeze_backbone_epochs}")
    folder = folder or runs.RunFolder(config.model_dir)
    resuming = os.path.isdir(folder.model_dir) and bool(folder.checkpoints())
    weights_problem = initial_weights.problem(config, resuming)
    if weights_problem:
        fail(f"weights={config.weights}", weights_problem)
    for rate_flag in ("base_learning_rate", "warm_start_learning_rate"):
        rate = getattr(config, rate_flag)
        if rate is not None and not (math.isfinite(rate) and rate > 0):  # NaN > 0 is False too
            fail(rate_flag, f"must be a positive finite number, got {rate}")
