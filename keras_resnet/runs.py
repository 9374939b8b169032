"""A training run's folder: what the trainer writes and what export and analysis read.

    <model_dir>/run.json               the run's facts (below), rewritten atomically at each start
    <model_dir>/flags.txt              its settings as trainer flags (--flagfile repeats the run)
    <model_dir>/result.json            the final numbers, written when the run finishes
    <model_dir>/checkpoints/ckpt-N.*   tf.train.Checkpoint(model=..., optimizer=..., ...), and
                                   ckpt-N.manifest.json, its files' checksums (checkpoints.py)
    <model_dir>/.lock                  held by the one process that writes the folder (run_lock.py)
    <model_dir>/train/, validation/    TensorBoard event files (test/ with --final_split=test)
    <model_dir>/events.out.tfevents.hparams-*   TensorBoard HParams (keras_resnet.hparams)

run.json holds: model (a public name, e.g. "resnet50"), model_options (builder keyword
arguments such as shortcut or stride_position), the model's input spec (InputSpec.record():
num_classes, class_names, image_size, mean and std (per-channel RGB on the 0..255 scale: the
model's input is (image - mean) / std), center_crop_fraction (evaluation keeps this much of the
shorter side); input_spec(config) reads it back), dataset, data_dir, and
the trainer's flags under "flags" as typed values (keras_resnet.hparams.flags_record: numbers,
bools, strings, null, lists), from which read_train_config rebuilds the run's TrainConfig,
and initial_weights: what a run started with --weights started from ({"name", "sha256",
"file"}: keras_resnet/training/initial_weights.py says how each is taken), or null.

The trainer starts a run with `prepare` (run.json checked against a run already in the
folder, then written) and resumes it only if `check_same_run` agrees.
"""

import os

import tensorflow as tf

from keras_resnet import checkpoints, hparams
from keras_resnet.files import (  # noqa: F401  (part of the run-folder API)
    DamagedFile,
    DiskFull,
    read_json,
    write_bytes_atomically,
    write_json_atomically,
    write_text_atomically,
)
from keras_resnet.data.spec import InputSpec
from keras_resnet.models import build, canonical_name, family

RUN_FILE = "run.json"
FLAGS_FILE = "flags.txt"  # the run's settings as an absl flagfile (hparams.flagfile_text)
RESULT_FILE = "result.json"  # written when a run finishes: final step, errors, images/s
CHECKPOINT_DIR = "checkpoints"
REQUIRED_KEYS = ("model", "model_options", "num_classes", "class_names", "image_size", "mean", "std")


def write_run_config(model_dir, config):
    """Writes run.json (its "flags" as typed values) and, where it has flags, flags.txt."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"run config lacks {missing}")
    if len(config["class_names"]) != config["num_classes"]:
        raise ValueError(
            f"run config has {len(config['class_names'])} class names for "
            f"{config['num_classes']} classes"
        )
    if "flags" in config:
        # Typed values even where a caller passes them as strings ("None", "(30.0, 60.0)").
        config = dict(config, flags=hparams.typed_record(config["flags"]))
        write_text_atomically(os.path.join(model_dir, FLAGS_FILE),
                              hparams.flagfile_text(config["flags"]))  # fmt: skip
    write_json_atomically(os.path.join(model_dir, RUN_FILE), config)


def read_run_config(model_dir):
    path = os.path.join(model_dir, RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a keras_resnet training run "
            "(the trainer writes run.json when it starts)"
        )
    config = read_json(path, f"it records the run's settings: restore it from a copy, or "
                             f"remove it and run the trainer with --flagfile="
                             f"{os.path.join(model_dir, FLAGS_FILE)} to write it again")  # fmt: skip
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return config


def input_spec(config):
    """The InputSpec that run.json `config` records. Runs written before run.json recorded
    center_crop_fraction take their model family's (keras_resnet.data.spec.family_defaults)."""
    return InputSpec.from_record(config, family(config["model"]))


def read_train_config(model_dir):
    """The run's TrainConfig, rebuilt from run.json's "flags" (typed, or strings as older
    versions wrote them)."""
    config = read_run_config(model_dir)
    if "flags" not in config:
        raise ValueError(f"{os.path.join(model_dir, RUN_FILE)} records no flags")
    return hparams.config_from_record(config)


def read_result(model_dir):
    """The finished run's result.json as a dict, or None while the run is unfinished."""
    path = os.path.join(model_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    return read_json(path, "remove it: running the trainer again evaluates the run's last "
                           "checkpoint and writes it anew")  # fmt: skip


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
    """The newest checkpoint's path prefix (whole or not: restore_model checks it)."""
    found = checkpoints.listed(checkpoint_dir(model_dir), unlisted=False)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(model_dir)}")
    return found[0]


def restore_model(model_dir, checkpoint=None, classifier_activation=None):
    """Builds the run's model and loads its weights from `checkpoint` (default: the latest).

    Returns (model, config, checkpoint_path). Only the model is read from the checkpoint; the
    optimizer state and counters in it are left alone.
    """
    config = read_run_config(model_dir)
    path = checkpoint or latest_checkpoint(model_dir)
    verdict, problem = checkpoints.inspect(path)  # a damaged checkpoint is refused, named
    model = None if problem else build_model(config, classifier_activation=classifier_activation)
    try:
        if model is not None:
            read = tf.train.Checkpoint(model=model).read(path)
            read.expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as error:  # no manifest, and TensorFlow cannot read it
        problem = f"checkpoint {path} cannot be read ({checkpoints.one_line(error)})"
    if problem:
        whole = checkpoints.newest_whole(os.path.dirname(path))
        raise checkpoints.DamagedCheckpoint(
            f"{problem}; "
            + (f"the newest whole checkpoint of the run is {whole} (--checkpoint={whole})"
               if whole and whole != path else "the run has no whole checkpoint")
        )  # fmt: skip
    return model, config, path


def prepare(config, info, image_size, train_split, eval_split, is_chief, log,
            initial_weights=None):  # fmt: skip
    """run.json for a TrainConfig that starts: the run's facts (the dataset's InputSpec at
    image_size, the model, the splits, the typed flags, and `initial_weights`, the record of
    the weights a fresh run starts from: {"name", "sha256", "file"}, or None), checked
    against a run already in model_dir, then written by the chief. A resumed run keeps the
    record it started with. Returns it."""
    if os.path.exists(config.model_dir) and not os.path.isdir(config.model_dir):
        raise ValueError(f"--model_dir: {config.model_dir} is a file, not a folder")
    run_config = dict(
        model=canonical_name(config.model), model_options=dict(config.model_options),
        **info.input_spec(image_size).record(),  # num_classes, class_names, image_size, ...
        dataset=config.dataset, train_split=train_split, eval_split=eval_split,
        data_dir=config.data_dir, model_dir=config.model_dir, flags=hparams.flags_record(config),
        initial_weights=initial_weights,
    )  # fmt: skip
    if os.path.exists(os.path.join(config.model_dir, RUN_FILE)):
        existing = read_run_config(config.model_dir)
        if check_same_run(existing, run_config, log) and existing.get("initial_weights"):
            run_config["initial_weights"] = existing["initial_weights"]
    if is_chief:
        write_run_config(config.model_dir, run_config)
    return run_config


def _weights_name(config):
    return (config.get("initial_weights") or {}).get("name")


def check_same_run(existing, config, log):
    """Refuses to resume a run with other settings (the same weights to start from among
    them); a run that never saved a checkpoint (a start that failed) is replaced instead.
    Returns True where the run resumes, False where it is replaced."""
    # Runs from before --final_split trained on train and evaluated on validation.
    defaults = dict(train_split="train", eval_split="validation")
    keys = ("model", "model_options", "dataset", "num_classes", "image_size", *defaults)
    pairs = [(key, existing.get(key, defaults.get(key)), config.get(key)) for key in keys]
    pairs.append(("weights", _weights_name(existing), _weights_name(config)))
    for key, old, new in pairs:
        if old != new:
            if not checkpoints.listed(checkpoint_dir(config["model_dir"])):
                log(f"{config['model_dir']} holds a run that never saved a checkpoint: replacing it")
                return False
            raise ValueError(
                f"--model_dir: {config['model_dir']} holds a run with {key}="
                f"{old!r}, not {new!r}; use a new --model_dir or "
                "the run's own settings to resume it"
            )
    return True
