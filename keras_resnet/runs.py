"""A training run's folder: what the trainer writes and what export and analysis read.

    <model_dir>/run.json               the run's facts (below), rewritten atomically at each start
    <model_dir>/result.json            the final numbers, written when the run finishes
    <model_dir>/checkpoints/ckpt-N.*   tf.train.Checkpoint(model=..., optimizer=..., ...)
    <model_dir>/train/, validation/    TensorBoard event files

run.json holds: model (a public name, e.g. "resnet50"), model_options (builder keyword
arguments such as shortcut or stride_position), num_classes, class_names, image_size,
mean and std (per-channel RGB on the 0..255 scale: the model's input is (image - mean) / std),
center_crop_fraction (evaluation keeps this much of the shorter side), dataset, data_dir, and
the trainer's flags under "flags".
"""

import json
import os
import tempfile

import tensorflow as tf

from keras_resnet.models import build

RUN_FILE = "run.json"
RESULT_FILE = "result.json"  # written when a run finishes: final step, errors, images/s
CHECKPOINT_DIR = "checkpoints"
REQUIRED_KEYS = ("model", "model_options", "num_classes", "class_names", "image_size", "mean", "std")


def write_json_atomically(path, content):
    """Writes JSON to a temporary file beside `path`, then renames it: never half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_run_config(model_dir, config):
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"run config lacks {missing}")
    if len(config["class_names"]) != config["num_classes"]:
        raise ValueError(
            f"run config has {len(config['class_names'])} class names for "
            f"{config['num_classes']} classes"
        )
    write_json_atomically(os.path.join(model_dir, RUN_FILE), config)


def read_run_config(model_dir):
    path = os.path.join(model_dir, RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a keras_resnet training run "
            "(the trainer writes run.json when it starts)"
        )
    with open(path) as f:
        config = json.load(f)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return config


def read_result(model_dir):
    """The finished run's result.json as a dict, or None while the run is unfinished."""
    path = os.path.join(model_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def build_model(config, classifier_activation=None):
    """The run's model (logits by default), built exactly as the trainer built it."""
    size = config["image_size"]
    return build(
        config["model"],
        classes=config["num_classes"],
        input_shape=(size, size, 3),
        classifier_activation=classifier_activation,
        **config["model_options"],
    )


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_DIR)


def latest_checkpoint(model_dir):
    path = tf.train.latest_checkpoint(checkpoint_dir(model_dir))
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(model_dir)}")
    return path


def restore_model(model_dir, checkpoint=None, classifier_activation=None):
    """Builds the run's model and loads its weights from `checkpoint` (default: the latest).

    Returns (model, config, checkpoint_path). Only the model is read from the checkpoint; the
    optimizer state and counters in it are left alone.
    """
    config = read_run_config(model_dir)
    model = build_model(config, classifier_activation=classifier_activation)
    path = checkpoint or latest_checkpoint(model_dir)
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial().assert_existing_objects_matched()
    return model, config, path
