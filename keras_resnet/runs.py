"""A training run's folder: what the trainer writes and what export and analysis read.

    <model_dir>/run.json               the run's facts (RunRecord, below), rewritten atomically
                                       at each start
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
shorter side); input_spec(record) reads it back), dataset, train_split, eval_split, data_dir,
model_dir, the trainer's flags under "flags" as typed values (keras_resnet.hparams.flags_record:
numbers, bools, strings, null, lists), from which read_train_config rebuilds the run's
TrainConfig, and initial_weights: what a run started with --weights started from ({"name",
"sha256", "file"}: keras_resnet/training/initial_weights.py says how each is taken), or null.

RunFolder(model_dir) is the folder: its paths, RunFolder.record (run.json as a RunRecord),
its checkpoints, result.json and the run's model. The trainer opens it once and starts a run
with RunFolder.prepare (run.json checked against a run already in the folder, then written);
it resumes only where that check agrees. "record" here is always run.json's content; "config"
is the trainer's TrainConfig. The module-level functions (read_run_config, restore_model, ...)
are the same operations for callers that hold a path or a run.json dict.
"""

import dataclasses
import os
import typing

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
# Keys that runs from before center_crop_fraction or --flags in run.json lack: to_json leaves
# them out where they are None rather than write a null that no version wrote.
_OPTIONAL_KEYS = ("center_crop_fraction", "flags")


def _check_keys(content, where):
    """ValueError, naming `where`, if the run.json dict `content` lacks a key every version
    wrote."""
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing}")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """run.json's content, typed. Defaults are what older run.json files mean by a missing key:
    runs from before --final_split trained on train and evaluated on validation, and runs
    from before center_crop_fraction take their family's (input_spec)."""

    model: str
    model_options: dict
    num_classes: int
    class_names: tuple
    image_size: int
    mean: tuple
    std: tuple
    center_crop_fraction: typing.Optional[float] = None
    dataset: typing.Optional[str] = None
    train_split: str = "train"
    eval_split: str = "validation"
    data_dir: typing.Optional[str] = None
    model_dir: typing.Optional[str] = None
    flags: typing.Optional[dict] = None  # hparams.typed_record's values
    initial_weights: typing.Optional[dict] = None  # {"name", "sha256", "file"}
    extra: dict = dataclasses.field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_json(cls, content, where=RUN_FILE):
        """The record of a run.json dict, as any version wrote it (flags as strings, keys
        missing). ValueError, naming `where`, without a key every version wrote."""
        _check_keys(content, where)
        names = {field.name for field in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in content.items() if key in names}
        for key in ("class_names", "mean", "std"):
            values[key] = tuple(values[key])
        if values.get("flags") is not None:
            values["flags"] = hparams.typed_record(values["flags"])
        extra = {key: value for key, value in content.items() if key not in names}
        return cls(**values, extra=extra)

    def to_json(self):
        """The run.json dict (JSON types), as the trainer writes it."""
        content = {field.name: getattr(self, field.name)
                   for field in dataclasses.fields(self) if field.name != "extra"}  # fmt: skip
        for key in ("class_names", "mean", "std"):
            content[key] = list(content[key])
        content["model_options"] = dict(self.model_options)
        for key in _OPTIONAL_KEYS:
            if content[key] is None:
                del content[key]
        return dict(content, **self.extra)

    def input_spec(self):
        return InputSpec.from_record(self.to_json(), family(self.model))

    def weights_name(self):
        return (self.initial_weights or {}).get("name")


def model_of(model, num_classes, image_size, model_options, classifier_activation=None):
    """A run's model (logits by default), built exactly as the trainer builds it."""
    return build(model, classes=num_classes, input_shape=(image_size, image_size, 3),
                 classifier_activation=classifier_activation, **model_options)  # fmt: skip


class RunFolder:
    """A run folder at `model_dir`, read lazily: opening one touches no file."""

    def __init__(self, model_dir):
        self.model_dir = os.fspath(model_dir)
        self.run_file = os.path.join(self.model_dir, RUN_FILE)
        self.flags_file = os.path.join(self.model_dir, FLAGS_FILE)
        self.result_file = os.path.join(self.model_dir, RESULT_FILE)
        self.checkpoint_dir = os.path.join(self.model_dir, CHECKPOINT_DIR)
        self._record = None

    def has_run(self):
        return os.path.exists(self.run_file)

    def read_json(self):
        """run.json as the dict on disk (FileNotFoundError where the folder has none)."""
        if not self.has_run():
            raise FileNotFoundError(
                f"{self.run_file} not found: {self.model_dir} is not a keras_resnet training "
                "run (the trainer writes run.json when it starts)"
            )
        content = read_json(self.run_file, f"it records the run's settings: restore it from a "
                                           f"copy, or remove it and run the trainer with "
                                           f"--flagfile={self.flags_file} to write it again")  # fmt: skip
        _check_keys(content, self.run_file)
        return content

    @property
    def record(self):
        """run.json as a RunRecord: read once, then the one `prepare` or `write_record` wrote."""
        if self._record is None:
            self._record = RunRecord.from_json(self.read_json(), self.run_file)
        return self._record

    def write_record(self, record):
        """Writes run.json and, where the record has flags, flags.txt."""
        write_run_config(self.model_dir, record.to_json())
        self._record = record

    def checkpoints(self, unlisted=True):
        """The run's checkpoint prefixes, newest first (checkpoints.listed)."""
        return checkpoints.listed(self.checkpoint_dir, unlisted=unlisted)

    def latest_checkpoint(self):
        """The newest checkpoint's path prefix (whole or not: restore_model checks it)."""
        # A reader beside a running trainer: a save in progress has its index before its list.
        found = self.checkpoints(unlisted=False)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {self.checkpoint_dir}")
        return found[0]

    def read_result(self):
        """The finished run's result.json as a dict, or None while the run is unfinished."""
        if not os.path.exists(self.result_file):
            return None
        return read_json(self.result_file, "remove it: running the trainer again evaluates "
                                           "the run's last checkpoint and writes it anew")  # fmt: skip

    def write_result(self, result):
        write_json_atomically(self.result_file, result)

    def build_model(self, record=None, classifier_activation=None):
        """The model of `record` (default: this folder's), built as the trainer built it."""
        record = record or self.record
        return model_of(record.model, record.num_classes, record.image_size,
                        record.model_options, classifier_activation)  # fmt: skip

    def restore_model(self, checkpoint=None, classifier_activation=None):
        """Builds the run's model and loads its weights from `checkpoint` (default: the latest).

        Returns (model, record, checkpoint_path). Only the model is read from the checkpoint;
        the optimizer state and counters in it are left alone.
        """
        record = self.record
        path = checkpoint or self.latest_checkpoint()
        verdict, problem = checkpoints.inspect(path)  # a damaged checkpoint is refused, named
        model = None if problem else self.build_model(record, classifier_activation)
        try:
            if model is not None:
                read = tf.train.Checkpoint(model=model).read(path)
                read.expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as error:  # no manifest, and TF cannot read it
            problem = f"checkpoint {path} cannot be read ({checkpoints.one_line(error)})"
        if problem:
            whole = checkpoints.newest_whole(os.path.dirname(path))
            raise checkpoints.DamagedCheckpoint(
                f"{problem}; "
                + (f"the newest whole checkpoint of the run is {whole} (--checkpoint={whole})"
                   if whole and whole != path else "the run has no whole checkpoint")
            )  # fmt: skip
        return model, record, path

    def prepare(self, config, info, image_size, train_split, eval_split, is_chief, log,
                initial_weights=None):  # fmt: skip
        """run.json for a TrainConfig that starts in this folder: the run's facts (the
        dataset's InputSpec at image_size, the model, the splits, the typed flags, and
        `initial_weights`, the record of the weights a fresh run starts from: {"name",
        "sha256", "file"}, or None), checked against a run already here, then written by the
        chief. A resumed run keeps the initial_weights it started with. Returns the
        RunRecord."""
        if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
            raise ValueError(f"--model_dir: {self.model_dir} is a file, not a folder")
        record = RunRecord.from_json(dict(
            model=canonical_name(config.model), model_options=dict(config.model_options),
            **info.input_spec(image_size).record(),  # num_classes, class_names, image_size, ...
            dataset=config.dataset, train_split=train_split, eval_split=eval_split,
            data_dir=config.data_dir, model_dir=self.model_dir,
            flags=hparams.flags_record(config), initial_weights=initial_weights,
        ))  # fmt: skip
        if self.has_run():
            existing = self.record
            if self.check_same_run(existing, record, log) and existing.initial_weights:
                record = dataclasses.replace(record, initial_weights=existing.initial_weights)
        if is_chief:
            self.write_record(record)
        else:
            self._record = record
        return record

    def check_same_run(self, existing, record, log):
        """Refuses to resume a run with other settings (the same weights to start from among
        them); a run that never saved a checkpoint (a start that failed) is replaced instead.
        Returns True where the run resumes, False where it is replaced."""
        keys = ("model", "model_options", "dataset", "num_classes", "image_size",
                "train_split", "eval_split")  # fmt: skip
        pairs = [(key, getattr(existing, key), getattr(record, key)) for key in keys]
        pairs.append(("weights", existing.weights_name(), record.weights_name()))
        for key, old, new in pairs:
            if old != new:
                if not self.checkpoints():
                    log(f"{self.model_dir} holds a run that never saved a checkpoint: "
                        "replacing it")  # fmt: skip
                    return False
                raise ValueError(
                    f"--model_dir: {self.model_dir} holds a run with {key}="
                    f"{old!r}, not {new!r}; use a new --model_dir or "
                    "the run's own settings to resume it"
                )
        return True


# The same operations for callers that hold a path or a run.json dict (export, plot, tests).


def write_run_config(model_dir, config):
    """Writes run.json (its "flags" as typed values) and, where it has flags, flags.txt."""
    _check_keys(config, "run config")
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
    """run.json as the dict on disk."""
    return RunFolder(model_dir).read_json()


def input_spec(config):
    """The InputSpec that run.json dict `config` records. Runs written before run.json recorded
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
    return RunFolder(model_dir).read_result()


def build_model(config, classifier_activation=None):
    """The model of run.json dict `config` (logits by default), built as the trainer built it."""
    return model_of(config["model"], config["num_classes"], config["image_size"],
                    config["model_options"], classifier_activation)  # fmt: skip


def checkpoint_dir(model_dir):
    return RunFolder(model_dir).checkpoint_dir


def latest_checkpoint(model_dir):
    return RunFolder(model_dir).latest_checkpoint()


def restore_model(model_dir, checkpoint=None, classifier_activation=None):
    """RunFolder.restore_model with run.json as a dict: (model, config, checkpoint_path)."""
    model, record, path = RunFolder(model_dir).restore_model(checkpoint, classifier_activation)
    return model, record.to_json(), path

